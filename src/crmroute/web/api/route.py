"""/api/v1/route: a dry run, the trace a call would produce (not logged)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from crmroute.agi.jumps import JumpTable
from crmroute.router import Router, Target
from crmroute.routing.trace import Destination, DestType
from crmroute.schemas import RouteIn, RouteResult

router = APIRouter(tags=["route"])


@router.post("/route", response_model=RouteResult)
async def dry_run(data: RouteIn, request: Request) -> dict:
    """Where a call to ``did`` (or from IVR ``ivr``, or by rule name ``rule``) from ``caller`` would go.

    The CRM is really asked; changes made through the API are seen at once. Nothing is written to the decision log.
    """
    if data.did:
        target = Target("did", data.did)
    else:
        target = Target("ivr", data.ivr) if data.ivr else Target("rule", data.rule or "")
    app = request.app
    shared: Router | None = app.state.router
    if shared is not None:
        await shared.reload_if_changed()
        trace = await shared.dry_run(target, caller_id=data.caller, dtmf=data.dtmf)
    else:  # a web-only process has no router of its own: build one for this request
        from crmroute.service import build_router

        temporary = build_router(app.state.store, with_log=False)
        try:
            await temporary.reload_if_changed()
            trace = await temporary.dry_run(target, caller_id=data.caller, dtmf=data.dtmf)
        finally:
            await temporary.close()
            await temporary.http.aclose()
    dest = trace.get("destination")
    jump = JumpTable.from_settings(app.state.settings).jump_for(
        Destination(DestType(dest["type"]), dest["option"]) if dest else None
    )
    return trace | {"jump": ",".join(jump) if jump else None}
