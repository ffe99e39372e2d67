"""Sign-in throttling: a growing wait after repeated failures, never a lock-out.

Failures are counted per (address, username) and per username (from any
address). After a few free failures each further one doubles the wait before
the next try of that key, up to a cap; a correct password after the wait signs
in. The per-username count starts later and stops lower: guessing one account
from many addresses is slowed to one try a minute, and its real owner, from
any address, waits at most that long. One address's failures never hold up
other accounts signed in from the same address (an office behind one NAT).

In memory, per process, bounded in size; a key with no failure for an hour
starts afresh, and a restart forgets them all.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    free: int  # failures before any wait
    first: float  # seconds of the first wait
    cap: float  # the longest wait

    def wait(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.first * 2 ** min(failures - self.free, 32), self.cap)


PER_ADDRESS_AND_USER = Backoff(free=5, first=1.0, cap=900.0)
PER_USER = Backoff(free=10, first=1.0, cap=60.0)
FORGET_SECONDS = 3600.0
MAX_KEYS = 100_000  # past this the least recently failed keys are forgotten
MAX_USERNAME = 200  # characters of a username kept in a key


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    def __init__(
        self, per_address_and_user: Backoff = PER_ADDRESS_AND_USER, per_user: Backoff = PER_USER, *,
        forget: float = FORGET_SECONDS, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.rules = ((self._pair, per_address_and_user), (self._user, per_user))
        self.forget = forget
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[tuple[str, ...], _Failures] = OrderedDict()
        self._lock = threading.Lock()  # sign-ins run in the web server's worker threads

    def retry_after(self, address: str, username: str) -> int:
        """Whole seconds to wait before this sign-in may be tried; 0 when it may be now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key_of, backoff in self.rules:
                found = self._current(key_of(address, username), now)
                if found is not None:
                    wait = max(wait, found.last + backoff.wait(found.count) - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, address: str, username: str) -> None:
        now = self.clock()
        with self._lock:
            for key_of, _ in self.rules:
                key = key_of(address, username)
                found = self._current(key, now)
                self._failures[key] = _Failures(found.count + 1 if found else 1, now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, username: str) -> None:
        """The address's count for this user starts afresh; the user's own count does not (it is
        what slows guessing from many addresses) and fades with time."""
        with self._lock:
            self._failures.pop(self._pair(address, username), None)

    def _current(self, key: tuple[str, ...], now: float) -> _Failures | None:
        found = self._failures.get(key)
        if found is not None and now - found.last > self.forget:
            del self._failures[key]
            return None
        return found

    @staticmethod
    def _pair(address: str, username: str) -> tuple[str, ...]:
        return ("pair", address, _name(username))

    @staticmethod
    def _user(address: str, username: str) -> tuple[str, ...]:
        return ("user", _name(username))


def _name(username: str) -> str:
    return username.strip().lower()[:MAX_USERNAME]
