"""/api/v1/schedules: weekly opening hours with holidays in a time zone, named by rows' conditions (issue 14)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from crmroute.schemas import ScheduleIn, SchedulePage, SchedulePublic
from crmroute.store import schedules
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.get("", response_model=SchedulePage)
def list_schedules(session: SessionDep, paging: PagingDep, search: Search = "") -> dict:
    """Schedules whose name or time zone contains ``search``, by name."""
    total, found = schedules.search(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [schedules.to_public(session, s) for s in found])


@router.post("", status_code=201, response_model=SchedulePublic, responses=CONFLICT)
def create_schedule(data: ScheduleIn, session: SessionDep) -> dict:
    """A new schedule; names are unique (409)."""
    row = schedules.create(session, data)
    session.commit()
    return schedules.to_public(session, row)


@router.get("/{schedule_id:int}", response_model=SchedulePublic, responses=NOT_FOUND)
def get_schedule(schedule_id: IdPath, session: SessionDep) -> dict:
    return schedules.to_public(session, schedules.get(session, schedule_id))


@router.put("/{schedule_id:int}", response_model=SchedulePublic, responses=NOT_FOUND | CONFLICT)
def update_schedule(schedule_id: IdPath, data: ScheduleIn, session: SessionDep) -> dict:
    """Replace the schedule; a new name is written into the row conditions that used the old one."""
    row = schedules.update(session, schedule_id, data)
    session.commit()
    return schedules.to_public(session, row)


@router.delete("/{schedule_id:int}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_schedule(schedule_id: IdPath, session: SessionDep) -> Response:
    """Refused (409) while a rule's row uses the schedule."""
    schedules.delete(session, schedule_id)
    session.commit()
    return Response(status_code=204)
