"""The license page: its state, and installing a license pasted or uploaded."""

from __future__ import annotations

import base64
import dataclasses
from datetime import date, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crmroute.licensing import sign_license
from crmroute.store.db import config_version
from crmroute.store.models import License
from tests.web.ui.conftest import follow, post

KEY = Ed25519PrivateKey.generate()
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def license_text(key=KEY, **changes) -> str:
    payload = {"licensee": "Example Telecom", "features": ["crm_routing"], "limits": {"rules": 50},
               "issued": "2025-01-01", "expires": (date.today() + timedelta(days=30)).isoformat()} | changes  # fmt: skip
    return sign_license(payload, key)


@pytest.fixture
def enforced(web):
    web.app.state.settings = dataclasses.replace(web.app.state.settings, license_key=PUBLIC)


def test_needs_sign_in_and_csrf(web, admin):
    assert web.client().get("/license").status_code == 303
    assert admin.post("/license", data={"license_text": license_text()}).status_code == 403


def test_not_enforced_without_a_key(web, admin):
    html = admin.get("/license").text
    assert "Not enforced" in html and "Enabled" in html


@pytest.mark.usefixtures("enforced")
def test_missing_then_installed_by_paste(web, admin):
    html = admin.get("/license").text
    assert "Missing" in html and "Disabled" in html
    before = config_version(web.store.factory())
    html = follow(admin, post(admin, "/license", {"license_text": license_text()}))
    assert "Installed the license for Example Telecom." in html
    assert ">Valid<" in html and "Enabled" in html and "rules: 50 (0 in use)" in html and "crm_routing" in html
    assert config_version(web.store.factory()) == before + 1


@pytest.mark.usefixtures("enforced")
def test_install_by_upload_and_expired(web, admin):
    def upload(text: str):
        return admin.post("/license", data={"csrf_token": admin.csrf},
                          files={"license_file": ("crmroute.lic", text.encode(), "application/json")})  # fmt: skip

    html = follow(admin, upload(license_text()))
    assert ">Valid<" in html and "Enabled" in html
    expired = (date.today() - timedelta(days=2)).isoformat()
    refused = upload(license_text(expires=expired))  # refused in red; the license in force stays
    assert refused.status_code == 422 and f"this license expired on {expired}" in refused.text
    assert 'class="error" role="alert"' in refused.text and ">Valid<" in refused.text
    with web.store.factory() as session:  # a license that expires while installed
        session.add(License(text=license_text(expires=expired)))
        session.commit()
    html = admin.get("/license").text
    assert "Expired" in html and expired in html and "Disabled" in html


@pytest.mark.usefixtures("enforced")
def test_bad_licenses_are_refused(web, admin):
    other = license_text(key=Ed25519PrivateKey.generate())
    response = post(admin, "/license", {"license_text": other})
    assert response.status_code == 422
    assert "signature does not match" in response.text and "Missing" in response.text
    assert "Example Telecom" in response.text  # the pasted text is kept in the box
    response = post(admin, "/license", {"license_text": "not json"})
    assert response.status_code == 422 and "not JSON" in response.text
    response = post(admin, "/license", {"license_text": ""})
    assert response.status_code == 422 and "paste the license" in response.text
