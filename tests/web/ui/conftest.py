"""UI test helpers: a signed-in browser client, forms posted with the CSRF token, stored objects to point at.

The pages call the same store functions the store tests run on both engines;
here SQLite is enough, which keeps the suite quick.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from crmroute.schemas import DestinationIn, IntegrationIn
from crmroute.settings import Settings
from crmroute.store import destinations, integrations, users
from crmroute.store.db import transaction
from tests.conftest import make_settings
from tests.web.conftest import Web


@pytest.fixture
def db_url(data_dir: Path) -> Iterator[str]:
    yield f"sqlite:///{data_dir / 'crmroute.db'}"


@pytest.fixture
def settings(data_dir: Path, db_url: str, custom_crm_server) -> Settings:
    """The app trusts the test Custom CRM's CA, so Test rule can really ask it."""
    return make_settings(data_dir, db_url, ca_bundle=str(custom_crm_server.ca_path))


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: the pages are under test here, not the hash (tests/web/test_auth.py covers it)."""
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def admin(web: Web) -> TestClient:
    return web.browser()


def post(client: TestClient, url: str, data: dict[str, Any] | list[tuple[str, str]] | None = None, **kwargs: Any):
    """Submit a form the way the page does: with the session's CSRF token."""
    items = list(data.items()) if isinstance(data, dict) else list(data or [])
    form: dict[str, Any] = {"csrf_token": client.csrf}  # type: ignore[attr-defined]
    for key, value in items:
        form.setdefault(key, []).append(value) if key in form and key != "csrf_token" else form.__setitem__(key, value)
    return client.post(url, data=form, **kwargs)


def follow(client: TestClient, response) -> str:
    """The page a post/redirect/get lands on."""
    assert response.status_code == 303, response.text
    page = client.get(response.headers["location"])
    assert page.status_code == 200, page.text
    return page.text


def field_error(html: str, field_id: str) -> str:
    """The error message shown next to the input ``field_id`` (which must point at it)."""
    match = re.search(rf'<small id="{re.escape(field_id)}-error" class="field-error">(.*?)</small>', html, re.S)
    assert match, f"no error shown for {field_id}"
    tag = re.search(rf'<(?:input|select|textarea|fieldset)[^>]*\bid="{re.escape(field_id)}"[^>]*>', html)
    assert tag, f"no input {field_id}"
    assert 'aria-invalid="true"' in tag.group(0) and f"{field_id}-error" in tag.group(0)
    return unescape(match.group(1))


def input_value(html: str, field_id: str) -> str:
    tag = re.search(rf'<input[^>]*\bid="{re.escape(field_id)}"[^>]*>', html)
    assert tag, f"no input {field_id}"
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
    return unescape(value.group(1)) if value else ""


def selected(html: str, field_id: str) -> str:
    block = re.search(rf'<select[^>]*\bid="{re.escape(field_id)}"[^>]*>(.*?)</select>', html, re.S)
    assert block, f"no select {field_id}"
    chosen = re.search(r'<option value="([^"]*)" selected>', block.group(1))
    return unescape(chosen.group(1)) if chosen else ""


def add_destinations(web: Web, *items: dict[str, Any]) -> None:
    with transaction(web.store.factory) as session:
        for item in items:
            destinations.create(session, DestinationIn.model_validate(item))


def add_integration(web: Web, name: str = "Main Zoho", **fields: Any) -> None:
    data = {"name": name, "kind": "zoho", "settings": {"api_domain": "https://www.zohoapis.eu", "client_id": "1000.X"},
            "secrets": {"client_secret": "zs", "refresh_token": "zr"}} | fields
    with transaction(web.store.factory) as session:
        integrations.create(session, web.store.box, IntegrationIn.model_validate(data))


STANDARD_DESTINATIONS = (
    {"type": "extension", "number": "100", "name": "Test", "voicemail": True},
    {"type": "extension", "number": "101", "name": "Desk"},
    {"type": "queue", "number": "103", "name": "Sales"},
    {"type": "queue", "number": "104", "name": "Gold support"},
    {"type": "ivr", "number": "5", "name": "Main menu"},
    {"type": "recording", "name": "closed-today"},
)


@pytest.fixture
def dests(web: Web) -> None:
    add_destinations(web, *STANDARD_DESTINATIONS)
