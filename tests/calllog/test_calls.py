"""Calls from events: the recorded streams, and variations of them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from crmroute.calllog.ami import Message
from crmroute.calllog.calls import Call, CallConfig, CallTracker, extension_of, render, template_values
from crmroute.schemas import CALL_FIELDS, DEFAULT_DESCRIPTION, DEFAULT_SUBJECT
from tests.calllog.fakeami import recorded_messages
from tests.calllog.scenarios import (
    Chan,
    Scenario,
    inbound_answered_with_transfer,
    inbound_busy,
    inbound_ringing,
    outbound_unanswered,
)


def run(messages: list[Message], config: CallConfig | None = None, *, until: float = 10**10) -> tuple[list[Call], CallTracker]:
    tracker = CallTracker(config or CallConfig())
    calls: list[Call] = []
    for message in messages:
        calls += tracker.feed(message, message.received)
    calls += tracker.expire(until)
    return calls, tracker


# --- the recorded streams ------------------------------------------------------------------


def test_recorded_inbound_answered():
    (call,), tracker = run(recorded_messages("inbound-answered"))
    assert tracker.open_calls == 0
    assert (call.linked_id, call.direction, call.outcome) == ("asttest-1795657672.0", "inbound", "answered")
    assert (call.external_number, call.external_name, call.did) == ("+15551230001", "Alice Gold", "5551000")
    assert (call.extension, call.agent, call.queue) == ("201", "Agent 201", "103")
    assert (call.ring_seconds, call.talk_seconds) == (0, 3)  # AgentComplete TalkTime 3; the caller leg's Cdr: 3 s
    assert call.agi_uniqueids == ["asttest-1795657672.0"]  # the AGI session's agi_uniqueid: the decision log's call_id
    assert call.routing == {"status": "matched", "dest": "103"}
    assert call.legs == 4  # the caller's Local pair and the agent's: legs of one call, not four calls


def test_recorded_inbound_missed():
    (call,), _ = run(recorded_messages("inbound-missed"))
    assert (call.direction, call.outcome, call.external_number, call.did) == ("inbound", "missed", "+15551230002", "5552000")
    assert (call.extension, call.queue, call.ring_seconds, call.talk_seconds) == ("", "104", 3, 0)
    assert call.routing["dest"] == "104" and call.agi_uniqueids == ["asttest-1795657686.4"]


def test_recorded_outbound():
    (call,), _ = run(recorded_messages("outbound"))
    assert (call.direction, call.outcome) == ("outbound", "answered")
    assert (call.external_number, call.extension) == ("5559990000", "100")  # the 9 prefix stripped by the pattern
    assert (call.ring_seconds, call.talk_seconds) == (0, 2)  # ANSWEREDTIME 2, Cdr 2 s
    assert call.agi_uniqueids == [] and call.routing == {}


def test_three_streams_back_to_back_give_three_calls():
    messages = [m for name in ("inbound-answered", "inbound-missed", "outbound") for m in recorded_messages(name)]
    calls, tracker = run(messages)
    assert [c.outcome for c in calls] == ["answered", "missed", "answered"] and tracker.open_calls == 0


def test_duplicate_events_and_a_replayed_call_give_one_call():
    messages = recorded_messages("inbound-answered")
    doubled = [m for message in messages for m in (message, message)]  # every event twice
    calls, tracker = run(doubled + messages, CallConfig(grace=0))  # and the whole call again once reported
    assert len(calls) == 1 and calls[0].talk_seconds == 3 and tracker.ignored > 0


def test_the_call_waits_for_its_grace_before_it_is_reported():
    tracker = CallTracker(CallConfig(grace=2.0))
    found = []
    for message in recorded_messages("inbound-answered", received=100.0):
        found += tracker.feed(message, message.received)
    assert found == [] and tracker.open_calls == 1
    assert tracker.expire(101.0) == []
    assert len(tracker.expire(102.0)) == 1 and tracker.open_calls == 0


def test_local_helper_legs_are_not_calls_even_with_linkedids_of_their_own():
    messages = recorded_messages("inbound-answered")
    rewritten = []  # the agent's ;2 half arrives with a Linkedid of its own; LocalBridge ties it to ;1
    for m in messages:
        if m.get("Uniqueid") == "asttest-1795657672.3":
            m = Message(tuple((k, "asttest-1795657672.3" if k == "Linkedid" else v) for k, v in m.headers), received=m.received)
        rewritten.append(m)
    calls, tracker = run(rewritten)
    assert [(c.linked_id, c.outcome) for c in calls] == [("asttest-1795657672.0", "answered")]


# --- variations --------------------------------------------------------------------------------


def test_transfer_keeps_the_first_answerer_and_names_the_second():
    (call,), _ = run(inbound_answered_with_transfer().messages())
    assert (call.direction, call.outcome, call.did, call.external_number) == ("inbound", "answered", "5551000", "+15551230009")
    assert (call.extension, call.transferred_to) == ("201", "202")
    assert (call.ring_seconds, call.talk_seconds) == (4, 52)  # 4 s ringing; 30 + 2 + 20 s after the answer
    assert call.recording == "/var/spool/asterisk/monitor/in-5551000-+15551230009.wav"
    assert call.started_at == datetime.fromtimestamp(1_795_700_000, timezone.utc)


def test_busy_inbound():
    (call,), _ = run(inbound_busy().messages())
    assert (call.direction, call.outcome, call.extension, call.ring_seconds) == ("inbound", "busy", "", 2)


def test_outbound_unanswered():
    (call,), _ = run(outbound_unanswered().messages())
    assert (call.direction, call.outcome, call.external_number, call.extension) == ("outbound", "missed", "5559990000", "100")
    assert (call.ring_seconds, call.talk_seconds) == (20, 0)


def test_outbound_failed_when_the_trunk_is_unavailable():
    s = Scenario(prefix="pbx-9")
    phone = s.channel("PJSIP/100-0000000a", caller="100", context="from-internal", exten="95551112222")
    s.newexten(phone, "from-internal", "95551112222", "Dial", "PJSIP/5551112222@trunk")
    trunk = s.dial(phone, "PJSIP/trunk-0000000b", status="CHANUNAVAIL", context="from-trunk")
    s.hangup(trunk, cause="34")
    s.hangup(phone)
    (call,), _ = run(s.messages())
    assert (call.direction, call.outcome) == ("outbound", "failed")


def test_internal_calls_and_short_numbers_are_internal():
    s = Scenario(prefix="pbx-10")
    phone = s.channel("PJSIP/100-0000000c", caller="100", context="from-internal", exten="201")
    s.newexten(phone, "from-internal", "201", "Dial", "PJSIP/201")
    other = s.dial(phone, "PJSIP/201-0000000d", status="ANSWER", exten="201")
    s.hangup(other, after=5)
    s.hangup(phone)
    (call,), _ = run(s.messages())
    assert call.direction == "internal"


def test_restart_mid_call_ends_the_call_when_the_connection_was_lost():
    s = Scenario(prefix="pbx-11")
    trunk, agent = inbound_ringing(s)
    tracker = CallTracker(CallConfig())
    for m in s.messages():
        assert tracker.feed(m, m.received) == []
    tracker.connection_lost(s.t + 10)  # talked 10 s, then Asterisk went away
    (call,) = tracker.reconcile(set(), s.t + 60)  # it came back with no channel at all
    assert (call.outcome, call.extension, call.ring_seconds, call.talk_seconds) == ("answered", "201", 5, 10)
    assert "AMI connection" in call.note and tracker.open_calls == 0


def test_a_call_still_up_after_a_reconnect_goes_on():
    s = Scenario(prefix="pbx-12")
    trunk, agent = inbound_ringing(s)
    tracker = CallTracker(CallConfig(grace=0))
    for m in s.messages():
        tracker.feed(m, m.received)
    tracker.connection_lost(s.t + 1)
    assert tracker.reconcile({trunk.uniqueid, agent.uniqueid}, s.t + 3) == []
    s2 = Scenario(prefix="pbx-12", t0=s.t + 30)
    s2.hangup(agent)
    s2.hangup(trunk)
    (call,) = [c for m in s2.messages() for c in tracker.feed(m, m.received)]
    assert call.talk_seconds == 30 and call.note == ""


def test_stale_calls_are_reported_and_memory_stays_bounded():
    config = CallConfig(max_open=5, max_age=60.0)
    tracker = CallTracker(config)
    found = []
    for n in range(20):
        s = Scenario(prefix=f"pbx-{100 + n}", t0=1000.0 + n)
        s.channel("PJSIP/trunk-1", caller="+1555", context="from-trunk", exten="5551000")
        for m in s.messages():
            found += tracker.feed(m, m.received)
    assert tracker.open_calls == 5 and len(found) == 15 and all("too many" in c.note for c in found)
    found = tracker.expire(1000.0 + 20 + 61)
    assert len(found) == 5 and tracker.open_calls == 0 and "no event" in found[0].note


def test_freepbx_preset():
    s = Scenario(prefix="pbx-13")
    trunk = s.channel("PJSIP/trunk-0000000e", caller="+15551230012", context="from-pstn", exten="5551000")
    s.newexten(trunk, "from-pstn", "5551000")
    s.newexten(trunk, "ext-did-0001", "5551000")
    s.hangup(trunk, after=3)
    phone = s.channel("PJSIP/100-0000000f", caller="100", context="from-internal", exten="5559990000")
    s.newexten(phone, "from-internal", "5559990000")
    s.hangup(phone, after=1)
    calls, _ = run(s.messages(), CallConfig.preset("freepbx"))
    assert [(c.direction, c.outcome, c.external_number) for c in calls] == [
        ("inbound", "missed", "+15551230012"), ("outbound", "failed", "5559990000")]
    assert calls[0].did == "5551000"
    calls, _ = run(s.messages(), CallConfig.preset("asterisk"))  # outbound there needs the 9 prefix
    assert [c.direction for c in calls] == ["inbound", "internal"]


def test_contexts_and_numbers_are_configurable():
    config = CallConfig.preset("asterisk", inbound_contexts=("pbx-inbound",), outbound_number=r"^0(?P<number>\d{6,})$")
    assert config.is_inbound("pbx-inbound") and not config.is_inbound("from-trunk")
    assert config.external_number("0123456789") == "123456789" and config.external_number("95559990000") is None


@pytest.mark.parametrize("channel, ext", [
    ("PJSIP/201-0000002a", "201"), ("SIP/201-0000002a", "201"), ("Local/201@queue-agents-00000001;1", "201"),
    ("Local/201@queue-agents/n", "201"), ("PJSIP/201", "201"), ("IAX2/trunk-1234abcd", "trunk"), ("201", "201"),
])  # fmt: skip
def test_extension_of(channel, ext):
    assert extension_of(channel) == ext


def test_templates_render_every_call_field():
    (call,), _ = run(recorded_messages("inbound-answered"))
    decision = {"rule": "VIP", "status": "matched", "dest_type": "queue", "dest": "103"}
    values = template_values(call, decision)
    assert set(values) == set(CALL_FIELDS)
    assert render(DEFAULT_SUBJECT, values) == "inbound call answered: +15551230001"
    text = render(DEFAULT_DESCRIPTION, values)
    assert "Routing: matched via VIP to queue 103." in text and "Call id asttest-1795657672.0." in text
    assert render("{recording}|{queue}", values) == "-|103"
    assert render("{nope}", values) == "{nope}"


def test_calls_survive_a_round_trip_through_json():
    (call,), _ = run(inbound_answered_with_transfer().messages())
    assert Call.from_dict(call.to_dict()) == call


# --- ages on the monotonic clock, times from Asterisk -------------------------------------------

YEAR = 365 * 86400.0


@pytest.mark.parametrize("skew", [-5 * YEAR, 5 * YEAR])  # replayed events, or a PBX whose clock is far off
def test_event_timestamps_far_off_never_close_a_live_call(skew):
    s = Scenario(prefix="pbx-20", t0=1_000_000_000.0 + skew + YEAR * 30)
    trunk, agent = inbound_ringing(s)
    tracker = CallTracker(CallConfig(max_age=3600.0))
    for n, m in enumerate(s.messages()):
        assert tracker.feed(m, 50.0 + n * 0.01, wall=1_000.0) == []  # monotonic arrival; wall ignored (Timestamp)
    assert tracker.expire(60.0) == [] and tracker.expire(60.0 + 3000.0) == []
    assert tracker.open_calls == 1
    s2 = Scenario(prefix="pbx-20", t0=s.t + 30)
    s2.hangup(agent)
    s2.hangup(trunk)
    for m in s2.messages():
        assert tracker.feed(m, 3100.0, wall=1_000.0) == []
    assert tracker.expire(3101.0) == []  # the grace is on the monotonic clock too
    (call,) = tracker.expire(3102.0)
    assert (call.outcome, call.ring_seconds, call.talk_seconds, call.note) == ("answered", 5, 30, "")
    assert call.started_at == datetime.fromtimestamp(1_000_000_000.0 + skew + YEAR * 30, timezone.utc)  # Asterisk's


def test_a_call_silent_for_max_age_on_the_monotonic_clock_is_closed():
    s = Scenario(prefix="pbx-21", t0=10 * YEAR)
    inbound_ringing(s)  # answered, talking, then nothing more is heard of it
    last = s.t
    tracker = CallTracker(CallConfig(max_age=3600.0))
    for m in s.messages():
        tracker.feed(m, 500.0)
    assert tracker.expire(500.0 + 3599.0) == []
    (call,) = tracker.expire(500.0 + 3660.0)  # silent calls are swept once a minute
    assert "no event for 3600 s" in call.note and tracker.open_calls == 0
    assert call.ended_at == datetime.fromtimestamp(last + 3660.0, timezone.utc)  # on the call's own clock


def test_events_without_timestamp_take_the_wall_clock_for_times_and_the_monotonic_one_for_ages():
    s = Scenario(prefix="pbx-22")
    trunk, agent = inbound_ringing(s)
    s.hangup(agent, after=12)
    s.hangup(trunk)
    untimed = [Message(tuple((k, v) for k, v in m.headers if k != "Timestamp")) for m in s.messages()]
    tracker = CallTracker(CallConfig(grace=2.0))
    for n, m in enumerate(untimed):
        assert tracker.feed(m, 7.0 + n, wall=1_800_000_000.0 + n) == []
    last = 7.0 + len(untimed) - 1
    assert tracker.expire(last + 1.9) == []
    (call,) = tracker.expire(last + 2.0)
    assert call.started_at == datetime.fromtimestamp(1_800_000_000.0, timezone.utc)
    assert call.ended_at == datetime.fromtimestamp(1_800_000_000.0 + len(untimed) - 1, timezone.utc)


def test_a_lost_connection_ends_calls_by_the_monotonic_time_it_lasted():
    s = Scenario(prefix="pbx-23", t0=3 * YEAR)  # Asterisk's clock: nowhere near this machine's
    trunk, agent = inbound_ringing(s)
    tracker = CallTracker(CallConfig())
    for m in s.messages():
        tracker.feed(m, 100.0)
    tracker.connection_lost(110.0)  # 10 s after its last event arrived
    (call,) = tracker.reconcile(set(), 160.0)
    assert (call.ring_seconds, call.talk_seconds) == (5, 10)
    assert call.ended_at == datetime.fromtimestamp(s.t + 10, timezone.utc)


# --- across a restart of crmroute ----------------------------------------------------------------


def _talking(prefix: str) -> tuple[Scenario, Chan, Chan, Scenario]:
    """A routed trunk call answered by 201 (its start), and its end 40 s later."""
    s = Scenario(prefix=prefix)
    trunk, agent = inbound_ringing(s)
    s.var(trunk, "CRMROUTE_STATUS", "matched")
    s.var(trunk, "CRMROUTE_RULE", "VIP")
    end = Scenario(prefix=prefix, t0=s.t + 40)
    end.hangup(agent)
    end.hangup(trunk)
    return s, trunk, agent, end


def test_a_call_saved_by_one_process_and_restored_by_the_next_is_reported_as_if_never_interrupted():
    s, trunk, agent, end = _talking("pbx-30")
    whole, _ = run(s.messages() + end.messages(), CallConfig(grace=0))
    before = CallTracker(CallConfig(grace=0))
    for m in s.messages():
        before.feed(m, 10.0)
    changed, gone = before.changes(11.0, everything=True)
    assert set(changed) == {trunk.linkedid} and gone == set()
    after = CallTracker(CallConfig(grace=0))
    assert after.restore(json.loads(json.dumps(list(changed.values()))), 500.0) == 1
    assert after.reconcile({trunk.uniqueid, agent.uniqueid}, 501.0) == []  # still up on Asterisk
    calls = [c for m in end.messages() for c in after.feed(m, 502.0)]
    assert calls == whole and calls[0].routing == {"status": "matched", "rule": "VIP"}
    assert after.changes(503.0) == ({}, {trunk.linkedid})  # no longer open: its saved state can go


def test_a_restored_call_whose_channels_are_gone_ends_when_it_was_saved():
    s, trunk, agent, _ = _talking("pbx-31")
    before = CallTracker(CallConfig())
    for m in s.messages():
        before.feed(m, 10.0)
    changed, _ = before.changes(25.0, everything=True)  # saved 15 s after its last event
    after = CallTracker(CallConfig())
    after.restore(changed.values(), 900.0)
    (call,) = after.reconcile(set(), 901.0)
    assert (call.direction, call.outcome, call.talk_seconds) == ("inbound", "answered", 15)
    assert call.ended_at == datetime.fromtimestamp(s.t + 15, timezone.utc) and "AMI connection" in call.note


def test_restore_skips_what_it_cannot_read_and_forgets_it():
    tracker = CallTracker(CallConfig())
    assert tracker.restore([{"linked_id": "x.1", "legs": "nonsense"}, {"nope": 1}], 1.0) == 0
    assert tracker.open_calls == 0 and tracker.changes(2.0)[1] == {"x.1", "None"}


def channel_list(*chans: Chan, duration: str = "00:00:30", bridge: str = "b-1") -> list[Message]:
    return [Message.of({"Event": "CoreShowChannel", "Channel": c.name, "ChannelState": "6", "CallerIDNum": c.caller,
                        "CallerIDName": "", "Context": "crmroute-queue", "Exten": "103", "Uniqueid": c.uniqueid,
                        "Linkedid": c.linkedid, "Application": "Queue", "Duration": duration,
                        "BridgeId": bridge}) for c in chans]  # fmt: skip


def test_a_call_up_before_crmroute_started_is_rebuilt_from_the_channels_and_the_decision_log():
    s, trunk, agent, end = _talking("pbx-32")  # crmroute heard none of s (crashed, or not yet running)
    tracker = CallTracker(CallConfig(grace=0))
    decision = {"status": "matched", "rule": "VIP", "dest_type": "queue", "dest": "103", "did": "5551000",
                "caller": "+15551230011"}  # fmt: skip
    assert tracker.adopt(channel_list(trunk, agent), {trunk.uniqueid: decision}, 100.0, s.t) == []
    assert tracker.open_calls == 1
    (call,) = [c for m in end.messages() for c in tracker.feed(m, 140.0)]
    assert (call.linked_id, call.direction, call.outcome) == (trunk.linkedid, "inbound", "answered")
    assert (call.did, call.external_number, call.extension) == ("5551000", "+15551230011", "201")
    assert call.routing == {"status": "matched", "rule": "VIP", "dest_type": "queue", "dest": "103"}
    assert call.agi_uniqueids == [trunk.uniqueid] and call.talk_seconds == 70  # 30 s up when listed, 40 s more
    assert call.started_at == datetime.fromtimestamp(s.t - 30, timezone.utc)


def test_channels_without_a_decision_or_inbound_context_stay_internal_and_known_calls_are_untouched():
    s, trunk, agent, end = _talking("pbx-33")
    tracker = CallTracker(CallConfig(grace=0))
    for m in s.messages():
        tracker.feed(m, 10.0)
    tracker.adopt(channel_list(trunk, agent), {}, 20.0, s.t)  # known: the channel list adds nothing
    (call,) = [c for m in end.messages() for c in tracker.feed(m, 30.0)]
    assert (call.did, call.ring_seconds, call.talk_seconds) == ("5551000", 5, 40)
    s2 = Scenario(prefix="pbx-34")
    a = s2.channel("PJSIP/100-00000001", caller="100", context="from-internal", exten="201")
    b = s2.channel("PJSIP/201-00000002", caller="201", context="from-internal", exten="s", linked=a)
    tracker.adopt(channel_list(a, b), {}, 40.0, 1_000.0)
    (internal,) = tracker.reconcile(set(), 41.0) if tracker.connection_lost(40.5) is None else []
    assert internal.direction == "internal"
