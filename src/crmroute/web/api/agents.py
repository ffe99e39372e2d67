"""/api/v1/agents: the people calls may go to, their extensions and CRM identities (issue 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from crmroute.agentsync import sync_agents
from crmroute.errors import ConnectorError, NotFound
from crmroute.schemas import AgentIn, AgentPage, AgentPublic, AgentSyncIn, AgentSyncResult, _Public
from crmroute.store import agents
from crmroute.web.api._common import CONFLICT, NOT_FOUND, BoxDep, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/agents", tags=["agents"])


class AgentMatch(_Public):
    agent: AgentPublic
    by: str
    explanation: str


def availability_of(request: Request) -> Any:
    """The AMI state map of this process's call logger; None when AMI is off here (states unknown)."""
    call_logger = getattr(request.app.state, "call_logger", None)
    return getattr(call_logger, "availability", None)


@router.get("", response_model=AgentPage)
def list_agents(request: Request, session: SessionDep, paging: PagingDep, search: Search = "") -> dict:
    """Agents whose name or extension contains ``search``, by name, each with its current availability."""
    total, found = agents.search(session, search=search, offset=paging.offset, limit=paging.limit)
    availability = availability_of(request)
    return paging.page(total, [agents.to_public(a, availability) for a in found])


@router.post("", status_code=201, response_model=AgentPublic, responses=CONFLICT)
def create_agent(request: Request, data: AgentIn, session: SessionDep) -> dict:
    """A new agent; ``identities`` name stored integrations. Name and extension are unique (409)."""
    row = agents.create(session, data)
    session.commit()
    return agents.to_public(row, availability_of(request))


@router.get("/resolve", response_model=AgentMatch, responses=NOT_FOUND)
def resolve_agent(
    request: Request, session: SessionDep,
    integration: Annotated[str, Query(min_length=1, max_length=128, description="the integration's name")],
    user: Annotated[str, Query(min_length=1, max_length=255, description="a CRM user id, or an e-mail (any case)")],
) -> dict:  # fmt: skip
    """Which agent integration ``integration`` knows as ``user`` (404 when none)."""
    found = agents.resolve(session, integration, user)
    if found is None:
        raise NotFound(f"no agent is {user!r} in {integration!r}")
    match, row = found
    return {"agent": agents.to_public(row, availability_of(request)), "by": match.by, "explanation": match.explain()}


@router.post("/sync", response_model=AgentSyncResult,
             responses={502: {"description": "the CRM failed: {detail, code}"}})  # fmt: skip
async def sync(request: Request, data: AgentSyncIn, box: BoxDep) -> Any:
    """List the integration's CRM users and record each one's id on the agent with the same e-mail.

    422 (field ``integration``) when it is unknown or its CRM kind has no user list; a CRM failure is 502.
    """
    app = request.app
    router_ = app.state.router
    try:
        result = await sync_agents(app.state.store.factory, box, router_.http, data.integration,
                                   region=router_.settings.default_region)  # fmt: skip
    except ConnectorError as exc:
        return JSONResponse({"detail": str(exc), "code": exc.reason}, status_code=502)
    return result.as_dict()


@router.get("/{agent_id:int}", response_model=AgentPublic, responses=NOT_FOUND)
def get_agent(request: Request, agent_id: IdPath, session: SessionDep) -> dict:
    return agents.to_public(agents.get(session, agent_id), availability_of(request))


@router.put("/{agent_id:int}", response_model=AgentPublic, responses=NOT_FOUND | CONFLICT)
def update_agent(request: Request, agent_id: IdPath, data: AgentIn, session: SessionDep) -> dict:
    """Replace the agent; identities left out are removed."""
    row = agents.update(session, agent_id, data)
    session.commit()
    return agents.to_public(row, availability_of(request))


@router.delete("/{agent_id:int}", status_code=204, responses=NOT_FOUND)
def delete_agent(agent_id: IdPath, session: SessionDep) -> Response:
    agents.delete(session, agent_id)
    session.commit()
    return Response(status_code=204)
