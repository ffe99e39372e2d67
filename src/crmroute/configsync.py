"""Keeping a node's rule book in step with the store: change notices first, a poll as the safety net.

On PostgreSQL a change made through any node's API, UI or CLI reaches this
node as a notice (``store/notify.py``) and is applied at once, typically within
a few tens of milliseconds; a call that arrives while that reload runs waits
for it (at most ``SETTLE_TIMEOUT``) so it routes on the new rules. The poll of
``config_version`` every ``poll`` seconds stays, for notices missed while the
listening connection was down, and is all there is on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from crmroute.store.notify import ConfigListener, Notice, is_postgresql

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT = 0.2  # seconds a call waits for a reload in progress before routing on the loaded rules


class ConfigSync:
    """Runs ``reload()`` (True when it loaded a new version) on notices and every ``poll`` seconds."""

    def __init__(self, reload: Callable[[], Awaitable[bool]], version: Callable[[], int], db_url: str, *,
                 poll: float = 1.0) -> None:  # fmt: skip
        self._reload = reload
        self._version = version
        self._poll = poll
        self._listener = ConfigListener(db_url, self._notice, self._check) if is_postgresql(db_url) else None
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self.last: dict[str, Any] = {}  # the last version applied: how and when

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    def status(self) -> dict[str, Any]:
        notices = "off (SQLite: polling)" if self._listener is None else (
            "listening" if self._listener.listening else "down (polling)")  # fmt: skip
        return {"version": self._version(), "notices": notices} | self.last

    def start(self) -> None:
        self._task = asyncio.create_task(self._polling(), name="rulebook-reload")
        if self._listener is not None:
            self._listener.start()

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        for task in (self._task, self._pending):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def settled(self) -> None:
        """Wait for a reload a notice started (bounded): a call placed right after a change sees it."""
        pending = self._pending
        if pending is not None and not pending.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(pending), SETTLE_TIMEOUT)

    async def _notice(self, notice: Notice) -> None:
        if notice.version == self._version():
            return  # this node has it already (a poll was quicker)
        self._pending = asyncio.create_task(self._apply("notify", notice), name="rulebook-notice")
        await asyncio.shield(self._pending)

    async def _check(self) -> None:
        """After (re)listening: changes made while no notice could arrive."""
        await self._apply("listen")

    async def _polling(self) -> None:
        """Keep routing on the last good rule book while the database is away."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                await self._apply("poll")
            except SQLAlchemyError as exc:
                logger.warning("cannot check for rule changes, routing on the loaded rules: %s", exc)
            except Exception:
                logger.exception("reloading rules failed; routing on the loaded rules")

    async def _apply(self, via: str, notice: Notice | None = None) -> None:
        async with self._lock:
            if not await self._reload():
                return
        applied = time.time()
        self.last = {"via": via, "applied_at": round(applied, 6)}
        if notice is not None and notice.sent_at:
            self.last |= {"changed_at": round(notice.sent_at, 6),
                          "delay_ms": round((applied - notice.sent_at) * 1000, 1),
                          "notice_ms": round((notice.received_at - notice.sent_at) * 1000, 1)}  # of it, in transit
        after = f", {self.last['delay_ms']:.0f} ms after the change" if "delay_ms" in self.last else ""
        logger.info("rules reloaded (config version %d, via %s%s)", self._version(), via, after)
