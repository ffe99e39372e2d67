"""CRM Routing licenses (SPEC section 9): Ed25519-signed JSON files.

Enforcement is on only when a verification key is configured
(``CRMROUTE_LICENSE_KEY``); an open-source install has none and routes freely.

License file (UTF-8 JSON)::

    {
      "license": {
        "licensee": "Example Telecom Ltd",      # non-empty text
        "features": ["crm_routing"],            # list of text
        "limits": {"rules": 50},                # text -> whole number (may be {})
        "issued": "2025-01-31",                 # YYYY-MM-DD
        "expires": "2026-01-31"                 # YYYY-MM-DD, or null for never
      },
      "signature": "<base64 Ed25519 signature>"
    }

The signature is over the canonical JSON of the ``license`` object::

    json.dumps(license, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

so whitespace and key order in the file do not matter. Verification
re-serialises the object as parsed, so exactly what is checked is what is
used. Extra keys inside ``license`` are allowed (and signed); extra keys
beside ``license``/``signature`` are ignored. A license is valid through its
``expires`` day (expired when ``expires < today``); ``issued`` is informative.

Verification key (``CRMROUTE_LICENSE_KEY``): base64 or hex of the raw 32-byte
Ed25519 public key, or a PEM ``PUBLIC KEY`` block. A vendor signs with
``sign_license(license_dict, private_key)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crmroute import textfile
from crmroute.errors import ConfigError, LicenseError

FEATURE_CRM_ROUTING = "crm_routing"
KEY_SETTING = "CRMROUTE_LICENSE_KEY"

STATUS_NOT_ENFORCED = "not_enforced"
STATUS_VALID = "valid"
STATUS_MISSING = "missing"
STATUS_INVALID = "invalid"
STATUS_EXPIRED = "expired"
STATUSES = (STATUS_NOT_ENFORCED, STATUS_VALID, STATUS_MISSING, STATUS_INVALID, STATUS_EXPIRED)

EXPIRY_WARNING_DAYS = 14  # the UI warns this many days (or fewer) before a license expires

_RAW_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class License:
    licensee: str
    features: frozenset[str]
    limits: dict[str, int] = field(default_factory=dict)
    issued: date | None = None
    expires: date | None = None  # None: never

    def allows(self, feature: str) -> bool:
        return feature in self.features

    def limit(self, name: str) -> int | None:
        """The limit called ``name``, ``None`` when the license sets none."""
        return self.limits.get(name)

    def is_expired(self, today: date) -> bool:
        return self.expires is not None and self.expires < today

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API and UI."""
        return {
            "licensee": self.licensee,
            "features": sorted(self.features),
            "limits": dict(self.limits),
            "issued": self.issued.isoformat() if self.issued else None,
            "expires": self.expires.isoformat() if self.expires else None,
        }


@dataclass(frozen=True)
class LicenseState:
    status: str  # one of STATUSES
    routing_enabled: bool
    license: License | None
    message: str


def load_public_key(text: str) -> Ed25519PublicKey:
    """The Ed25519 verification key in ``text`` (base64/hex of 32 raw bytes, or PEM)."""
    text = (text or "").strip()
    problem = "must be an Ed25519 public key: base64 or hex of its 32 raw bytes, or a PEM block"
    if not text:
        raise ConfigError(problem, field=KEY_SETTING)
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise ConfigError(f"{problem} (the PEM block does not parse)", field=KEY_SETTING) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{problem} (the PEM block holds another kind of key)", field=KEY_SETTING)
        return key
    if _HEX_KEY.match(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    raw = _b64decode(text)
    if raw is not None and len(raw) == _RAW_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(raw)
    if raw is not None:  # base64 of a DER SubjectPublicKeyInfo, i.e. a PEM body without its lines
        try:
            key = serialization.load_der_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if isinstance(key, Ed25519PublicKey):
            return key
    raise ConfigError(problem, field=KEY_SETTING)


def _b64decode(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; ``None`` if it is not base64."""
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def canonical_bytes(license: dict[str, Any]) -> bytes:
    """The bytes a license's signature covers."""
    try:
        return json.dumps(license, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise LicenseError(f"license cannot be serialised: {exc}") from None


def _read(text: str) -> tuple[dict[str, Any], bytes, License]:
    """The license object, the signature bytes, and the parsed license."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LicenseError("license file is not UTF-8 text") from None
    if not isinstance(text, str) or not text.strip():
        raise LicenseError("license file is empty")
    try:
        document = textfile.load_json(text)
    except ConfigError as exc:  # also too deep, too many values, a repeated key
        where, message = exc.problems[0]
        detail = message.removeprefix("not valid JSON: ") if where == "file" else f"{where}: {message}"
        raise LicenseError(f"license file is not JSON ({detail})") from None
    if not isinstance(document, dict):
        raise LicenseError('license file must be a JSON object with "license" and "signature"')
    payload = document.get("license")
    if not isinstance(payload, dict):
        raise LicenseError('"license" is missing or not an object')
    signature_text = document.get("signature")
    if not isinstance(signature_text, str) or not signature_text.strip():
        raise LicenseError('"signature" is missing or not text')
    try:
        signature = base64.b64decode("".join(signature_text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise LicenseError('"signature" is not base64') from None
    if len(signature) != _SIGNATURE_BYTES:
        raise LicenseError(f'"signature" must be {_SIGNATURE_BYTES} bytes, got {len(signature)}')
    return payload, signature, _license_from(payload)


def _license_from(payload: dict[str, Any]) -> License:
    licensee = payload.get("licensee")
    if not isinstance(licensee, str) or not licensee.strip():
        raise LicenseError('"licensee" must be non-empty text')
    features = payload.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise LicenseError('"features" must be a list of feature names')
    limits = payload.get("limits", {})
    if not isinstance(limits, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in limits.values()
    ):
        raise LicenseError('"limits" must map names to whole numbers')
    issued = _date(payload, "issued", required=True)
    expires = _date(payload, "expires", required=False)
    if issued is not None and expires is not None and expires < issued:
        raise LicenseError('"expires" is before "issued"')
    return License(
        licensee=licensee.strip(),
        features=frozenset(features),
        limits=dict(limits),
        issued=issued,
        expires=expires,
    )


def _date(payload: dict[str, Any], name: str, *, required: bool) -> date | None:
    if name not in payload:
        if required:
            raise LicenseError(f'"{name}" is missing')
        raise LicenseError(f'"{name}" is missing (use null for no expiry)')
    value = payload[name]
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise LicenseError(f'"{name}" must be a date like 2025-12-31')
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise LicenseError(f'"{name}" is not a real date: {value}') from None


def parse_license(text: str) -> License:
    """The license in ``text``, checked for shape but NOT for its signature."""
    return _read(text)[2]


def verify_license(text: str, public_key: Ed25519PublicKey) -> License:
    """The license in ``text`` if well formed and signed by ``public_key``'s private key."""
    payload, signature, license = _read(text)
    try:
        public_key.verify(signature, canonical_bytes(payload))
    except InvalidSignature:
        raise LicenseError("signature does not match the configured key") from None
    return license


def sign_license(license: dict[str, Any], private_key: Ed25519PrivateKey) -> str:
    """The text of a license file for ``license``, signed with ``private_key``.

    ``date`` values and feature sets are accepted and written in file form; the
    result is checked like any installed license before it is signed.
    """
    payload = dict(license)
    for name in ("issued", "expires"):
        if isinstance(payload.get(name), date):
            payload[name] = payload[name].isoformat()
    if isinstance(payload.get("features"), (set, frozenset, tuple)):
        payload["features"] = sorted(payload["features"])
    payload.setdefault("limits", {})
    payload.setdefault("expires", None)
    _license_from(payload)
    signature = private_key.sign(canonical_bytes(payload))
    document = {"license": payload, "signature": base64.b64encode(signature).decode("ascii")}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def license_state(public_key_text: str, license_text: str | None, today: date) -> LicenseState:
    """Whether CRM routing may run, and what the UI should say about it."""
    if not (public_key_text or "").strip():
        return LicenseState(
            STATUS_NOT_ENFORCED, True, None, "No license key is configured: CRM routing is enabled."
        )
    try:
        key = load_public_key(public_key_text)
    except ConfigError:
        return LicenseState(
            STATUS_INVALID,
            False,
            None,
            f"{KEY_SETTING} is not a valid Ed25519 public key: CRM routing is disabled.",
        )
    if license_text is None or not license_text.strip():
        return LicenseState(
            STATUS_MISSING, False, None, "No license is installed: CRM routing is disabled until one is."
        )
    try:
        license = verify_license(license_text, key)
    except LicenseError as exc:
        return LicenseState(STATUS_INVALID, False, None, f"The license is invalid ({exc}): CRM routing is disabled.")
    if license.is_expired(today):
        return LicenseState(
            STATUS_EXPIRED,
            False,
            license,
            f"The license for {license.licensee} expired on {license.expires.isoformat()}: CRM routing is disabled.",
        )
    if not license.allows(FEATURE_CRM_ROUTING):
        return LicenseState(
            STATUS_VALID,
            False,
            license,
            f"The license for {license.licensee} does not include {FEATURE_CRM_ROUTING}: CRM routing is disabled.",
        )
    until = f"until {license.expires.isoformat()}" if license.expires else "with no expiry"
    return LicenseState(STATUS_VALID, True, license, f"Licensed to {license.licensee} {until}.")


def check_current(license: License, today: date) -> None:
    """Refuse to install a license that would not license today: expired, or issued in the future."""
    if license.is_expired(today):
        raise LicenseError(f"this license expired on {license.expires.isoformat()}; "  # type: ignore[union-attr]
                           "installing it would leave CRM routing disabled. Ask for a renewed license.")  # fmt: skip
    if license.issued is not None and license.issued > today:
        raise LicenseError(f"this license is issued for {license.issued.isoformat()}, after today "
                           f"({today.isoformat()}); check this server's clock, or install it from that day")


def license_notice(state: LicenseState, today: date) -> tuple[str, str] | None:
    """What every admin page says about the license: ``("error", text)`` while CRM routing is off,
    ``("warning", text)`` when the license expires within ``EXPIRY_WARNING_DAYS``, else ``None``."""
    if not state.routing_enabled:
        why = {STATUS_MISSING: "No license is installed.", STATUS_INVALID: "The license or the key is invalid.",
               STATUS_EXPIRED: f"The license expired on {_day(state)}."}.get(
            state.status, f"The license does not include {FEATURE_CRM_ROUTING}.")  # fmt: skip
        return "error", f"CRM routing is off: every call gets status unlicensed (the dialplan's own fallback). {why}"
    expires = state.license.expires if state.license else None
    if expires is not None:
        days = (expires - today).days
        if days <= EXPIRY_WARNING_DAYS:
            when = "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"
            return "warning", (f"The license expires {when} (last day {expires.isoformat()}); "
                               "install a renewed one before then, or CRM routing stops.")  # fmt: skip
    return None


def _day(state: LicenseState) -> str:
    expires = state.license.expires if state.license else None
    return expires.isoformat() if expires else "?"
