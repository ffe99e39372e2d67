"""Availability: device and extension states from AMI events (synthetic, recorded, and over a fake Asterisk)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from crmroute.calllog.ami import Message
from crmroute.calllog.presence import AVAILABLE, BUSY, UNAVAILABLE, UNKNOWN, Availability
from crmroute.calllog.worker import CallLogger
from crmroute.routing.agents import Agent
from tests.calllog.fakeami import SECRET, USERNAME, event, recorded_messages, running_ami

OLIVIA = Agent("Olivia Owner", "201")  # watches PJSIP/201
QUEUE_AGENT = Agent("Agent 201", "201", devices=("Local/201@queue-agents",))  # as in the recorded streams
TWO_PHONES = Agent("Bob", "202", devices=("PJSIP/202", "PJSIP/202-mobile"))


def device(name: str, state: str) -> Message:
    return Message.of(Event="DeviceStateChange", Privilege="call,all", Device=name, State=state)


def hint(exten: str, status: int, text: str, context: str = "ext-local") -> Message:
    return Message.of(Event="ExtensionStatus", Exten=exten, Context=context, Hint=f"PJSIP/{exten}", Status=str(status),
                      StatusText=text)  # fmt: skip


def test_unknown_until_asterisk_says_and_unknown_counts_as_available():
    availability = Availability()
    assert availability.state(OLIVIA) == UNKNOWN and availability.is_available(OLIVIA)
    availability.feed(Message.of(Event="Hangup", Uniqueid="1.1"))  # other events change nothing
    assert availability.state(OLIVIA) == UNKNOWN and availability.events == 0


@pytest.mark.parametrize(("state", "expected", "free"), [
    ("NOT_INUSE", AVAILABLE, True), ("INUSE", BUSY, False), ("BUSY", BUSY, False), ("RINGING", BUSY, False),
    ("RINGINUSE", BUSY, False), ("ONHOLD", BUSY, False), ("UNAVAILABLE", UNAVAILABLE, False),
    ("INVALID", UNAVAILABLE, False), ("UNKNOWN", UNKNOWN, True), ("SOMETHING_NEW", UNKNOWN, True),
])  # fmt: skip
def test_device_states(state, expected, free):
    availability = Availability()
    availability.feed(device("PJSIP/201", state))
    assert availability.state(OLIVIA) == expected and availability.is_available(OLIVIA) is free


@pytest.mark.parametrize(("status", "text", "expected"), [
    (0, "Idle", AVAILABLE), (1, "InUse", BUSY), (2, "Busy", BUSY), (4, "Unavailable", UNAVAILABLE),
    (8, "Ringing", BUSY), (9, "InUse&Ringing", BUSY), (16, "Hold", BUSY), (17, "InUse&Hold", BUSY),
])  # fmt: skip
def test_extension_states(status, text, expected):
    availability = Availability()
    availability.feed(hint("201", status, text))
    assert availability.state(OLIVIA) == expected
    assert availability.describe(OLIVIA) == {"state": expected, "sources": [{"source": "hint 201@ext-local", "state": text}]}


def test_a_removed_hint_is_forgotten():
    availability = Availability()
    availability.feed(hint("201", 1, "InUse"))
    availability.feed(hint("201", -1, "Unknown"))
    assert availability.state(OLIVIA) == UNKNOWN


def test_several_devices_combine_busy_first_then_available():
    availability = Availability()
    availability.feed(device("PJSIP/202", "UNAVAILABLE"))
    assert availability.state(TWO_PHONES) == UNAVAILABLE
    availability.feed(device("pjsip/202-MOBILE", "NOT_INUSE"))  # device names ignore case
    assert availability.state(TWO_PHONES) == AVAILABLE  # the mobile can take it
    availability.feed(device("PJSIP/202", "INUSE"))
    assert availability.state(TWO_PHONES) == BUSY  # on a call on the desk phone: busy
    assert [s["source"] for s in availability.describe(TWO_PHONES)["sources"]] == ["PJSIP/202", "PJSIP/202-mobile"]


def test_the_recorded_answered_call_makes_the_queue_agent_busy_then_free_again():
    availability = Availability()
    seen = []
    for message in recorded_messages("inbound-answered"):
        availability.feed(message)
        if message.event == "AgentConnect":
            seen.append(("connect", availability.state(QUEUE_AGENT)))
        if message.event == "AgentComplete":
            seen.append(("complete", availability.state(QUEUE_AGENT)))
    assert seen == [("connect", BUSY), ("complete", BUSY)]  # Asterisk reports NOT_INUSE after AgentComplete
    assert availability.state(QUEUE_AGENT) == AVAILABLE and availability.is_available(QUEUE_AGENT)
    assert availability.device_state("Queue:103").raw == "NOT_INUSE"
    assert availability.state(OLIVIA) == UNKNOWN  # PJSIP/201 never appears in the recording


def test_the_recorded_missed_call_leaves_the_queue_device_free():
    availability = Availability()
    for message in recorded_messages("inbound-missed"):
        availability.feed(message)
    assert availability.events > 0
    assert all(seen.raw in ("NOT_INUSE", "INUSE", "RINGING", "UNAVAILABLE", "RINGINUSE", "ONHOLD", "BUSY")
               for seen in availability._devices.values())  # fmt: skip
    assert availability.device_state("Queue:104").raw == "NOT_INUSE"


def logger_settings(store, port: int):
    return dataclasses.replace(store.settings, ami_host="127.0.0.1", ami_port=port, ami_username=USERNAME,
                               ami_secret=SECRET)  # fmt: skip


async def until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_call_logger_asks_the_states_on_connect_and_follows_events(store):
    async with running_ami() as ami:
        ami.device_states = {"PJSIP/201": "INUSE", "PJSIP/202": "NOT_INUSE"}
        ami.extension_states = [{"Exten": "203", "Context": "ext-local", "Hint": "PJSIP/203", "Status": 4,
                                 "StatusText": "Unavailable"}]  # fmt: skip
        call_logger = CallLogger(logger_settings(store, ami.port), store.factory, lambda _id: None, poll=0.05,
                                 ami_options={"timeout": 2.0, "backoff_min": 0.05, "backoff_max": 0.1})  # fmt: skip
        availability = call_logger.availability
        await call_logger.start()
        try:
            await until(lambda: availability.refreshed_at is not None)
            assert [a["Action"] for a in ami.actions][:4] == ["Login", "CoreShowChannels", "DeviceStateList",
                                                               "ExtensionStateList"]  # fmt: skip
            assert availability.state(OLIVIA) == BUSY and not availability.is_available(OLIVIA)
            assert availability.state(Agent("B", "202")) == AVAILABLE
            assert availability.state(Agent("C", "203")) == UNAVAILABLE
            await ami.send(event("DeviceStateChange", Privilege="call,all", Device="PJSIP/201", State="NOT_INUSE"))
            await until(lambda: availability.state(OLIVIA) == AVAILABLE)
            await ami.drop()  # the connection dies: states are forgotten (unknown: assume available)
            await until(lambda: availability.state(Agent("B", "202")) == UNKNOWN)
            ami.device_states = {"PJSIP/202": "RINGING"}
            await until(lambda: availability.state(Agent("B", "202")) == BUSY)  # asked again after the reconnect
        finally:
            await call_logger.close()
