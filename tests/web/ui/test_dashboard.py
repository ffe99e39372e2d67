"""The dashboard (home page): charts drawn from the decision log as SVG, per period."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from crmroute.routing.trace import Decision, Destination, DestType, Status
from crmroute.store.db import transaction
from crmroute.store.decisions import CallMeta, to_record


def log(web, n: int, status: Status, *, minutes_ago: float = 2, **fields) -> None:
    at = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    with transaction(web.store.factory) as session:
        for i in range(n):
            decision = Decision(status, rule="VIP", destination=Destination(DestType.QUEUE, "103"), key="+1555",
                                crm_ms=fields.pop("crm_ms", 20.0), total_ms=21.0, **fields)  # fmt: skip
            session.add(to_record(decision, CallMeta(call_id=f"c{i}"), at))


def test_home_needs_sign_in(web):
    response = web.client().get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/")


def test_home_draws_the_decision_log(web, admin):
    log(web, 4, Status.MATCHED, row=1)
    log(web, 2, Status.FALLBACK, reason="timeout")
    log(web, 1, Status.FALLBACK, reason="crm_error", minutes_ago=60 * 5)  # only in the day and week
    html = admin.get("/").text
    assert 'data-chart="calls"' in html and 'data-total="6"' in html
    assert re.search(r'data-status="fallback" data-bucket="\d+" data-calls="2"', html)
    assert 'data-label="timeout" data-value="2"' in html and "crm_error" not in html
    assert 'data-chart="cache"' in html and 'data-misses="6"' in html
    assert 'data-integration="VIP"' in html or 'data-integration="custom"' in html
    day = admin.get("/?window=day").text
    assert 'data-total="7"' in day and 'data-label="crm_error" data-value="1"' in day and 'data-buckets="24"' in day
    assert 'data-buckets="168"' in admin.get("/?window=week").text
    assert 'data-buckets="60"' in admin.get("/?window=nonsense").text  # an unknown period: the last hour
