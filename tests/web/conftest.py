"""Fixtures for web tests: the app on a real store, an admin user, an API token, a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

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

    def client(self) -> TestClient:
        """A client with no credentials."""
        return TestClient(self.app, base_url="http://testserver", follow_redirects=False)

    def api(self) -> TestClient:
        """A client sending the admin's bearer token."""
        client = self.client()
        client.headers["Authorization"] = f"Bearer {self.token}"
        return client

    def browser(self) -> TestClient:
        """A client signed in through the login form (session cookie); ``.csrf`` holds its CSRF token."""
        client = self.client()
        response = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1], "next": "/rules"})
        assert response.status_code == 303, response.text
        page = client.get("/rules")  # every page for a signed-in user carries the token
        assert page.status_code == 200, page.text
        client.csrf = csrf_from(page.text)  # type: ignore[attr-defined]
        return client


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
