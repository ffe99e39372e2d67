"""``ConnectorContract``: the tests every CRM connector passes against its vendor fake.

Its first part, ``RecordContract`` (finding records by every phone format and by a typed key, the pick,
fields, nested fields), is what a record source without a network passes too: the directory kind
(``test_directory.py``, whose fake writes the records to the file or table the connector reads).

A vendor's ``test_<kind>.py`` subclasses it next to its fake (see
``fakecrm.py``) and fills in the class data and ``settings()``::

    fake_server, fake = vendor_fixtures(make_app)

    class TestZoho(ConnectorContract):
        kind = "zoho"
        MODULE = "contacts"
        FIELD = "Status"
        IDS = ("4150868000000224001", "4150868000000224002", "4150868000000224003")

        def settings(self, fake):
            return {"accounts_url": fake.base_url, "api_domain": fake.base_url, "client_id": "1000.X",
                    "client_secret": "s3cret-client", "refresh_token": "r3fresh-token"}

The fake must implement the vendor's real matching (a number stored as
``(415) 555-2671`` is found from the caller ID ``+14155552671``), token
issue and expiry, the record's fields including the nested one, and call
activities (appended to ``fake.activities``, contacts/leads created for
unknown numbers to ``fake.created``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select

from crmroute import rulesfile
from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.connectors import registry
from crmroute.connectors._http import make_client
from crmroute.connectors.base import MODULE_NAMES, CallActivity, Connector, Record, setting_specs
from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorTimeout, ConnectorUnavailable, RateLimited, UnexpectedResponse
from crmroute.resilience.budget import Budget, Quota
from crmroute.resilience import Guards
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from crmroute.service import Store, build_router
from crmroute.settings import Settings
from crmroute.store import credentials
from crmroute.store.credentials import CredentialStore
from crmroute.store.models import DecisionRecord, Integration
from tests.agi.fakeasterisk import call_agi
from tests.connectors.fakecrm import FakeRecord, VendorFake

CALLER = "+14155552671"  # what Asterisk sends
STORED_PHONE = "(415) 555-2671"  # how the CRM stores it
OTHER_PHONE = "+14155550000"

# The shared scenario: nine ways CRMs hold a number (phone, mobile, caller ID Asterisk sends). A connector
# finds every one; a decoy with the same last four digits is never taken for it.
STORED_FORMATS: dict[str, tuple[str, str, str]] = {
    "parentheses": ("(555) 123-0001", "", "+15551230001"),
    "dashes": ("555-123-0002", "", "+15551230002"),
    "digits": ("5551230003", "", "+15551230003"),
    "dots": ("555.123.0004", "", "+15551230004"),
    "e164": ("+15551230005", "", "+15551230005"),
    "international": ("+44 20 7946 0006", "", "+442079460006"),
    "mobile-only": ("", "(555) 123-0007", "+15551230007"),
    "leading-1": ("1-555-123-0008", "", "+15551230008"),
    "plus-1-parentheses": ("+1 (555) 123-0009", "", "+15551230009"),
}
DECOY_PHONE = "(555) 987-0001"  # shares the last four digits of "parentheses"


class RecordContract:
    """Finding records and reading fields: what every record source passes, HTTP or not (the directory kind)."""

    kind: ClassVar[str]
    MODULE: ClassVar[str] = "contacts"
    FIELD: ClassVar[str] = "Status"  # a custom field's API name
    NESTED_FIELD: ClassVar[str | None] = "Account.Name"  # None: the vendor has no nested fields (say why)
    NESTED_FIELDS: ClassVar[dict[str, Any]] = {"Account": {"Name": "Acme Corp"}}
    NESTED_VALUE: ClassVar[str] = "Acme Corp"
    IDS: ClassVar[tuple[str, str, str]] = ("1001", "1002", "1003")  # vendor-shaped record ids
    KEY_FIELD: ClassVar[str] = "AccountNumber"  # the field a typed (DTMF) key is looked up by
    CALLER_FORMS: ClassVar[tuple[str, ...]] = (CALLER, "4155552671", "14155552671")
    MOBILE_FIELDS: ClassVar[dict[str, str]] = {}  # module -> the vendor's mobile phone field (absent: none; say why)
    HANDSHAKE_401: ClassVar[bool] = False  # a 401 at an auth path is part of the login (NTLM), not a refusal
    # Requests one uncached fetch costs in MODULE once signed in, after a first call (found caller, unknown caller);
    # None: not asserted. The same figure is checked through the routing path (the FastAGI test's unknown caller).
    REQUESTS_PER_CALL: ClassVar[tuple[int, int] | None] = None
    # A rule whose rows' conditions read a second field (KEY_FIELD here) costs no more requests than one field:
    # both are asked in the find request. False only where the vendor cannot (say why in the test module).
    SAME_REQUEST_FIELDS: ClassVar[bool] = True
    # The record's owner in the vendor's shape (added to the record's fields) and the user id it reads as;
    # None: the vendor keeps no owner on these records (say why). ``{}``: the fake always renders one.
    OWNER_FIELDS: ClassVar[dict[str, Any] | None] = None
    OWNER_ID: ClassVar[str] = ""

    def field_for(self, module: str) -> str:
        """The custom field read in ``module`` (vendors whose custom fields differ per module override this)."""
        return self.FIELD

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        """Settings (secrets included) pointing the connector at the fake."""
        raise NotImplementedError

    # --- fixtures ------------------------------------------------------------------

    @pytest.fixture
    async def http(self, fake: VendorFake):
        client = make_client(Settings(ca_bundle=fake.ca_path))
        yield client
        await client.aclose()

    def build(self, fake: VendorFake, http: httpx.AsyncClient, **overrides: Any) -> Connector:
        cls = registry()[self.kind]
        return cls(cls.Settings.model_validate(self.settings(fake) | overrides), http, region="US")

    @pytest.fixture
    def connector(self, fake: VendorFake, http: httpx.AsyncClient) -> Connector:
        return self.build(fake, http)

    def record(self, index: int = 0, **changes: Any) -> FakeRecord:
        fields = {self.FIELD: "GOLD", self.KEY_FIELD: "12345"} | (self.NESTED_FIELDS if self.NESTED_FIELD else {})
        base = FakeRecord(module=self.MODULE, id=self.IDS[index], phone=STORED_PHONE, fields=fields,
                          name="Alice Gold", modified="2026-03-01T10:00:00Z")  # fmt: skip
        for name, value in changes.items():
            setattr(base, name, value)
        return base

    @staticmethod
    def deadline(seconds: float = 5.0) -> Deadline:
        return Deadline.after_ms(seconds * 1000)

    # --- finding records --------------------------------------------------------------

    @pytest.mark.parametrize("caller_index", [0, 1, 2])
    async def test_finds_the_record_from_the_callers_number(self, fake, connector, caller_index):
        fake.records = [self.record()]
        caller = self.CALLER_FORMS[caller_index]
        value = await connector.fetch(LookupKey(caller, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert value == "GOLD"

    @pytest.mark.parametrize("module", MODULE_NAMES)
    @pytest.mark.parametrize("style", list(STORED_FORMATS))
    async def test_finds_every_stored_format(self, fake, connector, style, module):
        if module not in registry()[self.kind].MODULES:
            pytest.skip(f"no {module} module")
        phone, mobile, caller = STORED_FORMATS[style]
        mobile_field = self.MOBILE_FIELDS.get(module)
        if mobile and mobile_field is None:
            pytest.skip(f"this vendor keeps no mobile number on {module}")
        field = self.field_for(module)
        found = self.record(0, phone=phone, module=module)
        found.fields = {field if name == self.FIELD else name: value for name, value in found.fields.items()}
        decoy = self.record(1, phone=DECOY_PHONE, module=module, fields=found.fields | {field: "DECOY"})
        if mobile:  # the decoy keeps only its phone: the mobile number is the found record's alone
            found.fields = found.fields | {mobile_field: mobile}
        fake.records = [decoy, found]
        value = await connector.fetch(LookupKey(caller, "caller_id"), module, field, deadline=self.deadline())
        assert value == "GOLD", f"{module}, {style}: stored {phone or mobile!r}, caller {caller}"

    async def test_requests_per_uncached_call(self, fake, connector):
        if self.REQUESTS_PER_CALL is None:
            pytest.skip("no request count declared")
        fake.records = [self.record(0), self.record(1, phone="(415) 555-0100")]
        key = LookupKey(CALLER, "caller_id")  # the first call signs in (and lets a connector learn the stored form)
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        counts = []
        for caller, expected in (("+14155550100", "GOLD"), (OTHER_PHONE, None)):
            before = len(fake.requests)
            key = LookupKey(caller, "caller_id")
            assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == expected
            counts.append(len(fake.requests) - before)
        assert tuple(counts) == self.REQUESTS_PER_CALL, [f"{r.method} {r.path}" for r in fake.requests]

    async def test_the_lookup_brings_the_owner_in_the_same_request(self, fake, connector):
        if self.OWNER_FIELDS is None:
            pytest.skip("this vendor keeps no owner on the record")
        fake.records = [self.record(0, fields=self.record().fields | self.OWNER_FIELDS)]
        key = LookupKey(CALLER, "caller_id")
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"  # signs in
        before = len(fake.requests)
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        plain = len(fake.requests) - before
        before, found = len(fake.requests), []
        value = await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline(), found=found, owner=True)
        assert value == "GOLD"
        assert len(fake.requests) - before == plain, [f"{r.method} {r.path}" for r in fake.requests[before:]]
        assert found[0].owner == self.OWNER_ID
        assert connector.owner_field, "the vendor's owner field is named"

    async def test_unknown_number_is_not_found(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(OTHER_PHONE, "caller_id")
        assert await connector.find_record(key, self.MODULE, fields=[self.FIELD], deadline=self.deadline()) is None
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) is None

    async def test_empty_field_is_none(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: None})]
        key = LookupKey(CALLER, "caller_id")
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) is None

    async def test_nested_field(self, fake, connector):
        if self.NESTED_FIELD is None:
            pytest.skip("this vendor has no nested fields")
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        assert await connector.fetch(key, self.MODULE, self.NESTED_FIELD, deadline=self.deadline()) == self.NESTED_VALUE

    async def test_several_matches_pick_the_newest_by_default(self, fake, connector):
        fake.records = [
            self.record(0, fields={self.FIELD: "OLD"}, modified="2025-01-01T00:00:00Z"),
            self.record(1, fields={self.FIELD: "NEW"}, modified="2026-06-01T00:00:00Z"),
            self.record(2, fields={self.FIELD: "MID"}, modified="2025-06-01T00:00:00Z"),
        ]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), self.MODULE, fields=[self.FIELD],
                                             deadline=self.deadline())  # fmt: skip
        assert record is not None and record.id == self.IDS[1] and record.matches == 3
        assert await connector.read_field(record, self.FIELD, deadline=self.deadline()) == "NEW"

    async def test_pick_is_configurable(self, fake, http):
        connector = self.build(fake, http, match_pick="oldest")
        fake.records = [
            self.record(0, fields={self.FIELD: "OLD"}, modified="2025-01-01T00:00:00Z"),
            self.record(1, fields={self.FIELD: "NEW"}, modified="2026-06-01T00:00:00Z"),
        ]
        value = await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert value == "OLD"

    async def test_typed_key_searches_the_key_field(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        fake.records = [self.record(0, phone="")]
        value = await connector.fetch(LookupKey("12345", "dtmf"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert value == "GOLD"
        assert await connector.fetch(LookupKey("99999", "dtmf"), self.MODULE, self.FIELD, deadline=self.deadline()) is None


class ConnectorContract(RecordContract):
    """The whole contract of a vendor connector: records, auth, faults, limits, Test, call logging, credentials."""

    # --- class data --------------------------------------------------------------------

    def test_kind_is_discovered_and_describes_itself(self):
        cls = registry()[self.kind]
        assert cls.title and cls.docs_url.startswith("https://")
        assert set(cls.MODULES) <= set(MODULE_NAMES) and cls.MODULES
        assert cls.requests_per_second is None or cls.requests_per_second > 0
        assert cls.limits_source, "where the default limits come from"
        specs = {s.name: s for s in setting_specs(cls.Settings)}
        assert any(s.secret for s in specs.values()), "a CRM connection has at least one secret"
        assert all(s.help for s in specs.values()), "every setting explains itself"

    # --- auth ---------------------------------------------------------------------------

    async def test_token_is_reused(self, fake, connector):
        fake.records = [self.record()]
        for _ in range(3):
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert fake.token_requests == 1

    async def test_a_rejected_token_is_refreshed_once(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        fake.expire_tokens()
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 2

    async def test_rejected_credentials_are_an_auth_error(self, fake, connector):
        fake.reject_credentials = True
        with pytest.raises(AuthError) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        self.assert_no_secrets(str(caught.value))

    # --- faults -----------------------------------------------------------------------------

    async def test_rate_limit_waited_out_when_it_fits(self, fake, connector):
        fake.records = [self.record()]
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(429, {"message": "slow down"}, headers={"Retry-After": "0"})
        value = await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert value == "GOLD"

    async def test_rate_limit_past_the_deadline_is_rate_limited(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(429, {"message": "slow down"}, headers={"Retry-After": "30"})
        started = time.monotonic()
        with pytest.raises(RateLimited):
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline(10))
        assert time.monotonic() - started < 5  # not waited out: neither the 30 s nor the 10 s deadline

    async def test_server_error_is_unavailable(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(500, {"message": "internal"}, times=2)
        with pytest.raises(ConnectorUnavailable) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        assert caught.value.reason.startswith("http_5") or caught.value.reason == "unavailable"

    async def test_garbage_is_an_unexpected_response(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, b"<html>not json</html>", content_type="application/json")
        with pytest.raises(UnexpectedResponse):
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())

    async def test_never_outlives_the_deadline(self, fake, connector):
        fake.records = [self.record()]
        await connector.authenticate(deadline=self.deadline())
        fake.delay = 5.0
        started = time.monotonic()
        with pytest.raises(ConnectorTimeout):
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline(0.3))
        assert time.monotonic() - started < 0.3 + 1.5  # the deadline, not the 5 s answer (bench/ measures overrun)

    # --- the Test action -------------------------------------------------------------------

    async def test_test_action_reports_steps_and_record(self, fake, connector):
        fake.records = [self.record()]
        report = await connector.test(CALLER, module=self.MODULE, fields=[self.FIELD])
        assert report.ok, report.as_dict()
        assert [s.ok for s in report.steps] == [True, True, True]
        assert [s.name for s in report.steps][:2] == ["authenticate", "verify credentials"]
        assert all(s.ms >= 0 for s in report.steps)
        assert report.record["id"] == self.IDS[0]
        assert report.record["fields"][self.FIELD] == "GOLD"
        self.assert_no_secrets(json.dumps(report.as_dict()))

    async def test_test_action_explains_rejected_credentials(self, fake, connector):
        fake.reject_credentials = True
        report = await connector.test(CALLER, module=self.MODULE, fields=[self.FIELD])
        assert not report.ok and report.error_code and report.error_message
        assert report.steps[-1].name in ("authenticate", "verify credentials") and not report.steps[-1].ok
        self.assert_no_secrets(json.dumps(report.as_dict()))

    # --- the vendor's limits: a pace only where published, quotas counted ------------------------

    def default_budget(self, connector: Connector) -> Budget:
        """The budget the router gives this kind's integration with no settings of its own."""
        spec = ConnectorSpec(1, "The CRM", self.kind, True, {}, "")
        return Guards(Settings()).integration_budget(spec, connector)

    async def test_an_idle_vendors_budget_delays_no_uncached_call(self, fake, connector):
        fake.records = [self.record()]
        connector.budget = budget = self.default_budget(connector)
        await connector.authenticate(deadline=self.deadline())
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD,
                                     deadline=self.deadline()) == "GOLD"  # fmt: skip
        unknown = [LookupKey(f"+1202555{n:04d}", "caller_id") for n in range(3)]  # a small burst of new callers
        await asyncio.gather(*(connector.fetch(k, self.MODULE, self.FIELD, deadline=self.deadline()) for k in unknown))
        assert budget.waited_s == 0 and budget.rejected == 0, "the budget held back a call to an idle vendor"

    async def test_a_spent_quota_falls_back_without_a_request(self, fake, connector, caplog):
        fake.records = [self.record()]
        # an hour's quota: no vendor header corrects it (Salesforce's and HubSpot's speak of the day)
        connector.budget = Budget("integration 'The CRM'", None, 10, quotas=(Quota(5, 3600),), kind=self.kind)
        await connector.authenticate(deadline=self.deadline())
        with caplog.at_level(logging.WARNING, logger="crmroute.resilience.budget"):
            for _ in range(5):  # a call may cost more than one request: the quota may run out inside one
                try:
                    await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD,
                                          deadline=self.deadline())  # fmt: skip
                except RateLimited:
                    break
            assert connector.budget.quota_spent() is not None
            sent = len(fake.requests)
            for _ in range(3):
                with pytest.raises(RateLimited) as caught:
                    await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD,
                                          deadline=self.deadline())  # fmt: skip
                assert caught.value.reason == "quota_exhausted"
        assert len(fake.requests) == sent, "a spent quota sends nothing"
        warned = [r.getMessage() for r in caplog.records if r.name == "crmroute.resilience.budget"]
        assert len(warned) == 1 and "4 of 5" in warned[0], warned  # once per window, at 80 %


    async def test_test_without_a_number_asks_the_vendor(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())  # a valid token is already there
        before, tokens = len(fake.requests), fake.token_requests
        report = await connector.test(None)
        assert report.ok, report.as_dict()
        assert [(s.name, s.ok) for s in report.steps] == [("authenticate", True), ("verify credentials", True)]
        assert report.steps[1].detail  # who the credential signs in as
        assert len(fake.requests) == before + 1, "exactly one request proves the credential"
        assert fake.token_requests == tokens, "a valid token is not renewed by Test"

    async def test_test_without_a_number_fails_with_wrong_credentials(self, fake, connector):
        fake.reject_credentials = True
        report = await connector.test(None)
        assert not report.ok and report.error_code and report.error_message
        assert not report.steps[-1].ok
        self.assert_no_secrets(json.dumps(report.as_dict()))

    # --- call logging -------------------------------------------------------------------------

    def call(self, record: Record | None = None, call_id: str = "1795657573.1") -> CallActivity:
        return CallActivity(
            call_id=call_id, direction="inbound", outcome="answered", external_number=CALLER,
            started_at=datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc), ring_seconds=6, talk_seconds=93,
            extension="201", subject=f"Inbound call from {CALLER}", description="Answered by 201 after 6 s",
            record=record,
        )  # fmt: skip

    async def test_log_call_links_the_record_and_is_idempotent(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), self.MODULE, deadline=self.deadline())
        assert record is not None
        first = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())
        again = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())
        assert first and first == again
        assert len(fake.activities) == 1
        stored = json.dumps(fake.activities[0])
        assert self.IDS[0] in stored and "1795657573.1" in stored

    async def test_log_call_looks_the_number_up_when_routing_found_nothing(self, fake, connector):
        fake.records = [self.record()]
        await connector.log_call(self.call(None), LogOptions(inbound_answered=True), deadline=self.deadline())
        assert len(fake.activities) == 1 and self.IDS[0] in json.dumps(fake.activities[0])
        assert fake.created == []

    async def test_log_call_creates_unknown_callers_only_when_asked(self, fake, connector):
        options = LogOptions(inbound_answered=True, create_unknown=True)
        await connector.log_call(self.call(None, "call-new"), options, deadline=self.deadline())
        assert len(fake.created) == 1 and len(fake.activities) == 1
        created = json.dumps(fake.created[0])
        assert "4155552671" in created

    # --- secrets ----------------------------------------------------------------------------------

    def secret_values(self, fake: VendorFake) -> list[str]:
        cls = registry()[self.kind]
        secret_names = {s.name for s in setting_specs(cls.Settings) if s.secret}
        return [str(v) for k, v in self.settings(fake).items() if k in secret_names and v]

    def assert_no_secrets(self, text: str) -> None:
        for value in self._secrets:
            assert value not in text

    @pytest.fixture(autouse=True)
    def _remember_secrets(self, fake):
        self._secrets = self.secret_values(fake)

    async def test_secrets_stay_out_of_repr_and_logs(self, fake, connector, caplog):
        caplog.set_level(logging.DEBUG)
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        fake.fail_next(500, {"message": "boom"}, times=2)
        with pytest.raises(ConnectorUnavailable) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        self.assert_no_secrets(repr(connector) + repr(connector.settings) + caplog.text + str(caught.value))
        for name, value in connector.settings:
            if isinstance(value, SecretStr):
                assert value.get_secret_value() not in repr(connector.settings)

    async def test_debug_log_level_logs_each_request_without_secrets(self, fake, connector, caplog):
        caplog.set_level(logging.INFO, logger="crmroute.connectors.base")
        connector.log_requests = True  # what the pool sets for an integration whose log level is debug
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        lines = [r.getMessage() for r in caplog.records if r.name == "crmroute.connectors.base"]
        assert any("HTTP 200" in line and self.kind in line for line in lines), lines
        self.assert_no_secrets("\n".join(lines))

    # --- shared credentials (store/credentials.py): every process, one store ------------------------------

    def shared_settings(self, fake: VendorFake) -> dict[str, Any]:
        """Settings for the shared-credential tests: a kind whose vendor rotates refresh tokens uses that flow."""
        return self.settings(fake)

    def shared(self, fake: VendorFake, http: httpx.AsyncClient, store: Store, *, for_test: bool = False) -> Connector:
        """A connector as another process would build it: its own pool, the one credential store."""
        values = self.shared_settings(fake)
        with store.factory() as session, session.begin():
            row = session.scalar(select(Integration).where(Integration.name == "The CRM"))
            if row is None:
                row = Integration(name="The CRM", kind=self.kind, settings=values, secrets_enc="")
                session.add(row)
                session.flush()
            integration_id = row.id
        spec = ConnectorSpec(integration_id, "The CRM", self.kind, True, values, "")
        pool = ConnectorPool(http, store.box, "US", CredentialStore(store.factory, store.box))
        return pool.build(spec, for_test=for_test)

    @staticmethod
    def auth_requests(fake: VendorFake) -> int:
        return len(fake.requests) - len(fake.api_requests())

    async def test_shared_a_test_action_then_routing_uses_the_rotated_credentials(self, fake, http, store):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        routing = self.shared(fake, http, store)
        assert await routing.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        fake.expire_tokens()  # so the Test button (a fresh connector) must renew: the vendor rotates
        tester = self.shared(fake, http, store, for_test=True)
        report = await tester.test(CALLER, module=self.MODULE, fields=[self.FIELD])
        assert report.ok, report.as_dict()
        assert await routing.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"  # Test's token
        fake.expire_tokens()  # the access tokens die: routing must refresh, with the newest refresh token
        assert await routing.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        later = self.shared(fake, http, store)  # and a restart after that
        fake.expire_tokens()
        assert await later.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        refused = [r for r in fake.requests if fake._is_auth(r.path) and r.status >= 400
                   and not (self.HANDSHAKE_401 and r.status == 401)
                   and not (r.method == "GET" and r.status == 401)]  # a dead access token's "who am I", not a login
        assert not refused, [(r.path, r.status) for r in refused]  # no dead refresh token was ever presented

    async def test_shared_a_restart_asks_for_no_token_while_the_old_one_is_valid(self, fake, http, store):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        before = self.shared(fake, http, store)
        assert await before.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        tokens, logins = fake.token_requests, self.auth_requests(fake)
        assert logins >= 0 and tokens <= 1
        await before.aclose()
        for _ in range(3):  # three restarts (or three CLI dry runs)
            after = self.shared(fake, http, store)
            assert await after.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        assert (fake.token_requests, self.auth_requests(fake)) == (tokens, logins)

    async def test_shared_refused_credentials_fail_at_once_everywhere_until_a_test_succeeds(
        self, fake, http, store, caplog, monkeypatch
    ):  # fmt: skip
        fake.records = [self.record()]
        fake.reject_credentials = True
        key = LookupKey(CALLER, "caller_id")
        first = self.shared(fake, http, store)
        with caplog.at_level(logging.ERROR, logger="crmroute.store.credentials"):
            with pytest.raises(AuthError) as caught:
                await first.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline())
            assert caught.value.reason == "credentials_refused"
            sent = len(fake.requests)
            other = self.shared(fake, http, store)  # another process
            for connector in (first, first, other, other):
                with pytest.raises(AuthError) as caught:
                    await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline())
                assert caught.value.reason == "credentials_refused"
                self.assert_no_secrets(str(caught.value))
            assert len(fake.requests) == sent  # not one more request to the vendor
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "crmroute.store.credentials"]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        with store.factory() as session:
            shown = credentials.refused(session, store.box)
        assert [(r["integration"], r["principal"]) for r in shown] == [("The CRM", "")] and shown[0]["at"]
        fake.reject_credentials = False
        tester = self.shared(fake, http, store, for_test=True)
        report = await tester.test(CALLER, module=self.MODULE, fields=[self.FIELD])
        assert report.ok, report.as_dict()
        with store.factory() as session:
            assert credentials.refused(session, store.box) == []
        monkeypatch.setattr(credentials, "REFUSED_RECHECK", 0.0)  # not the 5 s the processes wait to look again
        for connector in (first, other):
            assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"

    async def test_a_second_field_is_read_in_the_same_request(self, fake, connector):
        fake.records = [self.record(0), self.record(1, phone="(415) 555-0100"), self.record(2, phone="(415) 555-0101")]
        await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        before = len(fake.requests)
        key = LookupKey("+14155550100", "caller_id")
        assert await connector.fetch(key, self.MODULE, self.FIELD, deadline=self.deadline()) == "GOLD"
        single = len(fake.requests) - before
        before = len(fake.requests)
        key = LookupKey("+14155550101", "caller_id")
        values = await connector.fetch_fields(key, self.MODULE, [self.FIELD, self.KEY_FIELD], deadline=self.deadline())
        assert values == {self.FIELD: "GOLD", self.KEY_FIELD: "12345"}
        if self.SAME_REQUEST_FIELDS:
            assert len(fake.requests) - before == single, [f"{r.method} {r.path}" for r in fake.requests[before:]]

    # --- end to end ----------------------------------------------------------------------------------

    async def test_a_fastagi_call_is_routed_by_this_crm(self, fake, tmp_path):
        fake.records = [self.record()]
        cls = registry()[self.kind]
        secret_names = {s.name for s in setting_specs(cls.Settings) if s.secret}
        values = self.settings(fake)
        rules = {
            "integrations": [{"name": "The CRM", "kind": self.kind,
                              "settings": {k: v for k, v in values.items() if k not in secret_names},
                              "secrets": {k: v for k, v in values.items() if k in secret_names}}],
            "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
            "rules": [{"name": "By CRM", "crm_field": self.FIELD, "location": "did", "crm_source": "integration",
                       "integration": "The CRM", "crm_module": self.MODULE, "default_destination": "100",
                       "rows": [{"operator": "=", "value": "gold", "destination": "queue", "option": "103"}]}],
            "dids": [{"number": "5551000", "rule": "By CRM"}],
        }  # fmt: skip
        settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(tmp_path), "CRMROUTE_CA_BUNDLE": str(fake.ca_path)})
        store = Store(settings)
        store.upgrade()
        rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules), environ={}))
        router = build_router(store)
        await router.start()
        server = AgiServer(CallHandler(router, JumpTable.from_settings(settings)), port=0, allow=settings.agi_allow)
        await server.start()
        try:
            result = await call_agi(server.port, "did", env={"extension": "5551000", "callerid": CALLER})
            assert result.variables["CRMROUTE_STATUS"] == "matched", result.variables
            assert result.variables["CRMROUTE_VALUE"] == "GOLD"
            assert result.jump == ("crmroute-queue", "103", "1")
            await router.decision_log.flush()
            with store.factory() as session:
                logged = session.scalars(select(DecisionRecord)).one()
            assert logged.record_id == self.IDS[0] and logged.record_module  # for the call logger
            assert any(self.IDS[0] in step for step in logged.trace), logged.trace  # the trace names the record
            fake.records = []
            await asyncio.sleep(0)
            before = len(fake.requests)
            result = await call_agi(server.port, "did", env={"extension": "5551000", "callerid": OTHER_PHONE})
            assert result.variables["CRMROUTE_STATUS"] == "default"
            if self.REQUESTS_PER_CALL is not None:  # a distinct, uncached caller through the routing path
                assert len(fake.requests) - before == self.REQUESTS_PER_CALL[1], fake.requests[before:]
        finally:
            await server.close()
            await router.close()
            await router.http.aclose()
            store.close()

    async def test_a_fastagi_call_combines_two_fields_of_the_record(self, fake, tmp_path):
        """Rows with a condition on a second field: both read in the request that finds the record."""
        fake.records = [self.record(0), self.record(1, phone="(415) 555-0100"), self.record(2, phone="(415) 555-0101")]
        cls = registry()[self.kind]
        secret_names = {s.name for s in setting_specs(cls.Settings) if s.secret}
        values = self.settings(fake)
        gold = {"operator": "=", "value": "gold", "destination": "queue", "option": "103"}
        rules = {
            "integrations": [{"name": "The CRM", "kind": self.kind,
                              "settings": {k: v for k, v in values.items() if k not in secret_names},
                              "secrets": {k: v for k, v in values.items() if k in secret_names}}],
            "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"},
                             {"type": "queue", "number": "104"}],
            "schedules": [{"name": "Always", "timezone": "UTC", "hours": {"mon-sun": "00:00-24:00"}}],
            "rules": [{"name": "Plain", "crm_field": self.FIELD, "location": "did", "crm_source": "integration",
                       "integration": "The CRM", "crm_module": self.MODULE, "default_destination": "100",
                       "rows": [gold]},
                      {"name": "Both", "crm_field": self.FIELD, "location": "did", "crm_source": "integration",
                       "integration": "The CRM", "crm_module": self.MODULE, "default_destination": "100",
                       "rows": [gold | {"option": "104", "conditions": [{"field": self.KEY_FIELD, "value": "99999"}]},
                                gold | {"conditions": [{"field": self.KEY_FIELD, "value": "12345"},
                                                       {"schedule": "Always"}, {"matches": "one"}]}]}],
            "dids": [{"number": "5551000", "rule": "Plain"}, {"number": "5552000", "rule": "Both"}],
        }  # fmt: skip
        settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(tmp_path), "CRMROUTE_CA_BUNDLE": str(fake.ca_path)})
        store = Store(settings)
        store.upgrade()
        rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules), environ={}))
        router = build_router(store)
        await router.start()
        server = AgiServer(CallHandler(router, JumpTable.from_settings(settings)), port=0, allow=settings.agi_allow)
        await server.start()
        try:
            result = await call_agi(server.port, "did", env={"extension": "5551000", "callerid": CALLER})  # signs in
            assert result.variables["CRMROUTE_STATUS"] == "matched", result.variables
            before = len(fake.requests)
            result = await call_agi(server.port, "did", env={"extension": "5551000", "callerid": "+14155550100"})
            single = len(fake.requests) - before
            before = len(fake.requests)
            result = await call_agi(server.port, "did", env={"extension": "5552000", "callerid": "+14155550101"})
            both = len(fake.requests) - before
            assert (result.variables["CRMROUTE_STATUS"], result.variables["CRMROUTE_ROW"]) == ("matched", "2")
            assert result.jump == ("crmroute-queue", "103", "1")
            if self.SAME_REQUEST_FIELDS:
                assert both == single, [f"{r.method} {r.path}" for r in fake.requests[before:]]
            await router.decision_log.flush()
            with store.factory() as session:
                logged = session.scalars(select(DecisionRecord).where(DecisionRecord.rule == "Both")).one()
            assert any(s.startswith("row 1 skipped") and f"{self.KEY_FIELD} is '12345'" in s for s in logged.trace), \
                logged.trace
        finally:
            await server.close()
            await router.close()
            await router.http.aclose()
            store.close()
