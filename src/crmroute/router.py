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
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.agi.jumps import JumpTable
from crmroute.connectors._http import MAX_CONNECTIONS
from crmroute.connectors.base import Connector, Record
from crmroute.connectors.custom import fetch_custom
from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError, ConnectorUnavailable, CrmrouteError, RateLimited
from crmroute.metrics import Metrics
from crmroute.resilience import BreakerState, Budget, CircuitBreaker, Quota, SingleFlight, ValueCache
from crmroute.resilience.budget import QUOTA_WARN
from crmroute.routing.agentpick import AgentPicker, Owner, Presence
from crmroute.routing.engine import WITHHELD_CALLER_IDS, Fetch, LookupKey, decide, lookup_key
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

RELOAD_INTERVAL = 1.0  # seconds between checks of the store's config_version
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


class Guards:
    """The value cache, single-flight, and each CRM source's breaker and budget (see the module docstring)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock  # of the cache and the breakers (tests move it); budgets follow the deadline's clock
        self.cache: ValueCache = ValueCache(settings.cache_max_entries, clock=clock)
        self.flights: SingleFlight[Answer] = SingleFlight()
        self._breakers: dict[str, tuple[str, CircuitBreaker]] = {}  # source id -> (name, breaker)
        self._budgets: dict[str, tuple[tuple, Budget]] = {}  # source id -> (its limits, budget)
        self._origins: dict[str, str] = {}

    def breaker(self, source_id: str, name: str) -> CircuitBreaker:
        known = self._breakers.get(source_id)
        if known is None:
            breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_cooldown_s, clock=self.clock)
            self._breakers[source_id] = (name, breaker)
            return breaker
        if known[0] != name:  # an integration was renamed
            self._breakers[source_id] = (name, known[1])
        return known[1]

    def breakers(self) -> Iterator[tuple[str, CircuitBreaker]]:
        """(source name, breaker) of every source asked so far."""
        return iter(list(self._breakers.values()))

    def circuit(self, source_id: str) -> str:
        """How a source's circuit stands, for people: ``closed``, ``open (next try in 12 s)``... ``""`` if never asked."""
        known = self._breakers.get(source_id)
        if known is None:
            return ""
        breaker = known[1]
        state = breaker.state
        if state is BreakerState.OPEN:
            return f"open (next try in {breaker.retry_in():.0f} s)"
        return "half-open (probing)" if state is BreakerState.HALF_OPEN else "closed"

    def quotas(self) -> dict[str, str]:
        """Sources whose quota is 80 % used or more: ``{"integration 'Main'": "85,012 of 100,000 per 24 h"}``."""
        found = {}
        for _, budget in self.budgets():
            for quota in budget.quotas:
                used = quota.used()
                if used >= QUOTA_WARN * quota.limit:
                    window = quota.quota.describe().partition(" per ")[2]
                    spent = " (spent)" if quota.spent() else ""
                    found[budget.name] = f"{used:,} of {quota.limit:,} per {window}{spent}"
        return found

    def circuits(self) -> dict[str, str]:
        """Each asked source's name and circuit state (``closed``, ``open``, ``half_open``)."""
        return {name: breaker.state.label for name, breaker in self.breakers()}

    def origin(self, url: str) -> str:
        """``https://host:port`` of a Custom CRM URL: the unit of its budget and breaker."""
        origin = self._origins.get(url)
        if origin is None:
            parsed = httpx.URL(url)
            origin = f"{parsed.scheme}://{parsed.host}:{parsed.port or 443}"
            if len(self._origins) > 10_000:  # URLs come from rules: a bound against the absurd
                self._origins.clear()
            self._origins[url] = origin
        return origin

    def _budget(
        self, source_id: str, name: str, kind: str, rate: float | None, concurrency: int, *,
        burst: float | None = None, quotas: tuple[Quota, ...] = (),
    ) -> Budget:  # fmt: skip
        # Never more in flight than the shared HTTP client has connections: requests past that
        # would queue in its pool, whose bookkeeping grows with the queue and stalls every call.
        concurrency = min(concurrency, MAX_CONNECTIONS)
        limits = (rate, concurrency, burst, quotas)
        known = self._budgets.get(source_id)
        if known is not None and known[0] == limits:
            return known[1]
        budget = Budget(name, rate, concurrency, burst=burst, quotas=quotas, kind=kind)
        self._budgets[source_id] = (limits, budget)
        return budget

    def budgets(self) -> Iterator[tuple[str, Budget]]:
        """(source id, budget) of every source asked so far."""
        return iter([(source_id, budget) for source_id, (_, budget) in list(self._budgets.items())])

    def custom_budget(self, url: str) -> Budget:
        origin = self.origin(url)
        return self._budget(f"custom:{origin}", f"the Custom CRM at {origin}", "custom",
                            self.settings.custom_requests_per_second, self.settings.custom_max_concurrency)  # fmt: skip

    def integration_budget(self, spec: ConnectorSpec, connector: Connector) -> Budget:
        """The vendor's published limits (the connector's class data), or the integration's own settings."""
        cls, own = type(connector), connector.settings
        rate, burst = (own.requests_per_second, None) if own.requests_per_second else (cls.requests_per_second, cls.burst)
        concurrency = own.max_concurrency or cls.max_concurrency
        quotas = cls.quotas
        if own.daily_quota is not None:  # the account's own 24-hour allocation replaces the documented one
            daily = Quota(own.daily_quota, 86_400, "requests per 24 h (the integration's daily_quota)")
            quotas = tuple(q for q in quotas if q.window_s != 86_400) + ((daily,) if own.daily_quota else ())
        return self._budget(f"integration:{spec.integration_id}", f"integration {spec.name!r}", spec.kind,
                            rate, concurrency, burst=burst, quotas=quotas)  # fmt: skip

    async def aclose(self) -> None:
        await self.flights.aclose()


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
        self.pool = ConnectorPool(http, box, settings.default_region, CredentialStore(factory, box))
        self.guards = Guards(settings)
        self.metrics = Metrics()
        self.metrics.track(self.metrics.cache_entries, lambda: len(self.guards.cache))
        self.metrics.track_breakers(lambda: self.guards.breakers())
        self.metrics.track_quotas(lambda: ((budget.name, budget) for _, budget in self.guards.budgets()))
        if decision_log is not None:
            self.metrics.track(self.metrics.decisions_pending, lambda: decision_log.pending)
            self.metrics.track(self.metrics.decisions_dropped, lambda: decision_log.dropped)
        self.book = RuleBook()
        self.presence: Presence | None = None  # the call logger's Availability, when AMI is on
        self.last_agents = LastAgents(settings.default_region)
        self._task: asyncio.Task | None = None

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
        def changed() -> bool:
            with self._factory() as session:
                return config_version(session) != self.book.version

        if await asyncio.to_thread(changed):
            await asyncio.to_thread(self.load)
            if self._task is not None:  # a running service: new or changed integrations
                await self.preload_credentials()
            return True
        return False

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
        await asyncio.to_thread(self.load)
        await self.preload_credentials()
        if self.decision_log is not None:
            self.decision_log.start()
        self._task = asyncio.create_task(self._watch(), name="rulebook-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.guards.aclose()
        if self.decision_log is not None:
            await self.decision_log.close()
        await self.pool.aclose()

    async def _watch(self) -> None:
        """Keep routing on the last good rule book while the database is away."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            try:
                if not await self.reload_if_changed() and self.book.last_agent_days:
                    await asyncio.to_thread(self.load_last_agents)
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
    ) -> Decision:
        """Ask the rule's CRM under the rule's deadline and pick the destination.

        The deadline counts from ``since`` (a ``time.monotonic()`` value: when
        the call's request arrived), else from now; the CRM is waited for
        until ``ANSWER_RESERVE_MS`` before it. ``on_crm`` is called once
        when the CRM is really asked (not for a cached value or an open
        circuit): the AGI script starts the ringing or music on hold then.
        ``fresh`` (dry runs) skips the value cache, single-flight and the
        circuit breaker: the CRM is always asked.
        """
        deadline_ms = rule.spec.deadline_ms or self.settings.deadline_ms
        deadline = Deadline.after_ms(deadline_ms - min(ANSWER_RESERVE_MS, deadline_ms / 10), since=since)
        key = lookup_key(caller_id, dtmf)
        notes = Lookup()
        fetch = self.fetcher(rule, caller_id=caller_id, did=did, deadline=deadline, notes=notes, on_crm=on_crm,
                             fresh=fresh)  # fmt: skip
        choose = self.agent_picker(rule, notes, caller_id) if rule.spec.agent_types else None
        decision = await decide(rule.spec, key, fetch, deadline, choose)
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
        owner = DestType.OWNER in rule.spec.agent_types  # the owner is asked in the same request
        late = Deadline(deadline.at + LATE_ANSWER_GRACE_S)  # the request's own; the call still ends at ``deadline``
        if isinstance(source, CustomSource):

            async def ask_custom(key: LookupKey) -> Answer:
                budget = self.guards.custom_budget(source.url)
                async with budget.slot(deadline.at):
                    try:
                        value = await fetch_custom(
                            self.http, url=source.url, post=source.post, headers=list(source.headers),
                            field_name=field_name, key=key, caller_id=caller_id, did=did,
                            timeout=max(late.remaining(), 0.001),
                        )  # fmt: skip
                    except RateLimited as exc:
                        if exc.reason == "http_429":
                            budget.pause(getattr(exc, "retry_after", None))
                        raise
                return Answer(value, None, found=value is not None)

            def custom_identity(key: LookupKey) -> tuple[Hashable, Source]:
                dtmf = key.value if key.source == "dtmf" else ""
                caller = key.value if key.source == "caller_id" else caller_id
                lookup = ("custom", source.url, source.post, source.headers, field_name, dtmf, caller,
                          did if source.post else "")  # fmt: skip
                origin = self.guards.origin(source.url)
                return lookup, Source(f"custom:{origin}", f"Custom CRM {origin}", "custom")

            return self._guarded(rule, deadline, notes, on_crm, fresh, ask_custom, custom_identity, None)

        async def ask_connector(key: LookupKey) -> Answer:
            connector = self.pool.get(source.connector)
            connector.budget = self.guards.integration_budget(source.connector, connector)
            found: list[Record] = []
            value = await connector.fetch(key, source.module, field_name, deadline=late, found=found, owner=owner)
            record = found[0] if found else None
            if record is not None:  # kept in the cache: identity, matches and owner only, not every field
                record = Record(record.module, record.id, {}, record.matches, record.url, record.owner)
            return Answer(value, record, found=record is not None)

        def integration_identity(key: LookupKey) -> tuple[Hashable, Source]:
            spec = source.connector
            lookup = ("integration", spec.integration_id, spec.username, spec.fingerprint, source.module,
                      key.source, key.value, field_name, owner)  # fmt: skip
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

        async def fetch(key: LookupKey) -> str | None:
            if fresh:
                answer = await ask(key)
                notes.record = answer.record
                return answer.value
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
                    return entry.value.value
                self.metrics.cache_misses.inc()
            breaker = guards.breaker(crm.id, crm.name)
            if not guards.flights.running(lookup):
                admission = breaker.allow()
                if admission is None:
                    raise ConnectorUnavailable(
                        f"{crm.name}: circuit open after {breaker.threshold} consecutive failures; "
                        f"next try in {breaker.retry_in():.0f} s", kind=crm.kind, operation="fetch",
                        reason="circuit_open",
                    )  # fmt: skip

                async def work() -> Answer:
                    self.metrics.crm_requests.labels(source=crm.name).inc()
                    try:
                        answer = await ask(key)
                    except RateLimited:
                        breaker.release(admission)  # the CRM (or our budget) asked us to slow down: not down
                        raise
                    except ConnectorError:
                        breaker.failure(admission)
                        raise
                    except BaseException:
                        breaker.release(admission)
                        raise
                    breaker.success(admission)
                    if ttl > 0:  # failures are never cached; "not found" only briefly
                        guards.cache.put(lookup, answer, ttl if answer.found else min(ttl, self.settings.cache_negative_ttl_s))
                    return answer

            else:
                work = None  # the same lookup is in flight: wait for it (each caller under its own deadline)
            notes.asked = True
            if on_crm is not None:
                on_crm()
            answer, notes.shared = await guards.flights.do(lookup, work)
            notes.record = answer.record
            return answer.value

        return fetch

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
            if isinstance(resolved.rule.source, IntegrationSource):  # before the call's deadline starts
                await self.preload_credentials([resolved.rule.source.connector])
            decision = await self.decide(resolved.rule, caller_id=caller_id, dtmf=dtmf, did=resolved.did, fresh=True)
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
