"""The admin UI: server-rendered pages, one module per resource."""

from fastapi import APIRouter

from crmroute.web.ui import auth, rules

ui_router = APIRouter(include_in_schema=False)
for module in (auth, rules):
    ui_router.include_router(module.router)
