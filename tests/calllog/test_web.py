"""/api/v1/calllog, the /calllog page, the integration page's deliveries, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest
from argon2 import PasswordHasher

from crmroute.calllog.worker import CallLogger
from crmroute.store import calllog as outbox
from crmroute.store import users
from crmroute.store.db import transaction
from crmroute.web.app import create_app
from tests.calllog.fakeami import SECRET, USERNAME, running_ami
from tests.calllog.helpers import ANSWERED_ID, EVERYTHING, MISSED_ID, OUTBOUND_ID, add_integration, recorded_calls
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401
from tests.web.conftest import Web, web  # noqa: F401

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def seeded(web: Web) -> dict[str, int]:  # noqa: F811
    """Three calls for "Zoho": one delivered, one parked, one pending; the missed one for "Other" too."""
    store = web.store
    zoho = add_integration(store, "Zoho", **EVERYTHING)
    other = add_integration(store, "Other", inbound_missed=True)
    with transaction(store.factory) as session:
        outbox.add_calls(session, recorded_calls())
    ids = {}
    with transaction(store.factory) as session:
        claimed = {c.linked_id: c.id for c in outbox.claim(session, zoho, limit=10, lease=60)}
        outbox.record(session, [outbox.Result(claimed[ANSWERED_ID], outbox.DELIVERED, activity_id="Calls/777"),
                                outbox.Result(claimed[MISSED_ID], outbox.PARKED, error="http_500: Zoho CRM answered HTTP 500"),
                                outbox.Result(claimed[OUTBOUND_ID], outbox.PENDING, error="timeout: slow")])  # fmt: skip
        ids = {"delivered": claimed[ANSWERED_ID], "parked": claimed[MISSED_ID], "pending": claimed[OUTBOUND_ID],
               "zoho": zoho, "other": other}  # fmt: skip
    return ids


def test_api_lists_filters_and_shows_deliveries(web, seeded):  # noqa: F811
    api = web.api()
    assert web.client().get("/api/v1/calllog").status_code == 401
    page = api.get("/api/v1/calllog").json()
    assert page["total"] == 4 and page["counts"] == {"pending": 2, "delivered": 1, "parked": 1, "dropped": 0, "skipped": 0}
    assert page["ami"]["state"] == "off" and "CRMROUTE_AMI_HOST" in page["ami"]["last_error"]
    parked = api.get("/api/v1/calllog", params={"status": "parked"}).json()["items"]
    assert [(p["id"], p["linked_id"], p["last_error"]) for p in parked] == [
        (seeded["parked"], MISSED_ID, "http_500: Zoho CRM answered HTTP 500")]
    mine = api.get("/api/v1/calllog", params={"integration": seeded["other"]}).json()
    assert mine["total"] == 1 and mine["counts"]["pending"] == 1
    one = api.get(f"/api/v1/calllog/{seeded['delivered']}").json()
    assert one["activity_id"] == "Calls/777" and one["integration"]["name"] == "Zoho"
    assert one["call"]["outcome"] == "answered" and one["call"]["extension"] == "201" and one["call"]["talk_seconds"] == 3
    assert api.get("/api/v1/calllog/999999").status_code == 404
    bad = api.get("/api/v1/calllog", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"


def test_api_retries_and_drops(web, seeded):  # noqa: F811
    api = web.api()
    retried = api.post(f"/api/v1/calllog/{seeded['parked']}/retry")
    assert retried.status_code == 200 and (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    assert api.post(f"/api/v1/calllog/{seeded['delivered']}/retry").status_code == 409
    assert api.delete(f"/api/v1/calllog/{seeded['parked']}").status_code == 204
    assert api.get(f"/api/v1/calllog/{seeded['parked']}").json()["status"] == "dropped"
    assert api.delete(f"/api/v1/calllog/{seeded['delivered']}").status_code == 409
    assert api.delete("/api/v1/calllog/999999").status_code == 404
    browser = web.browser()  # a session cookie needs the CSRF header for unsafe methods
    assert browser.post(f"/api/v1/calllog/{seeded['pending']}/retry").status_code == 403


def test_page_lists_filters_and_offers_retry_and_drop(web, seeded):  # noqa: F811
    browser = web.browser()
    page = browser.get("/calllog")
    assert page.status_code == 200
    html = page.text
    assert '<a href="/calllog" aria-current="page">Call log</a>' in html
    assert "AMI connection:" in html and ">off<" in html
    assert "Calls/777" in html and "http_500: Zoho CRM answered HTTP 500" in html and "ext. 201" in html
    assert f'action="/calllog/{seeded["parked"]}/retry"' in html
    drop = re.search(rf'<form method="post" action="/calllog/{seeded["parked"]}/drop"\s+data-confirm="([^"]+)"', html)
    assert drop and "Are you sure you want to drop call" in drop.group(1)
    assert f'action="/calllog/{seeded["delivered"]}/drop"' not in html  # delivered: nothing to drop
    only = browser.get("/calllog", params={"status": "parked"}).text
    assert MISSED_ID in only and "Calls/777" not in only
    assert "must be one of" in browser.get("/calllog", params={"status": "nope"}).text


def test_page_retry_and_drop_need_the_csrf_token(web, seeded):  # noqa: F811
    browser = web.browser()
    refused = browser.post(f"/calllog/{seeded['parked']}/retry", data={"back": "/calllog"})
    assert refused.status_code == 403
    done = browser.post(f"/calllog/{seeded['parked']}/retry", data={"csrf_token": browser.csrf, "back": "/calllog?status=parked"})
    assert done.status_code == 303 and done.headers["location"] == "/calllog?status=parked"
    assert "will be logged again into Zoho" in browser.get(done.headers["location"]).text
    dropped = browser.post(f"/calllog/{seeded['pending']}/drop", data={"csrf_token": browser.csrf, "back": "https://evil.example/"})
    assert dropped.status_code == 303 and dropped.headers["location"] == "/calllog"
    assert web.api().get(f"/api/v1/calllog/{seeded['pending']}").json()["status"] == "dropped"
    nope = browser.post(f"/calllog/{seeded['delivered']}/drop", data={"csrf_token": browser.csrf})
    assert "Not dropped" in browser.get(nope.headers["location"]).text


def test_the_integration_page_shows_its_recent_deliveries(web, seeded):  # noqa: F811
    browser = web.browser()
    html = browser.get(f"/integrations/{seeded['zoho']}/edit").text
    assert "Recent call log deliveries" in html and "Calls/777" in html and "http_500" in html
    assert f'href="/calllog?integration={seeded["zoho"]}"' in html
    assert f'name="back" value="/integrations/{seeded["zoho"]}/edit"' in html
    fresh = add_integration(web.store, "Fresh")
    assert "tick the calls to log above" in browser.get(f"/integrations/{fresh}/edit").text


def test_healthz_says_the_call_logger_is_off(web):  # noqa: F811
    body = web.api().get("/healthz").json()
    assert body["ami"]["state"] == "off" and body["status"] == "ok"


async def test_healthz_metrics_and_page_show_the_ami_connection(web, seeded):  # noqa: F811
    async with running_ami() as ami:
        settings = dataclasses.replace(web.store.settings, ami_host="127.0.0.1", ami_port=ami.port,
                                       ami_username=USERNAME, ami_secret=SECRET)  # fmt: skip
        router = web.app.state.router
        call_logger = CallLogger(settings, web.store.factory, router.pool.get, ami_options={"timeout": 1.0})
        await call_logger.worker.close()
        call_logger.ami.start()
        try:
            await ami.wait_logins(1)
            router.metrics.calllog_collector = None  # a second app on the same router: its own collector
            app = create_app(settings, web.store, router=router, call_logger=call_logger)
            client = Web(app, web.store, web.token).api()
            health = client.get("/healthz").json()["ami"]
            assert health["state"] == "connected" and health["host"] == f"127.0.0.1:{ami.port}"
            assert health["open_calls"] == 0 and health["database"] == "ok"
            metrics = client.get("/metrics").text
            assert "crmroute_ami_connected 1.0" in metrics
            assert 'crmroute_ami_state{state="connected"} 1.0' in metrics
            assert 'crmroute_calllog_deliveries{status="parked"} 1.0' in metrics
            assert 'crmroute_calllog_deliveries{status="pending"} 2.0' in metrics
            call_logger.finished(recorded_calls("inbound-answered"))
            assert 'crmroute_calllog_calls_total{direction="inbound",outcome="answered"} 1.0' in client.get("/metrics").text
            await ami.stop()
            async with asyncio.timeout(5):
                while call_logger.status()["state"] == "connected":
                    await asyncio.sleep(0.02)
            assert client.get("/healthz").json()["ami"]["state"] == "reconnecting"
            assert 'crmroute_ami_connected 0.0' in client.get("/metrics").text
        finally:
            await call_logger.close()
