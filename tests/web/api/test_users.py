"""/api/v1/users and /api/v1/tokens: never a hash in a response; revoked tokens stop working."""

from __future__ import annotations

from sqlalchemy import select

from crmroute.store.models import ApiToken, User
from tests.web.api.conftest import create, fields
from tests.web.conftest import sign_in


def test_users(web, api):
    listed = api.get("/api/v1/users").json()
    assert listed["total"] == 1 and listed["items"][0]["username"] == "admin"
    bob = create(api, "users", {"username": "bob", "password": "long enough pw"})
    assert set(bob) == {"id", "username", "is_active", "created_at"} and bob["username"] == "bob"
    assert api.post("/api/v1/users", json={"username": "bob", "password": "long enough pw"}).status_code == 409
    assert fields(api.post("/api/v1/users", json={"username": "carol", "password": "short"})) == {
        "password": "must be at least 8 characters"
    }
    assert fields(api.post("/api/v1/users", json={"username": "no spaces", "password": "long enough pw"})).keys() == {"username"}  # fmt: skip

    assert api.post(f"/api/v1/users/{bob['id']}/password", json={"password": "a new password"}).status_code == 204
    login = sign_in(web.client(), "bob", "a new password")
    assert login.status_code == 303
    with web.store.factory() as session:
        hashes = list(session.scalars(select(User.password_hash)))
    for text in (api.get("/api/v1/users").text, str(bob)):
        assert not any(h in text for h in hashes) and "argon2" not in text

    assert api.delete(f"/api/v1/users/{bob['id']}").status_code == 204
    assert api.delete(f"/api/v1/users/{bob['id']}").status_code == 404
    admin_id = listed["items"][0]["id"]
    last = api.delete(f"/api/v1/users/{admin_id}")
    assert last.status_code == 409 and last.json()["detail"] == "the last user cannot be deleted"


def test_tokens(web, api):
    create(api, "users", {"username": "bob", "password": "long enough pw"})
    made = create(api, "tokens", {"name": "ci", "username": "bob"})
    assert set(made) == {"id", "name", "username", "token"} and made["username"] == "bob"
    mine = create(api, "tokens", {"name": "mine"})
    assert mine["username"] == "admin"
    assert api.post("/api/v1/tokens", json={"name": "x", "username": "nobody"}).status_code == 404

    bob = web.client()
    bob.headers["Authorization"] = f"Bearer {made['token']}"
    assert bob.get("/api/v1/rules").status_code == 200
    listed = api.get("/api/v1/tokens").json()
    assert [t["name"] for t in listed["items"]] == ["tests", "ci", "mine"]
    ci = listed["items"][1]
    assert ci["username"] == "bob" and ci["last_used_at"] and ci["revoked"] is False
    with web.store.factory() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
    assert made["token"] not in api.get("/api/v1/tokens").text
    assert not any(h in api.get("/api/v1/tokens").text for h in hashes)

    assert api.delete(f"/api/v1/tokens/{made['id']}").status_code == 204
    assert bob.get("/api/v1/rules").status_code == 401
    assert api.get("/api/v1/tokens").json()["items"][1]["revoked"] is True
    assert api.delete("/api/v1/tokens/999").status_code == 404
