"""The routing service: finds the rule for a call, asks its CRM, records the decision.

Shared by the AGI server, ``crmroute route`` (dry run) and the web UI's Test
rule. It holds the compiled ``RuleBook`` (reloaded when the store's
``config_version`` changes), the one shared HTTP client, the decision log,
and the ``Guards`` every CRM lookup passes (``crmroute.resilience``):

1. the value cache, per (CRM source, module, key, field); TTL from the rule,
   else the integration's ``cache_ttl_s``, else ``CRMROUTE_CACHE_TTL_S``;
   "not found" for at most ``CRMROUTE_CACHE_NEGATIVE_TTL_S``; failures never;
2. single-flight: a lookup already in flight is waited for, not repeated;
3. the circuit breaker of the source (an integration, or a Custom CRM
   host): open, the call falls back at once with reason ``circuit_open``;
4. the rate budget and concurrency limit of the source, waited for only
   within the call's deadline (else reason ``rate_budget``); a 429 pauses
   the whole source for its ``Retry-After``.

None of it touches the database: calls keep routing on the loaded rules
while it is away, and the decision log buffers their rows.

Rules with ``owner`` / ``last_agent`` destinations get an ``AgentPicker``
(``routing/agentpick.py``) per call: the owner comes with the lookup
(``Connector.fetch(owner=True)``, no extra request), the last agent from the
in-memory call-log index ``last_agents`` (refreshed with the rule book), and
availability from ``presence`` (the call logger's AMI states; ``None``: AMI
off, every agent assumed available).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.agi.jumps import JumpTable
from crmroute.configsync import ConfigSync
from crmroute.connectors._http import MAX_CONNECTIONS
from crmroute.connectors.base import Record
from crmroute.connectors.custom import fetch_custom_fields
from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError, ConnectorTimeout, ConnectorUnavailable, CrmrouteError, RateLimited
from crmroute.metrics import Metrics
from crmroute.resilience.breaker import Admission
from crmroute.resilience.guards import LOCAL, Guards
from crmroute.resilience.shared import SharedState
from crmroute.routing.conditions import CallFacts
from crmroute.routing.agentpick import AgentPicker, Owner, Presence
from crmroute.routing.engine import WITHHELD_CALLER_IDS, Fetch, Fetched, LookupKey, decide, lookup_key
from crmroute.routing.lastagent import LastAgents, Talk
from crmroute.routing.trace import Decision, DestType, Status
from crmroute.rulebook import CompiledRule, CustomSource, IntegrationSource, RuleBook, load_rulebook
from crmroute.settings import Settings
from crmroute.store import calllog
from crmroute.store.credentials import CredentialStore
from crmroute.store.db import config_version
from crmroute.store.decisions import CallMeta, DecisionLog
from crmroute.store.secrets import SecretBox

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 1.0  # seconds between polls of the store's config_version (notices come at once: configsync.py)
PRELOAD_TIMEOUT = 10.0  # seconds to read an integration's stored credentials outside any call
# A CRM request may outlive the deadline of the call that started it by this much. The call
# itself falls back at its deadline (the engine stops waiting); the request's own time-out,
# with its connection teardown, comes after the decisions are out, so a herd of calls meeting
# their deadline at once is not slowed by it, and a slightly late answer still fills the cache.
LATE_ANSWER_GRACE_S = 0.25
# The CRM is given the call's deadline less this (at most a tenth of it): the time to answer the call
# on time, even when a hundred calls give up on a silent CRM at the same moment (measured: ~30 ms).
ANSWER_RESERVE_MS = 25


@dataclass(frozen=True)
class Target:
    """What the dialplan asked for: a DID, an IVR number or a rule name."""

    kind: str  # "did", "ivr" or "rule"
    value: str = ""  # the IVR number or rule name; for DIDs the explicit number, if any


@dataclass(frozen=True, slots=True)
class Answer:
    """What one CRM request gave (and what the cache keeps)."""

    value: str | None
    record: Record | None  # integrations: the record found (identity only)
    found: bool  # False: no such record -- cached for the shorter negative TTL
    values: tuple[tuple[str, str | None], ...] = ()  # the rule's extra fields (rows' conditions), same request
    matches: int = 0  # records that matched the key

    def fetched(self) -> Fetched:
        return Fetched(self.value, dict(self.values), self.matches)


def encode_answer(answer: Answer) -> dict:
    """An answer as the shared cache keeps it (JSON; the record's identity only)."""
    record = answer.record
    return {"v": answer.value, "f": answer.found, "x": [list(pair) for pair in answer.values], "m": answer.matches,
            "r": None if record is None else [record.module, record.id, record.matches, record.url, record.owner]}


def decode_answer(data: dict) -> Answer:
    r = data.get("r")
    return Answer(data.get("v"), None if r is None else Record(r[0], r[1], {}, *r[2:5]), bool(data.get("f")),
                  tuple((str(k), v) for k, v in data.get("x") or ()), int(data.get("m") or 0))


@dataclass(frozen=True, slots=True)
class Source:
    """A CRM source as the breaker, the metrics and the messages know it."""

    id: str  # integration:<id> or custom:<origin>
    name: str  # the integration's name, or "Custom CRM https://host:port"
    kind: str


@dataclass(slots=True)
class Lookup:
    """How one call's value was obtained, for its trace."""

    record: Record | None = None
    cached: bool = False
    cache_age: float = 0.0
    asked: bool = False  # the CRM was asked for this call (a request started or joined)
    shared: bool = False  # joined a request another call had started


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
        self.pool = ConnectorPool(http, box, settings.default_region, CredentialStore(factory, box),
                                  data_dir=settings.data_dir)  # fmt: skip
        self.guards = Guards(settings, max_in_flight=MAX_CONNECTIONS, encode=encode_answer, decode=decode_answer)
        self.metrics = Metrics()
        self.metrics.track(self.metrics.cache_entries, lambda: len(self.guards.cache))
        self.metrics.track_breakers(lambda: self.guards.breakers())
        self.metrics.track_quotas(lambda: ((budget.name, budget) for _, budget in self.guards.budgets()))
        self.metrics.node_info.labels(node=settings.node).set(1)
        if settings.redis_url:
            self.share(SharedState(settings.redis_url, settings.node))
        if decision_log is not None:
            self.metrics.track(self.metrics.decisions_pending, lambda: decision_log.pending)
            self.metrics.track(self.metrics.decisions_dropped, lambda: decision_log.dropped)
        self.book = RuleBook()
        self._reload_lock = asyncio.Lock()
        self.sync: ConfigSync | None = None
        self._preloading: asyncio.Task | None = None
        self.presence: Presence | None = None  # the call logger's Availability, when AMI is on
        self.last_agents = LastAgents(settings.default_region)

    def share(self, shared: SharedState) -> None:
        """Keep the guards' state in Redis with the other nodes (started by ``start()``)."""
        self.guards.shared = shared
        self.guards.forget_budgets()  # rebuilt as shared ones
        self.metrics.track(self.metrics.shared_state_up, lambda: float(shared.up))
        self.metrics.track(self.metrics.cluster_nodes, lambda: shared.live_nodes)

    # --- the rule book -------------------------------------------------------

    def load(self) -> None:
        """Build the rule book from the store (blocking; call at start or in a thread)."""
        with self._factory() as session:
            self.book = load_rulebook(session, self._box, self.settings)
        logger.info("loaded %d rules (config version %d)", len(self.book.rules), self.book.version)
        self.load_last_agents()

    def load_last_agents(self) -> None:
        """Read the call-log rows not seen yet into ``last_agents`` (blocking; only when a rule uses last_agent)."""
        days = self.book.last_agent_days
        if not days:
            return
        since = datetime.now(timezone.utc) - timedelta(days=days)
        index = self.last_agents
        with self._factory() as session:
            while True:
                rows = calllog.connected_calls(session, since=since, after_id=index.last_id)
                for row_id, number, started, direction, extension, talk in rows:
                    index.add(number, Talk(started, extension, direction, talk))
                    index.last_id = row_id
                if len(rows) < 5000:
                    break
        index.forget_before(since)

    async def reload_if_changed(self) -> bool:
        def load_if_changed() -> bool:  # one session and one thread hop: a notice's reload is on the clock
            with self._factory() as session:
                if config_version(session) == self.book.version:
                    return False
                self.book = load_rulebook(session, self._box, self.settings)
            logger.info("loaded %d rules (config version %d)", len(self.book.rules), self.book.version)
            return True

        async with self._reload_lock:  # a notice, the poll and a dry run may ask at once: load once
            changed = await asyncio.to_thread(load_if_changed)
            if self.book.last_agent_days:  # the call log's new rows (only those): last_agent's index
                await asyncio.to_thread(self.load_last_agents)
            if not changed:
                return False
        if self.sync is not None:  # a running service: new or changed integrations, off the reload's path
            self._preloading = asyncio.create_task(self.preload_credentials(), name="preload-credentials")
        return True

    async def settled(self) -> None:
        """Wait (briefly) for a reload a change notice started, so a call right after a change sees it."""
        if self.sync is not None:
            await self.sync.settled()

    async def preload_credentials(self, specs: list[ConnectorSpec] | None = None) -> None:
        """Take the integrations' stored tokens before calls need them (see store/credentials.py); best effort."""
        if specs is None:
            specs = [r.source.connector for r in self.book.rules.values() if isinstance(r.source, IntegrationSource)]
        for spec in {(s.integration_id, s.username): s for s in specs if s.enabled}.values():
            try:
                connector = self.pool.get(spec)
                if connector.credentials is not None and connector._token is None:
                    await asyncio.wait_for(asyncio.to_thread(connector.credentials.preload, connector), PRELOAD_TIMEOUT)
            except (ConnectorError, SQLAlchemyError, asyncio.TimeoutError, CrmrouteError) as exc:
                logger.info("no stored credentials taken for integration %r: %s", spec.name, type(exc).__name__)

    async def start(self) -> None:
        if self.guards.shared is not None:  # Redis away at start: the node starts alone, and joins when it is back
            await self.guards.shared.start()
        await asyncio.to_thread(self.load)
        await self.preload_credentials()
        if self.decision_log is not None:
            self.decision_log.start()
        self.sync = ConfigSync(self.reload_if_changed, lambda: self.book.version, self.settings.db_url,
                               poll=RELOAD_INTERVAL)  # fmt: skip
        self.sync.start()

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.close()
        if self._preloading is not None:
            self._preloading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._preloading
        await self.guards.aclose()
        if self.guards.shared is not None:
            await self.guards.shared.close()
        if self.decision_log is not None:
            await self.decision_log.close()
        await self.pool.aclose()

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

    async def decide(
        self,
        rule: CompiledRule,
        *,
        caller_id: str,
        dtmf: str = "",
        did: str = "",
        on_crm: Callable[[], None] | None = None,
        fresh: bool = False,
        since: float | None = None,
        at: datetime | None = None,
        called: str = "",
    ) -> Decision:
        """Ask the rule's CRM under the rule's deadline and pick the destination.

        The deadline counts from ``since`` (a ``time.monotonic()`` value: when
        the call's request arrived), else from now; the CRM is waited for
        until ``ANSWER_RESERVE_MS`` before it. ``on_crm`` is called once
        when the CRM is really asked (not for a cached value or an open
        circuit): the AGI script starts the ringing or music on hold then.
        ``fresh`` (dry runs) skips the value cache, single-flight and the
        circuit breaker: the CRM is always asked. ``at`` is the instant the rows'
        schedule conditions are checked at (default: now); ``called`` the number
        the rows' DID conditions see when the call came by IVR or rule name (default: ``did``).
        """
        deadline_ms = rule.spec.deadline_ms or self.settings.deadline_ms
        deadline = Deadline.after_ms(deadline_ms - min(ANSWER_RESERVE_MS, deadline_ms / 10), since=since)
        key = lookup_key(caller_id, dtmf)
        notes = Lookup()
        fetch = self.fetcher(rule, caller_id=caller_id, did=did, deadline=deadline, notes=notes, on_crm=on_crm,
                             fresh=fresh)  # fmt: skip
        facts = CallFacts(at=at or datetime.now(timezone.utc), did=did or called, caller=caller_id,
                          region=self.settings.default_region)  # fmt: skip
        choose = self.agent_picker(rule, notes, caller_id) if rule.spec.agent_types else None
        decision = await decide(rule.spec, key, fetch, deadline, facts, choose)
        if not decision.key:
            return decision
        at = 1  # trace notes go after the lookup key
        if notes.cached:
            decision.cached, decision.crm_ms = True, None
            decision.steps.insert(at, f"value from the cache (asked the CRM {notes.cache_age:.1f} s ago)")
            at += 1
        elif notes.shared:
            decision.steps.insert(at, "shared the CRM request already in flight for the same lookup")
            at += 1
        if decision.reason == "circuit_open":
            decision.crm_ms = None
        if isinstance(rule.source, IntegrationSource):
            record = notes.record
            note = f"{rule.source.integration}: {record.describe() if record else f'no {rule.source.module} record matches'}"
            if record is not None:
                decision.record_module, decision.record_id = record.module, record.id
            if decision.status != Status.FALLBACK or record is not None:
                decision.steps.insert(at, note)
        return decision

    def agent_picker(self, rule: CompiledRule, notes: Lookup, caller_id: str) -> AgentPicker:
        """Chooses this call's owner / last agent (see ``routing/agentpick.py``)."""
        source = rule.source
        integration_id = source.connector.integration_id if isinstance(source, IntegrationSource) else None

        def owner() -> Owner:
            record = notes.record
            return Owner(False) if record is None else Owner(True, record.owner, record.describe())

        caller = caller_id.strip() if caller_id.strip().lower() not in WITHHELD_CALLER_IDS else ""
        return AgentPicker(self.book.agents, rule.spec.agents, presence=self.presence,
                           integration_id=integration_id, owner=owner, last_agents=self.last_agents,
                           caller=caller)  # fmt: skip

    def fetcher(
        self,
        rule: CompiledRule,
        *,
        caller_id: str,
        did: str,
        deadline: Deadline,
        notes: Lookup | None = None,
        on_crm: Callable[[], None] | None = None,
        fresh: bool = False,
    ) -> Fetch:
        """The ``fetch`` for ``decide()``: cache, single-flight, circuit breaker, rate budget, then the CRM."""
        notes = notes if notes is not None else Lookup()
        source = rule.source
        field_name = rule.spec.crm_field
        extra = rule.spec.extra_fields  # asked in the same request as the rule's field
        owner = DestType.OWNER in rule.spec.agent_types  # the owner is asked in the same request
        late = Deadline(deadline.at + LATE_ANSWER_GRACE_S)  # the request's own; the call still ends at ``deadline``
        if isinstance(source, CustomSource):

            async def ask_custom(key: LookupKey) -> Answer:
                budget = self.guards.custom_budget(source.url)
                async with budget.slot(deadline.at):
                    try:
                        values = await fetch_custom_fields(
                            self.http, url=source.url, post=source.post, headers=list(source.headers),
                            field_name=field_name, key=key, caller_id=caller_id, did=did,
                            timeout=max(late.remaining(), 0.001), extra_fields=extra,
                        )  # fmt: skip
                    except RateLimited as exc:
                        if exc.reason == "http_429":
                            budget.pause(getattr(exc, "retry_after", None))
                        raise
                value = values.pop(field_name)
                return Answer(value, None, found=value is not None, values=tuple(values.items()),
                              matches=int(value is not None))  # fmt: skip

            def custom_identity(key: LookupKey) -> tuple[Hashable, Source]:
                dtmf = key.value if key.source == "dtmf" else ""
                caller = key.value if key.source == "caller_id" else caller_id
                lookup = ("custom", source.url, source.post, source.headers, field_name, dtmf, caller,
                          did if source.post else "", extra)  # fmt: skip
                origin = self.guards.origin(source.url)
                return lookup, Source(f"custom:{origin}", f"Custom CRM {origin}", "custom")

            return self._guarded(rule, deadline, notes, on_crm, fresh, ask_custom, custom_identity, None)

        async def ask_connector(key: LookupKey) -> Answer:
            connector = self.pool.get(source.connector)
            connector.budget = self.guards.integration_budget(source.connector, connector)
            found: list[Record] = []
            values = await connector.fetch_fields(key, source.module, (field_name, *extra), deadline=late, found=found,
                                                  owner=owner)  # fmt: skip
            record = found[0] if found else None
            if record is not None:  # kept in the cache: identity, matches and owner only, not every field
                record = Record(record.module, record.id, {}, record.matches, record.url, record.owner)
            value = values.pop(field_name)
            return Answer(value, record, found=record is not None, values=tuple(values.items()),
                          matches=record.matches if record is not None else 0)  # fmt: skip

        def integration_identity(key: LookupKey) -> tuple[Hashable, Source]:
            spec = source.connector
            lookup = ("integration", spec.integration_id, spec.username, spec.fingerprint, source.module,
                      key.source, key.value, field_name, extra, owner)  # fmt: skip
            return lookup, Source(f"integration:{spec.integration_id}", spec.name, spec.kind)

        def integration_ttl() -> int | None:
            connector = self.pool.get(source.connector)  # disabled / no connector: fallback before anything else
            return connector.settings.cache_ttl_s

        return self._guarded(rule, deadline, notes, on_crm, fresh, ask_connector, integration_identity, integration_ttl)

    def _guarded(
        self,
        rule: CompiledRule,
        deadline: Deadline,
        notes: Lookup,
        on_crm: Callable[[], None] | None,
        fresh: bool,
        ask: Callable[[LookupKey], Awaitable[Answer]],
        identity: Callable[[LookupKey], tuple[Hashable, Source]],
        source_ttl: Callable[[], int | None] | None,
    ) -> Fetch:
        guards = self.guards
        late = Deadline(deadline.at + LATE_ANSWER_GRACE_S)  # as the request's own (see fetcher)

        async def fetch(key: LookupKey) -> Fetched:
            if fresh:
                answer = await ask(key)
                notes.record = answer.record
                return answer.fetched()
            ttl = rule.spec.cache_ttl_s
            if ttl is None:
                ttl = source_ttl() if source_ttl is not None else None
                if ttl is None:
                    ttl = self.settings.cache_ttl_s
            lookup, crm = identity(key)
            if ttl > 0:
                entry = guards.cache.get(lookup)
                if entry is not None:
                    self.metrics.cache_hits.inc()
                    notes.cached, notes.cache_age = True, entry.age(guards.cache.clock())
                    notes.record = entry.value.record
                    return entry.value.fetched()
            negative_ttl = min(ttl, self.settings.cache_negative_ttl_s)

            async def asking(admission: Admission, leased: bool) -> Answer:
                self.metrics.crm_requests.labels(source=crm.name).inc()
                try:
                    answer = await ask(key)
                except BaseException as exc:
                    # RateLimited: the CRM (or our budget) asked us to slow down, which is not "down"
                    failed = isinstance(exc, ConnectorError) and not isinstance(exc, RateLimited)
                    guards.outcome(crm.id, crm.name, admission, "failure" if failed else "release")
                    if leased:
                        guards.give_back(lookup)
                    raise
                guards.outcome(crm.id, crm.name, admission, "success")
                if ttl > 0:  # failures are never cached; "not found" only briefly
                    guards.keep(lookup, answer, ttl if answer.found else negative_ttl, leased=leased)
                return answer

            async def admitted(leased: bool) -> Admission:
                admission = await guards.admit(crm.id, crm.name, deadline.at, late.remaining())
                if admission is None:
                    if leased:
                        guards.give_back(lookup)
                    breaker = guards.breaker(crm.id, crm.name)
                    raise ConnectorUnavailable(
                        f"{crm.name}: circuit open after {breaker.threshold} consecutive failures; "
                        f"next try in {breaker.retry_in():.0f} s", kind=crm.kind, operation="fetch",
                        reason="circuit_open",
                    )  # fmt: skip
                return admission

            work: Callable[[], Awaitable[Answer]] | None = None
            if not guards.flights.running(lookup):
                claim = await guards.claim(lookup, deadline.at, late.remaining()) if ttl > 0 else LOCAL
                if claim.kind == "value":  # another node asked the CRM within the TTL
                    self.metrics.cache_hits.inc()
                    notes.cached, notes.cache_age, notes.record = True, claim.age, claim.answer.record
                    return claim.answer.fetched()
                if guards.flights.running(lookup):  # a call of this node started it meanwhile: join that
                    if claim.kind == "lease":
                        guards.give_back(lookup)
                elif claim.kind == "wait":  # a node is asking the CRM for this lookup: wait for its answer
                    notes.shared = True

                    async def work() -> Answer:
                        try:
                            turn = await guards.await_peer(lookup, late.at, late.remaining())
                        except TimeoutError:
                            raise ConnectorTimeout(f"{crm.name}: the request another node sent for this lookup "
                                                   "did not answer in time", kind=crm.kind, operation="fetch") from None
                        if turn.kind == "value":
                            return turn.answer
                        leased = turn.kind == "lease"  # its request failed (or the node left): ours now
                        return await asking(await admitted(leased), leased)

                else:
                    leased = claim.kind == "lease"
                    admission = await admitted(leased)
                    if guards.flights.running(lookup):  # started here while Redis answered: join that
                        guards.outcome(crm.id, crm.name, admission, "release")
                        if leased:
                            guards.give_back(lookup)
                    else:

                        async def work() -> Answer:
                            return await asking(admission, leased)

            if ttl > 0:
                self.metrics.cache_misses.inc()
            notes.asked = True
            if on_crm is not None:
                on_crm()
            answer, shared = await guards.flights.do(lookup, work)
            notes.shared = notes.shared or shared
            notes.record = answer.record
            return answer.fetched()

        return fetch

    async def dry_run(self, target: Target, *, caller_id: str, dtmf: str = "", at: datetime | None = None) -> dict:
        """The trace a call would produce, without a call and without logging it.

        Rules changed by any process are seen at once. ``jump`` is the
        ``context,extension,priority`` a call would continue at (``None`` without one).
        ``at``: the instant schedules are checked at (default: now).
        """
        await self.reload_if_changed()
        resolved = self.resolve(target)
        if resolved.refusal is not None or resolved.rule is None:
            decision = resolved.refusal or Decision(Status.NO_RULE)
        else:
            if isinstance(resolved.rule.source, IntegrationSource):  # before the call's deadline starts
                await self.preload_credentials([resolved.rule.source.connector])
            decision = await self.decide(resolved.rule, caller_id=caller_id, dtmf=dtmf, did=resolved.did, fresh=True,
                                         at=at)  # fmt: skip
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
