"""The worker delivers outbox calls into strict CRM fakes: content, linking, exactly once, outages, parking."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crmroute.calllog.worker import CallLogger, backoff
from crmroute.connectors._http import make_client
from crmroute.connectors.pool import ConnectorPool
from crmroute.store import calllog as outbox
from crmroute.store.models import CallDelivery, CallLogCall, CallLogOpenCall
from tests.calllog.conftest import HUBSPOT_ALICE, HUBSPOT_OUTBOUND, ZOHO_ALICE, hubspot_settings, zoho_settings
from tests.calllog.fakeami import recorded_messages
from tests.calllog.helpers import ANSWERED_ID, MISSED_ID, OUTBOUND_ID, add_decision, add_integration

FAST = {"backoff_base": 0.05, "backoff_max": 0.2, "poll": 0.05, "log_timeout": 5.0}
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def http(settings):
    client = make_client(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def logger_factory(store, http) -> AsyncIterator[Any]:
    """``make(**options)`` starts a CallLogger (no AMI) on the store; all are closed at the end."""
    made: list[CallLogger] = []
    pool = ConnectorPool(http, store.box, "US")

    async def make(**options: Any) -> CallLogger:
        logger = CallLogger(store.settings, store.factory, pool.get, **(FAST | options))
        logger.tracker.config = type(logger.tracker.config)(grace=0)
        await logger.start()
        made.append(logger)
        return logger

    yield make
    for logger in made:
        await logger.close()
    await pool.aclose()


def feed(logger: CallLogger, *names: str) -> None:
    for name in names or ("inbound-answered", "inbound-missed", "outbound"):
        for message in recorded_messages(name):
            logger.on_event(message)


def statuses(store) -> dict[tuple[str, int], CallDelivery]:
    with store.factory() as session:
        return {(r.linked_id, r.integration_id): r for r in session.scalars(select(CallDelivery))}


async def settled(store, *, count: int, timeout: float = 15.0, final=("delivered", "parked", "skipped", "dropped")) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            rows = await asyncio.to_thread(statuses, store)
            if len(rows) == count and all(r.status in final for r in rows.values()):
                return rows
            await asyncio.sleep(0.05)


ZOHO_TEMPLATES = {"subject_template": "{direction} {outcome} {external_number} ({rule})",
                  "description_template": "Answered by {extension} in queue {queue} after {ring_seconds} s; "
                                          "talked {talk_seconds} s. DID {did}. Routing {routing_status} to {destination}."}  # fmt: skip


async def test_recorded_calls_reach_each_crm_once_with_their_content(store, zoho, hubspot, logger_factory):
    zoho_id = add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, inbound_missed=True,
                              create_unknown=True, **ZOHO_TEMPLATES)  # fmt: skip
    hubspot_id = add_integration(store, "HubSpot", "hubspot", **hubspot_settings(hubspot), inbound_answered=True,
                                 outbound=True)  # fmt: skip
    add_decision(store, ANSWERED_ID, integration_id=zoho_id, record_module="Contacts", record_id=ZOHO_ALICE)
    logger = await logger_factory()
    feed(logger)
    rows = await settled(store, count=4)
    assert {k: r.status for k, r in rows.items()} == {
        (ANSWERED_ID, zoho_id): "delivered", (MISSED_ID, zoho_id): "delivered",
        (ANSWERED_ID, hubspot_id): "delivered", (OUTBOUND_ID, hubspot_id): "delivered"}  # fmt: skip

    answered, missed = sorted(zoho.activities, key=lambda a: a["Subject"])
    assert answered["Subject"] == f"inbound answered +15551230001 (VIP) [{ANSWERED_ID}]"
    assert answered["Call_Type"] == "Inbound" and answered["Call_Duration"] == "00:03"
    assert answered["Who_Id"] == {"id": ZOHO_ALICE}  # the record routing found
    assert answered["Description"].startswith("Answered by 201 in queue 103 after 0 s; talked 3 s. DID 5551000. "
                                              "Routing matched to queue 103.")  # fmt: skip
    assert rows[(ANSWERED_ID, zoho_id)].activity_id == answered["id"]
    assert missed["Subject"] == f"inbound missed +15551230002 (-) [{MISSED_ID}]" and missed["Call_Type"] == "Missed"
    (created,) = zoho.created  # Bob Silver was unknown: created, as the options ask
    assert created["Phone"] == "+15551230002" and missed.get("Who_Id", missed.get("What_Id")) == {"id": created["id"]}

    by_id = {a["hs_call_external_id"]: a for a in (act.get("properties", act) for act in hubspot.activities)}
    inbound, outbound = by_id[ANSWERED_ID], by_id[OUTBOUND_ID]
    assert inbound["hs_call_direction"] == "INBOUND" and inbound["hs_call_duration"] == "3000"
    assert inbound["hs_call_title"] == "inbound call answered: +15551230001"  # the default subject template
    assert outbound["hs_call_direction"] == "OUTBOUND" and outbound["hs_call_to_number"] == "+15559990000"
    assert outbound["hs_call_from_number"] == "100" and outbound["hs_call_duration"] == "2000"
    linked = json.dumps(hubspot.activities)
    assert HUBSPOT_ALICE in linked and HUBSPOT_OUTBOUND in linked  # looked up: the routed record is Zoho's
    assert not hubspot.created


async def test_link_record_lookup_asks_the_crm_even_when_routing_found_one(store, zoho, logger_factory):
    zoho_id = add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, link_record="lookup")
    add_decision(store, ANSWERED_ID, integration_id=zoho_id, record_module="Contacts", record_id="4150868000000999999")
    logger = await logger_factory()
    feed(logger, "inbound-answered")
    await settled(store, count=1)
    (activity,) = zoho.activities
    assert activity["Who_Id"] == {"id": ZOHO_ALICE}
    assert any("/search" in r.path and "phone" in r.params for r in zoho.api_requests())


async def test_exactly_once_across_a_worker_restart(store, zoho, logger_factory):
    add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, inbound_missed=True)
    first = await logger_factory()
    zoho.delay = 0.4  # the CRM is slow: the worker is stopped mid-delivery
    feed(first, "inbound-answered", "inbound-missed")
    async with asyncio.timeout(10):
        while not any(r.method == "POST" and r.path.endswith("/Calls") for r in zoho.requests):
            await asyncio.sleep(0.02)
    await first.close()  # a restart: leases left behind, a call maybe logged but not marked
    zoho.delay = 0.0
    with store.factory() as session:
        session.execute(CallDelivery.__table__.update().values(lease_until=None))  # the lease ran out
        session.commit()
    second = await logger_factory()
    feed(second, "inbound-answered", "inbound-missed")  # Asterisk's events again (duplicates): nothing new
    await settled(store, count=2)
    await second.close()
    third = await logger_factory()  # and once everything is delivered, a restart sends nothing
    before = len(zoho.requests)
    await asyncio.sleep(0.3)
    assert len(zoho.requests) == before
    assert sorted(a["Subject"].rsplit("[", 1)[1] for a in zoho.activities) == [f"{ANSWERED_ID}]", f"{MISSED_ID}]"]
    assert third.worker.delivered == {}


@pytest.mark.parametrize("fault", ["500", "429", "timeout"])
async def test_crm_outages_are_retried_until_delivered(store, zoho, logger_factory, fault):
    zoho_id = add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True)
    if fault == "500":
        zoho.fail_next(500, {"code": "INTERNAL_ERROR", "message": "internal", "status": "error", "details": {}}, times=2)
    elif fault == "429":
        zoho.fail_next(429, {"code": "TOO_MANY_REQUESTS", "message": "slow down", "status": "error", "details": {}},
                       headers={"Retry-After": "60"}, times=2)  # fmt: skip
    # A short per-call timeout only where the fault is a timeout: elsewhere a loaded machine must not add one.
    logger = await logger_factory(log_timeout=0.5 if fault == "timeout" else 5.0)
    if fault == "timeout":
        zoho.delay = 2.0
    feed(logger, "inbound-answered")
    if fault == "timeout":
        async with asyncio.timeout(10):
            while not logger.worker.failures:
                await asyncio.sleep(0.02)
        zoho.delay = 0.0
    rows = await settled(store, count=1)
    row = rows[(ANSWERED_ID, zoho_id)]
    assert row.status == "delivered" and row.attempts >= 2 and row.last_error == ""
    assert len(zoho.activities) == 1
    reasons = {reason for (_, reason) in logger.worker.failures}
    assert reasons == {"500": {"http_500"}, "429": {"rate_limited"}, "timeout": {"timeout"}}[fault]


async def test_too_many_failures_park_the_call_with_its_error_until_retried(store, zoho, logger_factory):
    zoho_id = add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True)
    zoho.fail_next(500, {"code": "INTERNAL_ERROR", "message": "the CRM is down", "status": "error", "details": {}},
                   times=1000)  # fmt: skip
    logger = await logger_factory(max_attempts=3)
    feed(logger, "inbound-answered")
    rows = await settled(store, count=1)
    row = rows[(ANSWERED_ID, zoho_id)]
    assert (row.status, row.attempts) == ("parked", 3) and "HTTP 500" in row.last_error
    assert logger.worker.parked == {"Zoho": 1}
    zoho.reset()
    zoho.records = []
    with store.factory() as session:
        outbox.retry(session, row.id)
        session.commit()
    logger.worker.wake()
    rows = await settled(store, count=1)
    assert rows[(ANSWERED_ID, zoho_id)].status == "delivered" and len(zoho.activities) == 1


async def test_disabled_integrations_park_and_unwanted_calls_are_skipped(store, zoho, logger_factory):
    from crmroute.schemas import IntegrationIn
    from crmroute.store import integrations
    from crmroute.store.db import transaction

    zoho_id = add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, inbound_missed=True)
    logger = await logger_factory()
    await logger.worker.close()  # written, not delivered yet
    feed(logger, "inbound-answered", "inbound-missed")
    await logger.outbox.flush()
    with transaction(store.factory) as session:
        row = integrations.get(session, zoho_id)
        data = integrations.to_data(row, store.box) | {"enabled": False}
        integrations.update(session, store.box, zoho_id, IntegrationIn.model_validate(data))
    await logger.worker.run_once()
    rows = await asyncio.to_thread(statuses, store)
    assert {r.status for r in rows.values()} == {"parked"} and all(r.attempts == 0 for r in rows.values())
    assert "disabled" in rows[(ANSWERED_ID, zoho_id)].last_error
    with transaction(store.factory) as session:
        row = integrations.get(session, zoho_id)
        data = integrations.to_data(row, store.box) | {"enabled": True}
        data["log_options"] = data["log_options"] | {"inbound_missed": False}
        integrations.update(session, store.box, zoho_id, IntegrationIn.model_validate(data))
        for r in session.scalars(select(CallDelivery)):
            outbox.retry(session, r.id)
    await logger.worker.run_once()
    rows = await asyncio.to_thread(statuses, store)
    assert rows[(ANSWERED_ID, zoho_id)].status == "delivered" and rows[(MISSED_ID, zoho_id)].status == "skipped"
    assert len(zoho.activities) == 1


@SQLITE_ONLY
async def test_calls_wait_in_memory_while_the_database_is_unreachable(store, zoho, logger_factory, monkeypatch):
    add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, outbound=True)
    logger = await logger_factory()
    real = outbox.add_calls
    down = {"on": True}

    def flaky(session, calls):
        if down["on"]:
            raise OperationalError("INSERT INTO calllog_calls", {}, Exception("database is locked"))
        return real(session, calls)

    monkeypatch.setattr(outbox, "add_calls", flaky)
    feed(logger, "inbound-answered", "outbound")
    async with asyncio.timeout(5):
        while logger.outbox.db_ok:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)  # a few more flushes fail
    assert logger.outbox.pending == 2 and logger.status()["database"] == "unreachable"
    assert await asyncio.to_thread(statuses, store) == {}
    down["on"] = False
    await settled(store, count=2)
    assert logger.outbox.pending == 0 and logger.outbox.db_ok and len(zoho.activities) == 2


@SQLITE_ONLY
async def test_each_integration_is_paced_by_its_request_budget(store, logger_factory):
    import time

    from crmroute.connectors.base import Connector, ConnectorSettings

    class Slowpoke(Connector):
        kind, title, requests_per_second = "zoho", "Budget CRM", 30.0  # 3 requests per call: 10 calls/s

        def __init__(self) -> None:
            self.times: list[float] = []
            self.settings = ConnectorSettings()

        async def log_call(self, call, options, *, deadline):
            self.times.append(time.monotonic())
            return f"A-{call.call_id}"

    fake = Slowpoke()
    add_integration(store, "Budget", inbound_answered=True, inbound_missed=True, outbound=True)
    logger = await logger_factory()
    await logger.worker.close()
    logger.worker._connector_for = lambda spec: fake
    from tests.calllog.helpers import recorded_calls
    from tests.calllog.scenarios import inbound_busy, outbound_unanswered

    calls = recorded_calls() + [c for s in (inbound_busy(), outbound_unanswered()) for c in _calls(s)]
    logger.outbox.add(calls)
    await logger.outbox.flush()
    await logger.worker.run_once()
    assert len(fake.times) == 5
    # 3 / 30 s per call, counted from the first: one call late (a busy machine) may be followed by a
    # shorter gap, but never by more calls than the rate allows.
    since_first = [t - fake.times[0] for t in fake.times]
    assert all(elapsed >= n * 0.1 - 0.005 for n, elapsed in enumerate(since_first)), since_first


def _calls(scenario):
    from crmroute.calllog.calls import CallConfig, CallTracker

    tracker = CallTracker(CallConfig(grace=0))
    return [c for m in scenario.messages() for c in tracker.feed(m, m.received)]


def test_backoff_doubles_up_to_its_cap():
    assert [backoff(n, 10, 60) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


# --- stopping and starting again ---------------------------------------------------------------


async def test_close_lets_a_write_in_progress_finish_and_writes_the_rest(store, monkeypatch):
    from crmroute.calllog.worker import OutboxWriter
    from tests.calllog.helpers import recorded_calls

    add_integration(store, "All", inbound_answered=True, inbound_missed=True, outbound=True)
    started, release = threading.Event(), threading.Event()
    real = outbox.add_calls

    def slow_add_calls(session, calls):
        if not started.is_set():  # the first write only: its batch is out of the buffer, the write not done
            started.set()
            release.wait(10)
        return real(session, calls)

    monkeypatch.setattr(outbox, "add_calls", slow_add_calls)
    writer = OutboxWriter(store.factory)
    writer.start()
    first, *rest = recorded_calls()
    writer.add([first])
    assert await asyncio.to_thread(started.wait, 10)
    writer.add(rest)  # finished while the first write is in progress
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0.3)
    assert not closing.done()  # close waits for the write, it does not cancel it
    release.set()
    await asyncio.wait_for(closing, 15)
    with store.factory() as session:
        assert sorted(session.scalars(select(CallLogCall.linked_id))) == sorted([ANSWERED_ID, MISSED_ID, OUTBOUND_ID])
    assert writer.pending == 0


async def test_a_call_up_across_a_restart_is_taken_back_and_logged_once(store, zoho, logger_factory):
    from tests.calllog.scenarios import Scenario, inbound_ringing

    add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True)
    s = Scenario(prefix="pbx-restart-1")
    trunk, agent = inbound_ringing(s)
    first = await logger_factory()
    for message in s.messages():
        first.on_event(message)
    await first.close()  # SIGTERM mid-call: the call's state is saved
    with store.factory() as session:
        assert list(session.scalars(select(CallLogOpenCall.linked_id))) == [trunk.linkedid]
    second = await logger_factory()
    assert second.tracker.open_calls == 1
    end = Scenario(prefix="pbx-restart-1", t0=s.t + 40)
    end.hangup(agent)
    end.hangup(trunk)
    for message in end.messages():
        second.on_event(message)
    rows = await settled(store, count=1)
    (row,) = rows.values()
    assert row.status == "delivered" and len(zoho.activities) == 1
    assert zoho.activities[0]["Call_Type"] == "Inbound" and zoho.activities[0]["Call_Duration"] == "00:40"
    await second.close()
    with store.factory() as session:
        assert list(session.scalars(select(CallLogOpenCall.linked_id))) == []


async def test_a_stop_while_claiming_leaves_no_delivery_held(store, zoho, logger_factory, monkeypatch):
    """The claim runs in a thread that a stop cannot cancel: what it claimed is given back, not held for the
    lease's 300 s (a restart would not deliver those calls for five minutes)."""
    add_integration(store, "Zoho", **zoho_settings(zoho), inbound_answered=True, inbound_missed=True)
    started, release, claimed = threading.Event(), threading.Event(), threading.Event()
    real = outbox.claim

    def slow_claim(session, *args, **kwargs):
        started.set()
        release.wait(10)
        try:
            return real(session, *args, **kwargs)
        finally:
            claimed.set()

    monkeypatch.setattr(outbox, "claim", slow_claim)
    logger = await logger_factory()
    feed(logger, "inbound-answered", "inbound-missed")
    assert await asyncio.to_thread(started.wait, 10)
    closing = asyncio.create_task(logger.close())  # cancels the lane while its claim is in the thread
    await asyncio.sleep(0.2)
    release.set()
    await asyncio.wait_for(closing, 15)
    assert await asyncio.to_thread(claimed.wait, 10)
    await asyncio.sleep(0.2)  # the claim's transaction commits
    rows = statuses(store)
    assert len(rows) == 2 and all(r.lease_until is None and r.status == "pending" for r in rows.values())
    assert zoho.activities == []
