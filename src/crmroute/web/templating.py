"""Jinja2 rendering for the admin UI; every page gets the user, the CSRF token and any flash message.

A flash message is the short confirmation (or refusal) a form post leaves for
the page it redirects to (post/redirect/get). It travels in a short-lived
cookie, is shown once and is deleted by the page that shows it.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError

from crmroute import __version__, licensing
from crmroute.fieldlabels import describe
from crmroute.web.deps import Principal

FLASH_COOKIE = "crmroute_flash"
FLASH_LEVELS = ("ok", "error")

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["version"] = __version__


def field_id(path: str) -> str:
    """The HTML id (and form name) of the input for a field path: ``rows[1].value`` is ``rows-1-value``."""
    return re.sub(r"\[(\d+|__i__)\]", r"-\1", path).replace(".", "-")


def describedby(ident: str, hint: Any = "", error: Any = "") -> str:
    return " ".join(part for part, shown in ((f"{ident}-hint", hint), (f"{ident}-error", error)) if shown)


templates.env.globals["fid"] = field_id
templates.env.filters["format_field"] = lambda name: "{" + name + "}"
templates.env.globals["describedby"] = describedby
templates.env.globals["field_label"] = describe


def redirect(url: str, message: str = "", *, error: bool = False) -> RedirectResponse:
    """A 303 to ``url`` that shows ``message`` once on the page it lands on."""
    response = RedirectResponse(url, status_code=303)
    if message:
        level = "error" if error else "ok"
        response.set_cookie(FLASH_COOKIE, quote(f"{level}:{message}"), max_age=60, httponly=True,
                            samesite="lax", path="/")  # fmt: skip
    return response


def read_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    level, _, text = unquote(raw).partition(":")
    return (level, text) if level in FLASH_LEVELS and text else None


def render(
    request: Request, name: str, principal: Principal | None = None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    flash = read_flash(request)
    context.setdefault("flash", flash)
    context.update(
        request=request,
        user=principal.user if principal else None,
        csrf_token=principal.csrf_token if principal else "",
    )
    if principal is not None and "license_notice" not in context:
        context["license_notice"] = license_notice(request)
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def license_notice(request: Request) -> tuple[str, str] | None:
    """The banner every signed-in page shows while CRM routing is unlicensed or the license nears its end."""
    from crmroute.store import licenses

    try:
        with request.app.state.store.factory() as session:
            state = licenses.current_state(session, request.app.state.settings.license_key)
    except SQLAlchemyError:
        return None  # the page says what failed; the banner is not worth a second error
    return licensing.license_notice(state, date.today())
