"""Dependencies shared by the API and the UI: the database session and who is signed in.

API routes take ``ApiUser``: a bearer token, or the browser's session cookie
(then unsafe methods must carry the session's ``X-CSRF-Token``); else 401.
Pages take ``PageUser`` (a session cookie, else a redirect to ``/login``),
and form posts ``FormUser``, which also checks the form's ``csrf_token``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from crmroute.store import users
from crmroute.store.models import User, WebSession

SESSION_COOKIE = "crmroute_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db(request: Request) -> Iterator[Session]:
    """A session per request; routes commit what they change."""
    with request.app.state.store.factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


@dataclass
class Principal:
    user: User
    web_session: WebSession | None = None  # None when signed in by API token

    @property
    def csrf_token(self) -> str:
        return self.web_session.csrf_token if self.web_session else ""


class LoginRequired(Exception):
    """A page needs a signed-in user; the app answers with a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class CsrfFailed(Exception):
    """A form came without this session's CSRF token."""


def _cookie_session(request: Request, session: Session) -> WebSession | None:
    return users.find_session(session, request.cookies.get(SESSION_COOKIE, ""))


def api_principal(request: Request, session: SessionDep) -> Principal:
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        user = users.find_token_user(session, token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        session.commit()  # last_used_at
        return Principal(user)
    web_session = _cookie_session(request, session)
    if web_session is None:
        raise HTTPException(401, "sign in or send Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS and not _same(request.headers.get(CSRF_HEADER, ""), web_session.csrf_token):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
    return Principal(web_session.user, web_session)


def signed_in(request: Request) -> bool:
    """Whether the request carries a live API token or session cookie (for pages open to all that show
    more to a signed-in admin); a store that cannot be read answers no."""
    if "Authorization" not in request.headers and SESSION_COOKIE not in request.cookies:
        return False
    try:
        with request.app.state.store.factory() as session:
            api_principal(request, session)
    except (HTTPException, SQLAlchemyError):
        return False
    return True


def check_bearer(request: Request, expected: str) -> None:
    """401 unless the request sends ``Authorization: Bearer <expected>`` (any request, when nothing is expected)."""
    if not expected:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _same(given.strip(), expected):
        raise HTTPException(401, "send Authorization: Bearer with the metrics token",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def api_user(principal: Annotated[Principal, Depends(api_principal)]) -> User:
    return principal.user


ApiUser = Annotated[User, Depends(api_user)]


def page_principal(request: Request, session: SessionDep) -> Principal:
    web_session = _cookie_session(request, session)
    if web_session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return Principal(web_session.user, web_session)


PageUser = Annotated[Principal, Depends(page_principal)]


def optional_principal(request: Request) -> Principal | None:
    """Who is signed in by session cookie, for pages drawn outside a route (error pages); ``None`` if nobody
    or the store cannot be read."""
    if SESSION_COOKIE not in request.cookies:
        return None
    try:
        with request.app.state.store.factory() as session:
            web_session = _cookie_session(request, session)
            if web_session is None:
                return None
            web_session.user.username  # loaded before the session closes
            return Principal(web_session.user, web_session)
    except SQLAlchemyError:
        return None


async def form_principal(request: Request, principal: PageUser) -> Principal:
    form = await request.form()  # parsed once; the route reads the same form again
    if not _same(str(form.get("csrf_token", "")), principal.csrf_token):
        raise CsrfFailed()
    return principal


FormUser = Annotated[Principal, Depends(form_principal)]


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
