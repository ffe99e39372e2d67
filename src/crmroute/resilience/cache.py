"""A size-bounded cache of CRM values, each entry with its own time to live.

Least recently used entries go first once ``max_entries`` is reached; an
expired entry is dropped when it is next looked up (or pushed out by newer
ones). No I/O and no background task: ``clock`` (monotonic seconds) is
injected so tests move time by hand.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    value: Any
    stored_at: float
    expires_at: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at)


class ValueCache:
    """LRU with per-entry TTL. ``max_entries`` 0 keeps nothing."""

    def __init__(self, max_entries: int, *, clock: Clock = time.monotonic) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # pushed out by the size bound (expired ones are not counted)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> CacheEntry | None:
        """The live entry for ``key`` (now the most recently used), else ``None``."""
        entry = self._entries.get(key)
        if entry is not None:
            if self.clock() < entry.expires_at:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            del self._entries[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; ``ttl`` <= 0 stores nothing (and forgets an older value)."""
        if ttl <= 0 or self.max_entries == 0:
            self._entries.pop(key, None)
            return
        now = self.clock()
        self._entries[key] = CacheEntry(value, now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
