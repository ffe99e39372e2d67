"""A circuit breaker per CRM source.

    closed     requests go through; ``failures`` consecutive failures open it
    open       requests are refused at once for ``cooldown`` seconds
    half_open  after the cool-down one probe is let through (the others are
               still refused): its success closes the circuit, its failure
               opens it again for another cool-down

Only the probe's outcome counts in ``half_open``; outcomes of requests that
started before the circuit opened are ignored while it is open. An outcome
that says nothing of the CRM's health (our own rate budget, a bug) is given
back with ``release()``. ``failures`` 0 disables the breaker. No I/O; the
clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

Clock = Callable[[], float]


class BreakerState(IntEnum):
    """The values of the ``crmroute_circuit_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Admission:
    """Permission for one request; ``probe``: the half-open test; ``shared``: the cluster's breaker gave it."""

    probe: bool = False
    shared: bool = False
    quiet: bool = False  # shared, with no failure counted: a success has nothing to reset (no round trip)


_NORMAL = Admission(False)
_PROBE = Admission(True)


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, *, clock: Clock = time.monotonic) -> None:
        if failures < 0 or cooldown <= 0:
            raise ValueError("failures must be >= 0 and cooldown > 0")
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._probing = False
        self.opened_total = 0  # times it opened
        self.refused_total = 0  # requests refused while open

    @property
    def state(self) -> BreakerState:
        """The state now (an open circuit past its cool-down reads as half-open)."""
        if self._state is BreakerState.OPEN and self.clock() >= self._opened_at + self.cooldown:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until a probe may go (0 when closed or ready to probe)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self.clock())

    def allow(self) -> Admission | None:
        """An admission for one request, or ``None`` when the circuit refuses it."""
        if self.threshold == 0 or self._state is BreakerState.CLOSED:
            return _NORMAL
        if self._state is BreakerState.OPEN:
            if self.clock() < self._opened_at + self.cooldown:
                self.refused_total += 1
                return None
            self._state = BreakerState.HALF_OPEN
        if self._probing:
            self.refused_total += 1
            return None
        self._probing = True
        return _PROBE

    def success(self, admission: Admission) -> None:
        if admission.probe:
            self._probing = False
            self._state = BreakerState.CLOSED
            self._failures = 0
        elif self._state is BreakerState.CLOSED:
            self._failures = 0

    def failure(self, admission: Admission) -> None:
        if self.threshold == 0:
            return
        if admission.probe:
            self._probing = False
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.threshold:
                self._open()

    def release(self, admission: Admission) -> None:
        """The request told nothing about the CRM's health: a probe may go again."""
        if admission.probe:
            self._probing = False

    def mirror(self, open_for: float | None) -> None:
        """Show the cluster's circuit (``resilience/shared.py``): open ``open_for`` more seconds, or closed."""
        if open_for is None:
            if self._state is BreakerState.OPEN and self.state is BreakerState.OPEN:
                return  # opened here while Redis was away; its own cool-down ends it
            self._state, self._failures, self._probing = BreakerState.CLOSED, 0, False
            return
        if self._state is not BreakerState.OPEN:
            self.opened_total += 1
        self._state = BreakerState.OPEN
        self._opened_at = self.clock() - self.cooldown + max(0.0, open_for)
        self._failures = 0

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self.clock()
        self._failures = 0
        self.opened_total += 1
