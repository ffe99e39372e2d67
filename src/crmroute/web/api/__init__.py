"""The REST API under /api/v1: one module per resource, gathered here.

Every route needs a bearer token or a signed-in browser session (then unsafe
methods need its ``X-CSRF-Token``); the dependency is set once, on the router.
Routes stay thin: the store's functions validate, write and flush; the route
commits after a successful write.
"""

from fastapi import APIRouter, Depends

from crmroute.web.api import (
    agents, calllog, decisions, destinations, dids, integrations, ivrs, license, route, rules, schedules, transfer,
    users,
)
from crmroute.web.deps import api_user

api_router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(api_user)],
    responses={
        401: {"description": "no or bad credentials"},
        422: {"description": "a list of {field, message}"},
        503: {"description": "the database is unavailable"},
    },
)
for module in (rules, destinations, dids, ivrs, integrations, agents, schedules, decisions, calllog, route, transfer,
               license, users):  # fmt: skip
    api_router.include_router(module.router)
