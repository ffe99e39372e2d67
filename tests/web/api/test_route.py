"""/api/v1/route: dry runs through the real (fake) Custom CRM, never logged."""

from __future__ import annotations

from sqlalchemy import func, select

from crmroute.store.models import DecisionRecord
from crmroute.web.app import create_app
from tests.web.api.conftest import HEADER_SECRET, SQLITE_ONLY, create, fields, rule_body
from tests.web.conftest import Web


def test_dry_run_by_did_ivr_and_rule(web, seeded, custom_crm):
    create(seeded, "rules", rule_body(custom_crm.url))  # created through the API: the router sees it at once
    create(seeded, "dids", {"number": "5551000", "rule": "VIP"})
    create(seeded, "rules", rule_body(custom_crm.url, name="Menu", location="ivr", greeting="enter-account"))
    create(seeded, "ivrs", {"number": "7", "rule": "Menu"})
    custom_crm.records = {"+15551230001": {"Status": "GOLD"}, "4242": {"Status": "SILVER"}}

    trace = seeded.post("/api/v1/route", json={"did": "5551000", "caller": "+15551230001"}).json()
    assert (trace["status"], trace["rule"], trace["value"], trace["row"]) == ("matched", "VIP", "GOLD", 1)
    assert trace["destination"] == {"type": "queue", "option": "103"} and trace["jump"] == "crmroute-queue,103,1"
    assert trace["did"] == "5551000" and trace["steps"]
    assert custom_crm.last.params == {"field_name": "Status", "caller_id": "+15551230001"}
    assert custom_crm.last.headers["x-api-key"] == HEADER_SECRET

    trace = seeded.post("/api/v1/route", json={"ivr": "7", "caller": "+15551230001", "dtmf": "4242"}).json()
    assert (trace["status"], trace["destination"], trace["ivr"]) == ("matched", {"type": "ivr", "option": "5"}, "7")
    assert trace["jump"] == "crmroute-ivr,5,1" and custom_crm.last.params["dtmf"] == "4242"

    trace = seeded.post("/api/v1/route", json={"rule": "VIP", "caller": "+15550000000"}).json()
    assert (trace["status"], trace["destination"], trace["jump"]) == ("default", {"type": "extension", "option": "100"},
                                                                        "crmroute-extension,100,1")  # fmt: skip
    trace = seeded.post("/api/v1/route", json={"did": "5559999", "caller": "+15551230001"}).json()
    assert (trace["status"], trace["destination"], trace["jump"]) == ("no_rule", None, None)

    with web.store.factory() as session:
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 0


@SQLITE_ONLY  # request validation: the same on both engines
def test_exactly_one_target(api):
    assert fields(api.post("/api/v1/route", json={"caller": "+15551230001"})) == {
        "did": "give exactly one of a DID number, an IVR number or a rule"
    }
    assert fields(api.post("/api/v1/route", json={"did": "1", "rule": "VIP"})).keys() == {"rule"}
    assert fields(api.post("/api/v1/route", json={"did": "1", "extra": True})).keys() == {"extra"}


def test_a_web_only_process_builds_its_own_router(web, seeded, custom_crm):
    create(seeded, "rules", rule_body(custom_crm.url))
    custom_crm.values = {"Status": "SILVER"}
    web_only = Web(create_app(web.app.state.settings, web.store, router=None), web.store, web.token)
    with web_only.api() as api:
        trace = api.post("/api/v1/route", json={"rule": "VIP", "caller": "+15551230001"}).json()
    assert (trace["status"], trace["destination"], trace["jump"]) == ("matched", {"type": "ivr", "option": "5"},
                                                                        "crmroute-ivr,5,1")  # fmt: skip
