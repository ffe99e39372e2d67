"""/api/v1/calllog: calls logged (or waiting to be logged) into each integration's CRM.

One item per call and integration: ``pending`` (with its attempts, last error
and next attempt), ``delivered`` (with the CRM's activity id), ``parked`` after
too many failures, ``dropped`` by an admin, ``skipped`` when the log options
no longer ask for the call. A parked (or dropped) item can be retried; a
pending or parked one dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from crmroute.calllog.worker import off_status
from crmroute.store import calllog
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, IdQuery, PagingDep
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/calllog", tags=["calllog"])
DeliveryStatus = Literal[("",) + calllog.STATUSES]  # "": any


class CallSummary(BaseModel):
    direction: str | None = None
    outcome: str | None = None
    external_number: str | None = None
    external_name: str | None = None
    extension: str | None = None
    agent: str | None = None
    queue: str | None = None
    did: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    ring_seconds: int | None = None
    talk_seconds: int | None = None
    recording: str | None = None
    note: str | None = None
    routing: dict[str, Any] = {}


class DeliveryPublic(BaseModel):
    id: int
    linked_id: str
    status: str
    attempts: int
    integration: dict[str, Any]
    activity_id: str | None = None
    last_error: str | None = None
    next_attempt_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    delivered_at: str | None = None
    call: CallSummary


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    total: int
    offset: int
    limit: int
    counts: dict[str, int]
    ami: dict[str, Any]


def ami_status(request: Request) -> dict[str, Any]:
    call_logger = request.app.state.call_logger
    return call_logger.status() if call_logger is not None else off_status(request.app.state.settings)


@router.get("", response_model=DeliveryPage)
def list_deliveries(
    request: Request,
    session: SessionDep,
    paging: PagingDep,
    status: Annotated[DeliveryStatus, Query(description="pending, delivered, parked, dropped or skipped")] = "",
    integration: Annotated[IdQuery, Query(description="an integration's id")] = None,
) -> dict:
    """Newest first, with the counts per status (of the integration, when one is given) and the AMI state."""
    total, rows = calllog.search(session, status=status, integration_id=integration, offset=paging.offset,
                                 limit=paging.limit)  # fmt: skip
    page = paging.page(total, [calllog.to_public(r) for r in rows])
    return page | {"counts": calllog.counts(session, integration), "ami": ami_status(request)}


@router.get("/{delivery_id}", response_model=DeliveryPublic, responses=NOT_FOUND)
def get_delivery(delivery_id: IdPath, session: SessionDep) -> dict:
    return calllog.to_public(calllog.get(session, delivery_id))


@router.post("/{delivery_id}/retry", response_model=DeliveryPublic, responses=NOT_FOUND | CONFLICT)
def retry_delivery(request: Request, delivery_id: IdPath, session: SessionDep) -> dict:
    """Deliver again now, with a fresh count of attempts (409 when it was delivered already)."""
    row = calllog.retry(session, delivery_id)
    session.commit()
    _wake(request)
    return calllog.to_public(calllog.get(session, row.id))


@router.delete("/{delivery_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def drop_delivery(delivery_id: IdPath, session: SessionDep) -> Response:
    """Give up on this call for this integration (kept as ``dropped``; 409 when it was delivered already)."""
    calllog.drop(session, delivery_id)
    session.commit()
    return Response(status_code=204)


def _wake(request: Request) -> None:
    call_logger = request.app.state.call_logger
    if call_logger is not None:
        call_logger.worker.wake()
