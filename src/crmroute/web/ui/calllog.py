"""The call log: calls logged (or waiting) into each integration's CRM, the AMI connection, retry and drop."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmroute.calllog.worker import off_status
from crmroute.errors import Conflict
from crmroute.store import calllog
from crmroute.web.deps import FormUser, PageUser, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, clamp_offset, filters, text

router = APIRouter()


def ami_status(request: Request) -> dict:
    call_logger = request.app.state.call_logger
    return call_logger.status() if call_logger is not None else off_status(request.app.state.settings)


@router.get("/calllog", response_class=HTMLResponse)
def calllog_list(request: Request, principal: PageUser, session: SessionDep, status: str = "", integration: str = "",
                 offset: int = 0) -> Response:  # fmt: skip
    offset = clamp_offset(offset)
    errors: dict[str, str] = {}
    if status and status not in calllog.STATUSES:
        errors["status"] = f"must be one of {', '.join(calllog.STATUSES)}"
        status = ""
    integration_id = int(integration) if integration.isdigit() else None
    if integration and integration_id is None:
        errors["integration"] = "choose an integration from the list"
        integration = ""
    total, rows = calllog.search(session, status=status, integration_id=integration_id, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(status=status, integration=integration))
    here = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "calllog/list.html", principal, rows=[calllog.to_public(r) for r in rows], page=page,
                  values={"status": status, "integration": integration}, errors=errors,
                  statuses=[(s, s) for s in calllog.STATUSES], counts=calllog.counts(session, integration_id),
                  integrations=[(str(i), name) for i, name in calllog.integration_names(session)],
                  ami=ami_status(request), back=here)  # fmt: skip


def _back(form_value: str) -> str:
    """Where a retry or drop returns to: the page it came from (this site only)."""
    return form_value if form_value.startswith(("/calllog", "/integrations/")) and "//" not in form_value else "/calllog"


@router.post("/calllog/{delivery_id}/retry")
def calllog_retry(request: Request, delivery_id: int, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    back = _back(text(form, "back"))
    try:
        row = calllog.retry(session, delivery_id)
    except Conflict as exc:
        session.rollback()
        return redirect(back, f"Not retried: {exc}.", error=True)
    session.commit()
    call_logger = request.app.state.call_logger
    if call_logger is not None:
        call_logger.worker.wake()
    return redirect(back, f"Call {row.linked_id} will be logged again into {row.integration.name}.")


@router.post("/calllog/{delivery_id}/drop")
def calllog_drop(delivery_id: int, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    back = _back(text(form, "back"))
    try:
        row = calllog.drop(session, delivery_id)
    except Conflict as exc:
        session.rollback()
        return redirect(back, f"Not dropped: {exc}.", error=True)
    session.commit()
    return redirect(back, f"Call {row.linked_id} will not be logged into {row.integration.name}.")
