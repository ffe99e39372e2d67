"""Fixtures for web tests: the app on a real store, an admin user, an API token, a signed-in client."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crmroute.service import Store, build_router
from crmroute.store import users
from crmroute.store.db import transaction
from crmroute.web.app import create_app
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401

ADMIN = ("admin", "correct horse battery")


@dataclass
class Web:
    app: FastAPI
    store: Store
    token: str  # an API token of the admin user

    def client(self, base_url: str = "http://testserver", address: str = "testclient") -> TestClient:
        """A client with no credentials (connecting from ``address``)."""
        return TestClient(self.app, base_url=base_url, follow_redirects=False, client=(address, 50000))

    def variant(self, **settings: Any) -> "Web":
        """The same store and router in an app built with other settings."""
        app = create_app(dataclasses.replace(self.store.settings, **settings), self.store, router=self.app.state.router)
        return Web(app, self.store, self.token)

    def api(self) -> TestClient:
        """A client sending the admin's bearer token."""
        client = self.client()
        client.headers["Authorization"] = f"Bearer {self.token}"
        return client

    def browser(self) -> TestClient:
        """A client signed in through the login form (session cookie); ``.csrf`` holds its CSRF token."""
        client = self.client()
        response = sign_in(client, *ADMIN)
        assert response.status_code == 303, response.text
        page = client.get("/rules")  # every page for a signed-in user carries the token
        assert page.status_code == 200, page.text
        client.csrf = csrf_from(page.text)  # type: ignore[attr-defined]
        return client


class Clock:
    """A clock for the login throttle that moves only when told (``clock.now += 5``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sign_in(client: TestClient, username: str, password: str, next_url: str = "/rules", **headers: str):
    """Sign in through the login form as a browser does: the page first (its CSRF cookie and field), then the post."""
    page = client.get("/login", headers=headers)
    assert page.status_code == 200, page.text
    data = {"username": username, "password": password, "next": next_url, "csrf_token": login_csrf_from(page.text)}
    return client.post("/login", data=data, headers=headers)


def login_csrf_from(html: str) -> str:
    match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]*)">', html)
    return match.group(1) if match else ""


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    return match.group(1) if match else ""


@pytest.fixture
def web(store: Store, custom_crm) -> Iterator[Web]:  # noqa: F811
    with transaction(store.factory) as session:
        users.create_user(session, *ADMIN)
    with transaction(store.factory) as session:
        token = users.create_token(session, ADMIN[0], "tests")
    router = build_router(store, with_log=True)
    router.load()
    app = create_app(store.settings, store, router=router)
    yield Web(app, store, token)
