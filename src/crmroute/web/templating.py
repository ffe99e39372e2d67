"""Jinja2 rendering for the admin UI; every page gets the user and the CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from crmroute import __version__
from crmroute.web.deps import Principal

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["version"] = __version__


def render(
    request: Request, name: str, principal: Principal | None = None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.update(
        request=request,
        user=principal.user if principal else None,
        csrf_token=principal.csrf_token if principal else "",
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)
