"""Users (who may sign in) and API tokens (shown once, when created)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmroute.errors import ConfigError, Conflict
from crmroute.store import users
from crmroute.web.deps import FormUser, PageUser, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import FormDep, error_map, secret, text

router = APIRouter()


@router.get("/users", response_class=HTMLResponse)
def user_list(request: Request, principal: PageUser, session: SessionDep) -> Response:
    return render(request, "users/list.html", principal, users=[users.user_public(u) for u in users.list_users(session)],
                  tokens=[users.token_public(t) for t in users.list_tokens(session)], me=principal.user.id)  # fmt: skip


@router.get("/users/new", response_class=HTMLResponse)
def user_new(request: Request, principal: PageUser) -> Response:
    return render(request, "users/form.html", principal, values={"username": ""}, errors={}, edit=None)


@router.post("/users/new", response_class=HTMLResponse)
def user_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    username, password = text(form, "username"), secret(form, "password")
    try:
        check_repeated(password, secret(form, "password2"))
        user = users.create_user(session, username, password)
        session.commit()
    except (ConfigError, Conflict) as exc:
        session.rollback()
        errors = error_map(exc.problems) if isinstance(exc, ConfigError) else {"username": str(exc)}
        return render(request, "users/form.html", principal, status_code=422, values={"username": username},
                      errors=errors, edit=None)  # fmt: skip
    return redirect("/users", f"Created the user {user.username!r}.")


@router.get("/users/{user_id}/password", response_class=HTMLResponse)
def password_page(request: Request, user_id: int, principal: PageUser, session: SessionDep) -> Response:
    user = users.get_user(session, user_id)
    return render(request, "users/form.html", principal, values={"username": user.username}, errors={}, edit=user)


@router.post("/users/{user_id}/password", response_class=HTMLResponse)
def password_set(request: Request, user_id: int, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    user = users.get_user(session, user_id)
    password = secret(form, "password")
    try:
        check_repeated(password, secret(form, "password2"))
        users.set_password(session, user, password)
        session.commit()
    except ConfigError as exc:
        session.rollback()
        return render(request, "users/form.html", principal, status_code=422, values={"username": user.username},
                      errors=error_map(exc.problems), edit=user)  # fmt: skip
    if user.id == principal.user.id:  # a new password signs the user out everywhere, here too
        return redirect("/login?next=/users", "Your password was changed: sign in with the new one.")
    return redirect("/users", f"Changed the password of {user.username!r}; their browser sessions were ended.")


@router.post("/users/{user_id}/delete")
def user_delete(user_id: int, principal: FormUser, session: SessionDep) -> Response:
    user = users.get_user(session, user_id)
    name, myself = user.username, user.id == principal.user.id
    try:
        users.delete_user(session, user)
    except Conflict as exc:
        session.rollback()
        return redirect("/users", f"The user {name!r} was not removed: {exc}.", error=True)
    session.commit()
    return redirect("/login" if myself else "/users", f"Removed the user {name!r}.")


@router.post("/tokens/new", response_class=HTMLResponse)
def token_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    """The new token is on this page only: it is not stored, so it cannot be shown again."""
    username = text(form, "username") or principal.user.username
    row, token = users.issue_token(session, username, text(form, "name")[:128])
    session.commit()
    response = render(request, "users/token.html", principal, token=token, row=users.token_public(row))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke")
def token_revoke(token_id: int, principal: FormUser, session: SessionDep) -> Response:
    row = users.revoke_token(session, token_id)
    label = row.name or f"#{row.id}"
    session.commit()
    return redirect("/users", f"Revoked the token {label!r}.")


def check_repeated(password: str, again: str) -> None:
    if password != again:
        raise ConfigError("the two passwords differ", field="password2")


