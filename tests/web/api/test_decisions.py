"""/api/v1/decisions: filters, paging, one decision with its trace."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crmroute.store.db import transaction
from crmroute.store.models import DecisionRecord
from tests.web.api.conftest import SQLITE_ONLY, fields

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def logged(web, api):
    rows = [
        ("+15551230001", "VIP", "matched", 3), ("+15551230002", "VIP", "fallback", 2),
        ("+15559990003", "Menu", "default", 1), ("+15551230004", "Menu", "matched", 0),
    ]  # fmt: skip
    with transaction(web.store.factory) as session:
        for caller, rule, status, days in rows:
            session.add(DecisionRecord(created_at=NOW - timedelta(days=days), caller=caller, rule=rule, status=status,
                                       dest_type="queue", dest="103", trace=[f"{rule} said {status}"]))  # fmt: skip
    return api


def callers(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [d["caller"] for d in response.json()["items"]]


def test_filters_and_paging(logged):
    everything = logged.get("/api/v1/decisions").json()
    assert everything["total"] == 4 and "trace" not in everything["items"][0]
    assert callers(logged.get("/api/v1/decisions")) == ["+15551230004", "+15559990003", "+15551230002", "+15551230001"]
    assert callers(logged.get("/api/v1/decisions?caller=1230")) == ["+15551230004", "+15551230002", "+15551230001"]
    assert callers(logged.get("/api/v1/decisions?rule=VIP&status=matched")) == ["+15551230001"]
    since = (NOW - timedelta(days=2)).isoformat()
    assert callers(logged.get("/api/v1/decisions", params={"since": since})) == ["+15551230004", "+15559990003", "+15551230002"]  # fmt: skip
    until = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert callers(logged.get("/api/v1/decisions", params={"since": since, "until": until})) == ["+15551230002"]
    page = logged.get("/api/v1/decisions?offset=1&limit=2").json()
    assert page["total"] == 4 and [d["caller"] for d in page["items"]] == ["+15559990003", "+15551230002"]


@SQLITE_ONLY  # request validation: the same on both engines
def test_bad_filters_name_the_field(logged):
    assert fields(logged.get("/api/v1/decisions?since=yesterday&until=2026-13-01")).keys() == {"since", "until"}
    assert fields(logged.get("/api/v1/decisions?status=great")).keys() == {"status"}


def test_one_decision_with_its_trace(logged):
    first = logged.get("/api/v1/decisions?rule=Menu&status=default").json()["items"][0]
    full = logged.get(f"/api/v1/decisions/{first['id']}").json()
    assert full == first | {"trace": ["Menu said default"]}
    assert logged.get("/api/v1/decisions/99999").json() == {"detail": "no decision with id 99999"}
