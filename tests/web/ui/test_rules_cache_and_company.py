"""The rule form's cache and keep-company fields: shown, stored, kept on edit, validated."""

from __future__ import annotations

import pytest

from tests.web.ui.conftest import field_error, follow, input_value, post, selected
from tests.web.ui.test_rules import CUSTOM, public

pytestmark = pytest.mark.usefixtures("dests")


def test_defaults_when_left_alone(web, admin):
    form = admin.get("/rules/new").text
    assert 'id="cache_ttl_s"' in form and "else 60 s" in form  # the global default is named
    assert selected(form, "keep_company") == "none"
    assert 'data-show-when="keep_company=moh"' in form and input_value(form, "moh_class") == "default"
    follow(admin, post(admin, "/rules/new", CUSTOM))
    data = public(web, "VIP")
    assert "cache_ttl_s" not in data and "keep_company" not in data  # the defaults are not spelled out


def test_music_on_hold_and_a_cache_ttl_are_stored_and_shown_again(web, admin):
    follow(admin, post(admin, "/rules/new", CUSTOM | {"cache_ttl_s": "0", "keep_company": "moh", "moh_class": "sales"}))
    data = public(web, "VIP")
    assert (data["cache_ttl_s"], data["keep_company"], data["moh_class"]) == (0, "moh", "sales")
    html = admin.get(f"/rules/{data['id']}/edit").text
    assert input_value(html, "cache_ttl_s") == "0"  # zero (never cache) is not shown as empty
    assert selected(html, "keep_company") == "moh" and input_value(html, "moh_class") == "sales"


def test_the_moh_class_is_ignored_unless_music_on_hold_is_chosen(web, admin):
    follow(admin, post(admin, "/rules/new", CUSTOM | {"keep_company": "ringing", "moh_class": "ignored"}))
    data = public(web, "VIP")
    assert data["keep_company"] == "ringing" and "moh_class" not in data


@pytest.mark.parametrize(("field", "value", "message"), [
    ("cache_ttl_s", "-1", "must be 0 or more"),
    ("cache_ttl_s", "100000", "must be 86400 or less"),
    ("keep_company", "opera", "none"),
])  # fmt: skip
def test_bad_values_are_shown_next_to_their_field(web, admin, field, value, message):
    response = post(admin, "/rules/new", CUSTOM | {field: value})
    assert response.status_code == 422
    assert message in field_error(response.text, field)


def test_a_bad_moh_class_is_refused(web, admin):
    response = post(admin, "/rules/new", CUSTOM | {"keep_company": "moh", "moh_class": "a,b"})
    assert response.status_code == 422
    assert "music-on-hold class" in field_error(response.text, "moh_class")
