"""Every /api/v1 route needs a live token or a signed-in session (with X-CSRF-Token for writes)."""

from __future__ import annotations

import re

from tests.web.api.conftest import DESTINATIONS, SQLITE_ONLY


@SQLITE_ONLY
def test_every_route_needs_credentials(web):
    document = web.api().get("/api/v1/openapi.json").json()
    routes = [(method.upper(), re.sub(r"\{[a-z_]+\}", "1", path)) for path, ops in document["paths"].items()
              for method in ops if path.startswith("/api/v1/")]  # fmt: skip
    assert len(routes) == 56  # every route of test_openapi.py
    anonymous = web.client()
    forged = web.client()
    forged.headers["Authorization"] = "Bearer crt_not-a-real-token"
    basic = web.client()
    basic.headers["Authorization"] = "Basic YWRtaW46eA=="
    for method, path in routes + [("GET", "/api/v1/openapi.json")]:
        for client in (anonymous, forged, basic):
            response = client.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"


def test_session_cookie_and_csrf(web):
    browser = web.browser()
    assert browser.get("/api/v1/destinations").status_code == 200  # reading needs no CSRF token
    refused = browser.post("/api/v1/destinations", json=DESTINATIONS[0])
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    wrong = browser.post("/api/v1/destinations", json=DESTINATIONS[0], headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    made = browser.post("/api/v1/destinations", json=DESTINATIONS[0], headers={"X-CSRF-Token": browser.csrf})
    assert made.status_code == 201
    browser.post("/logout", data={"csrf_token": browser.csrf})
    assert browser.get("/api/v1/destinations").status_code == 401
