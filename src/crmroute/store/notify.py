"""Configuration changes announced to every node at once (PostgreSQL ``LISTEN``/``NOTIFY``).

Every change of rules, DIDs, IVRs, destinations, integrations or the license
bumps ``config_version`` (``store.db.bump_config_version``); on PostgreSQL the
same transaction sends ``NOTIFY crmroute_config, '<version> <unix time>'``,
which PostgreSQL delivers to every listening connection when it commits (and
never for a rolled-back change). :class:`ConfigListener` keeps one connection
per process listening and calls back on each notice; the routers' once-a-second
poll of ``config_version`` stays as the safety net for notices missed while
the listening connection was down. SQLite has no such thing: polling only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

CHANNEL = "crmroute_config"
RETRY_MIN, RETRY_MAX = 0.5, 15.0  # seconds between attempts to listen again
HEARTBEAT = 15.0  # seconds without a notice after which the connection is checked


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://"))


def announce(session: Session, version: int) -> None:
    """Have the session's transaction announce ``version`` when it commits (PostgreSQL only).

    The notice is queued just before the commit, so its time is the change's, not the start of a long import.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.info[_PENDING] = version


_PENDING = "crmroute_config_notice"


@event.listens_for(Session, "before_commit")
def _queue_notice(session: Session) -> None:
    version = session.info.pop(_PENDING, None)
    if version is not None:
        session.execute(select(func.pg_notify(CHANNEL, f"{version} {time.time():.6f}")))


@event.listens_for(Session, "after_rollback")
def _drop_notice(session: Session) -> None:
    session.info.pop(_PENDING, None)


@dataclass(frozen=True)
class Notice:
    version: int
    sent_at: float  # the announcing node's wall clock when the change was made (0.0 when unreadable)
    received_at: float  # this node's wall clock when the notice arrived


def parse(payload: str, received_at: float) -> Notice | None:
    version, _, sent = payload.partition(" ")
    try:
        return Notice(int(version), float(sent or 0.0), received_at)
    except ValueError:
        return None


class ConfigListener:
    """One ``LISTEN crmroute_config`` connection, kept up; ``on_notice`` runs for each notice.

    ``on_listening`` runs after each (re)connect: notices sent while it was
    down are lost, so the owner checks for changes then.
    """

    def __init__(self, url: str, on_notice: Callable[[Notice], Awaitable[None]],
                 on_listening: Callable[[], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self._url = "postgresql://" + url.split("://", 1)[1]  # psycopg takes no SQLAlchemy driver suffix
        self._on_notice = on_notice
        self._on_listening = on_listening
        self._task: asyncio.Task | None = None
        self.listening = False
        self.notices = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    async def _run(self) -> None:
        wait = RETRY_MIN
        while True:
            try:
                await self._listen()
                wait = RETRY_MIN
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.listening:
                    logger.warning("config notices: connection lost (%s); polling until it is back", exc)
                else:
                    logger.debug("config notices: cannot listen: %s", exc)
            except Exception:
                logger.exception("config notices: listener failed")
            self.listening = False
            await asyncio.sleep(wait)
            wait = min(RETRY_MAX, wait * 2)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening = True
            logger.info("config notices: listening")
            if self._on_listening is not None:
                await self._on_listening()
            while True:
                async for raw in conn.notifies(timeout=HEARTBEAT):
                    notice = parse(raw.payload, time.time())
                    if notice is None:
                        continue
                    self.notices += 1
                    try:
                        await self._on_notice(notice)
                    except Exception:
                        logger.exception("config notices: applying version %d failed", notice.version)
                async with asyncio.timeout(5):
                    await conn.execute("SELECT 1")  # a silent network drop ends here, not in a hang
