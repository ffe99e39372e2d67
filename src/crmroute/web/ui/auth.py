"""Sign in and out.

The login form has no session yet, so its CSRF token is a double-submit one:
``GET /login`` puts a random token in a cookie and in the form, and a sign-in
is tried only when the two match (another site can make a browser post the
form, but can neither read nor set the cookie).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crmroute.store import users
from crmroute.web.deps import SESSION_COOKIE, FormUser, SessionDep
from crmroute.web.templating import render

router = APIRouter()

LOGIN_CSRF_COOKIE = "crmroute_login_csrf"
LOGIN_CSRF_LIFETIME = 3600 * 12


def safe_next(target: str) -> str:
    """Only local paths: never redirect a signed-in user to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/rules"


def login_form(request: Request, *, next: str, username: str = "", error: str = "", status_code: int = 200,
               headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    """The login page with its CSRF token: the browser's current one, else a new one in a cookie."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    fresh = len(token) < 32
    if fresh:
        token = secrets.token_urlsafe(32)
    response = render(request, "login.html", next=safe_next(next), username=username, error=error,
                      login_csrf=token, status_code=status_code)  # fmt: skip
    response.headers.update(headers or {})
    if fresh:
        response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=LOGIN_CSRF_LIFETIME, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/login")  # fmt: skip
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/rules") -> HTMLResponse:
    return login_form(request, next=next)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/rules",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return login_form(request, next=next, username=username, status_code=403,
                          error="The sign-in form expired. Please sign in again.")  # fmt: skip
    throttle = request.app.state.throttle
    address = request.client.host if request.client else "?"  # the real client: see web/proxies.py
    wait = throttle.retry_after(address, username)
    if wait:
        return login_form(request, next=next, username=username, status_code=429, headers={"Retry-After": str(wait)},
                          error=f"Too many failed sign-ins. Try again in {seconds(wait)}.")  # fmt: skip
    user = users.authenticate(session, username, password)
    if user is None:
        throttle.failed(address, username)
        wait = throttle.retry_after(address, username)
        error = "Wrong username or password." + (f" Wait {seconds(wait)} before trying again." if wait else "")
        return login_form(request, next=next, username=username, status_code=401, error=error,
                          headers={"Retry-After": str(wait)} if wait else None)  # fmt: skip
    throttle.succeeded(address, username)
    token, web_session = users.create_session(session, user)
    users.purge_sessions(session)
    session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(users.SESSION_LIFETIME.total_seconds()), httponly=True,
        samesite="lax", secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def seconds(count: int) -> str:
    return f"{count} second" if count == 1 else f"{count} seconds"


@router.post("/logout")
def logout(request: Request, session: SessionDep, principal: FormUser) -> RedirectResponse:
    users.end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
