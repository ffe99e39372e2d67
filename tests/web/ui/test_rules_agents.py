"""The rule form with Record owner / Last agent rows and the agent settings."""

from __future__ import annotations

import re

import pytest

from tests.web.ui.conftest import field_error, follow, input_value, post, selected
from tests.web.ui.test_rules import CUSTOM, public

pytestmark = pytest.mark.usefixtures("dests")

AGENT_FORM = {k: v for k, v in CUSTOM.items() if not k.startswith("rows-")} | {
    "rows-0-operator": "=", "rows-0-value": "VIP", "rows-0-destination": "owner",  # a disabled option: not sent
    "rows-1-operator": "not_empty", "rows-1-value": "", "rows-1-destination": "last_agent", "rows-1-option": "",
    "rows-2-operator": "=", "rows-2-value": "VIP", "rows-2-destination": "queue", "rows-2-option": "103",
    "default_agent": "owner", "last_agent_days": "14", "last_agent_min_talk_s": "10", "last_agent_outbound": "on",
}  # fmt: skip


def test_the_form_offers_the_agent_types_and_settings(admin):
    html = admin.get("/rules/new").text
    assert '<option value="owner">Record owner (agent)</option>' in html
    assert '<option value="last_agent">Last agent</option>' in html
    assert re.search(r'<input type="checkbox" id="check_availability" name="check_availability" value="on" checked', html)
    assert input_value(html, "last_agent_days") == "30" and input_value(html, "last_agent_min_talk_s") == "5"


def test_agent_rows_and_settings_are_saved_and_shown_again(web, admin):
    follow(admin, post(admin, "/rules/new", AGENT_FORM))  # check_availability left unticked
    data = public(web, "VIP")
    assert [(r["destination"], r["option"]) for r in data["rows"]] == [("owner", ""), ("last_agent", ""),
                                                                        ("queue", "103")]  # fmt: skip
    assert (data["default_agent"], data["check_availability"], data["last_agent_days"], data["last_agent_outbound"],
            data["last_agent_min_talk_s"]) == ("owner", False, 14, True, 10)  # fmt: skip
    html = admin.get(f"/rules/{data['id']}/edit").text
    assert selected(html, "rows-0-destination") == "owner" and selected(html, "default_agent") == "owner"
    assert input_value(html, "last_agent_days") == "14"
    assert not re.search(r'id="check_availability"[^>]*checked', html)


def test_an_option_on_an_owner_row_is_refused_by_field(admin):
    response = post(admin, "/rules/new", AGENT_FORM | {"rows-0-option": "103", "last_agent_days": "0"})
    assert response.status_code == 422
    assert "leave empty for owner rows" in field_error(response.text, "rows-0-option")
    assert field_error(response.text, "last_agent_days")
