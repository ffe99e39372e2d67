"""Calls from AMI events: legs grouped by ``Linkedid``, finished calls out. Pure: no I/O, no clock.

:class:`CallTracker` is fed every event (``feed(event, now, wall=...)``) and
returns the calls that finished. Two clocks, never mixed:

- ``now`` is this machine's monotonic clock when the event arrived. Every
  age is measured on it: the ``grace`` after the last hang-up, ``max_age``,
  the time a lost AMI connection lasted. A PBX whose clock is off, or events
  replayed with old ``Timestamp`` values, cannot end a live call early.
- The event's time is Asterisk's own ``Timestamp`` (``timestampevents =
  yes``), else ``wall``, the wall clock when it arrived. The reported times
  (``started_at``, ``ended_at``, durations) are event times; an end that was
  not seen (lost connection, ``max_age``) is the call's last event time plus
  the monotonic time that passed since it arrived.
 A call is every channel ("leg") sharing a
``Linkedid``: the trunk or phone leg, the legs it dialled, and the helper
halves of Local channels (``Local/...;1`` / ``;2``) — which are legs of the
same call, never calls of their own. A call finishes when all its legs have
hung up and ``grace`` seconds have passed for late ``Cdr`` events
(``expire(now)`` releases it), or when the AMI connection was lost and the
channels Asterisk still has (``reconcile()``) no longer include its legs.

Across a restart of crmroute: ``changes(now)`` gives the open calls whose
state changed (as JSON-able data, to be saved) and the ``Linkedid`` values no
longer open; ``restore()`` takes the saved calls back in the next process
(as if the AMI connection had been lost meanwhile), and ``adopt()`` joins
the channels Asterisk lists after connecting (``CoreShowChannel`` events)
with the routing decisions logged under their ``Uniqueid``: a call crmroute
never heard of, or heard of only before a crash, is rebuilt from them.

What a finished :class:`Call` says, and from which events:

direction
    ``inbound`` when a leg entered an inbound (DID/trunk) context
    (``Newexten``) or crmroute routed it (``VarSet CRMROUTE_STATUS``, or an
    ``AGIExecStart`` setting a ``CRMROUTE_`` variable); ``outbound`` when a
    leg in an outbound context dialled an extension matching the external
    number pattern; else ``internal`` (never logged). Contexts are shell
    patterns (``from-pstn*``), numbers a regular expression whose group
    ``number`` is the external number (``^9(?P<number>...)`` strips a dial
    prefix); :data:`PRESETS` has the defaults.
outcome
    ``answered`` when a party answered: ``AgentConnect``, a ``DialEnd`` with
    ``DialStatus: ANSWER`` (not the Originate's own), or the caller's leg
    bridged with another leg. Otherwise ``busy`` (a dial ended ``BUSY`` and no
    queue was involved), ``failed`` (every dial ended ``CHANUNAVAIL`` /
    ``CONGESTION``, or an outbound call never dialled), else ``missed``
    (no answer, abandoned in a queue, voicemail).
external_number, did, extension, queue, agent
    The caller's number and the DID as the leg entered the inbound context;
    for outbound calls the number dialled (pattern group) and the dialling
    extension's caller ID. ``extension`` is who answered an inbound call:
    the queue member's interface (``Local/201@queue-agents/n`` -> ``201``) or
    the answered channel (``PJSIP/201-0000002a`` -> ``201``).
times
    ``started_at`` is the first event of the call; the total comes from the
    caller leg's ``Cdr`` records when ``cdr_manager`` sends them (latest end
    minus earliest start), else from event times; talk time from
    ``AgentComplete TalkTime``, else ``ANSWEREDTIME``, else event times; ring
    (wait) time is the rest.
recording
    ``MIXMONITOR_FILENAME``, ``MONITOR_FILENAME`` or ``CALLFILENAME`` set on a
    leg (FreePBX sets these), or the file given to ``MixMonitor()``/``Monitor()``.
routing
    the ``CRMROUTE_*`` variables crmroute set, and ``agi_uniqueids``: the
    channels where an AGI ran (``AGIExecStart``): the decision log's
    ``call_id`` to join the routing decision and the CRM record it found.

Duplicate events (an event twice, or a whole call replayed after it was
reported) never produce a second call. Memory is bounded: at most
``max_open`` calls are tracked (the oldest is reported early past that), a
call with no event for ``max_age`` seconds (monotonic) is reported as is, and finished
``Linkedid``\\ s are remembered up to ``remember``.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

INBOUND, OUTBOUND, INTERNAL = "inbound", "outbound", "internal"
ANSWERED, MISSED, BUSY, FAILED = "answered", "missed", "busy", "failed"
UNKNOWN_CALLER = {"", "<unknown>", "unknown", "anonymous", "<null>"}
RECORDING_VARIABLES = ("MIXMONITOR_FILENAME", "MONITOR_FILENAME", "CALLFILENAME")  # best first
ROUTING_PREFIX = "CRMROUTE_"
UP = "6"  # ChannelState of an answered channel


@dataclass(frozen=True)
class Preset:
    inbound_contexts: tuple[str, ...]
    outbound_contexts: tuple[str, ...]
    outbound_number: str


PRESETS = {
    # examples/asterisk/extensions.conf: trunks land in [from-trunk]; phones dial out from
    # [from-internal] with a 9 prefix (exten => _9X.,1,Dial(PJSIP/${EXTEN:1}@trunk)).
    "asterisk": Preset(("from-trunk", "from-pstn"), ("from-internal",), r"^9(?P<number>\+?[0-9]{7,})$"),
    # FreePBX: trunks' from-pstn / from-trunk(-*), inbound routes ext-did*; phones dial out
    # through from-internal, outbound-allroutes and outrt-N; extensions are shorter than 7 digits.
    "freepbx": Preset(("from-trunk*", "from-pstn*", "ext-did*"), ("from-internal*", "outbound-allroutes", "outrt-*"),
                      r"^(?P<number>\+?[0-9]{7,})$"),  # fmt: skip
}


@dataclass(frozen=True)
class CallConfig:
    inbound_contexts: tuple[str, ...] = PRESETS["asterisk"].inbound_contexts
    outbound_contexts: tuple[str, ...] = PRESETS["asterisk"].outbound_contexts
    outbound_number: str = PRESETS["asterisk"].outbound_number
    grace: float = 2.0  # seconds after the last hang-up to wait for late Cdr events
    max_open: int = 20_000
    max_age: float = 6 * 3600.0
    remember: int = 50_000

    @classmethod
    def preset(cls, name: str = "asterisk", **changes: Any) -> CallConfig:
        base = PRESETS[name]
        values = {"inbound_contexts": base.inbound_contexts, "outbound_contexts": base.outbound_contexts,
                  "outbound_number": base.outbound_number}  # fmt: skip
        values.update({k: v for k, v in changes.items() if v not in (None, "", ())})
        return cls(**values)

    @classmethod
    def from_settings(cls, settings: Any, **changes: Any) -> CallConfig:
        return cls.preset(
            settings.calllog_preset,
            inbound_contexts=tuple(settings.calllog_inbound_contexts),
            outbound_contexts=tuple(settings.calllog_outbound_contexts),
            outbound_number=settings.calllog_outbound_number,
            **changes,
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_number", re.compile(self.outbound_number))

    def is_inbound(self, context: str) -> bool:
        return any(fnmatch.fnmatchcase(context, p) for p in self.inbound_contexts)

    def is_outbound(self, context: str) -> bool:
        return any(fnmatch.fnmatchcase(context, p) for p in self.outbound_contexts)

    def external_number(self, exten: str) -> str | None:
        """The number an outbound context's extension dials, or ``None`` when it is not external."""
        match = self._number.search(exten)  # type: ignore[attr-defined]
        if match is None:
            return None
        return match.groupdict().get("number") or match.group(0)


@dataclass
class Call:
    """A finished call, as the outbox stores it and the templates show it."""

    linked_id: str
    direction: str
    outcome: str
    started_at: datetime
    ended_at: datetime
    external_number: str = ""
    external_name: str = ""
    extension: str = ""  # who answered an inbound call; who dialled an outbound one
    agent: str = ""  # the queue member's name, when a queue agent answered
    queue: str = ""
    did: str = ""
    ring_seconds: int = 0
    talk_seconds: int = 0
    recording: str = ""
    transferred_to: str = ""
    agi_uniqueids: list[str] = field(default_factory=list)
    routing: dict[str, str] = field(default_factory=dict)  # CRMROUTE_* variables: status, dest, rule ...
    hangup_cause: str = ""
    legs: int = 0
    note: str = ""  # how the end was decided when it was not seen (AMI connection lost, ...)
    pbx: str = ""  # the AMI source (CRMROUTE_AMI_SOURCES name; "default" for CRMROUTE_AMI_HOST)

    @property
    def duration(self) -> int:
        return self.ring_seconds + self.talk_seconds

    @property
    def routed(self) -> bool:
        return bool(self.routing.get("status"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Call:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("started_at", "ended_at"):
            value = known.get(name)
            if isinstance(value, str):
                parsed = datetime.fromisoformat(value)
                known[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        return cls(**known)


def template_values(call: Call, decision: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The ``schemas.CALL_FIELDS`` of a call, as text; empty values are ``-``.

    ``decision`` is the routing decision joined from the decision log (rule,
    status, dest_type, dest, did); the channel's ``CRMROUTE_*`` variables fill in.
    """
    decision = decision or {}
    routing = call.routing
    dest_type = decision.get("dest_type") or routing.get("dest_type", "")
    dest = decision.get("dest") or routing.get("dest", "")
    values = {
        "direction": call.direction, "outcome": call.outcome, "external_number": call.external_number,
        "extension": call.extension, "did": call.did or decision.get("did", ""), "queue": call.queue,
        "started_at": call.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "ring_seconds": str(call.ring_seconds), "talk_seconds": str(call.talk_seconds),
        "duration": str(call.duration), "recording": call.recording,
        "rule": decision.get("rule") or routing.get("rule", ""),
        "routing_status": decision.get("status") or routing.get("status", ""),
        "destination": f"{dest_type} {dest}".strip(), "call_id": call.linked_id,
    }  # fmt: skip
    return {k: (v if v not in ("", None) else "-") for k, v in values.items()}


def render(template: str, values: Mapping[str, str]) -> str:
    """``str.format`` over the call's fields; a template that cannot render is shown as written."""
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return template


def extension_of(channel: str) -> str:
    """The extension a channel or queue interface stands for.

    ``PJSIP/201-0000002a`` -> ``201``; ``Local/201@queue-agents-00000001;1`` and
    ``Local/201@queue-agents/n`` -> ``201``; ``SIP/201`` -> ``201``.
    """
    tech, slash, rest = channel.partition("/")
    if not slash:
        return channel
    rest = rest.split(";", 1)[0]
    if tech.casefold() == "local":
        return rest.split("@", 1)[0]
    rest = re.sub(r"-[0-9a-fA-F]{8}$", "", rest)
    return rest.split("/", 1)[0]


# -- tracking ------------------------------------------------------------------------


class Event(Protocol):
    def get(self, name: str, default: str = "") -> str: ...


@dataclass
class _Leg:
    uniqueid: str
    channel: str
    created: float
    seq: int = 0  # order of first sight: times tie when events carry no Timestamp
    caller_num: str = ""
    caller_name: str = ""
    inbound: tuple[str, str, str, str] | None = None  # context, exten, caller number, caller name on entry
    outbound: tuple[str, str] | None = None  # number dialled, the dialling extension's caller ID
    up_at: float | None = None
    hungup_at: float | None = None
    cause: str = ""
    recording: tuple[int, str] = (99, "")  # (rank, file): the best recording variable seen
    agi_exten: str = ""

    @property
    def local_pair(self) -> str:
        """``Local/x@ctx-00000001`` for both halves of a Local channel; ``""`` for other channels."""
        base, semi, half = self.channel.rpartition(";")
        return base if semi and half in ("1", "2") and self.channel.casefold().startswith("local/") else ""


@dataclass
class _Call:
    linked_id: str
    started: float  # event time of the first event
    last_event: float  # event time of the latest event
    last_seen: float  # monotonic time the latest event arrived
    seq: int
    legs: dict[str, _Leg] = field(default_factory=dict)
    ended_at: float | None = None
    agi_uids: list[str] = field(default_factory=list)
    routing: dict[str, str] = field(default_factory=dict)
    queue: str = ""
    connects: dict[str, tuple[float, int, str, str]] = field(default_factory=dict)  # party uid -> (t, seq, ext, agent)
    dials: dict[tuple[str, str], str] = field(default_factory=dict)  # (dialler uid, dest uid) -> DialStatus
    talk_reported: int | None = None
    answered_time: dict[str, int] = field(default_factory=dict)  # uid -> ANSWEREDTIME
    cdrs: dict[str, set[tuple[str, str, str, str]]] = field(default_factory=dict)  # uid -> (start, end, duration, disposition)
    bridges: dict[str, set[str]] = field(default_factory=dict)
    transfers: list[str] = field(default_factory=list)
    note: str = ""


class CallTracker:
    def __init__(self, config: CallConfig | None = None) -> None:
        self.config = config or CallConfig()
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # by Linkedid, oldest first
        self._index: dict[str, str] = {}  # leg Uniqueid -> Linkedid
        self._done: OrderedDict[str, None] = OrderedDict()  # Linkedids already reported
        self._ending: dict[str, float] = {}  # Linkedid -> when its last leg's hang-up arrived (monotonic)
        self._lost_at: float | None = None
        self._next_sweep = 0.0
        self._seq = 0
        self._now = 0.0  # monotonic time of the event being fed
        self._dirty: set[str] = set()  # Linkedids changed since changes()
        self.events = 0
        self.ignored = 0  # events of calls already reported (duplicates, late Cdrs)

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    # --- input ------------------------------------------------------------------------

    def feed(self, event: Event, now: float, wall: float | None = None) -> list[Call]:
        """Take one event; the calls it finished (with ``grace`` 0, or past ``max_open``).

        ``now`` is the monotonic time it arrived, ``wall`` the wall-clock time
        (its time when it has no ``Timestamp``; ``now`` when not given).
        """
        self.events += 1
        self._now = now
        t = _timestamp(event, now if wall is None else wall)
        name = event.get("Event")
        finished: list[Call] = []
        if name == "Cdr":
            self._cdr(event)
        elif name == "LocalBridge":
            self._local_bridge(event, t)
        elif name in ("BridgeCreate", "BridgeDestroy"):
            pass
        else:
            uid, linked = event.get("Uniqueid"), event.get("Linkedid")
            if uid and linked:
                call, leg = self._leg(uid, linked, event.get("Channel"), t, event)
                if call is not None and leg is not None:
                    self._apply(name, event, call, leg, t, finished)
            elif name in ("DialBegin", "DialEnd") and event.get("DestUniqueid"):
                self._dest_leg(event, t)  # an Originate's dial: the destination leg only
        if len(self._calls) > self.config.max_open:
            oldest = next(iter(self._calls))
            finished.append(self._finish(oldest, now, note="reported early: too many calls in progress"))
        return finished

    def expire(self, now: float) -> list[Call]:
        """Calls whose grace after the last hang-up is over, and calls silent for ``max_age``."""
        done = [lid for lid, at in self._ending.items() if now - at >= self.config.grace]
        finished = [self._finish(lid, now) for lid in done]
        if now >= self._next_sweep:
            self._next_sweep = now + 60.0
            stale = [lid for lid, c in self._calls.items() if now - c.last_seen >= self.config.max_age]
            finished += [self._finish(lid, now, note=f"no event for {self.config.max_age:.0f} s") for lid in stale]
        return finished

    def connection_lost(self, now: float) -> None:
        """The AMI connection dropped: events may be missing until ``reconcile()``."""
        if self._lost_at is None:
            self._lost_at = now

    def reconcile(self, alive: Iterable[str], now: float) -> list[Call]:
        """After a reconnect: legs Asterisk no longer has hung up while we were away.

        ``alive`` is every ``Uniqueid`` of ``CoreShowChannels``. A call whose
        legs are all gone is reported (with a note), ended when the
        connection was lost (both ``now`` and that on the monotonic clock).
        """
        alive = set(alive)
        lost = self._lost_at if self._lost_at is not None else now
        self._lost_at = None
        finished: list[Call] = []
        for lid in list(self._calls):
            call = self._calls[lid]
            gone = [leg for uid, leg in call.legs.items() if leg.hungup_at is None and uid not in alive]
            if not gone:
                continue
            when = _event_time(call, lost)
            self._dirty.add(lid)
            for leg in gone:
                leg.hungup_at, leg.cause = when, leg.cause or "lost"
            if all(leg.hungup_at is not None for leg in call.legs.values()):
                call.note = "ended while the AMI connection was down"
                finished.append(self._finish(lid, now, ended=when))
        return finished

    def adopt(self, channels: Iterable[Event], decisions: Mapping[str, Mapping[str, Any]], now: float,
              wall: float) -> list[Call]:  # fmt: skip
        """After a (re)connect: the channels Asterisk has, joined into the calls.

        ``channels`` are ``CoreShowChannel`` events, ``decisions`` the routing
        decisions logged under their ``Uniqueid`` (``rule``, ``status``,
        ``dest_type``, ``dest``, ``did``, ``caller``). A channel not known yet
        becomes a leg created ``Duration`` before ``wall``, inbound when its
        context is; a leg with a decision makes its call routed (its DID and
        caller from the decision); legs of one call in one bridge answered each
        other. Returns the calls this finishes (past ``max_open``).
        """
        self._now = now
        bridged: dict[tuple[str, str], list[_Leg]] = {}
        for channel in channels:
            uid = channel.get("Uniqueid")
            if not uid:
                continue
            t = wall - _duration(channel.get("Duration"))
            known = uid in self._index
            call, leg = self._leg(uid, channel.get("Linkedid") or uid, channel.get("Channel"), t, channel)
            if call is None or leg is None:
                continue
            if not known:
                leg.created, call.started = t, min(call.started, t)
                context = channel.get("Context")
                if context and self.config.is_inbound(context):
                    leg.inbound = (context, channel.get("Exten"), leg.caller_num, leg.caller_name)
            decision = decisions.get(uid)
            if decision and not call.routing.get("status"):
                for name in ("status", "dest_type", "dest", "rule"):
                    if decision.get(name):
                        call.routing[name] = str(decision[name])
                if uid not in call.agi_uids:
                    call.agi_uids.append(uid)
                leg.agi_exten = leg.agi_exten or str(decision.get("did") or "")
                if not leg.caller_num and decision.get("caller") not in UNKNOWN_CALLER | {None}:
                    leg.caller_num = str(decision["caller"])
            if channel.get("BridgeId"):
                bridged.setdefault((call.linked_id, channel.get("BridgeId")), []).append(leg)
        for (linked, _), legs in bridged.items():
            call = self._calls.get(linked)
            if call is None or call.connects or len(legs) < 2:
                continue
            legs.sort(key=lambda leg: leg.created)
            party = next((leg for leg in legs[1:] if not _same_local(legs[0], leg)), None)
            if party is not None:  # answered when it was created, as near as a channel list tells
                self._connect(call, party, party.created, extension_of(party.channel))
        finished: list[Call] = []
        while len(self._calls) > self.config.max_open:
            finished.append(self._finish(next(iter(self._calls)), now,
                                         note="reported early: too many calls in progress"))  # fmt: skip
        return finished

    def changes(self, now: float, *, everything: bool = False) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Open calls changed since the last call (or all), as data for ``restore()``; Linkedids no longer open."""
        wanted = set(self._calls) if everything else self._dirty & set(self._calls)
        changed = {lid: _dump(self._calls[lid], now) for lid in wanted}
        gone = {lid for lid in self._dirty if lid not in self._calls}
        self._dirty.clear()
        return changed, gone

    def restore(self, saved: Iterable[Mapping[str, Any]], now: float) -> int:
        """Take back open calls an earlier process saved; how many.

        They count as seen ``now``, and the AMI connection as lost since: the
        next ``reconcile()`` ends those whose channels are gone, at the time
        they were saved.
        """
        saved = list(saved)
        restored = sorted((c for c in map(_load, saved) if c is not None), key=lambda c: c.seq)
        # every saved id is marked changed: those not taken back (unreadable) are forgotten at the next save
        self._dirty.update(str(data.get("linked_id")) for data in saved if isinstance(data, Mapping))
        count = 0
        for call in restored:
            if call.linked_id in self._calls or call.linked_id in self._done:
                continue
            call.last_seen = now
            self._seq = max([self._seq, call.seq, *(leg.seq for leg in call.legs.values()),
                             *(c[1] for c in call.connects.values())])  # fmt: skip
            self._calls[call.linked_id] = call
            for uid in call.legs:
                self._index.setdefault(uid, call.linked_id)
            if call.legs and all(leg.hungup_at is not None for leg in call.legs.values()):
                self._ending[call.linked_id] = now
            self._dirty.discard(call.linked_id)
            count += 1
        if count:
            self.connection_lost(now)
        return count

    # --- legs -------------------------------------------------------------------------

    def _leg(self, uid: str, linked: str, channel: str, t: float, event: Event) -> tuple[_Call | None, _Leg | None]:
        current = self._index.get(uid)
        if current is None:
            if linked in self._done or (uid != linked and uid in self._done):
                self.ignored += 1
                return None, None
            call = self._call(linked, t)
            self._seq += 1
            leg = _Leg(uid, channel, t, self._seq)
            call.legs[uid] = leg
            self._index[uid] = linked
        elif current != linked and linked in self._calls and self._calls[linked].seq < self._calls[current].seq:
            # Asterisk moved the leg to an older call (bridging, transfers, a Local channel's halves)
            leg = self._calls[current].legs.pop(uid)
            call = self._call(linked, t)
            call.legs[uid] = leg
            self._index[uid] = linked
            if not self._calls[current].legs:
                self._drop(current)
            elif all(lg.hungup_at is not None for lg in self._calls[current].legs.values()):
                self._ending.setdefault(current, self._now)
        else:
            call = self._calls[current]
            leg = call.legs[uid]
        call.last_event = max(call.last_event, t)
        call.last_seen = max(call.last_seen, self._now)
        self._dirty.add(call.linked_id)
        if channel:
            leg.channel = channel
        number = event.get("CallerIDNum")
        if number and number not in UNKNOWN_CALLER:
            leg.caller_num = number
            name = event.get("CallerIDName")
            leg.caller_name = "" if name in UNKNOWN_CALLER else name
        return call, leg

    def _call(self, linked: str, t: float) -> _Call:
        call = self._calls.get(linked)
        if call is None:
            self._seq += 1
            call = self._calls[linked] = _Call(linked, t, t, self._now, self._seq)
        return call

    def _dest_leg(self, event: Event, t: float) -> _Leg | None:
        uid, linked = event.get("DestUniqueid"), event.get("DestLinkedid") or event.get("DestUniqueid")
        if uid in self._done or linked in self._done:
            return None
        proxy = _Prefixed(event, "Dest")
        call, leg = self._leg(uid, linked, event.get("DestChannel"), t, proxy)
        return leg

    def _drop(self, linked: str) -> None:
        self._dirty.add(linked)
        call = self._calls.pop(linked, None)
        self._ending.pop(linked, None)
        if call is not None:
            for uid in call.legs:
                if self._index.get(uid) == linked:
                    del self._index[uid]

    # --- what events mean --------------------------------------------------------------

    def _apply(self, name: str, event: Event, call: _Call, leg: _Leg, t: float, finished: list[Call]) -> None:
        config = self.config
        if name == "Newexten":  # dialplan ran here (a dialled channel's Newchannel may name its endpoint's context)
            context, exten = event.get("Context"), event.get("Exten")
            if leg.inbound is None and context and config.is_inbound(context):
                leg.inbound = (context, exten, leg.caller_num, leg.caller_name)
            if leg.outbound is None and context and config.is_outbound(context):
                number = config.external_number(exten)
                if number is not None:
                    leg.outbound = (number, leg.caller_num)
            self._application(leg, event.get("Application"), event.get("AppData"))
        elif name == "VarSet":
            self._variable(call, leg, event.get("Variable").lstrip("_"), event.get("Value"))
        elif name == "AGIExecStart":
            if leg.uniqueid not in call.agi_uids:
                call.agi_uids.append(leg.uniqueid)
                leg.agi_exten = event.get("Exten")
            if ROUTING_PREFIX in event.get("Command"):
                call.routing.setdefault("agi", "yes")
        elif name == "Newstate":
            if event.get("ChannelState") == UP and leg.up_at is None:
                leg.up_at = t
        elif name in ("DialBegin", "DialEnd"):
            dest = self._dest_leg(event, t)
            if dest is None:
                return
            if name == "DialEnd":
                status = event.get("DialStatus").upper()
                call.dials[(leg.uniqueid, dest.uniqueid)] = status
                if status == "ANSWER" and not _same_local(leg, dest):
                    self._connect(call, dest, t, extension_of(dest.channel))
            else:
                call.dials.setdefault((leg.uniqueid, dest.uniqueid), "")
        elif name == "QueueCallerJoin":
            call.queue = call.queue or event.get("Queue")
        elif name == "AgentConnect":
            dest = self._dest_leg(event, t)
            party = extension_of(event.get("Interface")) or (extension_of(dest.channel) if dest else "")
            if dest is not None:
                self._connect(call, dest, t, party, event.get("MemberName"), replace=True)
            call.queue = call.queue or event.get("Queue")
        elif name == "AgentComplete":
            talk = _int(event.get("TalkTime"))
            if talk is not None:
                call.talk_reported = max(call.talk_reported or 0, talk)
        elif name == "QueueCallerAbandon":
            call.queue = call.queue or event.get("Queue")
        elif name == "BridgeEnter":
            members = call.bridges.setdefault(event.get("BridgeUniqueid"), set())
            for other_uid in members:
                other = call.legs.get(other_uid)
                if other is None or _same_local(leg, other) or other_uid in call.connects or leg.uniqueid in call.connects:
                    continue
                party = leg if leg.seq > other.seq else other  # the leg that came later answered the earlier one
                self._connect(call, party, t, extension_of(party.channel))
            members.add(leg.uniqueid)
        elif name == "BridgeLeave":
            call.bridges.get(event.get("BridgeUniqueid"), set()).discard(leg.uniqueid)
        elif name == "BlindTransfer":
            call.transfers.append(event.get("Extension"))
        elif name == "Hangup":
            if leg.hungup_at is None:
                leg.hungup_at, leg.cause = t, event.get("Cause")
            if all(lg.hungup_at is not None for lg in call.legs.values()):
                call.ended_at = t
                self._ending[call.linked_id] = self._now
                if config.grace <= 0:
                    finished.append(self._finish(call.linked_id, self._now))
            return
        if call.linked_id in self._ending and leg.hungup_at is None:  # a new leg within the grace: not over
            del self._ending[call.linked_id]
            call.ended_at = None

    def _connect(self, call: _Call, party: _Leg, t: float, extension: str, agent: str = "",
                 *, replace: bool = False) -> None:  # fmt: skip
        """``party`` answered at ``t``; the first word about a party keeps its time and order."""
        known = call.connects.get(party.uniqueid)
        if known is not None and not replace:
            return
        self._seq += 1
        t, order = (known[0], known[1]) if known is not None else (t, self._seq)
        call.connects[party.uniqueid] = (t, order, extension or (known[2] if known else ""), agent)

    def _variable(self, call: _Call, leg: _Leg, name: str, value: str) -> None:
        upper = name.upper()
        if upper.startswith(ROUTING_PREFIX):
            if value:
                call.routing[upper[len(ROUTING_PREFIX):].lower()] = value
            if upper == "CRMROUTE_STATUS" and leg.uniqueid not in call.agi_uids:
                call.agi_uids.append(leg.uniqueid)
        elif upper in RECORDING_VARIABLES and value:
            rank = RECORDING_VARIABLES.index(upper)
            if rank <= leg.recording[0]:
                leg.recording = (rank, value)
        elif upper == "ANSWEREDTIME":
            seconds = _int(value)
            if seconds is not None:
                call.answered_time[leg.uniqueid] = seconds

    def _application(self, leg: _Leg, app: str, data: str) -> None:
        app = app.casefold()
        args = [a.strip() for a in data.split(",")]
        if app == "mixmonitor" and args and args[0] and leg.recording[0] > 3:
            leg.recording = (3, args[0])
        elif app == "monitor" and len(args) > 1 and args[1] and leg.recording[0] > 4:
            leg.recording = (4, f"{args[1]}.{args[0] or 'wav'}")

    def _cdr(self, event: Event) -> None:
        uid = event.get("UniqueID") or event.get("Uniqueid")
        linked = self._index.get(uid)
        if linked is None:
            self.ignored += 1
            return
        call = self._calls[linked]
        self._dirty.add(linked)
        call.cdrs.setdefault(uid, set()).add((event.get("StartTime"), event.get("EndTime"), event.get("Duration"),
                                              event.get("Disposition")))  # fmt: skip

    def _local_bridge(self, event: Event, t: float) -> None:
        """The two halves of a Local channel belong to one call, even if Asterisk gave them two."""
        one, two = event.get("LocalOneUniqueid"), event.get("LocalTwoUniqueid")
        linked = event.get("LocalOneLinkedid") or one
        for prefix, uid in (("LocalOne", one), ("LocalTwo", two)):
            if uid:
                self._leg(uid, linked, event.get(f"{prefix}Channel"), t, _Prefixed(event, prefix))

    # --- the finished call --------------------------------------------------------------

    def _finish(self, linked: str, now: float, *, note: str = "", ended: float | None = None) -> Call:
        """Report a call; ``now`` is monotonic, ``ended`` an event time (else its last hang-up's, else now's)."""
        call = self._calls[linked]
        self._drop(linked)
        self._done[linked] = None
        while len(self._done) > self.config.remember:
            self._done.popitem(last=False)
        if ended is None:
            ended = call.ended_at if call.ended_at is not None else _event_time(call, now)
        return self._describe(call, ended, note or call.note)

    def _describe(self, call: _Call, end: float, note: str) -> Call:
        legs = sorted(call.legs.values(), key=lambda leg: leg.created)
        origin = call.legs.get(call.linked_id) or (legs[0] if legs else _Leg(call.linked_id, "", call.started))
        inbound = next((leg for leg in legs if leg.inbound), None)
        routed_leg = next((call.legs[uid] for uid in call.agi_uids if uid in call.legs), None)
        outbound = next((leg for leg in legs if leg.outbound), None)
        result = Call(linked_id=call.linked_id, direction=INTERNAL, outcome=MISSED,
                      started_at=_utc(call.started), ended_at=_utc(end), legs=len(legs), note=note,
                      agi_uniqueids=list(call.agi_uids), routing=dict(call.routing), queue=call.queue)  # fmt: skip
        result.routing.pop("agi", None)
        caller_leg = origin
        if inbound is not None or call.routing:
            result.direction = INBOUND
            caller_leg = inbound or routed_leg or origin
            if caller_leg.inbound:
                _, result.did, result.external_number, result.external_name = caller_leg.inbound
            else:
                result.did = caller_leg.agi_exten
                result.external_number, result.external_name = caller_leg.caller_num, caller_leg.caller_name
        elif outbound is not None:
            result.direction = OUTBOUND
            caller_leg = outbound
            result.external_number, result.extension = outbound.outbound  # type: ignore[misc]
            result.extension = result.extension or extension_of(outbound.channel)
        connects = sorted(call.connects.values())
        answer_at = connects[0][0] if connects else None
        if connects:
            result.outcome = ANSWERED
            if result.direction != OUTBOUND:
                result.extension, result.agent = connects[0][2], connects[0][3]
            later = [c[2] for c in connects[1:] if c[2] and c[2] != connects[0][2]]
            result.transferred_to = (call.transfers[-1] if call.transfers else "") or (later[-1] if later else "")
        else:
            result.outcome = self._unanswered(call, result.direction, caller_leg)
        total = _cdr_seconds(call.cdrs.get(caller_leg.uniqueid) or call.cdrs.get(origin.uniqueid) or set())
        if total is None:
            total = max(0, round(end - call.started))
        talk = 0
        if answer_at is not None:
            talk = call.talk_reported if call.talk_reported is not None else call.answered_time.get(
                caller_leg.uniqueid, call.answered_time.get(origin.uniqueid, -1))
            if talk < 0:
                talk = max(0, round(end - answer_at))
        total = max(total, talk)
        result.ring_seconds, result.talk_seconds = total - talk, talk
        recordings = sorted((leg.recording for leg in [caller_leg, *legs] if leg.recording[1]), key=lambda r: r[0])
        result.recording = recordings[0][1] if recordings else ""
        result.hangup_cause = caller_leg.cause
        return result

    @staticmethod
    def _unanswered(call: _Call, direction: str, caller_leg: _Leg) -> str:
        statuses = [s for (by, _), s in call.dials.items() if s]
        causes = {leg.cause for leg in call.legs.values() if leg.uniqueid != caller_leg.uniqueid}
        if direction == OUTBOUND:
            mine = [s for (by, _), s in call.dials.items() if by == caller_leg.uniqueid and s] or statuses
            if "BUSY" in mine or "17" in causes:
                return BUSY
            if any(s in ("NOANSWER", "CANCEL") for s in mine):
                return MISSED
            disposition = {d for (_, _, _, d) in call.cdrs.get(caller_leg.uniqueid, set())}
            if "BUSY" in disposition:
                return BUSY
            if "NO ANSWER" in disposition and mine:
                return MISSED
            return FAILED
        if call.queue:
            return MISSED
        if "BUSY" in statuses:
            return BUSY
        if statuses and all(s in ("CHANUNAVAIL", "CONGESTION") for s in statuses):
            return FAILED
        return MISSED


class _Prefixed:
    """An event seen through a prefix: ``DestChannel`` as ``Channel``, ``LocalTwoUniqueid`` as ``Uniqueid``."""

    def __init__(self, event: Event, prefix: str) -> None:
        self._event, self._prefix = event, prefix

    def get(self, name: str, default: str = "") -> str:
        return self._event.get(self._prefix + name, default)


def _same_local(a: _Leg, b: _Leg) -> bool:
    return bool(a.local_pair) and a.local_pair == b.local_pair


def _timestamp(event: Event, wall: float) -> float:
    """Asterisk's own ``Timestamp`` (``timestampevents = yes``), else when the event arrived."""
    raw = event.get("Timestamp")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    return wall


def _event_time(call: _Call, now: float) -> float:
    """Monotonic ``now`` on the call's event clock: its last event time plus the time since it arrived."""
    return call.last_event + max(0.0, now - call.last_seen)


def _duration(text: str) -> float:
    """``CoreShowChannel``'s ``Duration`` (``HH:MM:SS``) in seconds; 0 when unreadable."""
    parts = (text or "").strip().split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return 0.0
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds)


def _dump(call: _Call, now: float) -> dict[str, Any]:
    """An open call as JSON-able data; ``alive_at`` is ``now`` on its event clock."""
    data = asdict(call)
    del data["last_seen"]
    data["alive_at"] = _event_time(call, now)
    data["dials"] = [[by, dest, status] for (by, dest), status in call.dials.items()]
    data["cdrs"] = {uid: sorted(list(cdr) for cdr in cdrs) for uid, cdrs in call.cdrs.items()}
    data["bridges"] = {bridge: sorted(members) for bridge, members in call.bridges.items()}
    return data


def _load(data: Mapping[str, Any]) -> _Call | None:
    """A call saved by ``_dump``; ``None`` when the data does not fit (saved by another version)."""
    try:
        legs = {}
        for uid, raw in data["legs"].items():
            leg = _Leg(**{k: v for k, v in raw.items() if k in _Leg.__dataclass_fields__})
            leg.inbound = tuple(leg.inbound) if leg.inbound else None  # type: ignore[assignment]
            leg.outbound = tuple(leg.outbound) if leg.outbound else None  # type: ignore[assignment]
            leg.recording = tuple(leg.recording)  # type: ignore[assignment]
            legs[uid] = leg
        known = {k: v for k, v in data.items() if k in _Call.__dataclass_fields__}
        return _Call(**known | {
            "last_event": max(float(data["last_event"]), float(data.get("alive_at") or 0.0)), "last_seen": 0.0,
            "legs": legs, "connects": {uid: tuple(c) for uid, c in data.get("connects", {}).items()},
            "dials": {(by, dest): status for by, dest, status in data.get("dials", [])},
            "cdrs": {uid: {tuple(c) for c in cdrs} for uid, cdrs in data.get("cdrs", {}).items()},
            "bridges": {bridge: set(members) for bridge, members in data.get("bridges", {}).items()},
        })  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _int(text: str) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _cdr_seconds(cdrs: set[tuple[str, str, str, str]]) -> int | None:
    """A leg's time from its Cdr records: latest end minus earliest start (several may overlap)."""
    if not cdrs:
        return None
    starts, ends = [], []
    for start, end, duration, _ in cdrs:
        try:
            starts.append(datetime.fromisoformat(start))
            ends.append(datetime.fromisoformat(end))
        except ValueError:
            seconds = _int(duration)
            return seconds
    return max(0, round((max(ends) - min(starts)).total_seconds()))
