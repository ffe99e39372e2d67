"""/api/v1/decisions: the decision log (SPEC 8), newest first."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from crmroute.errors import ConfigError
from crmroute.routing.trace import Status
from crmroute.schemas import DecisionPage, DecisionPublic
from crmroute.store import decisions
from crmroute.web.api._common import NOT_FOUND, IdPath, PagingDep
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/decisions", tags=["decisions"])
DecisionStatus = Literal[("",) + tuple(s.value for s in Status)]  # "": any
When = Annotated[str, Query(max_length=64, description="ISO-8601 date or date-time (UTC unless it has an offset)",
                            json_schema_extra={"anyOf": [{"maxLength": 0}, {"format": "date"}, {"format": "date-time"}]})]


@router.get("", response_model=DecisionPage, response_model_exclude_unset=True)
def list_decisions(
    session: SessionDep,
    paging: PagingDep,
    caller: Annotated[str, Query(max_length=64, description="substring of the caller's number")] = "",
    rule: Annotated[str, Query(max_length=128, description="the rule's exact name")] = "",
    status: Annotated[DecisionStatus, Query(description="matched, default, fallback, no_rule, unlicensed or error")] = "",
    since: When = "",
    until: When = "",
) -> dict:
    """Decisions matching every filter given (``since`` inclusive, ``until`` exclusive), without traces."""
    problems: list[tuple[str, str]] = []
    start, end = parse_when(since, "since", problems), parse_when(until, "until", problems)
    if problems:
        raise ConfigError(problems)
    total, rows = decisions.search(session, caller=caller, rule=rule, status=status, since=start, until=end,
                                   offset=paging.offset, limit=paging.limit)  # fmt: skip
    return paging.page(total, [decisions.to_public(r, trace=False) for r in rows])


@router.get("/{decision_id}", response_model=DecisionPublic, responses=NOT_FOUND)
def get_decision(decision_id: IdPath, session: SessionDep) -> dict:
    """One decision with its trace."""
    return decisions.to_public(decisions.get(session, decision_id), trace=True)


def parse_when(text: str, field: str, problems: list[tuple[str, str]]) -> datetime | None:
    """An ISO-8601 date or date-time as an aware UTC datetime; a problem named ``field`` if it is not one."""
    text = text.strip()
    if not text:
        return None
    if "T" in text and " " in text:  # an offset's "+" sent unencoded in the query string
        text = text.replace(" ", "+")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        problems.append((field, "must be an ISO-8601 date or date-time, e.g. 2026-01-31T08:00:00Z"))
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
