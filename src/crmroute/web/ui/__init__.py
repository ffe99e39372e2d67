"""The admin UI: server-rendered pages, one module per resource."""

from fastapi import APIRouter

from crmroute.web.ui import assignments, auth, destinations, integrations, rules

ui_router = APIRouter(include_in_schema=False)
for module in (auth, rules, destinations, assignments, integrations):
    ui_router.include_router(module.router)
