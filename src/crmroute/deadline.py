"""An absolute point in (monotonic) time that a call must not outlive."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value

    @classmethod
    def after_ms(cls, ms: float, *, since: float | None = None) -> "Deadline":
        """``ms`` after ``since`` (a ``time.monotonic()`` value), else after now."""
        return cls((time.monotonic() if since is None else since) + ms / 1000)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def earliest(self, other: "Deadline | None") -> "Deadline":
        return self if other is None or self.at <= other.at else other
