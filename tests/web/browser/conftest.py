"""Browser tests: Debian's chromium driven by Playwright against the real app on 127.0.0.1.

One app per module: uvicorn in a background thread on a free loopback port,
a SQLite store in a temporary directory with one admin user and a few
destinations, trusting the test Custom CRM's CA. One browser per module; each
test gets a fresh, signed-in context (cookies from one sign-in) whose every
request is recorded and must go to 127.0.0.1, and that fails the test on any
Content-Security-Policy violation the browser reports.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from crmroute.schemas import DestinationIn, DidIn, RuleIn
from crmroute.service import Store, build_router
from crmroute.store import assignments, destinations, rules, users
from crmroute.store.db import transaction
from crmroute.web.app import create_app
from tests.conftest import make_settings
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ADMIN = ("admin", "correct horse battery")
DESTINATIONS = (
    {"type": "extension", "number": "100", "name": "Test", "voicemail": True},
    {"type": "extension", "number": "101", "name": "Desk"},
    {"type": "queue", "number": "103", "name": "Sales"},
    {"type": "queue", "number": "104", "name": "Gold support"},
    {"type": "ivr", "number": "5", "name": "Main menu"},
    {"type": "recording", "name": "closed-today"},
)

if not CHROMIUM.exists():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright  # noqa: E402


@dataclass
class Site:
    """The running app: its address and its store (to arrange and check data)."""

    url: str
    store: Store
    app: Any = None  # the FastAPI app (to change its settings for a test, and put them back)

    def add_rule(self, name: str, *, location: str = "did", url: str = "https://crm.example.com/lookup",
                 rows: list[dict] | None = None, did: str = "") -> int:  # fmt: skip
        data = {
            "name": name, "crm_field": "Status", "location": location, "crm_source": "custom", "custom_url": url,
            "default_destination": "100",
            "rows": rows or [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}],
        }  # fmt: skip
        with transaction(self.store.factory) as session:
            rule_id = rules.create(session, self.store.box, RuleIn.model_validate(data)).id
        if did:
            with transaction(self.store.factory) as session:
                assignments.create_did(session, DidIn(number=did, rule=name))
        return rule_id

    def rule(self, name: str) -> dict | None:
        with self.store.factory() as session:
            found = [r for r in rules.list_all(session) if r.name == name]
            return rules.to_public(rules.get(session, found[0].id), self.store.box) if found else None


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, custom_crm_server) -> Iterator[Site]:  # noqa: F811
    data_dir = tmp_path_factory.mktemp("browser-data")
    settings = make_settings(data_dir, f"sqlite:///{data_dir / 'crmroute.db'}",
                             ca_bundle=str(custom_crm_server.ca_path))  # fmt: skip
    store = Store(settings)
    store.upgrade()
    with transaction(store.factory) as session:
        users.create_user(session, *ADMIN)
        for item in DESTINATIONS:
            destinations.create(session, DestinationIn.model_validate(item))
    router = build_router(store, with_log=False)
    router.load()
    app = create_app(settings, store, router=router)
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=1))  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="crmroute-web", daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - started > 15:
            raise RuntimeError("the web app did not start")
        time.sleep(0.01)
    try:
        yield Site(f"http://127.0.0.1:{sock.getsockname()[1]}", store, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def signed_in_state(browser: Browser, site: Site) -> dict:
    """Cookies of one sign-in through the login form, reused by every test's context."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site.url}/login")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/rules")
    state = context.storage_state()
    context.close()
    return state


@dataclass
class Requests:
    urls: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)  # console errors of a blocked script, style...

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(f"{message.location.get('url')}: {message.text}")

    def not_local(self) -> list[str]:
        return [u for u in self.urls if urlsplit(u).scheme not in ("data", "blob", "about")
                and urlsplit(u).hostname != "127.0.0.1"]  # fmt: skip


@pytest.fixture
def traffic() -> Requests:
    return Requests()


def _open(browser: Browser, site: Site, traffic: Requests, state: dict | None, **options) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, storage_state=state, **options)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("request", lambda request: traffic.urls.append(request.url))
    page.on("console", traffic.console)
    try:
        yield page
    finally:
        context.close()
    assert traffic.not_local() == [], "the page asked for something off 127.0.0.1"
    assert traffic.csp_violations == [], "the Content-Security-Policy blocked part of a page"


@pytest.fixture
def page(browser: Browser, site: Site, traffic: Requests, signed_in_state: dict) -> Iterator[Page]:
    """A signed-in laptop-sized page."""
    yield from _open(browser, site, traffic, signed_in_state, viewport={"width": 1280, "height": 900})


@pytest.fixture
def phone(browser: Browser, site: Site, traffic: Requests, signed_in_state: dict) -> Iterator[Page]:
    """A signed-in phone-sized page (390 x 844, touch)."""
    yield from _open(browser, site, traffic, signed_in_state, viewport={"width": 390, "height": 844},
                     device_scale_factor=2, is_mobile=True, has_touch=True)  # fmt: skip


@pytest.fixture
def anonymous(browser: Browser, site: Site, traffic: Requests) -> Iterator[Page]:
    yield from _open(browser, site, traffic, None)
