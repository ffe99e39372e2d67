"""The credential store: every process's connectors share one set of live credentials per integration.

A row per (integration, principal) — the principal is a rule's own CRM username, or "" — holds, encrypted
with the ``SecretBox``: the access token or session (its expiry as wall-clock epoch, so another process or
a restart can judge it), the vendor's extras (instance URL, REST URL ...) and the rotated refresh token.
The service, every AGI worker, the Test action and the CLI read and write the same rows, so

- a refresh token the vendor rotated is never kept by one process alone (the others would present the
  dead one and get ``invalid_grant``);
- a token still valid is used after a restart and by each CLI run instead of asking the vendor again
  (Zoho allows 10 access tokens per refresh token per 10 minutes);
- one process at a time renews the credentials of a row: it takes the row's *lease* (an atomic
  ``UPDATE ... WHERE lease_until < now``: the same on SQLite and PostgreSQL, and on every node of a
  cluster sharing the database), reads the row again, uses a newer valid token if another process saved
  one, else logs in and SAVES the new state before using it. The others wait within their call's deadline
  and use the saved result.

``origin`` fingerprints the credentials as configured (kind, secrets, the settings naming the account and
the auth method, the rule's own username and password): a stored rotated refresh token is used only while
it matches, so pasting new credentials starts afresh, while editing e.g. ``cache_ttl_s`` keeps them.

Refused credentials (the token endpoint answered invalid_grant/400/401, or a static token kept getting 401)
are recorded on the row for its origin: every process then fails the calls at once (reason
``credentials_refused``) without asking the vendor, until the credentials change or a Test succeeds. The UI,
``/healthz`` and ``crmroute_credentials_refused`` show them; the log says so once, at ERROR.

On the call path nothing here is touched while the connector's in-memory token is fresh; the database work
runs in a thread (``asyncio.to_thread``) bounded by the call's deadline. If the database cannot be reached
the connector logs in on its own, keeps the new state in memory and saves it when the database is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.errors import AuthError, ConnectorTimeout, CrmrouteError
from crmroute.store.models import ConnectorCredential, Integration
from crmroute.store.secrets import SecretBox

if TYPE_CHECKING:
    from crmroute.connectors.base import Connector, ConnectorSettings, Token
    from crmroute.deadline import Deadline

logger = logging.getLogger(__name__)

REFUSED = "credentials_refused"
LEASE_POLL = 0.05  # seconds between looks at a row another process is renewing
LEASE_MAX = 30.0  # a lease outlives its holder's login by at most this (a crashed holder frees the row)
REFUSED_RECHECK = 5.0  # a refused row is looked at again this often (a Test elsewhere may have cleared it)
RESAVE_EVERY = 5.0  # seconds between attempts to save a state the database refused
TRANSIENT_AUTH = frozenset({"rate_limited", "timeout", "unavailable"})  # AuthError reasons that are no refusal
_COMMON = ("match_pick", "key_field", "cache_ttl_s", "requests_per_second", "max_concurrency")

T = TypeVar("T")


def origins(kind: str, settings: ConnectorSettings, username: str = "", password: str = "") -> tuple[str, str]:
    """``(origin, base_origin)``: fingerprints of the credentials as configured (tuning settings left out)."""
    values: dict[str, Any] = {}
    for name in type(settings).model_fields:
        if name in _COMMON:
            continue
        value = getattr(settings, name)
        values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    base = hashlib.sha256(json.dumps([kind, values], sort_keys=True, default=str).encode()).hexdigest()
    full = hashlib.sha256(json.dumps([base, username, password]).encode()).hexdigest()
    return full, base


@dataclass
class Refusal:
    message: str
    at: datetime


@dataclass
class Stored:
    """A row as read, its state decrypted; times still wall-clock."""

    origin: str
    version: int
    value: str | None  # the access token / session, None: none stored
    expires: float | None  # epoch
    issued: float
    extra: dict[str, Any]
    refresh_token: str
    refusal: Refusal | None
    lease_owner: str
    lease_until: float

    def token(self) -> Token | None:
        from crmroute.connectors.base import Token

        if self.value is None:
            return None
        now_wall, now_mono = time.time(), time.monotonic()
        expires = None if self.expires is None else now_mono + (self.expires - now_wall)
        return Token(self.value, expires, dict(self.extra), issued_at=now_mono + (self.issued - now_wall))


class CredentialStore:
    """The rows; blocking calls (run them in a thread)."""

    def __init__(self, factory: sessionmaker[Session], box: SecretBox) -> None:
        self.factory = factory
        self.box = box

    def read(self, integration_id: int, principal: str) -> Stored | None:
        with self.factory() as session:
            row = session.get(ConnectorCredential, (integration_id, principal))
            return None if row is None else self._stored(row)

    def _stored(self, row: ConnectorCredential) -> Stored:
        state = self.box.decrypt_json(row.state_enc, {})
        refusal = Refusal(row.refused_message, _aware(row.refused_at)) if row.refused_at is not None else None
        return Stored(row.origin, row.version, state.get("value"), state.get("expires"), state.get("issued", 0.0),
                      state.get("extra") or {}, state.get("refresh_token") or "", refusal, row.lease_owner,
                      row.lease_until)  # fmt: skip

    def try_lease(self, integration_id: int, principal: str, owner: str, seconds: float) -> bool:
        """Take the row's lease if nobody holds it (atomically: one winner among every process)."""
        now = time.time()
        with self.factory() as session, session.begin():
            if session.get(ConnectorCredential, (integration_id, principal)) is None:
                try:
                    with session.begin_nested():
                        session.add(ConnectorCredential(
                            integration_id=integration_id, principal=principal, origin="", base_origin="",
                            state_enc="", version=0, refused_message="", lease_owner="", lease_until=0.0,
                        ))  # fmt: skip
                except IntegrityError:  # another process created it first
                    pass
            taken = session.execute(
                update(ConnectorCredential)
                .where(ConnectorCredential.integration_id == integration_id,
                       ConnectorCredential.principal == principal,
                       or_(ConnectorCredential.lease_until < now, ConnectorCredential.lease_owner == owner))
                .values(lease_owner=owner, lease_until=now + seconds)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            return taken.rowcount == 1

    def release(self, integration_id: int, principal: str, owner: str) -> None:
        with self.factory() as session, session.begin():
            session.execute(
                update(ConnectorCredential)
                .where(ConnectorCredential.integration_id == integration_id,
                       ConnectorCredential.principal == principal, ConnectorCredential.lease_owner == owner)
                .values(lease_owner="", lease_until=0.0)
                .execution_options(synchronize_session=False)
            )  # fmt: skip

    def save(self, integration_id: int, principal: str, origin: str, base_origin: str, token: Token | None,
             refresh_token: str) -> int:  # fmt: skip
        """Store the new state (and clear a refusal); the row's new version."""
        state: dict[str, Any] = {"refresh_token": refresh_token}
        if token is not None:
            now_wall, now_mono = time.time(), time.monotonic()
            expires = None if token.expires_at is None else now_wall + (token.expires_at - now_mono)
            state |= {"value": token.value, "expires": expires, "issued": now_wall + (token.issued_at - now_mono),
                      "extra": token.extra}  # fmt: skip
        with self.factory() as session, session.begin():
            row = session.get(ConnectorCredential, (integration_id, principal), with_for_update=True)
            if row is None:
                row = ConnectorCredential(integration_id=integration_id, principal=principal, version=0,
                                          lease_owner="", lease_until=0.0)  # fmt: skip
                session.add(row)
            row.origin, row.base_origin = origin, base_origin
            row.state_enc = self.box.encrypt_json(state)
            row.version = (row.version or 0) + 1
            row.refused_at, row.refused_message = None, ""
            row.updated_at = datetime.now(timezone.utc)
            return row.version

    def refuse(self, integration_id: int, principal: str, origin: str, base_origin: str, message: str,
               refresh_token: str) -> Refusal:  # fmt: skip
        """Record that the vendor refused the credentials of ``origin`` (the access token is dropped)."""
        at = datetime.now(timezone.utc)
        with self.factory() as session, session.begin():
            row = session.get(ConnectorCredential, (integration_id, principal), with_for_update=True)
            if row is None:
                row = ConnectorCredential(integration_id=integration_id, principal=principal, version=0,
                                          lease_owner="", lease_until=0.0)  # fmt: skip
                session.add(row)
            row.origin, row.base_origin = origin, base_origin
            row.state_enc = self.box.encrypt_json({"refresh_token": refresh_token})
            row.version = (row.version or 0) + 1
            row.refused_at, row.refused_message = at, message[:500]
            row.updated_at = at
        return Refusal(message[:500], at)


def refused(session: Session, box: SecretBox) -> list[dict[str, Any]]:
    """Integrations whose credentials, as configured now, the vendor refused (for the UI, /healthz, metrics)."""
    from crmroute.connectors import registry

    found = []
    rows = session.execute(
        select(ConnectorCredential, Integration)
        .join(Integration, Integration.id == ConnectorCredential.integration_id)
        .where(ConnectorCredential.refused_at.is_not(None))
        .order_by(Integration.name)
    ).all()  # fmt: skip
    for credential, integration in rows:
        cls = registry().get(integration.kind)
        if cls is None:
            continue
        try:
            values = dict(integration.settings) | box.decrypt_json(integration.secrets_enc, {})
            settings = cls.Settings.model_validate(values)
        except (ValueError, CrmrouteError):
            continue
        if origins(integration.kind, settings)[1] != credential.base_origin:
            continue  # the credentials were changed since: the refusal was about the old ones
        found.append({"integration_id": integration.id, "integration": integration.name, "kind": integration.kind,
                      "principal": credential.principal, "message": credential.refused_message,
                      "at": _aware(credential.refused_at).isoformat(timespec="seconds")})  # fmt: skip
    return found


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SharedCredentials:
    """One connector's view of its row: renews through the lease, remembers a refusal, re-saves after a DB outage."""

    def __init__(self, store: CredentialStore, integration_id: int, principal: str, origin: str, base_origin: str,
                 name: str = "") -> None:  # fmt: skip
        self.store = store
        self.key = (integration_id, principal)
        self.origin, self.base_origin = origin, base_origin
        self.name = name
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.refusal: Refusal | None = None
        self._refusal_seen = 0.0  # monotonic: when the row last said "refused"
        self.retry_refused = False  # the Test action: try once more although refused
        self._unsaved: tuple[Token | None, str] | None = None
        self._unsaved_tried = 0.0

    def __repr__(self) -> str:
        return f"SharedCredentials(integration={self.key[0]}, principal={self.key[1]!r})"

    async def _db(self, work: Callable[..., T], *args: Any, deadline: Deadline) -> T:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(asyncio.to_thread(work, *args), timeout=remaining)

    def refused_error(self, connector: Connector) -> AuthError:
        refusal = self.refusal
        assert refusal is not None
        when = refusal.at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return AuthError(f"{connector.title} refused the credentials of integration {self.name!r} at {when}"
                         f"{': ' + refusal.message if refusal.message else ''}; change them or press Test",
                         kind=connector.kind, operation="authenticate", reason=REFUSED)  # fmt: skip

    def _usable(self, row: Stored | None, stale: Token | None) -> Token | None:
        if row is None or row.origin != self.origin or row.refusal is not None:
            return None
        token = row.token()
        if token is None or not token.fresh() or (stale is not None and token.value == stale.value):
            return None
        return token

    async def renew(self, connector: Connector, stale: Token | None, deadline: Deadline) -> Token:
        """A token for ``connector`` (called under its auth lock): the stored one if newer and valid, else a login."""
        if self._unsaved is not None and time.monotonic() - self._unsaved_tried > RESAVE_EVERY:
            await self._resave(deadline)
        if (self.refusal is not None and not self.retry_refused
                and time.monotonic() - self._refusal_seen < REFUSED_RECHECK):  # fmt: skip
            raise self.refused_error(connector)
        try:
            return await self._renew(connector, stale, deadline)
        except (SQLAlchemyError, asyncio.TimeoutError, OSError) as exc:
            if deadline.remaining() <= 0:
                raise connector.timeout_error("authenticate") from None
            logger.warning("the credential store cannot be reached (%s); %s logs in on its own", type(exc).__name__,
                           connector.kind)  # fmt: skip
            return await self._login(connector, deadline, save=False)

    async def _renew(self, connector: Connector, stale: Token | None, deadline: Deadline) -> Token:
        while True:
            row = await self._db(self.store.read, *self.key, deadline=deadline)
            token = self._check(connector, row, stale)
            if token is not None:
                return token
            seconds = min(max(deadline.remaining(), 1.0), LEASE_MAX) + 2.0
            if await self._db(self.store.try_lease, *self.key, self.owner, seconds, deadline=deadline):
                break
            if deadline.remaining() <= LEASE_POLL:
                raise ConnectorTimeout(f"{connector.title}: another process is logging in; not done in time",
                                       kind=connector.kind, operation="authenticate", reason="timeout")  # fmt: skip
            await asyncio.sleep(LEASE_POLL)
        try:
            row = await self._db(self.store.read, *self.key, deadline=deadline)  # again, under the lease
            token = self._check(connector, row, stale)
            if token is not None:
                return token
            connector._refresh_state = row.refresh_token if row is not None and row.origin == self.origin else ""
            return await self._login(connector, deadline, save=True)
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self.store.release, *self.key, self.owner))
            except (SQLAlchemyError, OSError) as exc:  # the lease runs out by itself
                logger.warning("cannot release the credential lease of %s: %s", connector.kind, type(exc).__name__)

    def preload(self, connector: Connector) -> None:
        """Blocking, off the call path (start-up, a rule book reload, a dry run before its deadline starts):
        take the stored token and refusal, so the first call needs no database."""
        if connector._token is not None:
            return
        row = self.store.read(*self.key)
        if row is None or row.origin != self.origin:
            return
        if row.refusal is not None:
            self.refusal, self._refusal_seen = row.refusal, time.monotonic()
            return
        token = self._usable(row, None)
        if token is not None:
            connector._token, connector._refresh_state = token, row.refresh_token
            connector._adopted(token)

    def _check(self, connector: Connector, row: Stored | None, stale: Token | None) -> Token | None:
        """The row's valid token, if newer than ``stale``; raises when the row says the credentials were refused."""
        if row is not None and row.origin == self.origin and row.refusal is not None:
            if not self.retry_refused:
                if self.refusal is None:
                    logger.warning("integration %r: credentials refused at %s (recorded by another process)",
                                   self.name, row.refusal.at.isoformat(timespec="seconds"))  # fmt: skip
                self.refusal, self._refusal_seen = row.refusal, time.monotonic()
                raise self.refused_error(connector)
            return None
        self.refusal = None
        token = self._usable(row, stale)
        if token is not None and row is not None:
            connector._refresh_state = row.refresh_token
            connector._adopted(token)
        return token

    async def _login(self, connector: Connector, deadline: Deadline, *, save: bool) -> Token:
        try:
            token = await connector._login(deadline=deadline)
        except AuthError as exc:
            if exc.reason in TRANSIENT_AUTH or exc.reason == REFUSED:
                raise
            await self.record_refusal(connector, str(exc), deadline)
            raise self.refused_error(connector) from exc
        connector._take_refresh_token(token)
        self.retry_refused = False
        state = (token, connector._refresh_state)
        if save:
            try:
                await self._db(self.store.save, *self.key, self.origin, self.base_origin, *state, deadline=deadline)
                self._unsaved = None
            except (SQLAlchemyError, asyncio.TimeoutError, OSError) as exc:
                logger.error("integration %r: cannot save the new %s credentials (%s); kept in memory, saved later",
                             self.name, connector.kind, type(exc).__name__)  # fmt: skip
                self._unsaved, self._unsaved_tried = state, time.monotonic()
        else:
            self._unsaved, self._unsaved_tried = state, time.monotonic()
        return token

    async def _resave(self, deadline: Deadline) -> None:
        assert self._unsaved is not None
        self._unsaved_tried = time.monotonic()
        try:
            await self._db(self.store.save, *self.key, self.origin, self.base_origin, *self._unsaved, deadline=deadline)
        except (SQLAlchemyError, asyncio.TimeoutError, OSError):
            return
        logger.info("integration %r: the new credentials kept in memory are saved now", self.name)
        self._unsaved = None

    async def record_refusal(self, connector: Connector, message: str, deadline: Deadline) -> None:
        """The vendor refused the credentials: record it (once, loudly) for every process."""
        self.retry_refused = False
        try:
            self.refusal = await self._db(self.store.refuse, *self.key, self.origin, self.base_origin, message,
                                          connector._refresh_state, deadline=deadline)  # fmt: skip
        except (SQLAlchemyError, asyncio.TimeoutError, OSError):
            self.refusal = Refusal(message[:500], datetime.now(timezone.utc))
        self._refusal_seen = time.monotonic()
        connector._token = None
        logger.error("integration %r (%s): the CRM refused the credentials: %s. Calls fall back "
                     "(credentials_refused) until the credentials are changed or Test succeeds", self.name,
                     connector.title, message)  # fmt: skip
