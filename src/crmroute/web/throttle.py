"""Login throttling: after repeated failures, an address or a username must wait."""

from __future__ import annotations

import time
from collections import deque

MAX_FAILURES = 5
WINDOW_SECONDS = 900.0


class LoginThrottle:
    """Counts failed sign-ins per address and per username in a sliding window.

    In memory, per process: enough to stop password guessing against one
    server; a restart forgets it.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, username: str) -> int:
        """Seconds to wait before trying again; 0 when allowed."""
        now = time.monotonic()
        wait = 0.0
        for key in self._keys(address, username):
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, times[0] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, address: str, username: str) -> None:
        now = time.monotonic()
        for key in self._keys(address, username):
            self._recent(key, now).append(now)

    def succeeded(self, address: str, username: str) -> None:
        for key in self._keys(address, username):
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str]:
        return (f"ip:{address}", f"user:{username.strip().lower()}")
