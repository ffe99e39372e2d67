"""Single-flight: concurrent callers needing the same lookup share one request.

The first caller of a key starts ``work()`` as a task; callers arriving
while it runs wait for the same task. Each caller waits through
``asyncio.shield``, so a caller leaving early (its own deadline passed, the
channel hung up) never cancels the request the others are waiting for; the
task runs to its own end (bounded by the deadline it was started with) and
its result still serves whoever remains, and whatever the caller caches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        """Requests in flight."""
        return len(self._running)

    def running(self, key: Hashable) -> bool:
        return key in self._running

    async def do(self, key: Hashable, work: Callable[[], Awaitable[T]] | None) -> tuple[T, bool]:
        """``work()``'s result (or exception) and whether it was shared with an earlier caller.

        ``work`` may be ``None`` when the caller knows ``key`` is running (``running(key)``).
        """
        task = self._running.get(key)
        shared = task is not None
        if task is None:
            if work is None:
                raise RuntimeError(f"nothing in flight for {key!r} and no work given")
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(partial(self._finished, key))
        return await asyncio.shield(task), shared

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left early

    async def aclose(self) -> None:
        """Cancel what is still running (shutdown)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
