"""Sign in and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crmroute.store import users
from crmroute.web.deps import SESSION_COOKIE, FormUser, SessionDep
from crmroute.web.templating import render

router = APIRouter()


def safe_next(target: str) -> str:
    """Only local paths: never redirect a signed-in user to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/rules"


@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/rules", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/rules") -> HTMLResponse:
    return render(request, "login.html", next=safe_next(next), error="", username="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/rules",
) -> Response:
    throttle = request.app.state.throttle
    address = request.client.host if request.client else "?"
    wait = throttle.retry_after(address, username)
    if wait:
        return render(request, "login.html", next=safe_next(next), username=username, status_code=429,
                      error=f"Too many failed sign-ins. Try again in {wait} seconds.")  # fmt: skip
    user = users.authenticate(session, username, password)
    if user is None:
        throttle.failed(address, username)
        return render(request, "login.html", next=safe_next(next), username=username, status_code=401,
                      error="Wrong username or password.")  # fmt: skip
    throttle.succeeded(address, username)
    token, web_session = users.create_session(session, user)
    users.purge_sessions(session)
    session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(users.SESSION_LIFETIME.total_seconds()), httponly=True,
        samesite="lax", secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, principal: FormUser) -> RedirectResponse:
    users.end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
