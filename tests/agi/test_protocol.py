"""The wire: environment block, reply parsing, commands, quoting."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from crmroute.agi.protocol import (
    AgiChannel,
    AgiEnv,
    Reply,
    parse_reply,
    quote,
    set_variable_line,
    waited_to_be_accepted,
)
from crmroute.errors import AgiHangup, AgiProtocolError
from tests.agi.fakeasterisk import (
    MemoryTransport,
    default_env,
    env_bytes,
    memory_connection,
    parse_args,
)

ENV_LINES = [
    "agi_network: yes",
    "agi_network_script: route?did=5551000",
    "agi_request: agi://127.0.0.1:4573/route?did=5551000",
    "agi_channel: Local/5551000@test-inbound-00000000;2",
    "agi_uniqueid: asttest-1795657573.1",
    "agi_callerid: +15550001111",
    "agi_calleridname: Test Caller",
    "agi_dnid: unknown",
    "agi_context: from-did",
    "agi_extension: 5551000",
    "agi_accountcode: ",
    "agi_arg_1: arg one",
    "agi_arg_2: arg2",
    "",
]


def channel(
    replies: list[str], *, eof: bool = True, max_line: int = 8192, **kwargs
) -> tuple[AgiChannel, MemoryTransport]:
    """A channel whose connection has read an environment, then holds ``replies`` (then EOF)."""
    connection, transport = memory_connection(["agi_uniqueid: 1.1", "", *replies], eof=eof, max_line=max_line)
    return AgiChannel(connection, AgiEnv({"uniqueid": "1.1"}), **kwargs), transport


async def read_env(lines: list[str], *, eof: bool = True, max_line: int = 8192, timeout: float = 1) -> AgiEnv:
    connection, _ = memory_connection(lines, eof=eof, max_line=max_line)
    return await connection.read_env(timeout)


async def read_env_bytes(data: bytes, *, eof: bool = False, max_line: int = 8192) -> AgiEnv:
    connection, _ = memory_connection(max_line=max_line, eof=False)
    connection.data_received(data)
    if eof:
        connection.eof_received()
    return await connection.read_env(1)


# -- environment -------------------------------------------------------------


async def test_env_fields():
    env = await read_env(ENV_LINES)
    assert env.script == "route?did=5551000"
    assert env.path == "route"
    assert env.query == {"did": "5551000"}
    assert env.request == "agi://127.0.0.1:4573/route?did=5551000"
    assert env.uniqueid == "asttest-1795657573.1"
    assert env.callerid == "+15550001111"
    assert env.calleridname == "Test Caller"
    assert env.extension == "5551000"
    assert env.context == "from-did"
    assert env.channel == "Local/5551000@test-inbound-00000000;2"
    assert env.args == ["arg one", "arg2"]
    assert env.get("accountcode") == ""
    assert env.get("agi_accountcode") == ""
    assert env.get("missing") is None
    assert "agi_network" in env and "network" in env


async def test_env_unknown_means_empty_but_get_is_raw():
    env = await read_env(ENV_LINES)
    assert env.dnid == ""
    assert env.get("dnid") == "unknown"
    env = AgiEnv({"callerid": "unknown", "calleridname": "unknown"})
    assert env.callerid == "" and env.calleridname == ""


async def test_env_crlf_and_missing_fields():
    env = await read_env_bytes(b"agi_network: yes\r\nagi_network_script: ivr/7\r\nagi_accountcode:\r\n\r\n")
    assert env.script == "ivr/7"
    assert env.path == "ivr/7"
    assert env.get("accountcode") == ""
    assert env.args == [] and env.uniqueid == "" and env.callerid == ""


async def test_the_connection_is_timed():
    before = time.monotonic()
    connection, _ = memory_connection(ENV_LINES)
    await connection.read_env(1)
    assert before <= connection.connected_at <= time.monotonic()  # the call's deadline counts from here


async def test_env_leaves_the_rest_of_the_stream():
    connection, _ = memory_connection([*ENV_LINES, "200 result=1 (next)"])
    env = await connection.read_env(1)
    assert await AgiChannel(connection, env).get_variable("X") == "next"


async def test_env_args_stop_at_a_gap():
    assert AgiEnv({"arg_1": "a", "arg_3": "c"}).args == ["a"]


async def test_env_from_fake_asterisk_bytes():
    env = await read_env_bytes(env_bytes(default_env(4573, "ivr/5", args=["x"], callerid="unknown")))
    assert env.script == "ivr/5" and env.args == ["x"] and env.callerid == ""


async def test_env_timeout_without_blank_line():
    started = time.monotonic()
    with pytest.raises(AgiProtocolError, match="within 0.1 s"):
        await read_env(ENV_LINES[:-1], eof=False, timeout=0.1)
    assert time.monotonic() - started < 1


async def test_env_eof():
    with pytest.raises(AgiProtocolError, match="closed"):
        await read_env(ENV_LINES[:3])


async def test_env_partial_line_then_eof():
    with pytest.raises(AgiProtocolError, match="closed"):
        await read_env_bytes(b"agi_network: yes\nagi_netw", eof=True)


@pytest.mark.parametrize(
    "line",
    ["GET / HTTP/1.1", "hello", "agi_network yes", "agi_: x", "network: yes", "\x00\x01\x02"],
)
async def test_env_garbage(line):
    with pytest.raises(AgiProtocolError, match="not an AGI environment line"):
        await read_env(["agi_network: yes", line, ""])


async def test_env_empty_block():
    with pytest.raises(AgiProtocolError, match="empty"):
        await read_env([""])


async def test_env_repeated_name():
    with pytest.raises(AgiProtocolError, match="repeats"):
        await read_env(["agi_network: yes", "agi_network: no", ""])


async def test_env_too_many_lines():
    lines = [f"agi_x{n}: {n}" for n in range(250)] + [""]
    with pytest.raises(AgiProtocolError, match="longer than 200 lines"):
        await read_env(lines)


async def test_env_line_too_long_is_not_buffered():
    connection, _ = memory_connection(eof=False)
    for _ in range(100):  # 1 MB without a newline, as the socket delivers it
        connection.data_received(b"agi_network: yes\nagi_x: " + b"a" * 10_000)
    assert len(connection._tail) == 0  # refused at once, nothing kept
    with pytest.raises(AgiProtocolError, match="longer than 8192 bytes"):
        await connection.read_env(1)


async def test_env_line_over_max_line_in_one_chunk():
    with pytest.raises(AgiProtocolError, match="longer than 1000 bytes"):
        await read_env(["agi_x: " + "a" * 5000, ""], max_line=1000)


# -- replies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "result", "data"),
    [
        ("200 result=1", "1", ""),
        ("200 result=0", "0", ""),
        ("200 result=-2", "-2", ""),
        ("200 result=4242", "4242", ""),
        ("200 result= (timeout)", "", "timeout"),
        ("200 result=12 (timeout)", "12", "timeout"),
        ("200 result=1 (+15550001111)", "1", "+15550001111"),
        ("200 result=1 (a value (with) \"parens\" )", "1", 'a value (with) "parens" '),
        ("200 result=1 ()", "1", ""),
        ("200 result=0 endpos=12345", "0", ""),
        ("200 result=1 (dtmf) endpos=160", "1", "dtmf"),
    ],
)
def test_parse_reply(line, result, data):
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data, reply.raw) == (200, result, data, line)


@pytest.mark.parametrize("line", ["200", "200 foo", "hello", "20 result=1", "200-result=1"])
def test_parse_reply_garbage(line):
    with pytest.raises(AgiProtocolError):
        parse_reply(line)


def test_reply_number():
    assert Reply(200, "-2").number == -2
    assert Reply(200, "").number is None


# -- commands ----------------------------------------------------------------


async def test_command_writes_one_line_and_reads_reply():
    ch, writer = channel(["200 result=1 (x y)"])
    reply = await ch.command("GET VARIABLE FOO")
    assert writer.lines == ["GET VARIABLE FOO"]
    assert reply == Reply(200, "1", "x y", "200 result=1 (x y)")
    assert not ch.hung_up


async def test_hangup_line_before_reply():
    ch, _ = channel(["HANGUP", "200 result=1"])
    reply = await ch.set_variable("A", "b")
    assert reply.result == "1"
    assert ch.hung_up


async def test_hangup_line_after_reply_is_seen_by_the_next_command():
    ch, _ = channel(["200 result=1", "HANGUP", "511 Command Not Permitted on a dead channel or intercept routine"])
    await ch.set_variable("A", "b")
    assert not ch.hung_up
    with pytest.raises(AgiHangup):
        await ch.set_context("x")
    assert ch.hung_up


async def test_511_raises_hangup_and_channel_stays_usable():
    ch, _ = channel(["511 Command Not Permitted on a dead channel or intercept routine", "200 result=1"])
    with pytest.raises(AgiHangup):
        await ch.exec("Ringing")
    assert ch.hung_up
    assert (await ch.set_variable("A", "b")).result == "1"


async def test_510():
    ch, _ = channel(["510 Invalid or unknown command", "200 result=1"])
    with pytest.raises(AgiProtocolError, match="invalid or unknown command"):
        await ch.command("FOO BAR")
    assert (await ch.set_variable("A", "b")).result == "1"  # still in step


async def test_520_usage_block_is_consumed():
    ch, _ = channel(
        [
            "520-Invalid command syntax.  Proper usage follows:",
            "Sets a variable to the current channel.",
            "",
            "520 End of proper usage.",
            "200 result=1",
        ]
    )
    with pytest.raises(AgiProtocolError, match="invalid syntax for SET VARIABLE: Sets a variable"):
        await ch.command("SET VARIABLE")
    assert (await ch.set_variable("A", "b")).result == "1"
    assert not ch.broken


async def test_520_single_line():
    ch, _ = channel(["520 Invalid command syntax.  Proper usage not available.", "200 result=1"])
    with pytest.raises(AgiProtocolError, match="invalid syntax"):
        await ch.command("GET DATA")
    assert (await ch.set_variable("A", "b")).result == "1"


@pytest.mark.parametrize("line", ["garbage", "200 nonsense", "300-multi", "", "OK"])
async def test_garbage_reply_breaks_the_channel(line):
    ch, writer = channel([line, "200 result=1"])
    with pytest.raises(AgiProtocolError):
        await ch.set_variable("A", "b")
    assert ch.broken
    with pytest.raises(AgiProtocolError, match="out of step"):
        await ch.set_variable("C", "d")
    assert writer.lines == ['SET VARIABLE A "b"']


async def test_other_error_code():
    ch, _ = channel(["503 result=-2 Memory allocation failure"])
    with pytest.raises(AgiProtocolError, match="503"):
        await ch.command("ANSWER")


async def test_eof_is_a_hangup():
    ch, _ = channel([])
    with pytest.raises(AgiHangup, match="closed"):
        await ch.set_variable("A", "b")
    with pytest.raises(AgiHangup):
        await ch.set_variable("A", "b")


async def test_reply_line_too_long():
    ch, _ = channel([], eof=False, max_line=100)
    ch.connection.data_received(b"200 result=1 (" + b"x" * 10_000)
    with pytest.raises(AgiProtocolError, match="longer than 100 bytes"):
        await ch.get_variable("X")
    assert ch.broken


async def test_write_to_closed_connection_is_a_hangup():
    ch, transport = channel([], eof=False)
    transport.closed = True
    with pytest.raises(AgiHangup):
        await ch.set_variable("A", "b")


async def test_timeout_then_late_reply_is_skipped():
    ch, _ = channel([], eof=False, reply_timeout=0.05)
    with pytest.raises(AgiProtocolError, match=r"no reply to GET DATA within 0.05 s"):
        await ch.command("GET DATA beep 100 1")
    # the late reply to GET DATA arrives, then the reply to the next command
    ch.connection.data_received(b"200 result=5\n200 result=1 (value)\n")
    assert await ch.get_variable("X") == "value"


async def test_cancelled_command_is_caught_up():
    ch, _ = channel([], eof=False)
    task = asyncio.create_task(ch.command("GET DATA beep 100 1"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ch.connection.data_received(b"520-Invalid\nusage\n520 End of proper usage.\nHANGUP\n200 result=1\n")
    assert (await ch.set_variable("A", "b")).result == "1"
    assert ch.hung_up


async def test_commands_are_serialised():
    ch, writer = channel(["200 result=1 (a)", "200 result=1 (b)"])
    a, b = await asyncio.gather(ch.get_variable("A"), ch.get_variable("B"))
    assert (a, b) == ("a", "b")
    assert writer.lines == ["GET VARIABLE A", "GET VARIABLE B"]


async def test_a_batch_sends_each_command_only_after_the_previous_reply():
    ch, transport = channel([], eof=False)
    batch = asyncio.create_task(ch.commands(["SET VARIABLE A 1", "SET VARIABLE B 2", "SET CONTEXT c"]))
    await asyncio.sleep(0)
    assert transport.lines == ["SET VARIABLE A 1"]
    ch.connection.data_received(b"200 result=1\n")
    assert transport.lines == ["SET VARIABLE A 1", "SET VARIABLE B 2"]  # sent from the reply, no wake-up between
    ch.connection.data_received(b"HANGUP\n200 resu")
    assert len(transport.lines) == 2  # half a reply is no reply
    ch.connection.data_received(b"lt=1\n")
    assert transport.lines[-1] == "SET CONTEXT c"
    assert not batch.done()
    ch.connection.data_received(b"200 result=0\n")
    assert [r.result for r in await batch] == ["1", "1", "0"]
    assert ch.hung_up


async def test_a_batch_stops_at_the_first_failure():
    ch, transport = channel(["200 result=1", "511 Command Not Permitted on a dead channel or intercept routine"])
    with pytest.raises(AgiHangup):
        await ch.commands(["SET VARIABLE A 1", "SET CONTEXT c", "SET EXTENSION e", "SET PRIORITY 1"])
    assert transport.lines == ["SET VARIABLE A 1", "SET CONTEXT c"]


async def test_a_timed_out_batch_sends_no_more_and_its_late_reply_is_dropped():
    ch, transport = channel([], eof=False)
    with pytest.raises(AgiProtocolError, match="no reply to SET VARIABLE within 0.05 s"):
        await ch.commands([set_variable_line("A", "1"), set_variable_line("B", "2")], timeout=0.05)
    ch.connection.data_received(b"200 result=1\n")  # the late reply to A: B is not sent
    assert transport.lines == ['SET VARIABLE A "1"']
    next_one = asyncio.create_task(ch.get_variable("C"))
    await asyncio.sleep(0)
    assert transport.lines[-1] == "GET VARIABLE C"
    ch.connection.data_received(b"200 result=1 (c)\n")
    assert await next_one == "c"


async def test_reading_pauses_while_nobody_asks_for_replies():
    ch, transport = channel([], eof=False)
    ch.connection.data_received(b"HANGUP\n" * 300)  # nothing in flight: queued
    assert not transport.reading
    command = asyncio.create_task(ch.set_variable("A", "b"))
    await asyncio.sleep(0)  # the queued lines are taken while it waits: reading resumes
    assert transport.reading and ch.hung_up
    ch.connection.data_received(b"200 result=1\n")
    assert (await command).result == "1"
@pytest.mark.parametrize("line", ["A\nB", "A\rB", "SET VARIABLE X \"a\x00\"", "", "   "])
async def test_command_must_be_one_line(line):
    ch, writer = channel(["200 result=1"])
    with pytest.raises(ValueError):
        await ch.command(line)
    assert writer.data == b""


# -- helpers and quoting -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("matched", '"matched"'),
        ('A "quoted" value with spaces', '"A \\"quoted\\" value with spaces"'),
        ("back\\slash", '"back\\\\slash"'),
        ('end\\"', '"end\\\\\\""'),
        ("", '""'),
        ("two\r\nlines\n", '"twolines"'),
        ("${EXTEN} $[1+1]", '"${EXTEN} $[1+1]"'),
        ("Zoë", '"Zoë"'),
    ],
)
async def test_set_variable_quoting_round_trips(value, wire):
    assert quote(value) == wire
    ch, writer = channel(["200 result=1"])
    await ch.set_variable("CRMROUTE_VALUE", value)
    assert writer.lines == [f"SET VARIABLE CRMROUTE_VALUE {wire}"]
    # Asterisk's argument parser gives back the value (minus CR/LF)
    assert parse_args(writer.lines[0])[3] == value.replace("\r", "").replace("\n", "")


@pytest.mark.parametrize("name", ["", "A B", 'A"', "A\nB", "A\\B"])
async def test_set_variable_bad_name(name):
    ch, writer = channel(["200 result=1"])
    with pytest.raises(ValueError):
        await ch.set_variable(name, "x")
    assert writer.data == b""


async def test_get_variable():
    ch, writer = channel(["200 result=1 (+15550001111)", "200 result=0", "200 result=1 ()"])
    assert await ch.get_variable("CALLERID(num)") == "+15550001111"
    assert await ch.get_variable("NO_SUCH_VAR") is None
    assert await ch.get_variable("EMPTY") == ""
    assert writer.lines == ["GET VARIABLE CALLERID(num)", "GET VARIABLE NO_SUCH_VAR", "GET VARIABLE EMPTY"]


async def test_get_data():
    ch, writer = channel(["200 result=4242", "200 result= (timeout)", "200 result=12 (timeout)"])
    assert await ch.get_data("beep", 4000, 10) == "4242"
    assert await ch.get_data("beep", 800, 4) == ""
    assert await ch.get_data("custom/greeting", 800, 4) == "12"
    assert writer.lines == ["GET DATA beep 4000 10", "GET DATA beep 800 4", "GET DATA custom/greeting 800 4"]


async def test_get_data_hangup():
    ch, _ = channel(["HANGUP", "200 result=-1"])
    with pytest.raises(AgiHangup):
        await ch.get_data("beep", 1000, 4)
    assert ch.hung_up


async def test_get_data_waits_longer_than_the_reply_timeout():
    ch, _ = channel([], eof=False, reply_timeout=0.05)
    task = asyncio.create_task(ch.get_data("beep", 100, 2))  # allowed 0.05 + 0.2 s
    await asyncio.sleep(0.15)
    ch.connection.data_received(b"200 result=42\n")
    assert await task == "42"


@pytest.mark.parametrize(("sound", "timeout_ms", "digits"), [("a b", 1, 1), ("", 1, 1), ("beep", 0, 1), ("beep", 1, 0)])
async def test_get_data_bad_arguments(sound, timeout_ms, digits):
    ch, _ = channel([])
    with pytest.raises(ValueError):
        await ch.get_data(sound, timeout_ms, digits)


async def test_exec_and_jump_helpers():
    ch, writer = channel(["200 result=0"] * 8 + ["200 result=-2"])
    await ch.exec("Ringing")
    await ch.exec("StartMusicOnHold", "default")
    await ch.exec("Dial", "PJSIP/100", "20")
    await ch.exec("Playback", "hello world")
    await ch.set_context("crmroute-queue")
    await ch.set_extension("103")
    await ch.set_priority(1)
    await ch.set_priority("lbl")
    assert (await ch.exec("NoSuchApp", "x")).result == "-2"
    assert writer.lines == [
        "EXEC Ringing",
        "EXEC StartMusicOnHold default",
        "EXEC Dial PJSIP/100,20",
        'EXEC Playback "hello world"',
        "SET CONTEXT crmroute-queue",
        "SET EXTENSION 103",
        "SET PRIORITY 1",
        "SET PRIORITY lbl",
        "EXEC NoSuchApp x",
    ]


async def test_jump_values_with_spaces_are_quoted_and_newlines_dropped():
    ch, writer = channel(["200 result=0"] * 2)
    await ch.set_extension("my recording")
    await ch.set_context("ctx\nSET VARIABLE X 1")
    assert writer.lines == ['SET EXTENSION "my recording"', 'SET CONTEXT "ctxSET VARIABLE X 1"']


@pytest.mark.parametrize("call", ["set_context", "set_extension", "set_priority"])
async def test_jump_helpers_refuse_empty(call):
    ch, _ = channel([])
    with pytest.raises(ValueError):
        await getattr(ch, call)("")


async def test_verbose():
    ch, writer = channel(["200 result=1"])
    await ch.verbose("hello from agi", 1)
    assert writer.lines == ['VERBOSE "hello from agi" 1']


def test_time_a_connection_waited_to_be_accepted_comes_from_the_kernel():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as client:
            client.sendall(b"agi_network: yes\n")
            time.sleep(0.3)  # a busy event loop, not accepting
            accepted, _ = listener.accept()
            with accepted:
                waited = waited_to_be_accepted(SocketOnly(accepted))
    assert 0.25 <= waited <= 1.0
    assert waited_to_be_accepted(MemoryTransport()) == 0.0  # no socket: nothing to ask


class SocketOnly:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default
