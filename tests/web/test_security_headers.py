"""Hardening headers on every response, and Secure cookies whenever the request came over HTTPS."""

from __future__ import annotations

import pytest

from crmroute.settings import parse_networks
from crmroute.web.security_headers import CONTENT_SECURITY_POLICY
from tests.web.conftest import ADMIN, csrf_from, sign_in

EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def test_the_policy_allows_nothing_inline_and_no_framing():
    directives = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", ["/login", "/rules", "/rules/new", "/no-such-page", "/static/app.js", "/healthz",
                                  "/metrics", "/api/v1/rules"])  # fmt: skip
def test_every_response_carries_the_headers(web, path):
    response = web.browser().get(path)
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (path, name)


def test_redirects_and_refusals_carry_them_too(web):
    client = web.client()
    for response in (client.get("/rules"), client.get("/api/v1/rules"), sign_in(client, ADMIN[0], "wrong")):
        assert response.headers["x-frame-options"] == "DENY", response.status_code


def test_cookies_over_plain_http_are_not_secure(web):
    response = sign_in(web.client(), *ADMIN)
    assert response.status_code == 303 and "secure" not in response.headers["set-cookie"].lower()


def test_every_cookie_set_over_https_is_secure(web):
    client = web.client(base_url="https://testserver")
    page = client.get("/login")
    assert "; Secure" in page.headers["set-cookie"]
    response = sign_in(client, *ADMIN)
    assert response.status_code == 303
    cookies = response.headers.get_list("set-cookie")
    assert cookies and all("; Secure" in cookie for cookie in cookies)
    csrf = csrf_from(client.get("/rules").text)
    out = client.post("/logout", data={"csrf_token": csrf})  # a cookie set where the code says nothing of Secure
    assert out.status_code == 303 and "; Secure" in out.headers["set-cookie"]


def test_https_is_believed_from_a_trusted_proxy_only(web):
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = web.client(address="127.0.0.1").get("/login", headers=forwarded)
    assert "secure" not in untrusted.headers["set-cookie"].lower()
    behind = web.variant(trusted_proxies=parse_networks("127.0.0.1"))
    trusted = behind.client(address="127.0.0.1").get("/login", headers=forwarded)
    assert "; Secure" in trusted.headers["set-cookie"]
