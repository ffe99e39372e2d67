"""The admin UI: server-rendered pages, one module per resource."""

from fastapi import APIRouter

from crmroute.web.ui import (
    agents, assignments, auth, calllog, dashboard, decisions, destinations, dry_run, integrations, license, rules,
    schedules,
    users,
)

ui_router = APIRouter(include_in_schema=False)
for module in (auth, dashboard, rules, destinations, assignments, integrations, agents, schedules, decisions, calllog,
               dry_run,
               users, license):
    ui_router.include_router(module.router)
