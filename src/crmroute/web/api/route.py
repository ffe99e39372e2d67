"""/api/v1/route: a dry run, the trace a call would produce (not logged)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from crmroute.router import Target
from crmroute.schemas import RouteIn, RouteResult

router = APIRouter(tags=["route"])


@router.post("/route", response_model=RouteResult)
async def dry_run(data: RouteIn, request: Request) -> dict:
    """Where a call to ``did`` (or from IVR ``ivr``, or by rule name ``rule``) from ``caller`` would go.

    ``at`` (ISO 8601 with an offset) is the instant the rows' schedule conditions are checked at (default: now).
    The CRM is really asked; changes made through the API are seen at once. Nothing is written to the decision log.
    """
    if data.did:
        target = Target("did", data.did)
    else:
        target = Target("ivr", data.ivr) if data.ivr else Target("rule", data.rule or "")
    return await request.app.state.router.dry_run(target, caller_id=data.caller, dtmf=data.dtmf, at=data.at)
