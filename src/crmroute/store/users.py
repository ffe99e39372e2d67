"""Users (argon2 password hashes), API tokens and browser sessions (stored as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.schemas import MIN_PASSWORD_LENGTH, USERNAME_PATTERN
from crmroute.store.db import is_id
from crmroute.store.models import ApiToken, User, WebSession, utcnow

TOKEN_PREFIX = "crt_"
_hasher = PasswordHasher()


def create_user(session: Session, username: str, password: str) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not USERNAME_PATTERN.match(username) or " " in username:
        raise ConfigError("use 1-64 letters, digits and - _ . only", field="username")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if session.scalar(select(User).where(User.username == username)):
        raise Conflict(f"a user named {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password))
    session.add(user)
    return user


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_token(session: Session, username: str, name: str = "") -> str:
    """A new API token for ``username``; only its hash is stored, so show it once."""
    return issue_token(session, username, name)[1]


def issue_token(session: Session, username: str, name: str = "") -> tuple[ApiToken, str]:
    """``create_token`` that also gives the stored row (flushed, so it has its id)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    if len(name) > 128:
        raise ConfigError("use at most 128 characters", field="name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), user=user)
    session.add(row)
    session.flush()
    return row, token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- browser sessions ----------------------------------------------------------

SESSION_LIFETIME = timedelta(hours=12)


def create_session(session: Session, user: User, *, lifetime: timedelta = SESSION_LIFETIME) -> tuple[str, WebSession]:
    """A new signed-in session; returns the cookie value (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=hash_token(token), user_id=user.id, csrf_token=secrets.token_urlsafe(24),
        expires_at=utcnow() + lifetime,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return token, row


def find_session(session: Session, token: str) -> WebSession | None:
    """The live session for a cookie value, with its user; ``None`` if unknown or expired."""
    if not token:
        return None
    row = session.scalar(
        select(WebSession).where(WebSession.token_hash == hash_token(token)).options(selectinload(WebSession.user))
    )
    if row is None or _aware(row.expires_at) <= utcnow() or not row.user.is_active:
        return None
    return row


def end_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == hash_token(token)))


def purge_sessions(session: Session) -> int:
    return session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow())).rowcount or 0


# --- lookups --------------------------------------------------------------------


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        _hasher.hash(password)  # same work either way: no timing hint that the name exists
        return None
    return user if user.is_active and check_password(user, password) else None


def find_token_user(session: Session, token: str) -> User | None:
    """The user of a live API token, noting when it was last used."""
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token)).options(selectinload(ApiToken.user))
    )
    if row is None or row.revoked or not row.user.is_active:
        return None
    row.last_used_at = utcnow()
    return row.user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id) if is_id(user_id) else None
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def set_password(session: Session, user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    user.password_hash = _hasher.hash(password)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))  # sign out everywhere


def delete_user(session: Session, user: User) -> None:
    active = session.scalar(select(func.count()).select_from(User).where(User.is_active, User.id != user.id))
    if not active:
        raise Conflict("the last user cannot be deleted")
    session.delete(user)


def list_tokens(session: Session, user: User | None = None) -> list[ApiToken]:
    query = select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id) if is_id(token_id) else None
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    row.revoked = True
    return row


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def search_users(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[User]]:
    query = select(User)
    if search.strip():
        query = query.where(User.username.icontains(search.strip(), autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return total, list(session.scalars(query.order_by(User.username).offset(offset).limit(limit)))


def search_tokens(session: Session, *, offset: int = 0, limit: int = 50) -> tuple[int, list[ApiToken]]:
    """Every user's tokens, oldest first (revoked ones too, marked)."""
    total = session.scalar(select(func.count()).select_from(ApiToken)) or 0
    query = select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id).offset(offset).limit(limit)
    return total, list(session.scalars(query))


def user_public(user: User) -> dict:
    """What the API shows of a user: never the password hash."""
    return {"id": user.id, "username": user.username, "is_active": user.is_active,
            "created_at": _aware(user.created_at).isoformat()}  # fmt: skip


def token_public(row: ApiToken) -> dict:
    """What the API shows of a token: never the token or its hash."""
    return {
        "id": row.id, "name": row.name, "username": row.user.username,
        "created_at": _aware(row.created_at).isoformat(),
        "last_used_at": _aware(row.last_used_at).isoformat() if row.last_used_at else None,
        "revoked": row.revoked,
    }  # fmt: skip
