"""The destinations pages."""

from __future__ import annotations

import pytest

from crmroute.store import destinations
from tests.web.ui.conftest import add_destinations, field_error, follow, input_value, post


def rows(web) -> list[dict]:
    with web.store.factory() as session:
        return [destinations.to_public(r) for r in destinations.list_all(session)]


@pytest.mark.parametrize("path", ["/destinations", "/destinations/new", "/destinations/1/edit"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"


def test_posts_need_the_csrf_token(web, admin):
    add_destinations(web, {"type": "queue", "number": "103"})
    dest_id = rows(web)[0]["id"]
    for url in ("/destinations/new", f"/destinations/{dest_id}/edit", f"/destinations/{dest_id}/delete"):
        assert admin.post(url, data={"type": "queue", "number": "7"}).status_code == 403
    assert [r["number"] for r in rows(web)] == ["103"]


def test_create_each_type(web, admin):
    follow(admin, post(admin, "/destinations/new", {"type": "extension", "number": "100", "name": "Test",
                                                   "voicemail": "on"}))  # fmt: skip
    follow(admin, post(admin, "/destinations/new", {"type": "queue", "number": "103", "name": "Sales",
                                                   "voicemail": "on"}))  # fmt: skip
    html = follow(admin, post(admin, "/destinations/new", {"type": "recording", "number": "ignored",
                                                          "name": "closed-today"}))  # fmt: skip
    assert "Saved closed-today." in html
    assert sorted(rows(web), key=lambda r: r["type"]) == [
        {"id": 1, "type": "extension", "number": "100", "name": "Test", "voicemail": True},
        {"id": 2, "type": "queue", "number": "103", "name": "Sales"},
        {"id": 3, "type": "recording", "name": "closed-today"},
    ]


def test_list_filters_by_type_and_search(web, admin):
    add_destinations(web, {"type": "extension", "number": "100", "name": "Reception"},
                     {"type": "queue", "number": "103", "name": "Sales"}, {"type": "recording", "name": "closed-today"})
    html = admin.get("/destinations", params={"type": "queue"}).text
    assert "Sales" in html and "Reception" not in html and "closed-today" not in html
    html = admin.get("/destinations", params={"search": "recep"}).text
    assert "Reception" in html and "Sales" not in html
    assert "Are you sure you want to remove &#39;100&#39;?" in html


def test_validation_errors_next_to_fields(web, admin):
    response = post(admin, "/destinations/new", {"type": "queue", "number": "", "name": "Sales"})
    assert response.status_code == 422
    assert "required" in field_error(response.text, "number")
    assert input_value(response.text, "name") == "Sales"
    response = post(admin, "/destinations/new", {"type": "recording", "name": "bad name!"})
    assert response.status_code == 422 and "sound file" in field_error(response.text, "name")
    add_destinations(web, {"type": "queue", "number": "103"})
    response = post(admin, "/destinations/new", {"type": "queue", "number": "103"})
    assert response.status_code == 422 and "already exists" in field_error(response.text, "number")


def test_edit_and_delete(web, admin):
    add_destinations(web, {"type": "extension", "number": "100", "name": "Test", "voicemail": True})
    dest_id = rows(web)[0]["id"]
    html = admin.get(f"/destinations/{dest_id}/edit").text
    assert input_value(html, "number") == "100" and 'id="voicemail" name="voicemail" value="on" checked' in html
    follow(admin, post(admin, f"/destinations/{dest_id}/edit", {"type": "extension", "number": "100", "name": "Desk"}))
    assert rows(web)[0]["name"] == "Desk" and rows(web)[0]["voicemail"] is False
    assert "Removed extension 100." in follow(admin, post(admin, f"/destinations/{dest_id}/delete"))
    assert rows(web) == []


def test_delete_of_a_used_destination_is_refused(web, admin, dests):
    from tests.web.ui.test_rules import create

    create(web)
    ext = next(r for r in rows(web) if r.get("number") == "100")
    html = follow(admin, post(admin, f"/destinations/{ext['id']}/delete"))
    assert 'class="flash error"' in html and "VIP" in html
    assert any(r.get("number") == "100" for r in rows(web))
