"""The seed's typed options: the greeting from Asterisk's sounds, a row's destination option typed."""

from __future__ import annotations

import re

import pytest

from crmroute.store import destinations
from tests.web.ui.conftest import field_error, follow, post
from tests.web.ui.test_rules import CUSTOM, public

pytestmark = pytest.mark.usefixtures("dests")


def stored_destinations(web) -> set[tuple[str, str]]:
    with web.store.factory() as session:
        return {(d.type, d.ref) for d in destinations.list_all(session)}


def test_the_option_is_typed_with_suggestions_of_its_type(admin):
    html = admin.get("/rules/new").text
    assert re.search(r'<datalist id="dest-options-queue">\s*<option value="103">103 – Sales</option>', html)
    assert '<datalist id="dest-options-recording"><option value="closed-today">' in html
    template = html.split("<template>")[-1]
    assert re.search(r'<input id="rows-__i__-option" name="rows-__i__-option" value="" '
                     r'list="dest-options-queue"', template)


def test_an_unknown_option_is_added_to_destinations_on_save(web, admin):
    form = CUSTOM | {"rows-0-option": "210", "rows-1-destination": "recording", "rows-1-option": "closed-monday"}
    page = follow(admin, post(admin, "/rules/new", form))
    assert "Saved the rule &#39;VIP&#39;. Added to Destinations: Queue 210, recording closed-monday." in page
    assert {("queue", "210"), ("recording", "closed-monday")} <= stored_destinations(web)
    assert [(r["destination"], r["option"]) for r in public(web, "VIP")["rows"]] == [
        ("queue", "210"), ("recording", "closed-monday")]
    # known options add nothing, and say nothing
    page = follow(admin, post(admin, f"/rules/{public(web, 'VIP')['id']}/edit", form))
    assert "Saved the rule &#39;VIP&#39;." in page and "Added" not in page


def test_a_refused_rule_adds_no_destination(web, admin):
    response = post(admin, "/rules/new", CUSTOM | {"rows-0-option": "211", "crm_field": ""})
    assert response.status_code == 422 and field_error(response.text, "crm_field")
    assert ("queue", "211") not in stored_destinations(web)


def test_the_greeting_is_chosen_from_asterisks_sounds(web, tmp_path):
    sounds = tmp_path / "sounds" / "en"
    (sounds / "custom").mkdir(parents=True)
    for name in ("greeting-default-attendant.gsm", "greeting-default-attendant.wav", "custom/enter-account.ulaw",
                 "notes.txt"):  # fmt: skip
        (sounds / name).write_bytes(b"")
    client = web.variant(sounds_dir=sounds).browser()
    html = client.get("/rules/new").text
    assert 'list="sound-names"' in html
    assert re.findall(r'<datalist id="sound-names">(.*?)</datalist>', html, re.S)[0] == (
        '<option value="custom/enter-account"></option><option value="greeting-default-attendant"></option>')
    assert "search the 2 sounds in" in html
    missing = web.variant(sounds_dir=tmp_path / "none").browser().get("/rules/new").text
    assert "No sounds found in" in missing and "type the name" in missing
    form = CUSTOM | {"location": "ivr", "greeting": "custom/enter-account", "dtmf_timeout_ms": "5000",
                     "dtmf_max_digits": "10"}  # fmt: skip
    follow(client, post(client, "/rules/new", form))
    assert public(web, "VIP")["greeting"] == "custom/enter-account"
