"""Who is free: Asterisk's device and extension states, kept in memory from AMI events.

Asterisk tells every state change on the AMI connection the call logger
already holds (no extra round trip on the call path; a check is a few
dictionary reads):

- ``DeviceStateChange`` (``Device: PJSIP/201``, ``State: NOT_INUSE``): one
  device. States: ``NOT_INUSE``, ``INUSE``, ``BUSY``, ``RINGING``,
  ``RINGINUSE``, ``ONHOLD``, ``UNAVAILABLE``, ``INVALID``, ``UNKNOWN``.
- ``ExtensionStatus`` (``Exten: 201``, ``Context``, ``Hint``, ``Status: 0``,
  ``StatusText: Idle``): an extension with a dialplan hint. Status ``0``
  Idle, ``1`` InUse, ``2`` Busy, ``4`` Unavailable, ``8`` Ringing, ``9``
  InUse&Ringing, ``16`` Hold, ``17`` InUse&Hold; ``-1``/``-2`` the hint or
  extension was removed (forgotten here).

After each login :meth:`Availability.refresh` asks ``DeviceStateList`` and
``ExtensionStateList`` (Asterisk 13+: the current states as the same events,
then ``DeviceStateListComplete`` / ``ExtensionStateListComplete``), so the map
is right from the start, not only after the next change. When the
connection drops, everything is forgotten: stale states must not keep an
agent "busy" forever.

An agent's state combines its devices (``Agent.watched_devices``, default
``PJSIP/{extension}``) and the hints of its extension number (in any
context): ``busy`` if any is on a call, ringing or on hold; else
``available`` if any is idle; else ``unavailable`` if all known ones are
unreachable (not registered) or invalid; else ``unknown``.

**Unknown means "assume available"**: with AMI off (``CRMROUTE_AMI_HOST``
unset), before the first event, or while the connection is down,
:meth:`Availability.is_available` is true, so calls still reach the agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from crmroute.calllog.ami import AmiError, Message

logger = logging.getLogger(__name__)

AVAILABLE = "available"
BUSY = "busy"
UNAVAILABLE = "unavailable"
UNKNOWN = "unknown"
STATES = (AVAILABLE, BUSY, UNAVAILABLE, UNKNOWN)

DEVICE_STATES = {
    "NOT_INUSE": AVAILABLE, "INUSE": BUSY, "BUSY": BUSY, "RINGING": BUSY, "RINGINUSE": BUSY, "ONHOLD": BUSY,
    "UNAVAILABLE": UNAVAILABLE, "INVALID": UNAVAILABLE, "UNKNOWN": UNKNOWN,
}  # fmt: skip
EXTENSION_STATES = {0: AVAILABLE, 1: BUSY, 2: BUSY, 4: UNAVAILABLE, 8: BUSY, 9: BUSY, 16: BUSY, 17: BUSY}
LIST_TIMEOUT = 10.0  # seconds for each of the two list actions after a login


class _AgentLike(Protocol):
    extension: str

    @property
    def watched_devices(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Seen:
    """One state as Asterisk last reported it."""

    state: str  # one of STATES
    raw: str  # Asterisk's word: NOT_INUSE, InUse&Ringing ...
    at: float  # time.time() when it arrived


class Availability:
    """Device and extension states from AMI events; ``is_available(agent)`` for the routing engine."""

    def __init__(self) -> None:
        self._devices: dict[str, Seen] = {}  # device name, folded -> state
        self._extensions: dict[str, dict[str, Seen]] = {}  # exten -> context -> state
        self.events = 0
        self.refreshed_at: float | None = None

    # --- fed by the AMI client ---------------------------------------------------------

    def feed(self, message: Message) -> None:
        """One AMI event; any other than the two state events is ignored."""
        name = message.event
        if name == "DeviceStateChange":
            device = message.get("Device").strip()
            raw = message.get("State").strip().upper()
            if device:
                self.events += 1
                self._devices[device.casefold()] = Seen(DEVICE_STATES.get(raw, UNKNOWN), raw,
                                                        message.received or time.time())  # fmt: skip
        elif name == "ExtensionStatus":
            exten = message.get("Exten").strip()
            if not exten:
                return
            self.events += 1
            context = message.get("Context").strip()
            try:
                status = int(message.get("Status").strip())
            except ValueError:
                status = None
            if status is not None and status < 0:  # the hint or the extension was removed
                contexts = self._extensions.get(exten)
                if contexts is not None:
                    contexts.pop(context, None)
                    if not contexts:
                        self._extensions.pop(exten, None)
                return
            state = EXTENSION_STATES.get(status, UNKNOWN) if status is not None else UNKNOWN
            raw = message.get("StatusText").strip() or str(status)
            self._extensions.setdefault(exten, {})[context] = Seen(state, raw, message.received or time.time())

    def clear(self) -> None:
        """Forget everything (the connection dropped): every agent is unknown until Asterisk says again."""
        self._devices.clear()
        self._extensions.clear()
        self.refreshed_at = None

    async def refresh(self, client: Any) -> None:
        """After a login: the current states, asked with ``DeviceStateList`` and ``ExtensionStateList``."""
        self.clear()
        for action in ("DeviceStateList", "ExtensionStateList"):
            try:
                events = await client.action_list({"Action": action}, timeout=LIST_TIMEOUT)
            except AmiError as exc:
                logger.warning("AMI: %s failed (%s); states known from the next change on", action, exc)
                continue
            for message in events:
                self.feed(message)
        self.refreshed_at = time.time()

    # --- asked by routing and the UI ---------------------------------------------------

    def device_state(self, device: str) -> Seen | None:
        return self._devices.get(device.casefold())

    def state(self, agent: _AgentLike) -> str:
        """``available``, ``busy``, ``unavailable`` or ``unknown`` (see the module's docstring)."""
        return combine(seen.state for _, seen in self.sources(agent))

    def is_available(self, agent: _AgentLike) -> bool:
        """True unless Asterisk says the agent is on a call (busy) or unreachable; unknown counts as available."""
        return self.state(agent) in (AVAILABLE, UNKNOWN)

    def sources(self, agent: _AgentLike) -> list[tuple[str, Seen]]:
        """What the agent's state is made of: ``("PJSIP/201", Seen)``, ``("hint 201@ext-local", Seen)``."""
        found = []
        for device in agent.watched_devices:
            seen = self._devices.get(device.casefold())
            if seen is not None:
                found.append((device, seen))
        for context, seen in sorted((self._extensions.get(agent.extension) or {}).items()):
            found.append((f"hint {agent.extension}@{context}" if context else f"hint {agent.extension}", seen))
        return found

    def describe(self, agent: _AgentLike) -> dict[str, Any]:
        """For the UI and the API: the state and what it comes from."""
        sources = self.sources(agent)
        return {"state": combine(seen.state for _, seen in sources),
                "sources": [{"source": name, "state": seen.raw} for name, seen in sources]}  # fmt: skip


def combine(states: Iterable[str]) -> str:
    found = set(states)
    for state in (BUSY, AVAILABLE, UNAVAILABLE):
        if state in found:
            return state
    return UNKNOWN
