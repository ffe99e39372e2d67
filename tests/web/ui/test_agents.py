"""The agents page: list with state and CRM identities explained, add/edit/delete, errors by field, resolve, sync."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from crmroute.calllog.ami import Message
from crmroute.calllog.presence import Availability
from crmroute.store import agents
from tests.web.ui.conftest import add_integration, field_error, follow, input_value, post

OLIVIA = {"name": "Olivia Owner", "extension": "201", "devices": "PJSIP/201, PJSIP/201-mobile",
          "identity-0-integration": "Main Zoho", "identity-0-user_id": "4150868000000225013",
          "identity-0-email": "Olivia.Owner@example.com"}  # fmt: skip


def stored(web) -> list[dict]:
    with web.store.factory() as session:
        return [agents.to_data(a) for a in agents.list_all(session)]


@pytest.mark.parametrize("path", ["/agents", "/agents/new", "/agents/1/edit"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"


def test_add_edit_delete(web, admin):
    add_integration(web)
    html = follow(admin, post(admin, "/agents/new", OLIVIA))
    assert "Saved agent Olivia Owner (extension 201)." in html
    assert stored(web) == [{"name": "Olivia Owner", "extension": "201", "devices": ["PJSIP/201", "PJSIP/201-mobile"],
                            "identities": {"Main Zoho": {"user_id": "4150868000000225013",
                                                         "email": "Olivia.Owner@example.com"}}}]  # fmt: skip
    assert "Main Zoho: Olivia.Owner@example.com, user id 4150868000000225013 → extension 201" in html
    assert "AMI is not connected in this process" in html and ">unknown</span>" in html
    agent_id = next(iter(agents.list_all(web.store.factory())), None).id
    form = admin.get(f"/agents/{agent_id}/edit").text
    assert input_value(form, "devices") == "PJSIP/201, PJSIP/201-mobile"
    assert input_value(form, "identity-0-email") == "Olivia.Owner@example.com"
    changed = OLIVIA | {"extension": "202", "devices": "", "identity-0-user_id": ""}
    follow(admin, post(admin, f"/agents/{agent_id}/edit", changed))
    assert stored(web) == [{"name": "Olivia Owner", "extension": "202",
                            "identities": {"Main Zoho": "Olivia.Owner@example.com"}}]  # fmt: skip
    html = follow(admin, post(admin, f"/agents/{agent_id}/delete"))
    assert "Removed agent Olivia Owner." in html and stored(web) == []


def test_errors_next_to_their_fields(web, admin):
    add_integration(web)
    response = post(admin, "/agents/new", OLIVIA | {"extension": "2 01", "identity-0-email": "not-an-email"})
    assert response.status_code == 422
    assert field_error(response.text, "extension") == "use digits, letters and * # + - _ . only"
    assert field_error(response.text, "identity-0-email") == "must be an e-mail address such as olivia.owner@example.com"
    assert input_value(response.text, "name") == "Olivia Owner"  # what was typed stays
    follow(admin, post(admin, "/agents/new", OLIVIA))
    response = post(admin, "/agents/new", OLIVIA | {"name": "Other"})
    assert response.status_code == 422
    assert field_error(response.text, "extension") == "an agent with extension '201' already exists"
    response = post(admin, "/agents/new", OLIVIA | {"extension": "203", "devices": "201"})
    assert "is not an Asterisk device" in field_error(response.text, "devices")


def test_resolve_explains_which_agent_a_crm_user_is(web, admin):
    add_integration(web)
    follow(admin, post(admin, "/agents/new", OLIVIA))
    html = admin.get("/agents", params={"integration": "Main Zoho", "user": "olivia.owner@EXAMPLE.com"}).text
    assert "olivia.owner@EXAMPLE.com → extension 201 (agent Olivia Owner)" in html
    html = admin.get("/agents", params={"integration": "Main Zoho", "user": "4150868000000225013"}).text
    assert "4150868000000225013 → extension 201 (agent Olivia Owner)" in html
    html = admin.get("/agents", params={"integration": "Main Zoho", "user": "someone@example.com"}).text
    assert "No agent is &#39;someone@example.com&#39; in Main Zoho." in html


def test_state_comes_from_the_ami_map(web, admin):
    add_integration(web)
    follow(admin, post(admin, "/agents/new", OLIVIA))
    availability = Availability()
    availability.feed(Message.of(Event="DeviceStateChange", Device="PJSIP/201-mobile", State="INUSE"))
    web.app.state.call_logger = SimpleNamespace(availability=availability)
    html = admin.get("/agents").text
    assert ">busy</span>" in html and "PJSIP/201-mobile: INUSE" in html
    assert "States come live from Asterisk" in html
    assert admin.get("/api/v1/agents", headers={"Authorization": f"Bearer {web.token}"}).json()["items"][0][
        "availability"] == {"state": "busy", "sources": [{"source": "PJSIP/201-mobile", "state": "INUSE"}]}


def test_sync_offers_listing_kinds_and_reports_refusals(web, admin):
    add_integration(web)
    html = admin.get("/agents").text
    assert '<option value="Main Zoho">Main Zoho (zoho)</option>' in html
    html = follow(admin, post(admin, "/agents/sync", {"integration": "Nope"}))
    assert "Not synced from Nope: integration: no integration named &#39;Nope&#39;" in html
