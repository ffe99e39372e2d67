"""Sign-in, sessions, CSRF, bearer tokens and throttling, over the real app."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from crmroute.store import users
from crmroute.store.db import transaction
from crmroute.store.models import WebSession, utcnow
from crmroute.web.deps import SESSION_COOKIE
from crmroute.web.throttle import LoginThrottle
from crmroute.web.ui.auth import LOGIN_CSRF_COOKIE
from tests.web.conftest import ADMIN, Clock, login_csrf_from
from tests.web.conftest import sign_in as sign_in_as


def sign_in(client, password=ADMIN[1], next_url="/rules", username=ADMIN[0], **headers):
    return sign_in_as(client, username, password, next_url, **headers)


def test_public_routes_need_no_sign_in(web):
    client = web.client()
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_api_needs_credentials(web):
    client = web.client()
    assert client.get("/api/v1/openapi.json").status_code == 401
    response = client.get("/api/v1/openapi.json", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json()["detail"] == "invalid or revoked API token"
    assert web.api().get("/api/v1/openapi.json").status_code == 200


def test_pages_redirect_to_login_keeping_the_target(web):
    response = web.client().get("/rules?search=VIP")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/rules%3Fsearch%3DVIP"


def test_sign_in_sets_a_safe_session_cookie(web):
    client = web.client()
    response = sign_in(client, next_url="/decisions")
    assert response.status_code == 303 and response.headers["location"] == "/decisions"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie and "Path=/" in cookie
    token = client.cookies[SESSION_COOKIE]
    with web.store.factory() as session:
        stored = session.scalar(select(WebSession.token_hash))
    assert token not in stored and stored == users.hash_token(token)


def test_next_cannot_leave_the_site(web):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil"):
        assert sign_in(web.client(), next_url=target).headers["location"] == "/rules"


def test_login_form_needs_its_csrf_token(web):
    client = web.client()
    page = client.get("/login")
    token = login_csrf_from(page.text)
    assert len(token) >= 32 and client.cookies[LOGIN_CSRF_COOKIE] == token
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/login" in cookie
    assert login_csrf_from(client.get("/login").text) == token  # a second tab: the same token
    data = {"username": ADMIN[0], "password": ADMIN[1], "next": "/rules"}
    for forged in ({}, {"csrf_token": ""}, {"csrf_token": "x" * 43}):
        refused = client.post("/login", data=data | forged)
        assert refused.status_code == 403 and "The sign-in form expired" in refused.text
        assert SESSION_COOKIE not in client.cookies
    other_site = web.client()  # a page elsewhere posting the form: its browser has no such cookie for us
    assert other_site.post("/login", data=data | {"csrf_token": token}).status_code == 403
    signed_in = client.post("/login", data=data | {"csrf_token": token})
    assert signed_in.status_code == 303 and SESSION_COOKIE in client.cookies
    assert LOGIN_CSRF_COOKIE not in client.cookies  # used up


def test_failures_slow_the_name_down_without_locking_the_right_password_out(web):
    clock = Clock()
    web.app.state.throttle = LoginThrottle(clock=clock)
    client = web.client()
    for _ in range(4):
        response = sign_in(client, password="wrong")
        assert response.status_code == 401 and "Wrong username or password." in response.text
        assert "retry-after" not in response.headers
    fifth = sign_in(client, password="wrong")
    assert fifth.status_code == 401 and fifth.headers["retry-after"] == "1" and "Wait 1 second before" in fifth.text
    throttled = sign_in(client)  # the right password waits its turn, told how long
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    assert "Too many failed sign-ins. Try again in 1 second." in throttled.text
    assert SESSION_COOKIE not in client.cookies
    clock.now += 1.0
    assert sign_in(client, password="wrong").headers["retry-after"] == "2"  # each failure doubles the wait
    clock.now += 2.0
    assert sign_in(client).status_code == 303  # after the wait, the right password signs in
    clock.now += 1.0
    assert sign_in(web.client(), password="wrong").status_code == 401  # and this address starts afresh


def test_one_address_failing_does_not_hold_up_other_accounts(web):
    with transaction(web.store.factory) as session:
        users.create_user(session, "bob", "bob's long password")
    web.app.state.throttle = LoginThrottle(clock=Clock())
    for _ in range(8):
        sign_in(web.client(), password="wrong")
    assert sign_in(web.client()).status_code == 429
    assert sign_in(web.client(), username="bob", password="bob's long password").status_code == 303


def test_wait_caps_stay_short_for_the_name_and_long_for_one_address(web):
    clock = Clock()
    web.app.state.throttle = throttle = LoginThrottle(clock=clock)
    for _ in range(30):  # far past both caps
        throttle.failed("203.0.113.9", ADMIN[0])
    assert throttle.retry_after("203.0.113.9", ADMIN[0]) == 900  # the guessing address: 15 minutes
    assert throttle.retry_after("198.51.100.4", ADMIN[0]) == 60  # the owner elsewhere: a minute at most
    clock.now += 60
    assert sign_in(web.client()).status_code == 303


def test_logout_needs_csrf_and_ends_the_session(web):
    client = web.client()
    sign_in(client)
    token = client.cookies[SESSION_COOKIE]
    assert client.post("/logout", data={}).status_code == 403
    with web.store.factory() as session:
        csrf = users.find_session(session, token).csrf_token
    response = client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    with web.store.factory() as session:
        assert users.find_session(session, token) is None


def test_cookie_api_calls_need_the_csrf_header(web):
    client = web.client()
    sign_in(client)
    assert client.get("/api/v1/openapi.json").status_code == 200  # safe method: cookie is enough
    with web.store.factory() as session:
        csrf = users.find_session(session, client.cookies[SESSION_COOKIE]).csrf_token
    assert client.post("/api/v1/route", json={"rule": "x", "caller": "1"}).status_code == 403
    response = client.post("/api/v1/route", json={"rule": "x", "caller": "1"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code != 403


def test_expired_session_is_refused(web):
    client = web.client()
    sign_in(client)
    with transaction(web.store.factory) as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/api/v1/openapi.json").status_code == 401


def test_revoked_token_is_refused(web):
    with transaction(web.store.factory) as session:
        token = users.create_token(session, ADMIN[0], "temp")
    client = web.client()
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/v1/openapi.json").status_code == 200
    with transaction(web.store.factory) as session:
        row = users.list_tokens(session)[-1]
        assert row.last_used_at is not None
        users.revoke_token(session, row.id)
    assert client.get("/api/v1/openapi.json").status_code == 401


def test_password_change_signs_out_everywhere(web):
    client = web.client()
    sign_in(client)
    with transaction(web.store.factory) as session:
        user = users.authenticate(session, *ADMIN)
        users.set_password(session, user, "a new long password")
    assert client.get("/api/v1/openapi.json").status_code == 401
    assert sign_in(web.client(), password="a new long password").status_code == 303
