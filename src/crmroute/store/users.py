"""Users (argon2 password hashes) and API tokens (stored as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.schemas import NAME_PATTERN
from crmroute.store.models import ApiToken, User

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "crt_"
_hasher = PasswordHasher()


def create_user(session: Session, username: str, password: str) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not NAME_PATTERN.match(username) or " " in username:
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
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
