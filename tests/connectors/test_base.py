"""The connector framework's own helpers."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import Field, SecretStr

from crmroute.connectors import registry
from crmroute.connectors._http import CappedResponse
from crmroute.connectors._phone import phone_forms
from crmroute.connectors.base import (
    Connector,
    ConnectorSettings,
    Token,
    field_text,
    lookup_path,
    retry_after_seconds,
    setting_specs,
)

SPEC_KINDS = {"bullhorn", "dynamics2015", "hubspot", "pipedrive", "proprietary", "proprietary1", "salesforce",
              "sugarcrm", "suitecrm", "vtiger", "zendesk", "zoho",
              "directory"}  # SPEC 11: crmroute's own directory beside the twelve vendors  # fmt: skip


def test_discovered_kinds_are_the_spec_kinds_each_with_a_test_file():
    from pathlib import Path

    from crmroute.schemas import CRM_KINDS

    found = set(registry())
    assert found == SPEC_KINDS == set(CRM_KINDS)  # the seed's 12 + directory; `custom` is the rule-level Custom CRM
    here = Path(__file__).parent
    for kind in found:
        assert (here / f"test_{kind}.py").exists(), f"{kind} has no tests/connectors/test_{kind}.py"


def test_lookup_path():
    data = {"Account": {"Name": "Acme"}, "emails": [{"value": "a@b"}], "Status__c": "GOLD"}
    assert lookup_path(data, "Account.Name") == "Acme"
    assert lookup_path(data, "account.name") == "Acme"  # case-insensitive fallback
    assert lookup_path(data, "emails[0].value") == "a@b"
    assert lookup_path(data, "emails[3].value") is None
    assert lookup_path(data, "Owner.Email") is None
    assert lookup_path([{"message": "x"}], "[0].message") == "x"


@pytest.mark.parametrize(("value", "text"), [(None, None), ("", None), ("  ", None), (50.0, "50"), (2.5, "2.5"),
                                             (True, "true"), ({"a": 1}, '{"a":1}'), (" GOLD ", "GOLD")])  # fmt: skip
def test_field_text(value, text):
    assert field_text(value) == text


def test_setting_specs_describe_types_and_secrets():
    class Example(ConnectorSettings):
        base_url: str = Field(description="where")
        token: SecretStr = Field(description="secret")
        retries: int = Field(3, description="n")
        mode: str | None = Field(None, description="optional")

    specs = {s.name: s for s in setting_specs(Example)}
    assert (specs["base_url"].type, specs["base_url"].required) == ("url", True)
    assert (specs["token"].type, specs["token"].secret, specs["token"].default) == ("secret", True, None)
    assert (specs["retries"].type, specs["retries"].default) == ("integer", 3)
    assert specs["match_pick"].choices == ("newest", "oldest", "first")
    assert specs["mode"].type == "string" and not specs["mode"].required


def test_short_tokens_refresh_at_half_life():
    now = time.monotonic()
    assert Token("t", now + 3600).fresh()
    assert not Token("t", now + 20, issued_at=now - 30).fresh()  # a 50 s token 30 s old: past half its life
    assert Token("t", now + 40, issued_at=now - 5).fresh()
    assert Token("t").fresh()


def response(headers: dict) -> CappedResponse:
    return CappedResponse(429, httpx.Headers(headers), b"", httpx.URL("https://x"))


def test_retry_after_both_forms():
    assert retry_after_seconds(response({"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(response({})) is None
    assert retry_after_seconds(response({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < retry_after_seconds(response({"Retry-After": future})) <= 120


def test_pick_orders_by_time_not_text():
    class Dummy(Connector):
        kind = ""

    connector = Dummy(ConnectorSettings(), httpx.AsyncClient())
    records = [{"id": 1, "m": "2026-01-01T10:00:00+02:00"}, {"id": 2, "m": "2026-01-01T09:30:00Z"}]
    assert connector.pick(records, "m") == (records[1], 2)  # 09:30Z is later than 10:00+02:00 (08:00Z)
    assert connector.pick([{"id": 1, "m": "/Date(1714557600000)/"}, {"id": 2, "m": "/Date(1614557600000)/"}], "m")[0]["id"] == 1


def test_phone_forms():
    forms = phone_forms("+1 (415) 555-2671")
    assert (forms.e164, forms.national_digits, forms.digits, forms.last(7)) == ("+14155552671", "4155552671", "14155552671", "5552671")  # fmt: skip
    assert phone_forms("020 7946 0958", "GB").e164 == "+442079460958"
    assert not phone_forms("unknown").valid and phone_forms("12").digits == "12"


@pytest.mark.parametrize(("stored", "matches"), [
    ("(415) 555-2671", True), ("+1 415 555 2671", True), ("1-415-555-2671", True), ("001 415 555 2671", True),
    ("011 1 415 555 2671", True), ("4155552671", True), ("555-2671", False), ("(415) 555-2672", False),
    ("99 415 555 2671", False), ("", False), (None, False),
])  # fmt: skip
def test_a_stored_phone_is_the_callers_number_whatever_its_punctuation(stored, matches):
    assert phone_forms("+14155552671").matches(stored) is matches


def test_trunk_prefixes_count_too():
    london = phone_forms("+442079460958", "GB")
    assert london.matches("020 7946 0958") and london.matches("+44 (0)20 7946 0958") and london.matches("00442079460958")
    assert not london.matches("1 2079460958")
    assert phone_forms("12").matches("12") and not phone_forms("12").matches("112")


async def test_concurrent_401s_share_one_new_login():
    import asyncio

    from crmroute.deadline import Deadline

    class Counting(Connector):
        kind = ""
        logins = 0

        async def _login(self, *, deadline):
            type(self).logins += 1
            await asyncio.sleep(0.01)
            return Token(f"t{type(self).logins}")

    connector = Counting(ConnectorSettings(), httpx.AsyncClient())
    deadline = Deadline.after_ms(2000)
    first = await connector.authenticate(deadline=deadline)
    # three requests all refused with the first token: one new login, not three
    tokens = await asyncio.gather(*(connector.authenticate(deadline=deadline, force=True, refused=first) for _ in range(3)))
    assert Counting.logins == 2 and {t.value for t in tokens} == {"t2"}
    # a 401 arriving after the refresh, for the old token, reuses the new one
    assert (await connector.authenticate(deadline=deadline, force=True, refused=first)).value == "t2"
    assert Counting.logins == 2
