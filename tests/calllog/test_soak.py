"""Soak: 10,000 calls replayed from the recorded streams through calls.py, the outbox and the worker.

Each call is one of the three recorded streams with fresh unique ids, 25
calls interleaved at a time. A fast in-memory connector receives the
activities. Every call arrives exactly once; the tracker, the buffer and the
process stay bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import time
from collections import Counter

import pytest

from crmroute.calllog.ami import Message
from crmroute.calllog.calls import CallConfig
from crmroute.calllog.worker import CallLogger
from crmroute.connectors.base import Connector, ConnectorSettings
from crmroute.store import calllog as outbox
from tests.calllog.fakeami import recorded_messages
from tests.calllog.helpers import EVERYTHING, add_integration

CALLS = 10_000
AT_ONCE = 25
STREAMS = ("inbound-answered", "inbound-missed", "outbound")


class FastCrm(Connector):
    """Logs a call in memory, idempotent on the call id like the real connectors; counts every attempt."""

    kind, title, requests_per_second = "zoho", "Fast CRM", 1_000_000.0

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.activities: dict[str, dict] = {}
        self.settings = ConnectorSettings()

    async def log_call(self, call, options, *, deadline):
        self.attempts[call.call_id] += 1
        self.activities.setdefault(call.call_id, {"subject": call.subject, "outcome": call.outcome})
        return f"A-{call.call_id}"


def templates() -> list[tuple[list[tuple[tuple[str, str], ...]], set[str]]]:
    """Each stream's events (headers only) and the unique ids in them."""
    found = []
    for name in STREAMS:
        messages = [m for m in recorded_messages(name) if m.event]
        ids = {v for m in messages for k, v in m.headers if k.casefold() in ("uniqueid", "linkedid", "destuniqueid",
               "destlinkedid", "localoneuniqueid", "localtwouniqueid", "localonelinkedid", "localtwolinkedid")}  # fmt: skip
        found.append(([m.headers for m in messages], ids))
    return found


def replayed(n: int, source: tuple[list[tuple[tuple[str, str], ...]], set[str]], t: float) -> list[Message]:
    headers, ids = source
    rename = {old: f"soak{n}-{old.rsplit('.', 1)[1]}" for old in ids}
    return [Message(tuple((k, rename.get(v, v)) for k, v in h), received=t) for h in headers]


def delivered(store) -> int:
    with store.factory() as session:
        return outbox.counts(session)["delivered"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_ten_thousand_calls_arrive_once_with_bounded_memory(store):
    add_integration(store, "Soak", **EVERYTHING)
    crm = FastCrm()
    logger = CallLogger(store.settings, store.factory, lambda spec: crm, config=CallConfig(grace=0, remember=2_000),
                        batch=500, poll=0.05, backoff_base=0.05)  # fmt: skip
    await logger.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    sources = templates()
    most_open = most_buffered = 0
    expected: Counter[str] = Counter()
    try:
        numbers = itertools.count()
        for wave in range(CALLS // AT_ONCE):
            streams = [replayed(next(numbers), sources[(wave + k) % 3], 1_000.0 + wave) for k in range(AT_ONCE)]
            expected.update("missed" if (wave + k) % 3 == 1 else "answered" for k in range(AT_ONCE))
            for step in itertools.zip_longest(*streams):  # the calls' events interleaved
                for message in step:
                    if message is not None:
                        logger.on_event(message)
                most_open = max(most_open, logger.tracker.open_calls)
            most_buffered = max(most_buffered, logger.outbox.pending)
            if wave % 20 == 0:
                await asyncio.sleep(0)  # let the writer and the worker run, as events keep coming
        async with asyncio.timeout(600):  # catches a hang only: under load the whole test took 190 s
            while len(crm.activities) < CALLS or logger.outbox.pending or delivered(store) < CALLS:
                await asyncio.sleep(0.1)  # until the worker has also marked them delivered: not a fixed wait
    finally:
        await logger.close()
    elapsed = time.monotonic() - started
    assert len(crm.activities) == CALLS
    assert max(crm.attempts.values()) == 1, "a call was logged twice"
    outcomes = Counter(a["outcome"] for a in crm.activities.values())
    assert outcomes == expected
    assert logger.outbox.written == CALLS and logger.outbox.dropped == 0
    assert 0 < most_open <= AT_ONCE and logger.tracker.open_calls == 0
    assert len(logger.tracker._done) <= 2_000 and not logger.tracker._index  # what it remembers is bounded
    assert most_buffered <= CALLS  # bounded by MAX_BUFFER as well
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 300, f"memory grew by {grown_mb:.0f} MB"
    with store.factory() as session:
        assert outbox.counts(session) == {"pending": 0, "delivered": CALLS, "parked": 0, "dropped": 0, "skipped": 0}
    print(f"soak: {CALLS} calls in {elapsed:.1f} s, at most {most_open} open, memory +{grown_mb:.0f} MB")
