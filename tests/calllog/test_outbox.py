"""The outbox on SQLite and PostgreSQL: one call per Linkedid, one delivery per integration that wants it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crmroute.errors import Conflict, NotFound
from crmroute.store import calllog as outbox
from crmroute.store.db import transaction
from crmroute.store.models import CallDelivery, CallLogCall
from tests.calllog.helpers import (
    ANSWERED_ID, EVERYTHING, MISSED_ID, OUTBOUND_ID, add_decision, add_integration, recorded_calls,
)  # fmt: skip


def write(store, calls) -> int:
    with transaction(store.factory) as session:
        return outbox.add_calls(session, calls)


def deliveries(store) -> list[tuple[str, int, str]]:
    with store.factory() as session:
        rows = session.scalars(select(CallDelivery).order_by(CallDelivery.id))
        return [(r.linked_id, r.integration_id, r.status) for r in rows]


def test_calls_get_one_delivery_per_integration_that_wants_them(store):
    everything = add_integration(store, "All", **EVERYTHING)
    missed_only = add_integration(store, "Missed", inbound_missed=True)
    add_integration(store, "Off", enabled=False, **EVERYTHING)  # disabled: nothing for it
    add_integration(store, "Nothing")  # logs nothing
    assert write(store, recorded_calls()) == 3
    assert sorted(deliveries(store)) == sorted([
        (ANSWERED_ID, everything, "pending"), (MISSED_ID, everything, "pending"), (OUTBOUND_ID, everything, "pending"),
        (MISSED_ID, missed_only, "pending")])  # fmt: skip


def test_the_same_call_twice_is_stored_once(store):
    add_integration(store, "All", **EVERYTHING)
    calls = recorded_calls()
    assert write(store, calls + calls) == 3  # twice in one batch
    assert write(store, calls) == 0  # and again later
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(CallLogCall)) == 3
        assert session.scalar(select(func.count()).select_from(CallDelivery)) == 3


def test_one_delivery_per_integration_and_call_is_enforced_by_the_database(store):
    integration = add_integration(store, "All", **EVERYTHING)
    write(store, recorded_calls("inbound-answered"))
    with pytest.raises(IntegrityError), transaction(store.factory) as session:
        call = session.scalar(select(CallLogCall))
        session.add(CallDelivery(call_id=call.id, integration_id=integration, linked_id=ANSWERED_ID, status="pending"))


def test_internal_calls_are_not_stored(store):
    add_integration(store, "All", **EVERYTHING)
    (call,) = recorded_calls("outbound")
    call.direction = "internal"
    assert write(store, [call]) == 0


def test_the_routing_decision_is_joined_by_the_agi_uniqueid(store):
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    add_decision(store, ANSWERED_ID, integration_id=zoho, record_module="Contacts", record_id="4150868000000224001")
    write(store, recorded_calls("inbound-answered", "inbound-missed"))
    with store.factory() as session:
        rows = {r.linked_id: r for r in session.scalars(select(CallLogCall))}
    decision = rows[ANSWERED_ID].decision
    assert (decision["rule"], decision["status"], decision["dest"]) == ("VIP", "matched", "103")
    assert (decision["record_module"], decision["record_id"], decision["integration_id"]) == (
        "Contacts", "4150868000000224001", zoho)
    assert rows[MISSED_ID].decision == {}
    add_decision(store, MISSED_ID, dest="104")  # written late (another process's decision log)
    with transaction(store.factory) as session:
        assert outbox.refresh_decision(session, rows[MISSED_ID].id)["dest"] == "104"
    with store.factory() as session:
        assert session.get(CallLogCall, rows[MISSED_ID].id).decision["dest"] == "104"


def test_claims_hold_deliveries_until_the_lease_ends(store):
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    write(store, recorded_calls())
    with transaction(store.factory) as session:
        assert outbox.due_integrations(session) == [zoho]
        first = outbox.claim(session, zoho, limit=2, lease=60)
    with transaction(store.factory) as session:
        second = outbox.claim(session, zoho, limit=10, lease=60)
        assert outbox.claim(session, zoho, limit=10, lease=60) == []
    assert len(first) == 2 and len(second) == 1 and {c.linked_id for c in first + second} == {ANSWERED_ID, MISSED_ID, OUTBOUND_ID}
    assert first[0].call["direction"] == "inbound" and first[0].attempts == 0
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    with transaction(store.factory) as session:
        assert len(outbox.claim(session, zoho, limit=10, lease=60, now=later)) == 3  # a worker that died: claimable again


def test_results_are_recorded_and_an_admins_word_wins(store):
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    write(store, recorded_calls())
    with transaction(store.factory) as session:
        a, b, c = outbox.claim(session, zoho, limit=3, lease=60)
    with transaction(store.factory) as session:
        outbox.drop(session, c.id)  # the admin drops one while the worker holds it
    retry_at = datetime.now(timezone.utc) + timedelta(seconds=30)
    with transaction(store.factory) as session:
        outbox.record(session, [outbox.Result(a.id, outbox.DELIVERED, activity_id="Calls/1"),
                                outbox.Result(b.id, outbox.PENDING, error="http_500: down", next_attempt_at=retry_at),
                                outbox.Result(c.id, outbox.DELIVERED, activity_id="Calls/2")])  # fmt: skip
    with store.factory() as session:
        ra, rb, rc = (outbox.get(session, x.id) for x in (a, b, c))
        assert (ra.status, ra.activity_id, ra.attempts, ra.delivered_at is not None) == ("delivered", "Calls/1", 1, True)
        assert (rb.status, rb.last_error, rb.attempts) == ("pending", "http_500: down", 1)
        assert outbox.due_integrations(session) == []  # b waits for its next attempt
        assert (rc.status, rc.activity_id) == ("dropped", "")
        assert outbox.counts(session) == {"pending": 1, "delivered": 1, "parked": 0, "dropped": 1, "skipped": 0}
        public = outbox.to_public(ra)
        assert public["integration"] == {"id": zoho, "name": "Zoho"} and public["call"]["outcome"]
        assert public["next_attempt_at"] is None and public["delivered_at"].endswith("+00:00")


def test_retry_and_drop(store):
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    write(store, recorded_calls("inbound-answered", "inbound-missed"))
    with transaction(store.factory) as session:
        a, b = outbox.claim(session, zoho, limit=2, lease=60)
        outbox.record(session, [outbox.Result(a.id, outbox.PARKED, error="auth: refused"),
                                outbox.Result(b.id, outbox.DELIVERED, activity_id="X")])  # fmt: skip
    with transaction(store.factory) as session:
        row = outbox.retry(session, a.id)
        assert (row.status, row.attempts, row.last_error) == ("pending", 0, "auth: refused")
        with pytest.raises(Conflict):
            outbox.retry(session, b.id)
        with pytest.raises(Conflict):
            outbox.drop(session, b.id)
        with pytest.raises(NotFound):
            outbox.get(session, 10**6)
        assert outbox.drop(session, a.id).status == "dropped"


def test_purge_keeps_what_is_not_settled(store):
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    write(store, recorded_calls())
    with transaction(store.factory) as session:
        a, b, c = outbox.claim(session, zoho, limit=3, lease=60)
        outbox.record(session, [outbox.Result(a.id, outbox.DELIVERED, activity_id="X"),
                                outbox.Result(b.id, outbox.PARKED, error="e")])  # fmt: skip
    future = datetime.now(timezone.utc) + timedelta(days=100)
    with transaction(store.factory) as session:
        assert outbox.purge(session, 90, now=future) == 1  # the delivered one; parked and pending stay
    with store.factory() as session:
        assert {r.linked_id for r in session.scalars(select(CallLogCall))} == {b.linked_id, c.linked_id}


def test_deleting_an_integration_removes_its_deliveries(store):
    from crmroute.store import integrations

    zoho = add_integration(store, "Zoho", **EVERYTHING)
    write(store, recorded_calls())
    with transaction(store.factory) as session:
        integrations.delete(session, zoho)
    assert deliveries(store) == []
