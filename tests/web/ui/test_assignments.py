"""The DID and IVR pages."""

from __future__ import annotations

import pytest

from crmroute.store import assignments
from tests.web.ui.conftest import field_error, follow, post, selected
from tests.web.ui.test_rules import create

pytestmark = pytest.mark.usefixtures("dests")


def dids(web) -> list[dict]:
    with web.store.factory() as session:
        return [assignments.did_public(r) for r in assignments.search_dids(session)[1]]


def ivrs(web) -> list[dict]:
    with web.store.factory() as session:
        return [assignments.ivr_public(r) for r in assignments.search_ivrs(session)[1]]


@pytest.mark.parametrize("path", ["/dids", "/dids/new", "/dids/1/edit", "/ivrs", "/ivrs/new", "/ivrs/1/edit"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"


def test_posts_need_the_csrf_token(web, admin):
    create(web)
    for url in ("/dids/new", "/ivrs/new", "/dids/1/delete", "/ivrs/1/edit"):
        assert admin.post(url, data={"number": "5551000", "rule": "VIP"}).status_code == 403
    assert dids(web) == []


def test_did_create_edit_delete(web, admin):
    create(web)
    create(web, name="Other")
    create(web, name="By IVR", location="ivr")
    form = admin.get("/dids/new").text
    assert '<option value="VIP">' in form and '<option value="By IVR">' not in form  # only DID rules
    html = follow(admin, post(admin, "/dids/new", {"number": "_555XXXX", "name": "Main line", "rule": "VIP"}))
    assert "Saved DID _555XXXX." in html and "Main line" in html
    did = dids(web)[0]
    assert (did["number"], did["rule"], did["name"]) == ("_555XXXX", "VIP", "Main line")
    edit = admin.get(f"/dids/{did['id']}/edit").text
    assert selected(edit, "rule") == "VIP"
    follow(admin, post(admin, f"/dids/{did['id']}/edit", {"number": "5551000", "rule": "Other"}))
    assert (dids(web)[0]["number"], dids(web)[0]["rule"]) == ("5551000", "Other")
    html = admin.get("/dids").text
    assert "Are you sure you want to remove &#39;5551000&#39;?" in html
    assert "Removed DID 5551000." in follow(admin, post(admin, f"/dids/{did['id']}/delete"))
    assert dids(web) == []


def test_did_errors(web, admin):
    create(web)
    create(web, name="By IVR", location="ivr")
    response = post(admin, "/dids/new", {"number": "55x", "rule": "VIP"})
    assert response.status_code == 422 and "Asterisk pattern" in field_error(response.text, "number")
    assert selected(response.text, "rule") == "VIP"
    response = post(admin, "/dids/new", {"number": "5551000", "rule": "By IVR"})
    assert response.status_code == 422 and "location" in field_error(response.text, "rule")
    follow(admin, post(admin, "/dids/new", {"number": "5551000", "rule": "VIP"}))
    response = post(admin, "/dids/new", {"number": "5551000", "rule": "VIP"})
    assert response.status_code == 422 and "already" in field_error(response.text, "number")


def test_ivr_create_and_delete(web, admin):
    create(web, name="By IVR", location="ivr")
    html = follow(admin, post(admin, "/ivrs/new", {"number": "7", "rule": "By IVR"}))
    assert "Saved IVR 7." in html
    ivr = ivrs(web)[0]
    assert (ivr["number"], ivr["rule"]) == ("7", "By IVR")
    follow(admin, post(admin, f"/ivrs/{ivr['id']}/delete"))
    assert ivrs(web) == []
