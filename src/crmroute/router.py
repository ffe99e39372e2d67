"""The routing service: finds the rule for a call, asks its CRM, records the decision.

Shared by the AGI server, ``crmroute route`` (dry run) and the web UI's Test
rule. It holds the compiled ``RuleBook`` (reloaded when the store's
``config_version`` changes), the one shared HTTP client, and the decision log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.agi.jumps import JumpTable
from crmroute.connectors.base import Record
from crmroute.connectors.custom import fetch_custom
from crmroute.deadline import Deadline
from crmroute.connectors.pool import ConnectorPool
from crmroute.metrics import Metrics
from crmroute.routing.engine import Fetch, LookupKey, decide, lookup_key
from crmroute.routing.trace import Decision, Status
from crmroute.rulebook import CompiledRule, CustomSource, IntegrationSource, RuleBook, load_rulebook
from crmroute.settings import Settings
from crmroute.store.db import config_version
from crmroute.store.decisions import CallMeta, DecisionLog
from crmroute.store.secrets import SecretBox

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 1.0  # seconds between checks of the store's config_version


@dataclass(frozen=True)
class Target:
    """What the dialplan asked for: a DID, an IVR number or a rule name."""

    kind: str  # "did", "ivr" or "rule"
    value: str = ""  # the IVR number or rule name; for DIDs the explicit number, if any


@dataclass
class Resolved:
    rule: CompiledRule | None
    did: str = ""
    ivr: str = ""
    refusal: Decision | None = None  # no_rule / unlicensed, when there is no rule to run


class Router:
    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        box: SecretBox,
        http: httpx.AsyncClient,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.settings = settings
        self._factory = factory
        self._box = box
        self.http = http
        self.decision_log = decision_log
        self.pool = ConnectorPool(http, box, settings.default_region)
        self.metrics = Metrics()
        if decision_log is not None:
            self.metrics.track(self.metrics.decisions_pending, lambda: decision_log.pending)
            self.metrics.track(self.metrics.decisions_dropped, lambda: decision_log.dropped)
        self.book = RuleBook()
        self._task: asyncio.Task | None = None

    # --- the rule book -------------------------------------------------------

    def load(self) -> None:
        """Build the rule book from the store (blocking; call at start or in a thread)."""
        with self._factory() as session:
            self.book = load_rulebook(session, self._box, self.settings)
        logger.info("loaded %d rules (config version %d)", len(self.book.rules), self.book.version)

    async def reload_if_changed(self) -> bool:
        def changed() -> bool:
            with self._factory() as session:
                return config_version(session) != self.book.version

        if await asyncio.to_thread(changed):
            await asyncio.to_thread(self.load)
            return True
        return False

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        if self.decision_log is not None:
            self.decision_log.start()
        self._task = asyncio.create_task(self._watch(), name="rulebook-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.decision_log is not None:
            await self.decision_log.close()
        await self.pool.aclose()

    async def _watch(self) -> None:
        """Keep routing on the last good rule book while the database is away."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            try:
                await self.reload_if_changed()
            except SQLAlchemyError as exc:
                logger.warning("cannot check for rule changes, routing on the loaded rules: %s", exc)
            except Exception:
                logger.exception("reloading rules failed; routing on the loaded rules")

    # --- a call ----------------------------------------------------------------

    def resolve(self, target: Target, *, extension: str = "", dnid: str = "") -> Resolved:
        """The rule for ``target``, or the refusal (``no_rule``/``unlicensed``) to answer with."""
        book = self.book
        resolved = Resolved(rule=None)
        if target.kind == "did":
            hit = book.rule_for_did(target.value, extension, dnid)
            resolved.did = hit[0] if hit else (target.value or extension or dnid)
            resolved.rule = hit[1] if hit else None
            what = f"DID {resolved.did}"
        elif target.kind == "ivr":
            resolved.ivr = target.value
            resolved.rule = book.rule_for_ivr(target.value)
            what = f"IVR {target.value}"
        else:
            resolved.rule = book.rule_named(target.value)
            what = f"rule name {target.value!r}"
        if not book.routing_enabled:
            state = book.license
            resolved.refusal = Decision(Status.UNLICENSED, rule=resolved.rule.name if resolved.rule else "",
                                        reason="unlicensed", error=state.message if state else "")  # fmt: skip
        elif resolved.rule is None:
            resolved.refusal = Decision(Status.NO_RULE, reason="no_rule", error=f"no rule assigned to {what}")
        return resolved

    async def decide(self, rule: CompiledRule, *, caller_id: str, dtmf: str = "", did: str = "") -> Decision:
        """Ask the rule's CRM under the rule's deadline and pick the destination."""
        deadline = Deadline.after_ms(rule.spec.deadline_ms or self.settings.deadline_ms)
        key = lookup_key(caller_id, dtmf)
        found: list[Record] = []  # the CRM record the connector found, for the trace and the call logger
        fetch = self.fetcher(rule, caller_id=caller_id, did=did, deadline=deadline, found=found)
        decision = await decide(rule.spec, key, fetch, deadline)
        if isinstance(rule.source, IntegrationSource) and decision.key:
            record = found[0] if found else None
            note = f"{rule.source.integration}: {record.describe() if record else f'no {rule.source.module} record matches'}"
            if record is not None:
                decision.record_module, decision.record_id = record.module, record.id
            if decision.status != Status.FALLBACK or record is not None:
                decision.steps.insert(1, note)  # after the lookup key
        return decision

    def fetcher(
        self, rule: CompiledRule, *, caller_id: str, did: str, deadline: Deadline, found: list[Record]
    ) -> Fetch:
        source = rule.source
        if isinstance(source, CustomSource):

            async def fetch(key: LookupKey) -> str | None:
                return await fetch_custom(
                    self.http, url=source.url, post=source.post, headers=list(source.headers),
                    field_name=rule.spec.crm_field, key=key, caller_id=caller_id, did=did,
                    timeout=max(deadline.remaining(), 0.001),
                )  # fmt: skip

            return fetch

        async def ask_connector(key: LookupKey) -> str | None:
            connector = self.pool.get(source.connector)
            return await connector.fetch(key, source.module, rule.spec.crm_field, deadline=deadline, found=found)

        return ask_connector

    async def dry_run(self, target: Target, *, caller_id: str, dtmf: str = "") -> dict:
        """The trace a call would produce, without a call and without logging it.

        Rules changed by any process are seen at once. ``jump`` is the
        ``context,extension,priority`` a call would continue at (``None`` without one).
        """
        await self.reload_if_changed()
        resolved = self.resolve(target)
        if resolved.refusal is not None or resolved.rule is None:
            decision = resolved.refusal or Decision(Status.NO_RULE)
        else:
            decision = await self.decide(resolved.rule, caller_id=caller_id, dtmf=dtmf, did=resolved.did)
        jump = JumpTable.from_settings(self.settings).jump_for(decision.destination)
        return decision.as_dict() | {
            "did": resolved.did, "ivr": resolved.ivr, "caller": caller_id, "dtmf": dtmf,
            "jump": ",".join(jump) if jump else None,
        }  # fmt: skip

    def record(self, decision: Decision, meta: CallMeta) -> None:
        """Log one call's decision and count it in the metrics."""
        if self.decision_log is not None:
            self.decision_log.record(decision, meta)
        rule = self.book.rules.get(decision.rule)
        if rule is None or decision.key == "":  # the CRM was not asked
            self.metrics.observe(decision)
        elif isinstance(rule.source, CustomSource):
            self.metrics.observe(decision, integration="custom", kind="custom")
        else:
            self.metrics.observe(decision, integration=rule.source.integration, kind=rule.source.kind)
