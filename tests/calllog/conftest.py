"""Call log fixtures: strict Zoho and HubSpot fakes (from the connector tests) and a store that trusts both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crmroute.settings import Settings
from tests.conftest import make_settings
from tests.connectors import test_hubspot as hubspot_tests
from tests.connectors import test_zoho as zoho_tests
from tests.connectors.fakecrm import FakeRecord, VendorFake, serve_vendor
from tests.connectors.test_hubspot import make_app as hubspot_app
from tests.connectors.test_zoho import make_app as zoho_app
from tests.loopback import one_tls_context  # noqa: F401

ZOHO_ALICE = "4150868000000224001"
HUBSPOT_ALICE, HUBSPOT_OUTBOUND = "30101", "30102"


@pytest.fixture(scope="session")
def zoho_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorFake]:
    with serve_vendor(zoho_app, tmp_path_factory.mktemp("fake-zoho")) as server:
        yield server


@pytest.fixture(scope="session")
def hubspot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorFake]:
    with serve_vendor(hubspot_app, tmp_path_factory.mktemp("fake-hubspot")) as server:
        yield server


@pytest.fixture
def zoho(zoho_server: VendorFake) -> Iterator[VendorFake]:
    """The Zoho fake, reset, knowing Alice Gold (the answered call's caller) as a contact."""
    zoho_server.reset()
    zoho_server.records = [FakeRecord("contacts", ZOHO_ALICE, phone="(555) 123-0001", name="Alice Gold",
                                      fields={"Customer_Tier": "GOLD"})]  # fmt: skip
    yield zoho_server
    zoho_server.reset()


@pytest.fixture
def hubspot(hubspot_server: VendorFake) -> Iterator[VendorFake]:
    hubspot_server.reset()
    hubspot_server.records = [
        FakeRecord("contacts", HUBSPOT_ALICE, phone="+1 555 123 0001", name="Alice Gold"),
        FakeRecord("contacts", HUBSPOT_OUTBOUND, phone="(555) 999-0000", name="Dan Outbound"),
    ]
    yield hubspot_server
    hubspot_server.reset()


@pytest.fixture(scope="session")
def ca_bundle(zoho_server: VendorFake, hubspot_server: VendorFake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "both.pem"
    path.write_bytes(Path(zoho_server.ca_path).read_bytes() + Path(hubspot_server.ca_path).read_bytes())
    return path


@pytest.fixture
def settings(data_dir: Path, db_url: str, ca_bundle: Path) -> Settings:  # overrides tests/conftest.py's
    return make_settings(data_dir, db_url, ca_bundle=str(ca_bundle))


def zoho_settings(fake: VendorFake) -> dict:
    return {"settings": {"accounts_url": fake.base_url, "client_id": zoho_tests.CLIENT_ID},
            "secrets": {"client_secret": zoho_tests.CLIENT_SECRET, "refresh_token": zoho_tests.REFRESH_TOKEN}}


def hubspot_settings(fake: VendorFake) -> dict:
    return {"settings": {"api_url": fake.base_url, "client_id": hubspot_tests.CLIENT_ID},
            "secrets": {"client_secret": hubspot_tests.CLIENT_SECRET, "refresh_token": hubspot_tests.REFRESH_TOKEN}}
