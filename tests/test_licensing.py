"""Ed25519 licenses: signing, verifying, key formats and the state the UI shows."""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crmroute.errors import ConfigError, LicenseError
from crmroute.licensing import (
    FEATURE_CRM_ROUTING,
    License,
    canonical_bytes,
    license_state,
    load_public_key,
    parse_license,
    sign_license,
    verify_license,
)

TODAY = date(2025, 6, 1)


@pytest.fixture(scope="module")
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def raw_public(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture(scope="module")
def key_b64(raw_public) -> str:
    return base64.b64encode(raw_public).decode()


def payload(**changes):
    base = {
        "licensee": "Example Telecom Ltd",
        "features": [FEATURE_CRM_ROUTING, "call_log"],
        "limits": {"rules": 50},
        "issued": "2025-01-31",
        "expires": "2026-01-31",
    }
    base.update(changes)
    return base


def test_round_trip(private_key):
    text = sign_license(payload(), private_key)
    license = verify_license(text, private_key.public_key())
    assert license == License(
        licensee="Example Telecom Ltd",
        features=frozenset({"crm_routing", "call_log"}),
        limits={"rules": 50},
        issued=date(2025, 1, 31),
        expires=date(2026, 1, 31),
    )
    assert license.allows(FEATURE_CRM_ROUTING) and license.limit("rules") == 50 and license.limit("users") is None
    assert parse_license(text) == license
    assert license.as_dict()["features"] == ["call_log", "crm_routing"]


def test_signature_is_over_canonical_json(private_key):
    text = sign_license(payload(), private_key)
    document = json.loads(text)
    signature = base64.b64decode(document["signature"])
    expected = json.dumps(document["license"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_bytes(document["license"]) == expected
    private_key.public_key().verify(signature, expected)  # raises if not
    # Layout and key order of the file do not matter.
    reordered = {"signature": document["signature"], "license": dict(reversed(list(document["license"].items())))}
    assert verify_license(json.dumps(reordered, indent=7), private_key.public_key()).licensee == "Example Telecom Ltd"


def test_sign_accepts_dates_and_sets(private_key):
    text = sign_license(
        {"licensee": "Ünïcode GmbH", "features": {"crm_routing"}, "issued": date(2025, 1, 1), "expires": None},
        private_key,
    )
    license = verify_license(text, private_key.public_key())
    assert (license.licensee, license.expires, license.limits) == ("Ünïcode GmbH", None, {})


def test_sign_refuses_malformed_license(private_key):
    with pytest.raises(LicenseError, match="licensee"):
        sign_license(payload(licensee=""), private_key)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda lic: lic.update(expires="2099-01-01"),
        lambda lic: lic["features"].append("everything"),
        lambda lic: lic.update(limits={"rules": 5000}),
        lambda lic: lic.update(licensee="Someone Else"),
        lambda lic: lic.update(extra=True),
    ],
)
def test_tampered_payload_is_refused(private_key, tamper):
    document = json.loads(sign_license(payload(), private_key))
    tamper(document["license"])
    with pytest.raises(LicenseError, match="signature does not match the configured key"):
        verify_license(json.dumps(document), private_key.public_key())


def test_wrong_key_is_refused(private_key):
    text = sign_license(payload(), private_key)
    with pytest.raises(LicenseError, match="signature does not match the configured key"):
        verify_license(text, Ed25519PrivateKey.generate().public_key())


def test_key_formats(private_key, raw_public, key_b64):
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    der_b64 = base64.b64encode(
        private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    forms = [
        key_b64,
        f"  {key_b64}\n",
        key_b64.rstrip("="),
        base64.urlsafe_b64encode(raw_public).decode(),
        raw_public.hex(),
        raw_public.hex().upper(),
        pem,
        der_b64,
    ]
    for form in forms:
        key = load_public_key(form)
        assert key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw_public, form


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not a key",
        base64.b64encode(b"x" * 31).decode(),
        "ab" * 31,
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    ],
)
def test_bad_keys(text):
    with pytest.raises(ConfigError) as caught:
        load_public_key(text)
    assert caught.value.problems[0][0] == "CRMROUTE_LICENSE_KEY"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: "", "empty"),
        (lambda d: "{", "not JSON"),
        (lambda d: "[]", "JSON object"),
        (lambda d: "[" * 5000, r"not JSON \(\[0\]\[0\].*: line 1: nested more than 32 levels deep\)"),
        (lambda d: '{"license": {"limits": {"rules": ' + "9" * 5000 + "}}}", "license.limits.rules: .* more than 64"),
        (lambda d: json.dumps(d)[:-1] + ', "signature": "x"}', "duplicate key 'signature'"),
        (lambda d: json.dumps({"signature": d["signature"]}), '"license"'),
        (lambda d: json.dumps({"license": d["license"]}), '"signature"'),
        (lambda d: json.dumps(d | {"signature": "!!!"}), "base64"),
        (lambda d: json.dumps(d | {"signature": base64.b64encode(b"short").decode()}), "64 bytes"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"licensee": 5}}), "licensee"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"features": "crm_routing"}}), "features"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"limits": {"rules": "50"}}}), "limits"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"limits": {"rules": True}}}), "limits"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"issued": "31/01/2025"}}), "issued"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"expires": "2025-02-30"}}), "real date"),
        (lambda d: json.dumps(d | {"license": {k: v for k, v in d["license"].items() if k != "expires"}}), "expires"),
        (lambda d: json.dumps(d | {"license": d["license"] | {"expires": "2024-01-01"}}), "before"),
    ],
)
def test_malformed_files(private_key, mutate, match):
    text = mutate(json.loads(sign_license(payload(), private_key)))
    with pytest.raises(LicenseError, match=match):
        parse_license(text)
    with pytest.raises(LicenseError, match=match):
        verify_license(text, private_key.public_key())


# -- license_state -------------------------------------------------------------


def test_no_key_configured_is_not_enforced():
    for key in ("", "  "):
        state = license_state(key, None, TODAY)
        assert (state.status, state.routing_enabled, state.license) == ("not_enforced", True, None)
    assert license_state("", "garbage", TODAY).routing_enabled


def test_key_without_license_is_missing(key_b64):
    for text in (None, "", "\n"):
        state = license_state(key_b64, text, TODAY)
        assert (state.status, state.routing_enabled) == ("missing", False)
        assert state.message


def test_valid_license_enables_routing(private_key, key_b64):
    state = license_state(key_b64, sign_license(payload(), private_key), TODAY)
    assert (state.status, state.routing_enabled) == ("valid", True)
    assert state.license is not None and state.license.licensee == "Example Telecom Ltd"
    assert "2026-01-31" in state.message


def test_license_without_expiry(private_key, key_b64):
    state = license_state(key_b64, sign_license(payload(expires=None), private_key), date(2999, 1, 1))
    assert (state.status, state.routing_enabled) == ("valid", True)


def test_expiry_day_is_still_valid(private_key, key_b64):
    text = sign_license(payload(), private_key)
    assert license_state(key_b64, text, date(2026, 1, 31)).routing_enabled
    state = license_state(key_b64, text, date(2026, 2, 1))
    assert (state.status, state.routing_enabled) == ("expired", False)
    assert state.license is not None and "2026-01-31" in state.message


def test_missing_feature_disables_routing(private_key, key_b64):
    state = license_state(key_b64, sign_license(payload(features=["call_log"]), private_key), TODAY)
    assert (state.status, state.routing_enabled) == ("valid", False)
    assert FEATURE_CRM_ROUTING in state.message


def test_bad_signature_and_malformed_are_invalid(private_key, key_b64):
    other = sign_license(payload(), Ed25519PrivateKey.generate())
    state = license_state(key_b64, other, TODAY)
    assert (state.status, state.routing_enabled, state.license) == ("invalid", False, None)
    assert "signature does not match" in state.message
    state = license_state(key_b64, "{not json", TODAY)
    assert (state.status, state.routing_enabled) == ("invalid", False)


def test_unusable_key_fails_closed(private_key):
    state = license_state("not-a-key", sign_license(payload(), private_key), TODAY)
    assert (state.status, state.routing_enabled) == ("invalid", False)
    assert "CRMROUTE_LICENSE_KEY" in state.message


def test_notice_and_install_check_by_date():
    from datetime import timedelta

    from crmroute.errors import LicenseError
    from crmroute.licensing import License, LicenseState, check_current, license_notice

    today = date.today()

    def state(expires, enabled=True, status="valid"):
        found = License("Example", frozenset({"crm_routing"}), {}, today - timedelta(days=30), expires)
        return LicenseState(status, enabled, found, "")

    assert license_notice(state(today + timedelta(days=15)), today) is None
    assert license_notice(state(None), today) is None
    level, text = license_notice(state(today + timedelta(days=14)), today)
    assert level == "warning" and "expires in 14 days" in text
    level, text = license_notice(state(today - timedelta(days=1), enabled=False, status="expired"), today)
    assert level == "error" and "every call gets status unlicensed" in text and "expired on" in text
    check_current(state(today).license, today)  # its last day is still valid
    with pytest.raises(LicenseError, match="expired on"):
        check_current(state(today - timedelta(days=1)).license, today)
    future = License("Example", frozenset(), {}, today + timedelta(days=1), None)
    with pytest.raises(LicenseError, match="after today"):
        check_current(future, today)
