"""The decision log: batched writes, buffering while the database is away, retention, search."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from sqlalchemy import event, func, select
from sqlalchemy.orm import sessionmaker

from crmroute.routing.trace import Decision, DestType, Destination, Status
from crmroute.store.db import make_engine, make_sessionmaker
from crmroute.store import decisions
from crmroute.store.decisions import SLICE_ROWS, CallMeta, DecisionLog, purge, search
from crmroute.store.models import DecisionRecord


def sample(i: int = 0, status: Status = Status.MATCHED) -> tuple[Decision, CallMeta]:
    decision = Decision(status, rule="VIP", destination=Destination(DestType.QUEUE, "103"), value="GOLD", row=1,
                        key=f"+1555000{i:04d}", key_source="caller_id", crm_ms=12.5, total_ms=13.0,
                        steps=["lookup key", "row 1 matched"])  # fmt: skip
    return decision, CallMeta(call_id=f"call-{i}", channel="PJSIP/trunk-1", caller=f"+1555000{i:04d}", did="5551000")


def count(factory: sessionmaker) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(DecisionRecord))


async def test_rows_are_written_in_a_batch(store):
    log = DecisionLog(store.factory, retention_days=30)
    for i in range(120):
        log.record(*sample(i))
    assert count(store.factory) == 0  # recording never touches the database
    await log.flush()
    assert count(store.factory) == 120 and log.pending == 0
    with store.factory() as session:
        row = session.scalar(select(DecisionRecord).where(DecisionRecord.call_id == "call-7"))
    assert (row.status, row.rule, row.dest_type, row.dest, row.value, row.row) == ("matched", "VIP", "queue", "103", "GOLD", 1)  # fmt: skip
    assert row.trace == ["lookup key", "row 1 matched"] and row.crm_ms == 12.5


async def test_a_batch_is_one_transaction_written_in_short_slices(store):
    """The writer thread turns at most SLICE_ROWS rows into parameters at a time (each slice holds the
    GIL briefly: the event loop is not kept waiting), all in one transaction."""
    log = DecisionLog(store.factory, retention_days=30)
    statements: list[tuple[str, int]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement.split()[0].upper(), len(parameters) if executemany else 1))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        for i in range(105):
            log.record(*sample(i))
        await log.flush()
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    inserts = [n for verb, n in statements if verb == "INSERT"]
    if store.engine.dialect.name == "postgresql":
        assert inserts == []  # one COPY (psycopg's C code, not SQLAlchemy's): the next test
    else:
        assert inserts == [SLICE_ROWS] * 5 + [5] and SLICE_ROWS == 20
    assert count(store.factory) == 105


async def test_on_postgresql_a_batch_is_copied_with_every_value_kept(store, monkeypatch):
    """COPY costs the writer thread (and the GIL the event loop needs) a fifth of the INSERTs' Python time."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    copies = []
    real = decisions._copy
    monkeypatch.setattr(decisions, "_copy", lambda session, batch: copies.append(len(batch)) or real(session, batch))
    log = DecisionLog(store.factory, retention_days=30, node="node-a")
    decision, meta = sample(1)
    decision.crm_ms, decision.cached, decision.row = None, True, None
    decision.error = "a 'quoted'\ttab\\back\nline"
    log.record(decision, meta)
    for i in range(2, 45):
        log.record(*sample(i))
    await log.flush()
    assert copies == [44]
    with store.factory() as session:
        row = session.scalar(select(DecisionRecord).where(DecisionRecord.call_id == "call-1"))
        other = session.scalar(select(DecisionRecord).where(DecisionRecord.call_id == "call-44"))
    assert (row.crm_ms, row.cached, row.row, row.error, row.node) == (None, True, None, decision.error, "node-a")
    assert row.trace == ["lookup key", "row 1 matched"] and row.created_at.tzinfo is not None
    assert (other.crm_ms, other.cached, other.row, other.caller) == (12.5, False, 1, "+15550000044")
    assert count(store.factory) == 44


async def test_the_copy_failing_keeps_the_rows_for_the_next_tick(store, monkeypatch):
    if store.engine.dialect.name != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    log = DecisionLog(store.factory, retention_days=30)
    decision, meta = sample(1)
    log.record(decision, CallMeta(call_id="nul\x00byte"))  # PostgreSQL text takes no NUL: the driver refuses
    await log.flush()
    assert log.pending == 1 and not log.db_ok and count(store.factory) == 0
    log._buffer[0]["call_id"] = "fixed"
    await log.flush()
    assert log.pending == 0 and log.db_ok and count(store.factory) == 1


async def test_rows_wait_for_the_database_and_none_are_lost(store, tmp_path):
    broken = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"))
    log = DecisionLog(broken, retention_days=30)
    for i in range(10):
        log.record(*sample(i))
    await log.flush()
    assert log.pending == 10 and not log.db_ok
    log._factory = store.factory  # the database is back
    await log.flush()
    assert log.pending == 0 and log.db_ok and count(store.factory) == 10


async def test_buffer_is_bounded_and_drops_are_counted(store, monkeypatch):
    monkeypatch.setattr("crmroute.store.decisions.MAX_BUFFER", 5)
    log = DecisionLog(store.factory, retention_days=30)
    for i in range(8):
        log.record(*sample(i))
    assert log.pending == 5 and log.dropped == 3
    await log.flush()
    with store.factory() as session:
        assert sorted(session.scalars(select(DecisionRecord.call_id))) == [f"call-{i}" for i in range(3, 8)]


async def test_each_tick_writes_only_the_rows_there_when_it_starts(store, monkeypatch):
    """Calls that end while a batch is written wait for the next tick: the writer rests between ticks instead of
    writing a few rows at a time back to back (each small transaction taking the GIL from the event loop)."""
    monkeypatch.setattr("crmroute.store.decisions.FLUSH_INTERVAL", 0.2)
    log = DecisionLog(store.factory, retention_days=30)
    loop = asyncio.get_running_loop()
    real_write, writes = log._write, []
    ended = iter(range(100, 106))

    def write(batch):  # two calls end during each of the first three writes
        writes.append((time.monotonic(), [row["call_id"] for row in batch]))
        if len(writes) <= 3:
            for _ in range(2):
                loop.call_soon_threadsafe(log.record, *sample(next(ended)))
        real_write(batch)

    monkeypatch.setattr(log, "_write", write)
    for i in range(3):
        log.record(*sample(i))
    log.start()
    until = time.monotonic() + 20
    while log.written < 9:
        assert time.monotonic() < until, writes
        await asyncio.sleep(0.02)
    await log.close()
    assert [ids for _, ids in writes] == [["call-0", "call-1", "call-2"], ["call-100", "call-101"],
                                          ["call-102", "call-103"], ["call-104", "call-105"]]  # fmt: skip
    gaps = [b - a for (a, _), (b, _) in zip(writes, writes[1:])]
    assert min(gaps) >= 0.1, gaps  # a tick apart (0.2 s; a loaded machine only makes it longer), not back to back
    assert count(store.factory) == 9


async def test_background_writer_and_close(store):
    log = DecisionLog(store.factory, retention_days=30)
    log.start()
    log.record(*sample(1))
    await log.close()  # writes what is left
    assert count(store.factory) == 1


def test_retention_purges_old_rows(store):
    now = datetime.now(timezone.utc)
    with store.factory() as session, session.begin():
        for days in (1, 10, 40):
            session.add(DecisionRecord(created_at=now - timedelta(days=days), status="matched", call_id=f"d{days}"))
    assert purge(store.factory, 30, now) == 1
    with store.factory() as session:
        assert sorted(session.scalars(select(DecisionRecord.call_id))) == ["d1", "d10"]


async def test_search_filters(store):
    log = DecisionLog(store.factory, retention_days=30)
    for i in range(5):
        log.record(*sample(i, Status.MATCHED if i % 2 else Status.FALLBACK))
    await log.flush()
    with store.factory() as session:
        total, rows = search(session, status="fallback")
        assert total == 3 and [r.call_id for r in rows] == ["call-4", "call-2", "call-0"]
        total, rows = search(session, caller="0003")
        assert total == 1 and rows[0].call_id == "call-3"
        total, rows = search(session, rule="VIP", limit=2, offset=1)
        assert total == 5 and [r.call_id for r in rows] == ["call-3", "call-2"]
        assert search(session, since=datetime.now(timezone.utc) + timedelta(hours=1))[0] == 0
