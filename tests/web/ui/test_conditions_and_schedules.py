"""The schedules pages, and rows' conditions in the rule form (one per line, out of the way when there are none)."""

from __future__ import annotations

import re

import pytest

from crmroute.schemas import ScheduleIn
from crmroute.store import rules, schedules
from crmroute.store.db import transaction
from tests.web.ui.conftest import field_error, follow, input_value, post

pytestmark = pytest.mark.usefixtures("dests")

RULE = {
    "name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
    "custom_url": "https://crm.example.com/lookup", "custom_post": "no",
    "default_destination": "100", "default_voicemail": "not_set",
    "rows-0-operator": "=", "rows-0-value": "GOLD", "rows-0-destination": "queue", "rows-0-option": "104",
    "rows-0-conditions": "Region = EU\nschedule Office hours\n\ndid 5551000, _5552XXX\ncountry gb\nnot matches many",
    "rows-1-operator": "=", "rows-1-value": "GOLD", "rows-1-destination": "queue", "rows-1-option": "103",
}  # fmt: skip
OFFICE = {"name": "Office hours", "timezone": "Europe/London", "mon": "09:00-17:00", "tue": "09:00-17:00",
          "wed": "09:00-17:00", "thu": "09:00-17:00", "fri": "09:00-12:30, 13:30-17:00", "sat": "", "sun": "",
          "holidays": "2026-12-25 Christmas\n2026-12-26\n"}  # fmt: skip


def add_office(web) -> int:
    with transaction(web.store.factory) as session:
        return schedules.create(session, ScheduleIn.model_validate(
            {"name": "Office hours", "timezone": "Europe/London", "hours": {"mon-fri": "09:00-17:00"}})).id


def stored_rows(web) -> list[dict]:
    with web.store.factory() as session:
        rule = next(r for r in rules.list_all(session) if r.name == "VIP")
        return rules.to_data(rule, web.store.box)["rows"]


def test_schedule_pages(web, admin):
    new = admin.get("/schedules/new").text
    assert input_value(new, "mon") == "09:00-17:00" and input_value(new, "sat") == ""
    html = follow(admin, post(admin, "/schedules/new", OFFICE))
    assert "Saved the schedule &#39;Office hours&#39;." in html
    assert "Mon-Thu 09:00-17:00; Fri 09:00-12:30, 13:30-17:00" in html and "Europe/London" in html
    with web.store.factory() as session:
        row = schedules.list_all(session)[0]
    assert row.holidays == [{"date": "2026-12-25", "name": "Christmas"}, "2026-12-26"]
    edit = admin.get(f"/schedules/{row.id}/edit").text
    assert input_value(edit, "fri") == "09:00-12:30, 13:30-17:00"
    assert "2026-12-25 Christmas\n2026-12-26" in edit
    refused = post(admin, f"/schedules/{row.id}/edit", OFFICE | {"timezone": "Mars/Olympus", "mon": "17:00-09:00",
                                                                "holidays": "2026-12-25\n2026-02-30"})
    assert refused.status_code == 422
    assert "unknown time zone" in field_error(refused.text, "timezone")
    assert "ends before it starts" in refused.text and "line 2:" in field_error(refused.text, "holidays")
    assert "Schedules" in admin.get("/rules").text  # in the navigation


def test_conditions_are_typed_one_per_line_and_shown_back(web, admin):
    add_office(web)
    blank = admin.get("/rules/new").text
    assert "<summary>Conditions…</summary>" in blank  # the template row: closed, nothing to fill in
    follow(admin, post(admin, "/rules/new", RULE))
    rows = stored_rows(web)
    assert rows[0]["conditions"] == [
        {"field": "Region", "operator": "=", "value": "EU"}, {"schedule": "Office hours"},
        {"did": ["5551000", "_5552XXX"]}, {"country": ["GB"]}, {"matches": "many", "not": True},
    ]
    assert "conditions" not in rows[1]
    with web.store.factory() as session:
        rule_id = next(r.id for r in rules.list_all(session) if r.name == "VIP")
    edit = admin.get(f"/rules/{rule_id}/edit").text
    assert "<summary>5 conditions</summary>" in edit
    box = re.search(r'<textarea id="rows-0-conditions"[^>]*>(.*?)</textarea>', edit, re.S).group(1)
    assert box == ("Region = EU\nschedule Office hours\ndid 5551000, _5552XXX\ncountry GB\n"
                   "not matches many")  # fmt: skip
    follow(admin, post(admin, f"/rules/{rule_id}/edit", RULE | {"rows-0-conditions": ""}))
    assert "conditions" not in stored_rows(web)[0]


def test_bad_conditions_are_shown_at_the_rows_box(web, admin):
    refused = post(admin, "/rules/new", RULE | {"rows-0-conditions": "schedule Night shift\ncountry XX"})
    assert refused.status_code == 422
    message = field_error(refused.text, "rows-0-conditions")
    assert "condition 2: 'XX' is not a country" in message
    assert "schedule Night shift\ncountry XX" in refused.text  # kept as typed
    missing = post(admin, "/rules/new", RULE | {"rows-0-conditions": "country GB\nschedule Night shift"})
    assert field_error(missing.text, "rows-0-conditions") == "condition 2: no schedule named 'Night shift'"
    unreadable = post(admin, "/rules/new", RULE | {"rows-0-conditions": "Region equals-ish EU"})
    assert unreadable.status_code == 422
    assert "line 1: 'Region equals-ish EU' is not a condition" in field_error(unreadable.text, "rows-0-conditions")


def test_test_rule_takes_a_call_time(web, admin, custom_crm):
    add_office(web)
    follow(admin, post(admin, "/rules/new", RULE | {"custom_url": custom_crm.url,
                                                    "rows-0-conditions": "schedule Office hours"}))
    custom_crm.records = {"+15551230001": {"Status": "GOLD"}}
    page = post(admin, "/test-rule", {"target": "rule", "rule": "VIP", "caller": "+15551230001",
                                      "at": "2026-03-28T10:00:00+00:00"})  # a Saturday
    assert page.status_code == 200
    assert "row 1 skipped" in page.text and "closed: Saturday 2026-03-28 10:00 Europe/London" in page.text
    bad = post(admin, "/test-rule", {"target": "rule", "rule": "VIP", "caller": "+1555", "at": "next tuesday"})
    assert bad.status_code == 422 and field_error(bad.text, "at")
