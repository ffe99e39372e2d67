"""/api/v1/dids: dialled numbers (or Asterisk patterns) and their rules."""

from __future__ import annotations

from fastapi import APIRouter, Response

from crmroute.schemas import AssignmentPage, AssignmentPublic, DidIn
from crmroute.store import assignments
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/dids", tags=["dids"])


@router.get("", response_model=AssignmentPage)
def list_dids(session: SessionDep, paging: PagingDep, search: Search = "") -> dict:
    """DIDs whose number, name or rule name contains ``search``."""
    total, found = assignments.search_dids(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [assignments.did_public(d) for d in found])


@router.post("", status_code=201, response_model=AssignmentPublic, responses=CONFLICT)
def create_did(data: DidIn, session: SessionDep) -> dict:
    """Send calls to this number through a rule of location ``did``."""
    row = assignments.create_did(session, data)
    session.commit()
    return assignments.did_public(row)


@router.get("/{did_id}", response_model=AssignmentPublic, responses=NOT_FOUND)
def get_did(did_id: IdPath, session: SessionDep) -> dict:
    return assignments.did_public(assignments.get_did(session, did_id))


@router.put("/{did_id}", response_model=AssignmentPublic, responses=NOT_FOUND | CONFLICT)
def update_did(did_id: IdPath, data: DidIn, session: SessionDep) -> dict:
    row = assignments.update_did(session, did_id, data)
    session.commit()
    return assignments.did_public(row)


@router.delete("/{did_id}", status_code=204, responses=NOT_FOUND)
def delete_did(did_id: IdPath, session: SessionDep) -> Response:
    assignments.delete_did(session, did_id)
    session.commit()
    return Response(status_code=204)
