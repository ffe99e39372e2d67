"""The AMI wire: messages exactly as Asterisk 22 sends them, any chunking, and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmroute.calllog.ami import MAX_LINE, Message, Parser, encode_action
from tests.calllog.fakeami import FIXTURES, recorded_messages

STREAMS = ("inbound-answered", "inbound-missed", "outbound")


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_streams_parse_whole(name):
    data = (FIXTURES / f"ami-{name}.txt").read_bytes()
    assert b"\r\n" in data and data.count(b"\r\n\r\n") > 50  # CRLF lines, blank line between events
    parser = Parser()
    messages = parser.feed(data)
    assert parser.banner == "Asterisk Call Manager/11.0.0" and parser.garbage == 0
    assert messages[0].response == "Success" and messages[0].action_id == "login-1"
    assert messages[-1].response == "Goodbye"
    assert sum(1 for m in messages if m.event) == data.count(b"\r\nEvent: ") + data.startswith(b"Event: ")


def test_values_keep_colons_spaces_and_emptiness():
    (first,) = [m for m in recorded_messages("inbound-answered") if m.event == "SuccessfulAuth"]
    assert first.get("EventTV") == "2026-11-26T01:47:51.601+0000"
    assert first.get("LocalAddress") == "IPV4/TCP/127.0.0.1/5038"
    agi = next(m for m in recorded_messages("inbound-answered") if m.event == "Newexten" and m.get("Application") == "AGI")
    assert agi.get("AppData") == "agi://127.0.0.1:4573/did"
    assert agi.get("AccountCode") == "" and "AccountCode" in agi  # "AccountCode: " with a trailing space
    cid = next(m for m in recorded_messages("inbound-answered") if m.event == "NewCallerid")
    assert cid.get("CID-CallingPres") == "0 (Presentation Allowed, Not Screened)"
    cdr = next(m for m in recorded_messages("inbound-answered") if m.event == "Cdr")
    assert cdr.get("CallerID") == '"Alice Gold" <+15551230001>'
    assert cdr.get("uniqueid") == cdr.get("UniqueID")  # keys ignore case


def test_repeated_keys_and_response_follows():
    parser = Parser()
    data = (b"Asterisk Call Manager/2.10.6\r\n"
            b"Response: Success\r\nActionID: 1\r\nOutput: line one\r\nOutput: line: two\r\n\r\n"
            b"Response: Follows\r\nPrivilege: Command\r\nActionID: 2\r\n"
            b"Name/username    Host: 10.0.0.1\n\nsecond block\r\n--END COMMAND--\r\n\r\n"
            b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n")  # fmt: skip
    one, two, three = parser.feed(data)
    assert one.get_all("Output") == ["line one", "line: two"]
    assert two.response == "Follows" and two.action_id == "2"
    assert two.output == ("Name/username    Host: 10.0.0.1", "", "second block")
    assert three.event == "Hangup" and parser.garbage == 0


def test_old_style_follows_ends_on_the_same_line():
    parser = Parser()
    (message,) = parser.feed(b"Response: Follows\r\nPrivilege: Command\r\nActionID: 3\r\nNo such command--END COMMAND--\r\n\r\n")
    assert message.output == ("No such command",)


def test_lf_only_line_ends_are_accepted():
    (message,) = Parser().feed(b"Event: Newchannel\nUniqueid: 1.2\nLinkedid: 1.2\n\n")
    assert message.as_dict() == {"Event": "Newchannel", "Uniqueid": "1.2", "Linkedid": "1.2"}


def test_garbage_is_counted_and_skipped():
    parser = Parser()
    data = (b"Asterisk Call Manager/11.0.0\r\n"
            b"this line has no colon\r\n\r\n"  # a message of garbage only: dropped
            b"Binary\xff: \xc3\x28 value\r\nEvent: Odd\r\n\r\n"  # bytes that are not UTF-8
            b"Key: value without event or response\r\n\r\n"  # neither Event nor Response
            b"\r\n\r\n\r\n"  # stray blank lines
            + b"X" * (MAX_LINE + 10) + b"\r\n"  # an overlong line
            + b"Event: Hangup\r\nUniqueid: 9.9\r\n\r\n")  # fmt: skip
    messages = parser.feed(data)
    assert [m.event for m in messages] == ["Odd", "Hangup"]
    assert messages[0].get("Binary\ufffd") == "\ufffd( value"
    assert parser.garbage == 3


def test_an_endless_line_is_dropped_without_growing():
    parser = Parser()
    for _ in range(20):
        parser.feed(b"Y" * 10_000)
    assert len(parser._buffer) <= MAX_LINE
    (message,) = parser.feed(b"tail\r\nEvent: Ok\r\n\r\n")
    assert message.event == "Ok" and parser.garbage == 1


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=60))
def test_any_chunking_gives_the_same_messages(cuts):
    data = (FIXTURES / "ami-inbound-missed.txt").read_bytes()
    whole = [m.headers for m in Parser().feed(data)]
    parser, found, at = Parser(), [], 0
    for size in cuts:
        found += parser.feed(data[at:at + size])
        at += size
    found += parser.feed(data[at:])
    assert [m.headers for m in found] == whole


def test_actions_are_encoded_with_crlf_and_refuse_injection():
    assert encode_action({"Action": "Login", "Username": "crm", "Secret": "a b:c"}) == \
        b"Action: Login\r\nUsername: crm\r\nSecret: a b:c\r\n\r\n"
    assert encode_action({"Action": "Originate", "Variable": ["A=1", "B=2"]}).count(b"Variable: ") == 2
    with pytest.raises(ValueError):
        encode_action({"Action": "Ping\r\nAction: Logoff"})


def test_message_of():
    message = Message.of({"Event": "Hangup"}, Uniqueid="1.1", received=5.0)
    assert message.event == "Hangup" and message["uniqueid"] == "1.1" and message.received == 5.0
    with pytest.raises(KeyError):
        message["Nope"]
