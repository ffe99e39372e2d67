"""/api/v1/ivrs: IVR numbers (options) and their rules."""

from __future__ import annotations

from fastapi import APIRouter, Response

from crmroute.schemas import AssignmentPage, AssignmentPublic, IvrIn
from crmroute.store import assignments
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/ivrs", tags=["ivrs"])


@router.get("", response_model=AssignmentPage)
def list_ivrs(session: SessionDep, paging: PagingDep, search: Search = "") -> dict:
    """IVRs whose number, name or rule name contains ``search``."""
    total, found = assignments.search_ivrs(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [assignments.ivr_public(d) for d in found])


@router.post("", status_code=201, response_model=AssignmentPublic, responses=CONFLICT)
def create_ivr(data: IvrIn, session: SessionDep) -> dict:
    """Send calls from this IVR through a rule of location ``ivr`` (AGI ``/ivr/N``)."""
    row = assignments.create_ivr(session, data)
    session.commit()
    return assignments.ivr_public(row)


@router.get("/{ivr_id}", response_model=AssignmentPublic, responses=NOT_FOUND)
def get_ivr(ivr_id: IdPath, session: SessionDep) -> dict:
    return assignments.ivr_public(assignments.get_ivr(session, ivr_id))


@router.put("/{ivr_id}", response_model=AssignmentPublic, responses=NOT_FOUND | CONFLICT)
def update_ivr(ivr_id: IdPath, data: IvrIn, session: SessionDep) -> dict:
    row = assignments.update_ivr(session, ivr_id, data)
    session.commit()
    return assignments.ivr_public(row)


@router.delete("/{ivr_id}", status_code=204, responses=NOT_FOUND)
def delete_ivr(ivr_id: IdPath, session: SessionDep) -> Response:
    assignments.delete_ivr(session, ivr_id)
    session.commit()
    return Response(status_code=204)
