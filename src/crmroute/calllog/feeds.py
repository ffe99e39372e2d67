"""AMI sources of the call logger, each read by exactly one node at a time.

A :class:`Feed` is one Asterisk (``CRMROUTE_AMI_SOURCES``, or the single
``CRMROUTE_AMI_HOST`` named ``default``): its AMI client and its call tracker.
On PostgreSQL a feed runs only while this node holds its lease
(``store/leases.py``, named ``ami:NAME``): every node asks for it every
``LEASE_RENEW`` seconds, the holder renews it for ``LEASE_TTL`` seconds, so
when the holder dies another node takes the source over within
``LEASE_TTL + LEASE_RENEW`` seconds; it then takes back the calls in progress
the last holder saved and asks Asterisk's channels (as after a restart). A
node that stops cleanly gives its leases back first. Two nodes reading one
source for a moment (a holder cut off from the database keeps reading) log no
call twice: the outbox keeps one row per call. On SQLite the one node reads
every source, no lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.calllog.ami import AmiClient
from crmroute.calllog.calls import CallConfig, CallTracker
from crmroute.settings import AmiSource
from crmroute.store import leases
from crmroute.store.db import transaction

logger = logging.getLogger(__name__)

LEASE_TTL = 5.0  # seconds a lease lasts without renewal
LEASE_RENEW = 1.0  # seconds between renewals (holder) and attempts (the others)


def holder_id(node_id: str) -> str:
    """This process's name in ``cluster_leases``: the node id and a token of this run (a restarted node with the
    same id waits for the lease like any other node: its old open calls were saved by the run that died)."""
    return f"{node_id} pid {os.getpid()} {uuid.uuid4().hex[:8]}"[:160]


class Feed:
    """One AMI source: its client, its tracker, and whether this node reads it now."""

    def __init__(self, source: AmiSource, config: CallConfig, make_client: Callable[[Feed], AmiClient | None]) -> None:
        self.source = source
        self.name = source.name
        self.tracker = CallTracker(config)
        self.ami = make_client(self)
        self.held = False  # this node reads the source (always, on SQLite)
        self.lease_error = ""

    def status(self) -> dict[str, Any]:
        ami = self.ami.status.as_dict() if self.ami is not None else {"state": "off", "since": None, "last_error": ""}
        return ami | {"pbx": self.name, "host": f"{self.source.host}:{self.source.port}" if self.source.host else "",
                      "reading": self.held, "open_calls": self.tracker.open_calls}  # fmt: skip


class LeasedFeeds:
    """Takes, renews and gives back the feeds' leases; ``on_take``/``on_lose`` start and stop a feed."""

    def __init__(self, factory: sessionmaker[Session], holder: str, feeds: list[Feed], *,
                 on_take: Callable[[Feed], Awaitable[None]], on_lose: Callable[[Feed], Awaitable[None]],
                 ttl: float = LEASE_TTL, renew: float = LEASE_RENEW) -> None:  # fmt: skip
        self._factory = factory
        self.holder = holder
        self._feeds = feeds
        self._on_take = on_take
        self._on_lose = on_lose
        self.ttl = ttl
        self.renew = renew
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="calllog-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def give_back(self) -> None:
        """Release the leases this node holds (after its feeds stopped and saved their calls)."""
        held = [f for f in self._feeds if f.held]
        if not held:
            return
        try:
            await asyncio.to_thread(self._give_back, [f.name for f in held])
            logger.info("call log: AMI sources %s handed back", ", ".join(f.name for f in held))
        except SQLAlchemyError as exc:
            logger.warning("call log: cannot hand the AMI sources back (another node takes them when the leases "
                           "expire): %s", exc)  # fmt: skip
        for feed in held:
            feed.held = False

    def _give_back(self, names: list[str]) -> None:
        with transaction(self._factory) as session:
            for name in names:
                leases.give_back(session, f"ami:{name}", self.holder)

    def _take(self, name: str) -> bool:
        with transaction(self._factory) as session:
            return leases.take(session, f"ami:{name}", self.holder, self.ttl)

    async def _run(self) -> None:
        while True:
            for feed in self._feeds:
                try:
                    await self.once(feed)
                except Exception:
                    logger.exception("call log: lease of AMI source %s failed", feed.name)
            await asyncio.sleep(self.renew)

    async def once(self, feed: Feed) -> None:
        try:
            got = await asyncio.to_thread(self._take, feed.name)
            feed.lease_error = ""
        except SQLAlchemyError as exc:  # the holder keeps reading: losing no call beats logging one twice
            if not feed.lease_error:
                logger.warning("call log: cannot renew the lease of AMI source %s: %s", feed.name, exc)
            feed.lease_error = type(exc).__name__
            return
        if got and not feed.held:
            feed.held = True
            logger.info("call log: this node (%s) now reads AMI source %s", self.holder, feed.name)
            await self._on_take(feed)
        elif not got and feed.held:
            logger.warning("call log: AMI source %s was taken over by another node; this node stops reading it",
                           feed.name)  # fmt: skip
            feed.held = False
            await self._on_lose(feed)
