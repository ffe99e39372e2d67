"""The admin UI: server-rendered pages, one module per resource."""

from fastapi import APIRouter

from crmroute.web.ui import auth

ui_router = APIRouter(include_in_schema=False)
ui_router.include_router(auth.router)
