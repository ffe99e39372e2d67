"""Every /api/v1 route needs a live token or a signed-in session (with X-CSRF-Token for writes)."""

from __future__ import annotations

from tests.web.api.conftest import DESTINATIONS, SQLITE_ONLY

ROUTES = [
    ("GET", "/api/v1/rules"), ("POST", "/api/v1/rules"), ("GET", "/api/v1/rules/1"), ("PUT", "/api/v1/rules/1"),
    ("DELETE", "/api/v1/rules/1"), ("GET", "/api/v1/destinations"), ("POST", "/api/v1/destinations"),
    ("GET", "/api/v1/dids"), ("POST", "/api/v1/dids"), ("GET", "/api/v1/ivrs"), ("DELETE", "/api/v1/ivrs/1"),
    ("GET", "/api/v1/integrations"), ("POST", "/api/v1/integrations/1/test"), ("GET", "/api/v1/decisions"),
    ("GET", "/api/v1/decisions/1"), ("POST", "/api/v1/route"), ("POST", "/api/v1/import"), ("GET", "/api/v1/export"),
    ("GET", "/api/v1/license"), ("POST", "/api/v1/license"), ("GET", "/api/v1/users"), ("POST", "/api/v1/users"),
    ("DELETE", "/api/v1/users/1"), ("POST", "/api/v1/users/1/password"), ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/1"),
]  # fmt: skip


@SQLITE_ONLY
def test_every_route_needs_credentials(web):
    anonymous = web.client()
    forged = web.client()
    forged.headers["Authorization"] = "Bearer crt_not-a-real-token"
    basic = web.client()
    basic.headers["Authorization"] = "Basic YWRtaW46eA=="
    for method, path in ROUTES:
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
