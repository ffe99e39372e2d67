"""Synthetic AMI event streams shaped like the recorded ones, with Asterisk's ``Timestamp`` on each event.

    s = Scenario()
    trunk = s.channel("PJSIP/trunk-00000001", caller="+15551230009", context="from-trunk", exten="5551000")
    s.at(1).newexten(trunk, "from-trunk", "5551000", "Dial", "PJSIP/201,20")
    agent = s.dial(trunk, "PJSIP/201-00000002", status="ANSWER", after=4)
    ...
    s.hangup(agent, after=30); s.hangup(trunk)
    s.messages()  # Message objects in order; s.bytes() as Asterisk writes them
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from crmroute.calllog.ami import Message
from tests.calllog.fakeami import event

T0 = 1_795_700_000.0


@dataclass
class Chan:
    name: str
    uniqueid: str
    linkedid: str
    caller: str = ""
    caller_name: str = ""
    context: str = ""
    exten: str = ""


class Scenario:
    def __init__(self, prefix: str = "pbx-1795700000", t0: float = T0) -> None:
        self.t = t0
        self.prefix = prefix
        self._ids = itertools.count(1)
        self._events: list[tuple[str, dict[str, Any]]] = []

    def at(self, seconds: float) -> Scenario:
        self.t += seconds
        return self

    def ev(self, name: str, chan: Chan | None = None, **fields: Any) -> None:
        data: dict[str, Any] = {"Privilege": "call,all", "SystemName": "pbx"}
        if chan is not None:
            data |= {"Channel": chan.name, "ChannelState": "6", "CallerIDNum": chan.caller or "<unknown>",
                     "CallerIDName": chan.caller_name or "<unknown>", "Context": chan.context, "Exten": chan.exten,
                     "Uniqueid": chan.uniqueid, "Linkedid": chan.linkedid}  # fmt: skip
        data |= fields
        data["Timestamp"] = f"{self.t:.6f}"
        self._events.append((name, data))

    def channel(self, name: str, *, caller: str = "", caller_name: str = "", context: str = "", exten: str = "s",
                linked: Chan | None = None) -> Chan:  # fmt: skip
        uid = f"{self.prefix}.{next(self._ids)}"
        chan = Chan(name, uid, linked.linkedid if linked else uid, caller, caller_name, context, exten)
        self.ev("Newchannel", chan, ChannelState="0")
        return chan

    def newexten(self, chan: Chan, context: str, exten: str, app: str = "NoOp", data: str = "") -> None:
        chan.context, chan.exten = context, exten
        self.ev("Newexten", chan, Extension=exten, Application=app, AppData=data)

    def var(self, chan: Chan, name: str, value: str) -> None:
        self.ev("VarSet", chan, Variable=name, Value=value)

    def dest(self, prefix: str, chan: Chan) -> dict[str, Any]:
        return {f"{prefix}Channel": chan.name, f"{prefix}Uniqueid": chan.uniqueid, f"{prefix}Linkedid": chan.linkedid,
                f"{prefix}CallerIDNum": chan.caller or "<unknown>", f"{prefix}Context": chan.context,
                f"{prefix}Exten": chan.exten}  # fmt: skip

    def dial(self, caller: Chan, name: str, *, status: str, after: float = 0.0, context: str = "from-internal",
             exten: str = "s", dial_string: str = "") -> Chan:  # fmt: skip
        callee = self.channel(name, context=context, exten=exten, linked=caller)
        self.ev("DialBegin", caller, DialString=dial_string or name.split("-")[0], **self.dest("Dest", callee))
        self.at(after)
        if status == "ANSWER":
            self.ev("Newstate", callee, ChannelState="6", ChannelStateDesc="Up")
        self.ev("DialEnd", caller, DialStatus=status, **self.dest("Dest", callee))
        return callee

    def bridge(self, *chans: Chan) -> str:
        bridge_id = f"bridge-{next(self._ids)}"
        for n, chan in enumerate(chans, 1):
            self.ev("BridgeEnter", chan, BridgeUniqueid=bridge_id, BridgeNumChannels=str(n))
        return bridge_id

    def leave(self, bridge_id: str, *chans: Chan) -> None:
        for chan in chans:
            self.ev("BridgeLeave", chan, BridgeUniqueid=bridge_id)

    def hangup(self, chan: Chan, *, after: float = 0.0, cause: str = "16") -> None:
        self.at(after)
        self.ev("Hangup", chan, Cause=cause, **{"Cause-txt": "Normal Clearing"})

    def messages(self) -> list[Message]:
        return [Message.of({"Event": name, **data}, received=float(data["Timestamp"])) for name, data in self._events]

    def bytes(self) -> bytes:
        return b"".join(event(name, **data) for name, data in self._events)


def inbound_answered_with_transfer(s: Scenario | None = None) -> Scenario:
    """A trunk call to DID 5551000 answered by 201 after 4 s, blind-transferred to 202 after 30 s, 20 s more."""
    s = s or Scenario()
    trunk = s.channel("PJSIP/trunk-00000001", caller="+15551230009", caller_name="Carol", context="from-trunk",
                      exten="5551000")  # fmt: skip
    s.newexten(trunk, "from-trunk", "5551000", "Dial", "PJSIP/201,20")
    s.var(trunk, "MIXMONITOR_FILENAME", "/var/spool/asterisk/monitor/in-5551000-+15551230009.wav")
    agent = s.dial(trunk, "PJSIP/201-00000002", status="ANSWER", after=4, context="from-internal", exten="201")
    first = s.bridge(agent, trunk)
    s.at(30).ev("BlindTransfer", agent, Extension="202", Context="from-internal", Result="Success")
    s.leave(first, agent, trunk)
    s.hangup(agent)
    second = s.dial(trunk, "PJSIP/202-00000003", status="ANSWER", after=2, context="from-internal", exten="202")
    s.bridge(second, trunk)
    s.hangup(second, after=20)
    s.hangup(trunk)
    return s


def inbound_busy(s: Scenario | None = None) -> Scenario:
    s = s or Scenario(prefix="pbx-1795700100")
    trunk = s.channel("PJSIP/trunk-00000004", caller="+15551230010", context="from-trunk", exten="5551000")
    s.newexten(trunk, "from-trunk", "5551000", "Dial", "PJSIP/201,20")
    agent = s.dial(trunk, "PJSIP/201-00000005", status="BUSY", after=1, exten="201")
    s.hangup(agent, cause="17")
    s.hangup(trunk, after=1)
    return s


def outbound_unanswered(s: Scenario | None = None) -> Scenario:
    s = s or Scenario(prefix="pbx-1795700200")
    phone = s.channel("PJSIP/100-00000006", caller="100", caller_name="Desk", context="from-internal",
                      exten="95559990000")  # fmt: skip
    s.newexten(phone, "from-internal", "95559990000", "Dial", "PJSIP/5559990000@trunk,20")
    trunk = s.dial(phone, "PJSIP/trunk-00000007", status="NOANSWER", after=20, context="from-trunk",
                   dial_string="5559990000@trunk")  # fmt: skip
    s.hangup(trunk)
    s.hangup(phone)
    return s


def inbound_ringing(s: Scenario) -> tuple[Chan, Chan]:
    """A trunk call answered by 201 and still talking (for restarts and drops mid-call)."""
    trunk = s.channel("PJSIP/trunk-00000008", caller="+15551230011", context="from-trunk", exten="5551000")
    s.newexten(trunk, "from-trunk", "5551000", "Dial", "PJSIP/201,20")
    agent = s.dial(trunk, "PJSIP/201-00000009", status="ANSWER", after=5, exten="201")
    s.bridge(agent, trunk)
    return trunk, agent
