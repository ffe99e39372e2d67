"""/api/v1/integrations: CRM connections (SPEC 4), with the Test action."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from fastapi.concurrency import run_in_threadpool

from crmroute.connectors.pool import ConnectorSpec
from crmroute.errors import ConnectorError
from crmroute.schemas import IntegrationIn, IntegrationPage, IntegrationPublic, IntegrationTestIn
from crmroute.store import integrations
from crmroute.web.api._common import CONFLICT, NOT_FOUND, BoxDep, IdPath, PagingDep, Search
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/integrations", tags=["integrations"])


@router.get("", response_model=IntegrationPage)
def list_integrations(session: SessionDep, box: BoxDep, paging: PagingDep, search: Search = "") -> dict:
    """Integrations whose name or CRM kind contains ``search``, by name."""
    total, found = integrations.search(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [integrations.to_public(i, box) for i in found])


@router.post("", status_code=201, response_model=IntegrationPublic, responses=CONFLICT)
def create_integration(data: IntegrationIn, session: SessionDep, box: BoxDep) -> dict:
    """A new CRM connection; ``secrets`` are stored encrypted and shown back as ``********``."""
    row = integrations.create(session, box, data)
    session.commit()
    return integrations.to_public(row, box)


@router.get("/{integration_id}", response_model=IntegrationPublic, responses=NOT_FOUND)
def get_integration(integration_id: IdPath, session: SessionDep, box: BoxDep) -> dict:
    return integrations.to_public(integrations.get(session, integration_id), box)


@router.put("/{integration_id}", response_model=IntegrationPublic, responses=NOT_FOUND | CONFLICT)
def update_integration(integration_id: IdPath, data: IntegrationIn, session: SessionDep, box: BoxDep) -> dict:
    """Replace the integration. A secret sent as ``********`` keeps its stored value; one left out is removed."""
    row = integrations.update(session, box, integration_id, data)
    session.commit()
    return integrations.to_public(row, box)


@router.delete("/{integration_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_integration(integration_id: IdPath, session: SessionDep) -> Response:
    """Refused (409) while a rule uses the integration."""
    integrations.delete(session, integration_id)
    session.commit()
    return Response(status_code=204)


@router.post("/{integration_id}/test", responses=NOT_FOUND)
async def test_integration(
    integration_id: IdPath, request: Request, session: SessionDep, box: BoxDep,
    data: Annotated[IntegrationTestIn | None, Body()] = None,
) -> dict:  # fmt: skip
    """The Test action: authenticate, optionally look ``key`` up and read ``fields``; a vendor failure is in the report."""
    data = data or IntegrationTestIn()
    row = await run_in_threadpool(integrations.get, session, integration_id)
    spec = ConnectorSpec(row.id, row.name, row.kind, True, dict(row.settings), row.secrets_enc)
    router = request.app.state.router
    try:  # a fresh connector on the shared credential store; credentials refused before are tried once more
        connector = router.pool.build(spec, for_test=True)
    except ConnectorError as exc:
        return {"ok": False, "steps": [], "record": None, "error": {"code": exc.reason, "message": str(exc)}}
    try:
        return (await connector.test(data.key or None, module=data.module, fields=data.fields)).as_dict()
    finally:
        await connector.aclose()
