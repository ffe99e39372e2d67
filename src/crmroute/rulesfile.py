"""The rules file: YAML or JSON with integrations, destinations, rules, DIDs, IVRs, agents, schedules.

Import is all-or-nothing: the whole file is validated first (every bad field
reported by its path), then applied in one transaction, creating or updating
by name/number, so importing the same file twice changes nothing. Strings may
name environment variables as ``${NAME}`` (``$${`` is a literal ``${``). A
secret given as ``********`` (what export writes) keeps the stored value. The
text is read within ``crmroute.textfile``'s bounds (size, depth, aliases, one
of each key), and a file naming none of the sections is refused as empty.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from crmroute import textfile
from crmroute.errors import ConfigError
from crmroute.fieldlabels import describe
from crmroute.names import name_key
from crmroute.schemas import RulesFile, problems
from crmroute.store import agents, assignments, destinations, integrations, licenses, rules, schedules
from crmroute.store.db import bump_config_version, transaction
from crmroute.store.integrations import connector_problems
from crmroute.store.references import References, check_assignment, check_rule, prefixed
from crmroute.store.secrets import SecretBox

ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECTIONS = ("integrations", "destinations", "rules", "dids", "ivrs", "agents", "schedules")


@dataclass
class ImportSummary:
    counts: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in SECTIONS})

    def add(self, section: str, outcome: str) -> None:
        self.counts[section][outcome] += 1

    def lines(self) -> list[str]:
        return [
            f"{section}: {c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
            for section, c in self.counts.items()
            if sum(c.values())
        ]

    def as_dict(self) -> dict:
        return {s: {k: c[k] for k in ("created", "updated", "unchanged")} for s, c in self.counts.items()}


# Over HTTP a file may not read the server's environment: an API token must not
# be a way to read the server's secrets. ``crmroute rules import`` expands them.
NO_ENVIRONMENT: Mapping[str, str] = {}


def parse(text: str, *, environ: Mapping[str, str] | None = None, fmt: str | None = None) -> RulesFile:
    """Read and validate a rules file; ``ConfigError`` lists every problem."""
    raw = load_text(text, fmt)
    found: list[tuple[str, str]] = []
    raw = substitute_env(raw, os.environ if environ is None else environ, "", found)
    try:
        data = RulesFile.model_validate(raw)
    except ValidationError as exc:
        found.extend(problems(exc))
        raise ConfigError(found) from None
    if found:
        raise ConfigError(found)
    return data


def load_text(text: str, fmt: str | None = None) -> dict:
    """The file's top-level mapping, read within ``textfile``'s bounds (size, depth, aliases, keys)."""
    raw = textfile.load_json(text) if fmt == "json" else textfile.load_yaml(text)
    if raw is None or raw == {}:
        raise ConfigError(f"the file is empty: give at least one of {', '.join(SECTIONS)}", field="file")
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping with {', '.join(SECTIONS)}", field="file")
    return raw


def substitute_env(value: Any, environ: Mapping[str, str], path: str, found: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            if match.group(1):  # $${NAME} stays literal
                return "${" + match.group(2) + "}"
            name = match.group(2)
            if environ is NO_ENVIRONMENT:
                found.append((path, f"${{{name}}}: environment variables are expanded only by `crmroute rules "
                                    "import` on the server; send the value itself"))
                return ""
            if name not in environ:
                found.append((path, f"environment variable {name} is not set"))
                return ""
            return environ[name]

        return ENV_REF.sub(replace, value)
    if isinstance(value, list):
        return [substitute_env(v, environ, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute_env(v, environ, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    return value


def check_references(session: Session, data: RulesFile) -> list[tuple[str, str]]:
    """Names that must exist (in the file or the store) and must not repeat."""
    found: list[tuple[str, str]] = []

    def unique(section: str, keys: list[Any], what: str) -> None:
        first: dict[Any, int] = {}
        for i, key in enumerate(keys):
            if key in first:
                # counted from 1 as the CLI shows items; rule and integration names match ignoring case and spacing
                found.append((f"{section}[{i}].{what}", f"the same as {describe(f'{section}[{first[key]}]')}"))
            first.setdefault(key, i)

    unique("integrations", [name_key(i.name) for i in data.integrations], "name")
    unique("destinations", [(d.type, d.ref) for d in data.destinations], "number")
    unique("rules", [name_key(r.name) for r in data.rules], "name")
    unique("dids", [d.number for d in data.dids], "number")
    unique("ivrs", [i.number for i in data.ivrs], "number")
    unique("agents", [a.name for a in data.agents], "name")
    unique("agents", [a.extension for a in data.agents], "extension")
    unique("schedules", [s.name for s in data.schedules], "name")

    for i, integration in enumerate(data.integrations):  # a masked secret counts as given
        found += prefixed(f"integrations[{i}]", connector_problems(integration.kind, integration.settings,
                                                                   integration.secrets))  # fmt: skip
    for i, agent in enumerate(data.agents):  # identities name integrations of the file or the store
        found += prefixed(f"agents[{i}]", agents.identity_problems(session, agent, (x.name for x in data.integrations)))
    refs = References.stored(session).overlay(data)
    for i, rule in enumerate(data.rules):
        found += prefixed(f"rules[{i}]", check_rule(refs, rule, refs.assigned.get(rule.name, ())))
    for section, items, location in (("dids", data.dids, "did"), ("ivrs", data.ivrs, "ivr")):
        for i, item in enumerate(items):
            found += prefixed(f"{section}[{i}]", check_assignment(refs, location, item))
    return found


def import_rules(
    factory: sessionmaker[Session], box: SecretBox, data: RulesFile, *, license_key: str = ""
) -> ImportSummary:
    """Apply a validated file in one transaction; ``ConfigError`` if a name it uses is missing.

    ``license_key`` (``settings.license_key``) enforces the installed license's rule limit.
    """
    summary = ImportSummary()
    with transaction(factory) as session:
        found = check_references(session, data)
        stored_names = rules.names(session)
        new = [f"rules[{i}].name" for i, r in enumerate(data.rules) if r.name not in stored_names]
        found += licenses.rule_limit_problems(session, license_key, new)
        if found:
            raise ConfigError(found)

        def apply(section: str, upsert: Callable[[], Any], snapshot: Callable[[Any], dict], before: dict | None) -> Any:
            row = upsert()
            session.flush()
            if before is None:
                summary.add(section, "created")
            else:
                summary.add(section, "unchanged" if snapshot(row) == before else "updated")
            return row

        # Secrets are re-encrypted only when they change, so their ciphertext tells.
        def integration_state(row: Any) -> dict:
            return integrations.to_data(row, box) | {"secrets_enc": row.secrets_enc}

        def rule_state(row: Any) -> dict:
            return rules.to_data(row, box) | {"p": row.crm_password_enc, "h": row.custom_headers_enc}

        stored = integrations.by_name(session)
        for item in data.integrations:
            old = stored.get(item.name)
            apply("integrations", lambda: integrations.upsert(session, box, item), integration_state,
                  integration_state(old) if old else None)  # fmt: skip

        stored_dests = {(d.type, d.ref): d for d in destinations.list_all(session)}
        for item in data.destinations:
            old = stored_dests.get((item.type, item.ref))
            apply("destinations", lambda: destinations.upsert(session, item), destinations.to_data,
                  destinations.to_data(old) if old else None)  # fmt: skip

        stored_agents = {a.name: a for a in agents.list_all(session)}
        final = {a.name: a.extension for a in stored_agents.values()} | {a.name: a.extension for a in data.agents}
        for i, item in enumerate(data.agents):  # an agent the file leaves alone may hold the extension
            holder = next((n for n, ext in final.items() if ext == item.extension and n != item.name), None)
            if holder is not None:
                raise ConfigError(f"extension {item.extension!r} belongs to agent {holder!r}",
                                  field=f"agents[{i}].extension")  # fmt: skip
        snapshots = {a.name: agents.to_data(a) for a in stored_agents.values()}
        renumbered = [stored_agents[a.name] for a in data.agents
                      if a.name in stored_agents and stored_agents[a.name].extension != a.extension]  # fmt: skip
        for row in renumbered:  # out of the way first: two agents may swap extensions
            row.extension = f"~{row.id}"
        session.flush()
        for item in data.agents:
            old = snapshots.get(item.name)
            apply("agents", lambda: agents.upsert(session, item), agents.to_data, old)

        stored_schedules = {s.name: s for s in schedules.list_all(session)}
        for item in data.schedules:  # before the rules whose rows name them
            old = stored_schedules.get(item.name)
            apply("schedules", lambda: schedules.upsert(session, item), schedules.to_data,
                  schedules.to_data(old) if old else None)  # fmt: skip

        by_integration = integrations.by_name(session)
        stored_rules = {r.name: r for r in rules.list_all(session)}

        for item in data.rules:
            old = stored_rules.get(item.name)
            apply("rules", lambda: rules.upsert(session, box, item, by_integration), rule_state,
                  rule_state(old) if old else None)  # fmt: skip

        by_rule = {r.name: r for r in rules.list_all(session)}
        stored_dids = {d.number: d for d in assignments.list_dids(session)}
        for item in data.dids:
            old = stored_dids.get(item.number)
            apply("dids", lambda: assignments.upsert_did(session, item, by_rule), assignments.to_data,
                  assignments.to_data(old) if old else None)  # fmt: skip
        stored_ivrs = {i.number: i for i in assignments.list_ivrs(session)}
        for item in data.ivrs:
            old = stored_ivrs.get(item.number)
            apply("ivrs", lambda: assignments.upsert_ivr(session, item, by_rule), assignments.to_data,
                  assignments.to_data(old) if old else None)  # fmt: skip

        if any(c["created"] or c["updated"] for c in summary.counts.values()):
            bump_config_version(session)
    return summary


def export_rules(session: Session, box: SecretBox) -> dict:
    """Everything configured, in rules-file shape, secrets masked."""
    return {
        "integrations": [integrations.to_data(i, box) for i in integrations.list_all(session)],
        "destinations": [destinations.to_data(d) for d in destinations.list_all(session)],
        "rules": [rules.to_data(r, box) for r in rules.list_all(session)],
        "dids": [assignments.to_data(d) for d in assignments.list_dids(session)],
        "ivrs": [assignments.to_data(i) for i in assignments.list_ivrs(session)],
        "agents": [agents.to_data(a) for a in agents.list_all(session)],
        "schedules": [schedules.to_data(s) for s in schedules.list_all(session)],
    }


def dump(data: dict, fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
