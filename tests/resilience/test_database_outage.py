"""Hot path without the database: calls keep routing on the loaded rules while it is unreachable;
decision rows wait in the buffer and are written when it returns; rows past the bound are dropped and counted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import func, select

from crmroute.store.models import DecisionRecord
from tests.agi.conftest import base_rules
from tests.agi.fakeasterisk import call_agi


async def routed(stack, n: int) -> list[str]:
    results = await asyncio.gather(*(call_agi(stack.port, "did", env={"extension": "5551000", "callerid": f"+1555321{i:04d}"})
                                     for i in range(n)))  # fmt: skip
    return [r.variables.get("CRMROUTE_STATUS", "") for r in results]


def count(stack) -> int:
    with stack.store.factory() as session:
        return session.scalar(select(func.count()).select_from(DecisionRecord))


@pytest.fixture
async def stack(stack_factory, custom_crm):  # noqa: F811
    """A 5 s deadline: these tests are about the database; 20 calls at once on a loaded machine may take more
    than the usual 1 s to be answered by the CRM stand-in."""
    rules = base_rules(custom_crm.url)
    rules["rules"][0]["deadline_ms"] = 5000
    return await stack_factory(rules)


@pytest.fixture
async def outage(stack, data_dir, db_url):
    """Take the SQLite database away (its directory disappears) and give it back."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the outage is staged by moving the SQLite file's directory")
    away = data_dir.with_name("data-away")

    class Outage:
        def begin(self) -> None:
            stack.store.engine.dispose()  # pooled connections would keep the moved file open
            data_dir.rename(away)

        def end(self) -> None:
            away.rename(data_dir)

    yield Outage()
    if away.exists():
        away.rename(data_dir)


async def test_calls_keep_routing_while_the_database_is_away(stack, outage, caplog):
    caplog.set_level(logging.WARNING)
    stack.crm.values = {"Status": "GOLD"}
    assert await routed(stack, 2) == ["matched"] * 2
    await stack.router.decision_log.flush()
    assert count(stack) == 2

    outage.begin()
    assert await routed(stack, 20) == ["matched"] * 20  # no query on the call path
    await asyncio.sleep(1.5)  # the rule book's reload check fails meanwhile...
    assert "VIP" in stack.router.book.rules  # ...and routing stays on the loaded rules
    assert await routed(stack, 5) == ["matched"] * 5
    log = stack.router.decision_log
    await log.flush()
    assert log.pending == 25 and not log.db_ok
    assert "cannot check for rule changes" in caplog.text and "database unavailable" in caplog.text

    outage.end()
    await log.flush()
    assert log.pending == 0 and log.db_ok and log.dropped == 0
    assert count(stack) == 27  # every row written once it came back


async def test_rows_past_the_buffer_are_dropped_and_counted_in_metrics(stack, outage, monkeypatch):
    monkeypatch.setattr("crmroute.store.decisions.MAX_BUFFER", 10)
    stack.crm.values = {"Status": "GOLD"}
    outage.begin()
    assert await routed(stack, 15) == ["matched"] * 15
    log = stack.router.decision_log
    assert (log.pending, log.dropped) == (10, 5)
    text = stack.router.metrics.render().decode()
    assert "crmroute_decision_log_dropped 5.0" in text and "crmroute_decision_log_pending 10.0" in text
    outage.end()
    await log.flush()
    assert count(stack) == 10  # the newest ten
