"""/api/v1/import and /api/v1/export: the rules file (SPEC 10) over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from crmroute import rulesfile, textfile
from crmroute.errors import ConfigError
from crmroute.schemas import ImportSummaryPublic, RulesFile
from crmroute.web.api._common import BoxDep, SettingsDep
from crmroute.web.deps import SessionDep

router = APIRouter(tags=["rules file"])

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_BODY = textfile.MAX_BYTES

_BODY = {
    "requestBody": {
        "required": True,
        "description": "the rules file: a JSON object naming at least one section, or YAML text with "
                       "Content-Type application/yaml",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RulesFile", "minProperties": 1}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/import", response_model=ImportSummaryPublic, openapi_extra=_BODY,
             responses={422: {"description": "every problem in the file, by path"}})  # fmt: skip
async def import_file(request: Request, box: BoxDep, settings: SettingsDep) -> dict:
    """Create or update everything in the file, all or nothing; ``********`` keeps stored secrets.

    ``${ENV}`` references are refused here (they would read the server's environment);
    ``crmroute rules import`` on the server expands them. The file is read within
    ``crmroute.textfile``'s bounds, one upload at a time, off the event loop.
    """
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in YAML_TYPES:
        fmt = "yaml"
    elif content_type in ("application/json", "text/json") or content_type.endswith("+json"):
        fmt = "json"
    else:
        raise ConfigError("send JSON (application/json) or YAML (application/yaml)", field="file")
    body = await read_body(request, MAX_BODY)
    store = request.app.state.store

    def apply() -> dict:
        data = rulesfile.parse(textfile.decode(body, limit=MAX_BODY), environ=rulesfile.NO_ENVIRONMENT, fmt=fmt)
        return rulesfile.import_rules(store.factory, box, data, license_key=settings.license_key).as_dict()

    async with import_lock(request.app):
        return await run_in_threadpool(apply)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is longer than ``limit`` (never buffered past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise textfile.too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise textfile.too_large(limit)
    return bytes(body)


def import_lock(app: FastAPI) -> asyncio.Lock:
    """One import parsed at a time: concurrent uploads wait rather than multiply the memory."""
    lock = getattr(app.state, "import_lock", None)
    if lock is None:
        lock = app.state.import_lock = asyncio.Lock()
    return lock


@router.get("/export", response_model=RulesFile,  # documents the shape (also the import body's schema)
            responses={200: {"content": {"text/yaml": {}},
                             "description": "every object in rules-file shape, secrets as ********"}})  # fmt: skip
def export_file(
    session: SessionDep, box: BoxDep, format: Annotated[Literal["json", "yaml"], Query()] = "json"
) -> Response:
    """Everything configured, as a rules file (JSON by default, ``?format=yaml`` for YAML)."""
    data = rulesfile.export_rules(session, box)
    if format == "yaml":
        return Response(rulesfile.dump(data, "yaml"), media_type="text/yaml; charset=utf-8")
    return Response(json.dumps(data, ensure_ascii=False), media_type="application/json")

