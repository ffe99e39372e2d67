"""The dashboard's roll-up of the decision log: counts per minute/hour, percentiles, dead rows, both engines."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select

from crmroute.schemas import DestinationIn, RuleIn
from crmroute.store import dashboard, destinations, rules
from crmroute.store.db import transaction
from crmroute.store.models import DecisionRecord, DecisionStat


def decision(at: datetime, status: str, *, rule: str = "VIP", row: int | None = None, reason: str = "",
             crm_ms: float | None = 40.0, cached: bool = False, source: str = "agi") -> dict:  # fmt: skip
    return {"created_at": at, "source": source, "status": status, "rule": rule, "row": row, "reason": reason,
            "crm_ms": crm_ms, "cached": cached, "total_ms": 1.0, "trace": []}  # fmt: skip


def seed(store, rows: list[dict]) -> None:
    with transaction(store.factory) as session:
        session.execute(insert(DecisionRecord), rows)


def add_rule(store) -> None:
    with transaction(store.factory) as session:
        for item in ({"type": "extension", "number": "100"}, {"type": "queue", "number": "103"},
                     {"type": "queue", "number": "104"}):  # fmt: skip
            destinations.create(session, DestinationIn.model_validate(item))
        rules.create(session, store.box, RuleIn.model_validate({
            "name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
            "custom_url": "https://crm.example.com/x", "default_destination": "100",
            "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
                     {"operator": "=", "value": "SILVER", "destination": "queue", "option": "104"}]}))  # fmt: skip


def test_roll_up_counts_calls_once_and_the_summary_draws_them(store):
    add_rule(store)
    now = time.time()
    at = datetime.fromtimestamp(now, timezone.utc) - timedelta(minutes=5)
    rows = [decision(at, "matched", row=1, crm_ms=30) for _ in range(18)]
    rows += [decision(at, "matched", row=1, crm_ms=None, cached=True) for _ in range(2)]
    rows += [decision(at, "fallback", reason="timeout", crm_ms=2600) for _ in range(3)]
    rows += [decision(at, "default", reason="no_match", crm_ms=400)]
    rows += [decision(at, "no_rule", crm_ms=None), decision(at, "matched", row=1, source="dry_run")]
    seed(store, rows)
    assert dashboard.roll_up(store.factory) == len(rows)
    assert dashboard.roll_up(store.factory) == 0  # nothing new: nothing counted twice
    with store.factory() as session:
        data = dashboard.summary(session, "hour", now=now)
    assert data.total == 25  # the dry run is not a call
    assert sum(data.by_status["matched"]) == 20 and sum(data.by_status["error"]) == 1
    assert data.fallback_reasons == [("timeout", 3)]
    assert (data.cache_hits, data.cache_misses) == (2, 22)
    [custom] = data.latency
    assert custom["integration"] == "custom" and custom["calls"] == 22
    assert custom["p50"] == "50" and custom["p95"] == "3000"
    [vip] = data.rules
    assert [r["calls"] for r in vip.rows] == [20, 0]  # row 2 never matched: a dead row
    assert vip.default_calls == 5
    with store.factory() as session:
        day = dashboard.summary(session, "day", now=now)
        week = dashboard.summary(session, "week", now=now)
    assert day.total == week.total == 25 and len(day.buckets) == 24 and len(week.buckets) == 168


def test_new_rows_are_added_to_the_same_buckets(store):
    now = time.time()
    at = datetime.fromtimestamp(now, timezone.utc) - timedelta(minutes=1)
    seed(store, [decision(at, "matched", row=1)])
    dashboard.roll_up(store.factory)
    seed(store, [decision(at, "matched", row=1), decision(at, "fallback", reason="crm_error")])
    assert dashboard.roll_up(store.factory) == 2
    with store.factory() as session:
        data = dashboard.summary(session, "hour", now=now)
        stored = session.scalar(select(func.count()).select_from(DecisionStat).where(
            DecisionStat.metric == "status", DecisionStat.span == 60))
    assert sum(data.by_status["matched"]) == 2 and sum(data.by_status["fallback"]) == 1
    assert stored == 2  # one bucket row per (minute, status, reason, cached)


def test_old_calls_fall_out_of_the_window_and_minutes_are_dropped(store):
    now = time.time()
    old = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=3)
    seed(store, [decision(old, "matched", row=1)])
    dashboard.roll_up(store.factory, now=now)
    with store.factory() as session:
        assert dashboard.summary(session, "week", now=now).total == 1
        assert dashboard.summary(session, "day", now=now).total == 0
        minutes = session.scalar(select(func.count()).select_from(DecisionStat).where(DecisionStat.span == 60))
    assert minutes == 0


def test_percentile_is_the_bucket_bound():
    assert dashboard.percentile({"10": 50, "100": 45, "inf": 5}, 0.5) == "10"
    assert dashboard.percentile({"10": 50, "100": 45, "inf": 5}, 0.95) == "100"
    assert dashboard.percentile({"10": 1, "inf": 99}, 0.95) == "inf"
    assert dashboard.percentile({}, 0.5) == ""
