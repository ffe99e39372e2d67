"""The decision log pages: filters, paging, the trace of one decision."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from crmroute.routing.trace import Decision, Destination, DestType, Status
from crmroute.store.db import transaction
from crmroute.store.decisions import CallMeta, to_record

NOW = datetime.now(timezone.utc)


def log(web, n: int = 1, *, status=Status.MATCHED, caller="+15551230001", rule="VIP", at=None, **fields) -> None:
    with transaction(web.store.factory) as session:
        for i in range(n):
            decision = Decision(status, rule=rule, destination=Destination(DestType.QUEUE, "103"), value="GOLD", row=1,
                                key=caller, key_source="caller_id", crm_ms=12.5, total_ms=14.25,
                                steps=["rule VIP", "asked https://crm.example.com/lookup", "row 1 matched"], **fields)  # fmt: skip
            session.add(to_record(decision, CallMeta(call_id=f"call-{i}", caller=caller, did="5551000"), at or NOW))


@pytest.mark.parametrize("path", ["/decisions", "/decisions/1", "/decisions?status=matched"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/decisions")


def test_list_newest_first_with_paging(web, admin):
    log(web, 60)
    html = admin.get("/decisions").text
    ids = [int(i) for i in re.findall(r'<a href="/decisions/(\d+)">', html)]
    assert ids == list(range(60, 10, -1))
    assert "1–50 of 60" in html and "DID 5551000" in html and "queue 103" in html and "12.5 ms" in html
    second = admin.get("/decisions?offset=50").text
    assert [int(i) for i in re.findall(r'<a href="/decisions/(\d+)">', second)] == list(range(10, 0, -1))


def test_filters(web, admin):
    log(web, 2, caller="+15550000001")
    log(web, 1, caller="+15559999999", status=Status.FALLBACK, rule="Other", error="CRM timed out", reason="timeout")
    log(web, 1, caller="+15558888888", at=NOW - timedelta(days=3))

    def shown(**params) -> int:
        return len(re.findall(r'<a href="/decisions/\d+">', admin.get("/decisions", params=params).text))

    assert shown() == 4
    assert shown(caller="9999") == 1
    assert shown(rule="Other") == 1 and shown(status="fallback") == 1 and shown(status="default") == 0
    assert shown(since=(NOW - timedelta(days=1)).date().isoformat()) == 3
    assert shown(until=(NOW - timedelta(days=2)).date().isoformat()) == 1
    assert shown(until=NOW.date().isoformat()) == 4  # "until" includes its day
    html = admin.get("/decisions", params={"since": "yesterday"}).text
    assert "must be a date" in html
    page2 = admin.get("/decisions", params={"caller": "555", "status": "matched"}).text
    assert 'value="555"' in page2


def test_detail_shows_the_full_trace(web, admin):
    log(web, 1, status=Status.FALLBACK, error="CRM <b>timed</b> out", reason="timeout")
    html = admin.get("/decisions/1").text
    for text in ("fallback", "timeout", "VIP", "+15551230001", "the caller&#39;s number", "GOLD", "queue 103",
                 "CRM 12.5 ms, total 14.2 ms", "asked https://crm.example.com/lookup", "call-0", "DID"):  # fmt: skip
        assert text in html, text
    assert "CRM &lt;b&gt;timed&lt;/b&gt; out" in html  # escaped
    assert admin.get("/decisions/999").status_code == 404
