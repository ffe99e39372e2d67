"""What every API module uses: the settings, the secret box, paging and the list shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from crmroute.settings import Settings
from crmroute.store.secrets import SecretBox

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# The largest integer SQLite and PostgreSQL (BIGINT, OFFSET) take; a bigger one would reach the driver and fail there.
MAX_INT = 2**63 - 1


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_box(request: Request) -> SecretBox:
    return request.app.state.store.box


SettingsDep = Annotated[Settings, Depends(get_settings)]
BoxDep = Annotated[SecretBox, Depends(get_box)]


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int

    def page(self, total: int, items: list[Any]) -> dict[str, Any]:
        return {"items": items, "total": total, "offset": self.offset, "limit": self.limit}


def get_paging(
    offset: Annotated[int, Query(ge=0, le=MAX_INT, description="how many matching items to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many items")] = DEFAULT_LIMIT,
) -> Paging:
    return Paging(offset, limit)


PagingDep = Annotated[Paging, Depends(get_paging)]
Search = Annotated[str, Query(max_length=200, description="case-insensitive substring")]
# Every id in a path or a query: bounded in the schema, so an out-of-range one is a 422 naming the parameter.
IdPath = Annotated[int, Path(ge=1, le=MAX_INT, description="the object's id")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_INT)]

# Responses every resource route may give, for the OpenAPI document.
NOT_FOUND = {404: {"description": "no such id"}}
CONFLICT = {409: {"description": "a duplicate, or still in use"}}
