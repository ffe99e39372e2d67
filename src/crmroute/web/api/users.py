"""/api/v1/users and /api/v1/tokens: who may sign in, and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from crmroute.schemas import PasswordIn, TokenCreated, TokenIn, TokenPage, UserIn, UserPage, UserPublic
from crmroute.store import users
from crmroute.web.api._common import CONFLICT, NOT_FOUND, IdPath, PagingDep, Search
from crmroute.web.deps import ApiUser, SessionDep

router = APIRouter(tags=["users"])


@router.get("/users", response_model=UserPage)
def list_users(session: SessionDep, paging: PagingDep, search: Search = "") -> dict:
    total, found = users.search_users(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [users.user_public(u) for u in found])


@router.post("/users", status_code=201, response_model=UserPublic, responses=CONFLICT)
def create_user(data: UserIn, session: SessionDep) -> dict:
    """A new user (passwords of at least 8 characters, stored as argon2 hashes)."""
    user = users.create_user(session, data.username, data.password)
    session.commit()
    return users.user_public(user)


@router.delete("/users/{user_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_user(user_id: IdPath, session: SessionDep) -> Response:
    """Deletes the user with their tokens and sessions; the last user cannot be deleted (409)."""
    users.delete_user(session, users.get_user(session, user_id))
    session.commit()
    return Response(status_code=204)


@router.post("/users/{user_id}/password", status_code=204, responses=NOT_FOUND)
def set_password(user_id: IdPath, data: PasswordIn, session: SessionDep) -> Response:
    """Set a new password; the user's browser sessions end (API tokens stay valid)."""
    users.set_password(session, users.get_user(session, user_id), data.password)
    session.commit()
    return Response(status_code=204)


@router.get("/tokens", response_model=TokenPage, tags=["tokens"])
def list_tokens(session: SessionDep, paging: PagingDep) -> dict:
    """Every user's API tokens (names and dates only: a token is shown once, when created)."""
    total, found = users.search_tokens(session, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [users.token_public(t) for t in found])


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=NOT_FOUND, tags=["tokens"])
def create_token(data: TokenIn, session: SessionDep, user: ApiUser) -> dict:
    """A new API token for ``username`` (default: you). The response is the only time it is shown."""
    row, token = users.issue_token(session, data.username or user.username, data.name)
    session.commit()
    return {"id": row.id, "name": row.name, "username": row.user.username, "token": token}


@router.delete("/tokens/{token_id}", status_code=204, responses=NOT_FOUND, tags=["tokens"])
def revoke_token(token_id: IdPath, session: SessionDep) -> Response:
    """Revoke a token: requests sending it get 401 from now on."""
    users.revoke_token(session, token_id)
    session.commit()
    return Response(status_code=204)
