"""/api/v1/license: the license state (SPEC 9) and installing a license file."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from crmroute.errors import ConfigError, LicenseError
from crmroute.licensing import LicenseState
from crmroute.schemas import LicensePublic
from crmroute.store import licenses
from crmroute.web.api._common import SettingsDep
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/license", tags=["license"])
MAX_LICENSE = 64 * 1024

_BODY = {
    "requestBody": {
        "required": True,
        "description": 'the license file: its JSON object ({"license": ..., "signature": ...}) or its text',
        "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}}},
    }
}


def state_public(state: LicenseState) -> dict:
    found = state.license.as_dict() if state.license else {}
    return {
        "status": state.status,
        "routing_enabled": state.routing_enabled,
        "message": state.message,
        "licensee": found.get("licensee"),
        "features": found.get("features", []),
        "limits": found.get("limits", {}),
        "issued": found.get("issued"),
        "expires": found.get("expires"),
    }


@router.get("", response_model=LicensePublic)
def get_license(session: SessionDep, settings: SettingsDep) -> dict:
    """Whether CRM routing is licensed, and the installed license's licensee, features, limits and dates."""
    return state_public(licenses.current_state(session, settings.license_key))


@router.post("", status_code=201, response_model=LicensePublic, openapi_extra=_BODY,
             responses={422: {"description": "the license is malformed or not signed by the configured key"}})  # fmt: skip
async def install_license(request: Request, session: SessionDep, settings: SettingsDep) -> dict:
    """Verify the license against ``CRMROUTE_LICENSE_KEY`` (its shape only when none is set) and install it."""
    text = license_text(await request.body(), request.headers.get("content-type", ""))

    def install() -> dict:
        try:
            licenses.install(session, text, settings.license_key)
        except LicenseError as exc:
            raise ConfigError(str(exc), field="license") from None
        session.commit()
        return state_public(licenses.current_state(session, settings.license_key))

    return await run_in_threadpool(install)


def license_text(body: bytes, content_type: str) -> str:
    """The license file's text from a JSON object, a JSON string holding the file, or raw text."""
    if len(body) > MAX_LICENSE:
        raise ConfigError("is larger than 64 KB", field="license")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("must be UTF-8 text", field="license") from None
    if "json" in content_type.lower():
        try:
            value = json.loads(text)
        except ValueError:
            raise ConfigError("the body is not JSON", field="license") from None
        if isinstance(value, str):  # the file's text, quoted
            return value
        if isinstance(value, dict) and isinstance(value.get("license"), str):  # {"license": "<file text>"}
            return value["license"]
        return json.dumps(value, ensure_ascii=False)
    return text
