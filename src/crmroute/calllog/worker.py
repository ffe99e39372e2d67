"""The call logger: AMI events -> finished calls -> the outbox -> each integration's CRM.

:class:`CallLogger` wires the parts:

- :class:`~crmroute.calllog.ami.AmiClient` hands every event to the
  :class:`~crmroute.calllog.calls.CallTracker`; after each (re)connect it asks
  ``CoreShowChannels`` so calls that ended while the connection was down are
  reported (``reconcile``), and channels it does not know are joined with
  the decision log into calls (``adopt``: calls that were up while crmroute
  was down or crashed).
- :class:`OutboxWriter` writes finished calls to the outbox
  (``store.calllog.add_calls``) from an in-memory buffer, off the event path,
  and with them the state of the calls in progress that changed
  (``store.calllog.save_open``), taken back by the next process (``restore``).
  While the database is unreachable the calls stay buffered (at most
  ``MAX_BUFFER``; past that the oldest are dropped, counted and logged) and
  are written when it returns. ``close()`` drains: a write in progress
  finishes, then everything left is written, open calls included.
- :class:`DeliveryWorker` delivers each pending delivery with the
  integration's connector (``log_call``): one lane per integration, paced by
  the connector's ``requests_per_second`` where the vendor publishes a pace (a ``log_call`` costs about
  ``REQUESTS_PER_LOG`` requests), retried with exponential backoff
  (``backoff_base`` doubling up to ``backoff_max``), parked after
  ``max_attempts`` failures with the last error. Idempotent: the outbox holds
  one delivery per integration and call, and connectors' ``log_call`` is
  idempotent on the call id, so a restart or a retry never logs a call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.calllog.ami import AmiClient, AmiError, Message
from crmroute.calllog.feeds import Feed, LeasedFeeds, holder_id
from crmroute.calllog.presence import Availability
from crmroute.calllog.calls import INBOUND, INTERNAL, Call, CallConfig, CallTracker, render, template_values
from crmroute.connectors.base import CallActivity, Connector, Record
from crmroute.connectors.pool import ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError
from crmroute.schemas import LogOptions
from crmroute.store import calllog as outbox
from crmroute.settings import AmiSource
from crmroute.store.db import transaction
from crmroute.store.notify import is_postgresql

logger = logging.getLogger(__name__)

MAX_BUFFER = 10_000  # finished calls kept in memory while the database is away
FLUSH_INTERVAL = 0.5
TICK_INTERVAL = 0.5  # how often calls past their grace are released
POLL_INTERVAL = 2.0  # how often the worker looks for due deliveries without being woken
LANE_BATCH = 20
LEASE_SECONDS = 300.0
LOG_TIMEOUT = 30.0  # seconds one log_call may take
BACKOFF_BASE = 10.0
BACKOFF_MAX = 3600.0
REQUESTS_PER_LOG = 3  # a log_call: look for the logged call, look the number up, create the activity
RESULT_WRITE_INTERVAL = 2.0
PURGE_INTERVAL = 3600.0


def backoff(attempts: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait after the ``attempts``-th failure: base, 2 x base, 4 x base ... up to ``cap``."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def log_options(stored: dict[str, Any]) -> LogOptions:
    """An integration's stored log options; fields that no longer validate fall back to their defaults."""
    try:
        return LogOptions.model_validate(stored)
    except ValidationError:
        good = {}
        for name in LogOptions.model_fields:
            if name in stored:
                try:
                    LogOptions.model_validate({name: stored[name]})
                    good[name] = stored[name]
                except ValidationError:
                    pass
        return LogOptions.model_validate(good)


def activity_for(call: Call, decision: dict[str, Any], options: LogOptions, integration_id: int) -> CallActivity:
    """The activity to log: templates rendered, and the routed record when it is this integration's."""
    values = template_values(call, decision)
    record = None
    if (options.link_record == "routed" and decision.get("record_id")
            and decision.get("integration_id") == integration_id):  # fmt: skip
        record = Record(module=decision.get("record_module") or "", id=str(decision["record_id"]), fields={})
    return CallActivity(
        call_id=call.linked_id, direction="inbound" if call.direction == INBOUND else "outbound",
        outcome=call.outcome,  # type: ignore[arg-type]
        external_number=call.external_number, started_at=call.started_at, ring_seconds=call.ring_seconds,
        talk_seconds=call.talk_seconds, extension=call.extension, recording=call.recording,
        subject=render(options.subject_template, values), description=render(options.description_template, values),
        record=record,
    )  # fmt: skip


class OutboxWriter:
    """Finished calls into the outbox, off the event path; kept in memory while the database is away."""

    def __init__(self, factory: sessionmaker[Session], *, max_buffer: int = MAX_BUFFER,
                 on_written: Callable[[], None] | None = None, open_calls: OpenCalls | None = None) -> None:  # fmt: skip
        self._factory = factory
        self._buffer: deque[Call] = deque()
        self._open_calls = open_calls
        self._open: dict[str, dict[str, Any] | None] = {}  # Linkedid -> state to save, None: no longer open
        self._closing = False
        self._max = max_buffer
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._on_written = on_written
        self.dropped = 0
        self.written = 0
        self.db_ok = True

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, calls: Iterable[Call]) -> None:
        """Queue finished calls; never blocks, never raises."""
        for call in calls:
            if call.direction == INTERNAL:
                continue
            if len(self._buffer) >= self._max:
                lost = self._buffer.popleft()
                self.dropped += 1
                logger.error("call log: buffer full (%d calls, database unreachable?): call %s dropped",
                             self._max, lost.linked_id)  # fmt: skip
            self._buffer.append(call)
        if self._buffer:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="calllog-outbox")

    async def close(self) -> None:
        """Stop after writing everything: a write in progress finishes (never cancelled), then the rest."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if not await self.flush(everything=True):
            logger.error("call log: database unreachable while stopping: %d finished calls not written",
                         len(self._buffer))  # fmt: skip

    async def flush(self, *, everything: bool = False) -> bool:
        """Write what is buffered; False when the database refused (the calls stay buffered).

        With it goes the state of the open calls that changed (``everything``: of all open calls).
        """
        async with self._lock:
            if self._open_calls is not None:
                changed, gone = self._open_calls(everything)
                self._open.update(changed)
                self._open.update(dict.fromkeys(gone))
            while self._buffer or self._open:
                batch = [self._buffer.popleft() for _ in range(min(500, len(self._buffer)))]
                state: dict[str, dict[str, Any] | None] = {}
                if not self._buffer:  # open-call state goes with the last batch: a finished call leaves it there
                    state, self._open = self._open, {}
                try:
                    added = await asyncio.to_thread(self._write, batch, state)
                except BaseException as exc:
                    # both writes are idempotent: put them back (a cancelled thread may have written them anyway)
                    self._buffer.extendleft(reversed(batch))
                    self._open = state | self._open
                    if not isinstance(exc, SQLAlchemyError):
                        raise
                    if self.db_ok:
                        logger.warning("call log: database unavailable, %d calls kept in memory: %s",
                                       len(self._buffer), exc)  # fmt: skip
                    self.db_ok = False
                    return False
                if not self.db_ok:
                    logger.info("call log: database back, buffered calls written")
                self.db_ok = True
                self.written += added
                if added and self._on_written is not None:
                    self._on_written()
            return True

    def _write(self, batch: list[Call], state: dict[str, dict[str, Any] | None]) -> int:
        with transaction(self._factory) as session:
            added = outbox.add_calls(session, batch)
            if state:
                outbox.save_open(session, {k: v for k, v in state.items() if v is not None},
                                 [k for k, v in state.items() if v is None])  # fmt: skip
            return added

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("call log: writing calls failed")


ConnectorFor = Callable[[ConnectorSpec], Connector]
OpenCalls = Callable[[bool], tuple[dict[str, dict[str, Any]], set[str]]]  # CallTracker.changes(now, everything=)


class DeliveryWorker:
    """Pending deliveries to the CRMs: one lane per integration, paced, retried, parked."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        connector_for: ConnectorFor,
        *,
        max_attempts: int = 8,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        lease: float = LEASE_SECONDS,
        batch: int = LANE_BATCH,
        poll: float = POLL_INTERVAL,
        log_timeout: float = LOG_TIMEOUT,
        retention_days: int = 0,
        pace: bool = True,
    ) -> None:
        self._factory = factory
        self._connector_for = connector_for
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.lease = lease
        self.batch = batch
        self.poll = poll
        self.log_timeout = log_timeout
        self.retention_days = retention_days
        self.pace = pace
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._lanes: dict[int, asyncio.Task] = {}
        self._next_slot: dict[int, float] = {}
        self.delivered: Counter[str] = Counter()  # by integration name
        self.failures: Counter[tuple[str, str]] = Counter()  # (integration, reason)
        self.parked: Counter[str] = Counter()
        self.db_ok = True

    def wake(self) -> None:
        """Look for due deliveries now (callable from any thread, e.g. a web request's)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="calllog-worker")

    async def close(self) -> None:
        tasks = [t for t in [self._task, *self._lanes.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._lanes.clear()

    async def run_once(self) -> None:
        """Deliver everything due now, lanes to the end (tests, and one pass of the loop)."""
        ids = await asyncio.to_thread(self._read, outbox.due_integrations)
        await asyncio.gather(*(self._lane(i) for i in ids))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while True:
            try:
                ids = await asyncio.to_thread(self._read, outbox.due_integrations)
                self.db_ok = True
            except SQLAlchemyError as exc:
                if self.db_ok:
                    logger.warning("call log worker: database unavailable: %s", exc)
                self.db_ok = False
                ids = []
            for integration_id in ids:
                lane = self._lanes.get(integration_id)
                if lane is None or lane.done():
                    self._lanes[integration_id] = asyncio.create_task(self._lane(integration_id),
                                                                      name=f"calllog-lane-{integration_id}")  # fmt: skip
            if self.retention_days and self.db_ok and loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_INTERVAL
                with contextlib.suppress(SQLAlchemyError):
                    removed = await asyncio.to_thread(self._purge)
                    if removed:
                        logger.info("call log: purged %d calls older than %d days", removed, self.retention_days)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()
            self._wake.clear()

    def _read(self, query: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with transaction(self._factory) as session:
            return query(session, *args, **kwargs)

    def _purge(self) -> int:
        with transaction(self._factory) as session:
            return outbox.purge(session, self.retention_days)

    async def _lane(self, integration_id: int) -> None:
        """Deliver one integration's due deliveries, paced, until none is due."""
        try:
            while True:
                target = await asyncio.to_thread(self._read, outbox.target, integration_id)
                claimed = await self._claim(integration_id)
                if target is None or not claimed:
                    return
                results: list[outbox.Result] = []
                written = time.monotonic()
                try:
                    for entry in claimed:
                        results.append(await self._deliver(target, entry))
                        if time.monotonic() - written >= RESULT_WRITE_INTERVAL:
                            await self._write(results)
                            results, written = [], time.monotonic()
                    await self._write(results)
                except asyncio.CancelledError:  # stopping: keep what was delivered (idempotent), give the rest back
                    done = {r.id for r in results}
                    await self._write(results)
                    await asyncio.to_thread(self._read, outbox.release, [e.id for e in claimed if e.id not in done])
                    raise
        except SQLAlchemyError as exc:
            logger.warning("call log worker: database unavailable for integration %d: %s", integration_id, exc)
        except Exception:
            logger.exception("call log worker: lane of integration %d failed", integration_id)

    async def _claim(self, integration_id: int) -> list[outbox.Claimed]:
        """Claim due deliveries; a stop arriving meanwhile gives back what the claim's thread took.

        A thread cannot be cancelled: left alone it would hold its rows for the whole lease, and a
        restarted crmroute would not deliver those calls until the lease ran out.
        """
        claiming = asyncio.ensure_future(asyncio.to_thread(self._read, outbox.claim, integration_id,
                                                           limit=self.batch, lease=self.lease))  # fmt: skip
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                taken = await claiming
                await asyncio.to_thread(self._read, outbox.release, [e.id for e in taken])
            raise

    async def _write(self, results: list[outbox.Result]) -> None:
        if results:
            await asyncio.to_thread(self._read, outbox.record, results)

    async def _deliver(self, target: outbox.Target, entry: outbox.Claimed) -> outbox.Result:
        options = log_options(target.log_options)
        call = Call.from_dict(entry.call)
        if not target.enabled:
            return outbox.Result(entry.id, outbox.PARKED, error=f"integration {target.name!r} is disabled",
                                 attempted=False)  # fmt: skip
        if not outbox.wants(options.model_dump(), call):
            return outbox.Result(entry.id, outbox.SKIPPED, error="the log options no longer ask for this call",
                                 attempted=False)  # fmt: skip
        decision = entry.decision
        if not decision and call.agi_uniqueids:  # the decision may have been written after the call
            decision = await asyncio.to_thread(self._read, outbox.refresh_decision, entry.call_row_id)
        spec = ConnectorSpec(target.id, target.name, target.kind, target.enabled, target.settings, target.secrets_enc,
                             log_level=options.log_level)  # fmt: skip
        attempts = entry.attempts + 1
        try:
            connector = self._connector_for(spec)
            await self._paced(target.id, connector)
            activity = activity_for(call, decision, options, target.id)
            activity_id = await connector.log_call(activity, options,
                                                   deadline=Deadline.after_ms(self.log_timeout * 1000))  # fmt: skip
        except ConnectorError as exc:
            return self._failed(target, entry, attempts, f"{exc.reason}: {exc}", exc.reason)
        except Exception as exc:
            logger.exception("call log: delivering call %s to %s failed", entry.linked_id, target.name)
            return self._failed(target, entry, attempts, f"internal: {type(exc).__name__}: {exc}", "internal")
        self.delivered[target.name] += 1
        logger.info("call log: call %s logged in %s as %s", entry.linked_id, target.name, activity_id)
        return outbox.Result(entry.id, outbox.DELIVERED, activity_id=str(activity_id))

    def _failed(self, target: outbox.Target, entry: outbox.Claimed, attempts: int, error: str,
                reason: str) -> outbox.Result:  # fmt: skip
        self.failures[(target.name, reason)] += 1
        if attempts >= self.max_attempts:
            self.parked[target.name] += 1
            logger.error("call log: call %s parked for %s after %d attempts: %s", entry.linked_id, target.name,
                         attempts, error)  # fmt: skip
            return outbox.Result(entry.id, outbox.PARKED, error=error)
        wait = backoff(attempts, self.backoff_base, self.backoff_max)
        logger.warning("call log: call %s to %s failed (attempt %d of %d), retry in %.0f s: %s", entry.linked_id,
                       target.name, attempts, self.max_attempts, wait, error)  # fmt: skip
        return outbox.Result(entry.id, outbox.PENDING, error=error,
                             next_attempt_at=datetime.now(timezone.utc) + timedelta(seconds=wait))  # fmt: skip

    async def _paced(self, integration_id: int, connector: Connector) -> None:
        """Keep an integration's log calls within its connector's request budget."""
        if not self.pace:
            return
        rate = connector.settings.requests_per_second or connector.requests_per_second
        if not rate:  # no published pace: the integration's budget (quotas, concurrency) is enough
            return
        interval = REQUESTS_PER_LOG / max(float(rate), 0.001)
        loop = asyncio.get_running_loop()
        slot = max(loop.time(), self._next_slot.get(integration_id, 0.0))
        self._next_slot[integration_id] = slot + interval
        if slot > loop.time():
            await asyncio.sleep(slot - loop.time())


class CallLogger:
    """AMI feeds (one per Asterisk), outbox writer and delivery worker, started and stopped together."""

    def __init__(
        self,
        settings: Any,
        factory: sessionmaker[Session],
        connector_for: ConnectorFor,
        *,
        config: CallConfig | None = None,
        clock: Callable[[], float] = time.monotonic,  # the tracker's ages; event times come from Asterisk
        ami_options: dict[str, Any] | None = None,
        availability: Availability | None = None,
        **worker_options: Any,
    ) -> None:
        self.settings = settings
        # Device and extension states from the same AMI events, for routing to a free agent (presence.py).
        self.availability = availability if availability is not None else Availability()
        config = config or CallConfig.from_settings(settings)
        worker_options.setdefault("max_attempts", settings.calllog_max_attempts)
        worker_options.setdefault("retention_days", getattr(settings, "decision_retention_days", 0))
        self.worker = DeliveryWorker(factory, connector_for, **worker_options)
        self.outbox = OutboxWriter(factory, on_written=self.worker.wake, open_calls=self._changes)
        self._factory = factory
        self.clock = clock
        self.calls: Counter[tuple[str, str]] = Counter()  # (direction, outcome)
        self._ami_options = ami_options or {}
        sources = settings.ami_list if settings.ami_enabled else (AmiSource("default", ""),)
        self.feeds = [Feed(source, config, self._client) for source in sources]
        self.leases: LeasedFeeds | None = None
        if settings.ami_enabled and is_postgresql(settings.db_url):
            self.leases = LeasedFeeds(factory, holder_id(settings.node), self.feeds, on_take=self._take, on_lose=self._lose)
        self._tick: asyncio.Task | None = None

    @property
    def tracker(self) -> CallTracker:
        """The first (often the only) feed's call tracker."""
        return self.feeds[0].tracker

    @property
    def ami(self) -> AmiClient | None:
        return self.feeds[0].ami

    def _client(self, feed: Feed) -> AmiClient | None:
        if not feed.source.host:
            return None
        s = self.settings
        return AmiClient(feed.source.host, feed.source.port, s.ami_username, s.ami_secret,
                         on_event=lambda message: self._on_event(feed, message),
                         on_connect=lambda client: self._reconcile(feed, client),
                         on_disconnect=lambda: self._disconnected(feed), **self._ami_options)  # fmt: skip

    def on_event(self, message: Message) -> None:
        """One AMI event of the first feed (the client calls ``_on_event``; tests may feed events here)."""
        self._on_event(self.feeds[0], message)

    def _on_event(self, feed: Feed, message: Message) -> None:
        if message.event in ("DeviceStateChange", "ExtensionStatus"):
            self.availability.feed(message)
        self.finished(feed.tracker.feed(message, self.clock(), wall=message.received or time.time()), feed)

    def finished(self, calls: list[Call], feed: Feed | None = None) -> None:
        pbx = (feed or self.feeds[0]).name
        for call in calls:
            call.pbx = pbx
            self.calls[(call.direction, call.outcome)] += 1
            logger.info("call %s finished: %s %s %s (%s, ring %d s, talk %d s)%s%s", call.linked_id, call.direction,
                        call.outcome, call.external_number or "-", call.extension or "-", call.ring_seconds,
                        call.talk_seconds, f" on {pbx}" if len(self.feeds) > 1 else "",
                        f" [{call.note}]" if call.note else "")  # fmt: skip
        self.outbox.add(calls)

    def _changes(self, everything: bool) -> tuple[dict[str, dict[str, Any]], set[str]]:
        changed: dict[str, dict[str, Any]] = {}
        gone: set[str] = set()
        for feed in self.feeds:
            if self.leases is not None and not feed.held:
                continue  # another node reads it and saves its calls
            more, less = feed.tracker.changes(self.clock(), everything=everything)
            changed.update({lid: data | {"pbx": feed.name} for lid, data in more.items()})
            gone |= less
        return changed, gone

    async def _reconcile(self, feed: Feed, client: AmiClient) -> None:
        """After each login: end the calls whose channels are gone, take in the channels not known;
        then ask the current device and extension states."""
        await self._channels(feed, client)
        try:
            await self.availability.refresh(client)
        except (AmiError, TimeoutError) as exc:  # the connection went meanwhile: the next login asks again
            logger.warning("AMI: cannot ask the device states after connecting (%s)", exc)
        except Exception:  # a bug here must not drop the AMI session (and with it the call log)
            logger.exception("AMI: reading the device states failed")

    async def _channels(self, feed: Feed, client: AmiClient) -> None:
        try:
            channels = await client.action_list({"Action": "CoreShowChannels"})
        except AmiError as exc:
            logger.warning("AMI: cannot list channels after connecting (%s); calls in progress end when stale", exc)
            return
        uids = {c.get("Uniqueid") for c in channels}
        self.finished(feed.tracker.reconcile(uids, self.clock()), feed)
        try:
            decisions = await asyncio.to_thread(self._read, outbox.find_decisions, uids)
        except SQLAlchemyError as exc:
            logger.warning("call log: cannot read the decision log for the calls in progress: %s", exc)
            decisions = {}
        before = feed.tracker.open_calls
        self.finished(feed.tracker.adopt(channels, decisions, self.clock(), time.time()), feed)
        if feed.tracker.open_calls > before:
            logger.info("call log: %d calls in progress rebuilt from Asterisk's channels",
                        feed.tracker.open_calls - before)  # fmt: skip

    def _read(self, query: Callable[..., Any], *args: Any) -> Any:
        with transaction(self._factory) as session:
            return query(session, *args)

    async def _restore(self, feed: Feed) -> None:
        """Take back the feed's calls in progress an earlier process (or the node that read it before) saved."""
        try:
            saved = await asyncio.to_thread(self._read, outbox.open_calls)
        except SQLAlchemyError as exc:
            logger.warning("call log: cannot read the calls in progress saved before the restart: %s", exc)
            return
        first = self.feeds[0].name  # rows saved before sources had names belong to the first
        count = feed.tracker.restore([d for d in saved if d.get("pbx", first) == feed.name], self.clock())
        if count:
            logger.info("call log: %d calls in progress on %s taken back", count, feed.name)

    def _disconnected(self, feed: Feed) -> None:
        feed.tracker.connection_lost(self.clock())
        self.availability.clear()  # stale states must not keep an agent busy: unknown until Asterisk says again

    async def _take(self, feed: Feed) -> None:
        """This node got the feed's lease: its saved calls, then its events."""
        feed.tracker = CallTracker(feed.tracker.config)
        await self._restore(feed)
        if feed.ami is not None:
            feed.ami.start()

    async def _lose(self, feed: Feed) -> None:
        """Another node reads the feed now: stop, and forget its calls (that node took them back)."""
        if feed.ami is not None:
            await feed.ami.close()
        feed.tracker = CallTracker(feed.tracker.config)

    async def start(self) -> None:
        self.outbox.start()
        self.worker.start()
        if self.leases is not None:
            self.leases.start()
        else:
            for feed in self.feeds:
                feed.held = True
                await self._restore(feed)
                if feed.ami is not None:
                    feed.ami.start()
        self._tick = asyncio.create_task(self._ticker(), name="calllog-tick")

    async def close(self) -> None:
        if self.leases is not None:
            await self.leases.stop()
        for feed in self.feeds:
            if feed.ami is not None:
                await feed.ami.close()
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for feed in self.feeds:
            if feed.held:
                self.finished(feed.tracker.expire(self.clock() + feed.tracker.config.grace), feed)
        await self.outbox.close()  # the finished calls, and the state of those still up
        if self.leases is not None:
            await self.leases.give_back()  # after the state is saved: the next reader takes it back
        await self.worker.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            for feed in self.feeds:
                try:
                    if feed.held:
                        self.finished(feed.tracker.expire(self.clock()), feed)
                except Exception:
                    logger.exception("call log: releasing finished calls failed")

    def status(self) -> dict[str, Any]:
        """What /healthz, the UI and /metrics show: the first source's state, and every source's."""
        first = self.feeds[0].status()
        return {k: first[k] for k in ("state", "since", "last_error")} | {
            "host": first["host"], "open_calls": sum(f.tracker.open_calls for f in self.feeds),
            "buffered_calls": self.outbox.pending, "dropped_calls": self.outbox.dropped,
            "database": "ok" if self.outbox.db_ok else "unreachable",
            "sources": [f.status() for f in self.feeds],
        }  # fmt: skip


def off_status(settings: Any) -> dict[str, Any]:
    """The status when this process runs no call logger."""
    if settings.ami_enabled:
        return {"state": "not running in this process", "since": None, "last_error": "",
                "host": ", ".join(f"{s.host}:{s.port}" for s in settings.ami_list)}  # fmt: skip
    return {"state": "off", "since": None, "last_error": "CRMROUTE_AMI_HOST and CRMROUTE_AMI_USERNAME are not set",
            "host": ""}  # fmt: skip


# --- /metrics ------------------------------------------------------------------------------------

AMI_STATES = ("connected", "connecting", "reconnecting", "stopped", "off")
COUNTS_TTL = 5.0


class CalllogCollector:
    """Call logger figures for Prometheus, read at scrape time (delivery counts from the store, cached briefly)."""

    def __init__(self, factory: sessionmaker[Session], call_logger: CallLogger | None) -> None:
        self._factory = factory
        self._logger = call_logger
        self._counts: tuple[float, dict[str, int]] = (0.0, {})

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Any]:
        counts = self._delivery_counts()
        if counts is not None:
            gauge = GaugeMetricFamily("crmroute_calllog_deliveries", "Call log deliveries in the outbox, by status",
                                      labels=["status"])  # fmt: skip
            for status, value in counts.items():
                gauge.add_metric([status], value)
            yield gauge
        logger_ = self._logger
        if logger_ is None:
            return
        state = logger_.ami.status.state if logger_.ami is not None else "off"
        yield GaugeMetricFamily("crmroute_ami_connected", "1 while the AMI session is logged in",
                                value=1 if state == "connected" else 0)  # fmt: skip
        states = GaugeMetricFamily("crmroute_ami_state", "AMI connection state (1 for the current one)",
                                   labels=["state"])  # fmt: skip
        for name in AMI_STATES:
            states.add_metric([name], 1 if state == name else 0)
        yield states
        reading = GaugeMetricFamily("crmroute_ami_reading", "1 while this node reads the PBX's AMI events (its lease)",
                                    labels=["pbx"])  # fmt: skip
        for feed in logger_.feeds:
            reading.add_metric([feed.name], 1 if feed.held and feed.ami is not None else 0)
        yield reading
        if logger_.ami is not None:
            yield CounterMetricFamily("crmroute_ami_reconnects", "AMI sessions that dropped after logging in",
                                      value=logger_.ami.status.disconnects)  # fmt: skip
        calls = CounterMetricFamily("crmroute_calllog_calls", "Finished calls seen on AMI", labels=["direction", "outcome"])
        for (direction, outcome), value in sorted(dict(logger_.calls).items()):  # a copy: the loop thread adds
            calls.add_metric([direction, outcome], value)
        yield calls
        worker = logger_.worker
        delivered = CounterMetricFamily("crmroute_calllog_delivered", "Calls logged into a CRM", labels=["integration"])
        for name, value in sorted(dict(worker.delivered).items()):
            delivered.add_metric([name], value)
        yield delivered
        failed = CounterMetricFamily("crmroute_calllog_failed", "Failed attempts to log a call",
                                     labels=["integration", "reason"])  # fmt: skip
        for (name, reason), value in sorted(dict(worker.failures).items()):
            failed.add_metric([name, reason], value)
        yield failed
        parked = CounterMetricFamily("crmroute_calllog_parked", "Calls parked after too many failures",
                                     labels=["integration"])  # fmt: skip
        for name, value in sorted(dict(worker.parked).items()):
            parked.add_metric([name], value)
        yield parked
        yield GaugeMetricFamily("crmroute_calllog_open_calls", "Calls in progress being tracked",
                                value=logger_.tracker.open_calls)  # fmt: skip
        yield GaugeMetricFamily("crmroute_calllog_buffered_calls", "Finished calls waiting for the database",
                                value=logger_.outbox.pending)  # fmt: skip
        yield CounterMetricFamily("crmroute_calllog_dropped_calls", "Finished calls lost: buffer full",
                                  value=logger_.outbox.dropped)  # fmt: skip

    def _delivery_counts(self) -> dict[str, int] | None:
        at, counts = self._counts
        if time.monotonic() - at < COUNTS_TTL and counts:
            return counts
        try:
            with self._factory() as session:
                counts = outbox.counts(session)
        except SQLAlchemyError:
            return counts or None
        self._counts = (time.monotonic(), counts)
        return counts


def install_metrics(metrics: Any, factory: sessionmaker[Session], call_logger: CallLogger | None) -> None:
    """Register the call logger's figures on a ``Metrics`` registry, once."""
    if getattr(metrics, "calllog_collector", None) is not None:
        return
    collector = CalllogCollector(factory, call_logger)
    metrics.registry.register(collector)
    metrics.calllog_collector = collector
