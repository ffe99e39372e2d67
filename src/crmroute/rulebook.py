"""Rules, DIDs, IVRs and the license, compiled in memory for the call path.

A ``RuleBook`` is built from the store in one go and replaced whole when the
store's ``config_version`` changes, so a call never queries the database.
Secrets needed on the call path (custom header values, CRM passwords) are
decrypted here once; ``repr`` of a compiled rule never shows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.connectors.pool import ConnectorSpec
from crmroute.licensing import LicenseState, license_state
from crmroute.routing.compare import Operator, parse_operator
from crmroute.routing.conditions import (
    Condition,
    CountryCondition,
    DidCondition,
    FieldCondition,
    MatchesCondition,
    ScheduleCondition,
)
from crmroute.routing.schedules import Schedule
from crmroute.routing.agents import AgentDirectory
from crmroute.routing.engine import AgentOptions, Row, RuleSpec
from crmroute.routing.patterns import DialPattern, best_match, compile_pattern
from crmroute.routing.trace import DestType, Destination
from crmroute.settings import Settings
from crmroute.store import agents, assignments, rules, schedules
from crmroute.store.db import config_version
from crmroute.store.models import License, Rule
from crmroute.store.secrets import SecretBox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomSource:
    """The rule-level Custom CRM of SPEC 5."""

    url: str
    post: bool
    headers: tuple[tuple[str, str], ...] = field(repr=False)


@dataclass(frozen=True)
class IntegrationSource:
    """A CRM configured under Integrations, asked through its connector."""

    connector: ConnectorSpec
    module: str

    @property
    def integration(self) -> str:
        return self.connector.name

    @property
    def kind(self) -> str:
        return self.connector.kind


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleSpec
    location: str
    source: CustomSource | IntegrationSource

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class RuleBook:
    version: int = -1
    rules: dict[str, CompiledRule] = field(default_factory=dict)
    dids: dict[str, str] = field(default_factory=dict)  # exact number -> rule name
    did_patterns: list[tuple[DialPattern, str]] = field(default_factory=list)
    ivrs: dict[str, str] = field(default_factory=dict)  # IVR number -> rule name
    license: LicenseState | None = None
    agents: AgentDirectory = field(default_factory=AgentDirectory)  # for owner / last_agent destinations

    @property
    def last_agent_days(self) -> int:
        """The longest window a rule searches the call log for the last agent (0: no rule does)."""
        return max((r.spec.agents.last_agent_days for r in self.rules.values()
                    if DestType.LAST_AGENT in r.spec.agent_types), default=0)  # fmt: skip

    def rule_named(self, name: str) -> CompiledRule | None:
        return self.rules.get(name)

    def rule_for_ivr(self, number: str) -> CompiledRule | None:
        name = self.ivrs.get(number)
        return self.rules.get(name) if name else None

    def rule_for_did(self, *candidates: str) -> tuple[str, CompiledRule] | None:
        """The first candidate number assigned a rule (exact numbers before patterns)."""
        numbers = [c for c in candidates if c and c.lower() not in ("unknown", "s")]
        for number in numbers:
            for form in (number, number.lstrip("+"), "+" + number.lstrip("+")):
                if form in self.dids:
                    return number, self.rules[self.dids[form]]
        for number in numbers:
            pattern = best_match(number, [p for p, _ in self.did_patterns])
            if pattern is not None:
                name = next(n for p, n in self.did_patterns if p is pattern)
                return number, self.rules[name]
        return None

    @property
    def routing_enabled(self) -> bool:
        return self.license is None or self.license.routing_enabled


def compile_conditions(stored: list, known: dict[str, Schedule]) -> tuple[Condition, ...]:
    """A row's stored conditions (``ConditionIn.to_data()`` each) for the engine."""
    compiled: list[Condition] = []
    for item in stored or ():
        negate = bool(item.get("not", False))
        if "field" in item:
            compiled.append(FieldCondition(negate, item["field"], parse_operator(item.get("operator", "=")),
                                           str(item.get("value", ""))))  # fmt: skip
        elif "schedule" in item:
            compiled.append(ScheduleCondition(negate, known.get(item["schedule"]), item["schedule"]))
        elif "did" in item:
            compiled.append(DidCondition(negate, tuple(item["did"])))
        elif "country" in item:
            compiled.append(CountryCondition(negate, tuple(item["country"])))
        elif "matches" in item:
            compiled.append(MatchesCondition(negate, item["matches"]))
        else:  # written by a newer version: never holds, rather than match more than the admin asked
            compiled.append(DidCondition(negate, ()))
    return tuple(compiled)


def compile_rule(rule: Rule, box: SecretBox, known: dict[str, Schedule] | None = None) -> CompiledRule:
    if rule.default_voicemail == "yes":
        default = Destination(DestType.VOICEMAIL, rule.default_destination)
    else:
        default = Destination(DestType.EXTENSION, rule.default_destination)
    spec = RuleSpec(
        name=rule.name,
        crm_field=rule.crm_field,
        rows=tuple(Row(Operator(r.operator), r.value, Destination(DestType(r.destination), r.option),
                       compile_conditions(r.conditions, known or {})) for r in rule.rows),  # fmt: skip
        default=default,
        deadline_ms=rule.deadline_ms,
        cache_ttl_s=rule.cache_ttl_s,
        keep_company=rule.keep_company,
        moh_class=rule.moh_class,
        greeting=rule.greeting if rule.location == "ivr" else "",
        dtmf_timeout_ms=rule.dtmf_timeout_ms,
        dtmf_max_digits=rule.dtmf_max_digits,
        default_agent=DestType(rule.default_agent) if rule.default_agent else None,
        agents=AgentOptions(rule.check_availability, rule.last_agent_days, rule.last_agent_outbound,
                            rule.last_agent_min_talk_s),  # fmt: skip
    )
    source: CustomSource | IntegrationSource
    if rule.crm_source == "custom":
        headers = tuple((h["name"], h["value"]) for h in box.decrypt_json(rule.custom_headers_enc, []))
        source = CustomSource(rule.custom_url, rule.custom_post, headers)
    else:
        integration = rule.integration
        assert integration is not None, "validation requires an integration"
        connector = ConnectorSpec(
            integration.id, integration.name, integration.kind, integration.enabled, dict(integration.settings),
            integration.secrets_enc, rule.crm_username, box.decrypt(rule.crm_password_enc),
            integration.log_options.get("log_level", "info"),
        )  # fmt: skip
        source = IntegrationSource(connector, rule.crm_module)
    return CompiledRule(spec, rule.location, source)


def load_rulebook(session: Session, box: SecretBox, settings: Settings, today: date | None = None) -> RuleBook:
    book = RuleBook(version=config_version(session))
    known = {s.name: schedules.compiled(s) for s in schedules.list_all(session)}
    for rule in rules.list_all(session):
        book.rules[rule.name] = compile_rule(rule, box, known)
    for did in assignments.list_dids(session):
        if did.number.startswith("_"):
            book.did_patterns.append((compile_pattern(did.number), did.rule.name))
        else:
            book.dids[did.number] = did.rule.name
    for ivr in assignments.list_ivrs(session):
        book.ivrs[ivr.number] = ivr.rule.name
    book.agents = agents.directory(session)
    text = session.scalar(select(License.text).order_by(License.id.desc()).limit(1))
    book.license = license_state(settings.license_key, text, today or date.today())
    return book
