"""Users and API tokens."""

from __future__ import annotations

import re

from crmroute.store import users
from crmroute.store.db import transaction
from tests.web.conftest import ADMIN
from tests.web.ui.conftest import field_error, follow, input_value, post


def usernames(web) -> list[str]:
    with web.store.factory() as session:
        return [u.username for u in users.list_users(session)]


def test_pages_need_sign_in_and_csrf(web, admin):
    for path in ("/users", "/users/new", "/users/1/password"):
        assert web.client().get(path).status_code == 303
    for url in ("/users/new", "/users/1/password", "/users/1/delete", "/tokens/new", "/tokens/1/revoke"):
        assert admin.post(url, data={"username": "x", "password": "p" * 10, "password2": "p" * 10}).status_code == 403


def test_create_user_and_errors(web, admin):
    html = follow(admin, post(admin, "/users/new", {"username": "bob", "password": "long enough",
                                                    "password2": "long enough"}))  # fmt: skip
    assert "Created the user &#39;bob&#39;." in html and usernames(web) == ["admin", "bob"]
    response = post(admin, "/users/new", {"username": "carol", "password": "long enough", "password2": "different"})
    assert response.status_code == 422 and "differ" in field_error(response.text, "password2")
    assert input_value(response.text, "username") == "carol" and "long enough" not in response.text
    response = post(admin, "/users/new", {"username": "carol", "password": "short", "password2": "short"})
    assert "8 characters" in field_error(response.text, "password")
    response = post(admin, "/users/new", {"username": "bob", "password": "long enough", "password2": "long enough"})
    assert "already exists" in field_error(response.text, "username")
    assert usernames(web) == ["admin", "bob"]


def test_change_password(web, admin):
    with transaction(web.store.factory) as session:
        users.create_user(session, "bob", "first password")
    bob = next(u for u in users.list_users(web.store.factory()) if u.username == "bob")
    html = follow(admin, post(admin, f"/users/{bob.id}/password", {"password": "second password",
                                                                  "password2": "second password"}))  # fmt: skip
    assert "Changed the password of &#39;bob&#39;" in html
    with web.store.factory() as session:
        assert users.authenticate(session, "bob", "second password") is not None
    # one's own password: signed out, asked to sign in again
    me = next(u for u in users.list_users(web.store.factory()) if u.username == ADMIN[0])
    response = post(admin, f"/users/{me.id}/password", {"password": "a new admin pw", "password2": "a new admin pw"})
    assert response.headers["location"] == "/login?next=/users"
    assert admin.get("/users").status_code == 303


def test_delete_user_refuses_the_last_one(web, admin):
    with transaction(web.store.factory) as session:
        users.create_user(session, "bob", "first password")
    html = admin.get("/users").text
    assert "Are you sure you want to remove &#39;bob&#39;?" in html
    bob_id = int(re.search(r'action="/users/(\d+)/delete" data-confirm="Are you sure you want to remove &#39;bob', html).group(1))
    assert "Removed the user &#39;bob&#39;." in follow(admin, post(admin, f"/users/{bob_id}/delete"))
    me = next(u for u in users.list_users(web.store.factory()) if u.username == ADMIN[0])
    html = follow(admin, post(admin, f"/users/{me.id}/delete"))
    assert 'class="flash error"' in html and "last user" in html
    assert usernames(web) == ["admin"]


def test_tokens_shown_once_and_revoked(web, admin):
    response = post(admin, "/tokens/new", {"name": "deploy", "username": "admin"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    token = re.search(r'<pre id="new-token"[^>]*>(crt_[^<]+)</pre>', response.text).group(1)
    assert web.client().get("/api/v1/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    html = admin.get("/users").text
    assert token not in html and "deploy" in html and "Are you sure you want to revoke the token &#39;deploy&#39;?" in html
    token_id = max(t.id for t in users.list_tokens(web.store.factory()))
    follow(admin, post(admin, f"/tokens/{token_id}/revoke"))
    assert web.client().get("/api/v1/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert ">revoked<" in admin.get("/users").text
