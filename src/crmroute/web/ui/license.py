"""The license (SPEC 9): its state, and installing one by pasting it or uploading the file."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from crmroute import licensing
from crmroute.errors import ConfigError, LicenseError
from crmroute.store import licenses, rules
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import FormDep

router = APIRouter()
MAX_LICENSE = 64 * 1024
STATUS_TITLES = {"not_enforced": "Not enforced", "valid": "Valid", "missing": "Missing", "invalid": "Invalid",
                 "expired": "Expired"}  # fmt: skip


@router.get("/license", response_class=HTMLResponse)
def license_page(request: Request, principal: PageUser, session: SessionDep) -> Response:
    return page(request, principal, session)


@router.post("/license", response_class=HTMLResponse)
def license_install(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    upload = form.get("license_file")
    pasted = form.get("license_text")
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            raw = upload.file.read(MAX_LICENSE + 1)
            if len(raw) > MAX_LICENSE:
                raise LicenseError("the file is larger than 64 KB")
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise LicenseError("the file is not UTF-8 text") from None
        else:
            text = pasted if isinstance(pasted, str) else ""
        if not text.strip():
            raise LicenseError("paste the license text or choose the license file")
        found = licenses.install(session, text, request.app.state.settings.license_key)
    except (LicenseError, ConfigError) as exc:
        session.rollback()
        keep = pasted if isinstance(pasted, str) else ""
        return page(request, principal, session, error=str(exc), pasted=keep, status_code=422)
    session.commit()
    return redirect("/license", f"Installed the license for {found.licensee}.")


def page(request: Request, principal: Principal, session: SessionDep, *, error: str = "", pasted: str = "",
         status_code: int = 200) -> Response:  # fmt: skip
    key = request.app.state.settings.license_key
    state = licenses.current_state(session, key)
    rule_count = rules.search(session, limit=1)[0]
    notice = licensing.license_notice(state, date.today())
    badge = "expiring" if state.status == licensing.STATUS_VALID and notice and notice[0] == "warning" else state.status
    return render(request, "license/show.html", principal, status_code=status_code, state=state, badge=badge,
                  title=STATUS_TITLES.get(state.status, state.status), info=state.license.as_dict() if state.license else None,
                  key_configured=bool(key.strip()), rule_count=rule_count, error=error, pasted=pasted)  # fmt: skip
