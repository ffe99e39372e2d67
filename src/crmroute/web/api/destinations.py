"""/api/v1/destinations: extensions, queues, IVRs and recordings (SPEC 7)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from crmroute.schemas import DestinationIn, DestinationPage, DestinationPublic
from crmroute.store import destinations
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/destinations", tags=["destinations"])
DestType = Literal["extension", "queue", "ivr", "recording", ""]


@router.get("", response_model=DestinationPage, response_model_exclude_unset=True)
def list_destinations(
    session: SessionDep, paging: PagingDep, search: Search = "", type: Annotated[DestType, Query()] = ""
) -> dict:
    """Destinations whose number (recording name) or name contains ``search``; ``type`` narrows."""
    total, found = destinations.search(session, search=search, type=type, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [destinations.to_public(d) for d in found])


@router.post("", status_code=201, response_model=DestinationPublic, response_model_exclude_unset=True,
             responses=CONFLICT)  # fmt: skip
def create_destination(data: DestinationIn, session: SessionDep) -> dict:
    row = destinations.create(session, data)
    session.commit()
    return destinations.to_public(row)


@router.get("/{dest_id}", response_model=DestinationPublic, response_model_exclude_unset=True, responses=NOT_FOUND)
def get_destination(dest_id: IdPath, session: SessionDep) -> dict:
    return destinations.to_public(destinations.get(session, dest_id))


@router.put("/{dest_id}", response_model=DestinationPublic, response_model_exclude_unset=True,
            responses=NOT_FOUND | CONFLICT)  # fmt: skip
def update_destination(dest_id: IdPath, data: DestinationIn, session: SessionDep) -> dict:
    """Replace the destination; the type and number of one a rule uses cannot change (422)."""
    row = destinations.update(session, dest_id, data)
    session.commit()
    return destinations.to_public(row)


@router.delete("/{dest_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_destination(dest_id: IdPath, session: SessionDep) -> Response:
    """Refused (409) while a rule's rows or default destination use it."""
    destinations.delete(session, dest_id)
    session.commit()
    return Response(status_code=204)
