"""AgiServer over real TCP sessions with the fake Asterisk."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from crmroute.agi.protocol import AgiChannel
from crmroute.agi.server import AgiServer, Outcome
from crmroute.errors import AgiHangup
from tests.agi.fakeasterisk import call_agi, running_server

MATCHED = Outcome(
    {
        "CRMROUTE_STATUS": "matched",
        "CRMROUTE_DEST_TYPE": "queue",
        "CRMROUTE_DEST": "103",
        "CRMROUTE_VALUE": "Gold",
        "CRMROUTE_RULE": "VIP",
        "CRMROUTE_ROW": "1",
    },
    ("crmroute-queue", "103", "1"),
)
ERROR = {"CRMROUTE_STATUS": "error"}


async def matched(channel: AgiChannel) -> Outcome:
    return MATCHED


async def settle(server: AgiServer, timeout: float = 10.0) -> None:
    """Wait until the server has finished every session."""
    async with asyncio.timeout(timeout):
        while server.active_sessions:
            await asyncio.sleep(0.005)


def errors_logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_happy_path_sets_variables_then_jumps():
    seen = []

    async def handler(channel: AgiChannel) -> Outcome:
        seen.append(channel.env)
        return MATCHED

    async with running_server(handler) as server:
        assert server.port != 0 and server.serving
        result = await call_agi(server.port, "did", env={"extension": "5552000"}, args=["x"])
        await settle(server)
        assert server.sessions_total == 1
    assert result.variables == MATCHED.variables
    assert result.jump == ("crmroute-queue", "103", "1")
    assert result.commands[-3:] == ["SET CONTEXT crmroute-queue", "SET EXTENSION 103", "SET PRIORITY 1"]
    assert list(result.variables) == list(MATCHED.variables)  # written in order
    assert result.closed_by_server
    assert seen[0].script == "did" and seen[0].extension == "5552000" and seen[0].args == ["x"]
    assert not server.serving


async def test_no_jump_and_label_priority():
    async def handler(channel: AgiChannel) -> Outcome:
        if channel.env.script == "nojump":
            return Outcome({"CRMROUTE_STATUS": "no_rule"}, None)
        return Outcome({}, ("ctx", "s", "lbl"))

    async with running_server(handler) as server:
        nojump = await call_agi(server.port, "nojump")
        label = await call_agi(server.port, "label")
    assert nojump.variables == {"CRMROUTE_STATUS": "no_rule"} and nojump.jump is None
    assert nojump.commands == ['SET VARIABLE CRMROUTE_STATUS "no_rule"']
    assert label.jump == ("ctx", "s", "lbl") and label.variables == {}


@pytest.mark.parametrize(
    "value",
    ['A "quoted" value with spaces', "back\\slash \\\"both\\\"", "  padded  ", "", "(parens) & ${NOT_EXPANDED}", "Zoë"],
)
async def test_values_arrive_intact(value):
    async def handler(channel: AgiChannel) -> Outcome:
        return Outcome({"CRMROUTE_VALUE": value}, ("crmroute-recording", "my recording", "1"))

    async with running_server(handler) as server:
        result = await call_agi(server.port)
    assert result.variables == {"CRMROUTE_VALUE": value}
    assert result.jump == ("crmroute-recording", "my recording", "1")


async def test_newlines_in_values_cannot_inject_commands():
    async def handler(channel: AgiChannel) -> Outcome:
        return Outcome({"CRMROUTE_VALUE": 'x"\nSET CONTEXT evil\n'}, None)

    async with running_server(handler) as server:
        result = await call_agi(server.port)
    assert result.commands == ['SET VARIABLE CRMROUTE_VALUE "x\\"SET CONTEXT evil"']
    assert result.context is None


async def test_handler_uses_the_channel():
    async def handler(channel: AgiChannel) -> Outcome:
        digits = await channel.get_data("beep", 500, 4)
        caller = await channel.get_variable("CALLERID(num)")
        return Outcome({"DIGITS": digits, "CALLER": caller or ""}, None)

    async with running_server(handler) as server:
        typed = await call_agi(server.port, "ivr/7", digits="4242")
        silent = await call_agi(server.port, "ivr/7", env={"callerid": "unknown"})
    assert typed.variables == {"DIGITS": "4242", "CALLER": "+15550001111"}
    assert silent.variables == {"DIGITS": "", "CALLER": "unknown"}


# -- who may connect ---------------------------------------------------------


async def test_refused_peer_is_closed_without_a_word(caplog):
    called = []

    async def handler(channel: AgiChannel) -> Outcome:
        called.append(1)
        return MATCHED

    async with running_server(handler, allow=["10.0.0.0/8", "::1"]) as server:
        result = await call_agi(server.port, timeout=10)
        assert server.refused_total == 1 and server.sessions_total == 0 and server.active_sessions == 0
        ok = AgiServer(handler, allow=["127.0.0.1"])
    assert result.closed_by_server
    assert result.commands == [] and result.variables == {}
    assert result.seconds < 5  # closed at once, not left to our 10 s
    assert not called
    assert any("refused" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert ok.is_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("allow", "peer", "allowed"),
    [
        (["127.0.0.0/8", "::1/128"], "127.0.0.1", True),
        (["127.0.0.0/8", "::1/128"], "127.9.9.9", True),
        (["127.0.0.0/8", "::1/128"], "::1", True),
        (["127.0.0.0/8", "::1/128"], "10.0.0.1", False),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),  # IPv4-mapped
        (["10.1.0.0/16"], "::ffff:10.1.2.3", True),
        (["10.1.0.0/16"], "::ffff:10.2.2.3", False),
        (["::ffff:10.1.0.0/112"], "::ffff:10.1.2.3", True),
        (["fe80::/10"], "fe80::1%eth0", True),
        (["192.168.1.10"], "192.168.1.10", True),
        (["192.168.1.10"], "192.168.1.11", False),
        (["0.0.0.0/0"], "::1", False),
        (["127.0.0.0/8"], "", False),
        (["127.0.0.0/8"], "not-an-ip", False),
    ],
)
def test_is_allowed(allow, peer, allowed):
    assert AgiServer(matched, allow=allow).is_allowed(peer) is allowed


# -- malformed input ---------------------------------------------------------


async def test_env_without_blank_line_times_out_and_next_call_is_served(caplog):
    called = []

    async def handler(channel: AgiChannel) -> Outcome:
        called.append(channel.env.script)
        return MATCHED

    async with running_server(handler, env_timeout=0.2, finish_timeout=0.5) as server:
        started = time.monotonic()
        stuck = await call_agi(server.port, "stuck", blank_line=False, timeout=10)
        assert time.monotonic() - started < 5  # closed by the server's 0.2 + 0.5 s, not by our 10 s
        good = await call_agi(server.port, "good")
        await settle(server)
    assert stuck.closed_by_server
    assert stuck.variables == ERROR and stuck.jump is None  # the socket worked: answered error
    assert good.variables == MATCHED.variables
    assert called == ["good"]
    assert any("malformed AGI environment" in r.getMessage() for r in caplog.records)


async def test_bare_connects_are_health_checks_counted_not_warned(caplog):
    async with running_server(matched, env_timeout=0.3, finish_timeout=0.5) as server:
        for _ in range(5):  # HAProxy / Kamailio / monitoring: connect, close, nothing sent
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await writer.wait_closed()
        half = await call_agi(server.port, "half", blank_line=False, timeout=10)  # a real peer cut short
        async with asyncio.timeout(10):
            while server.probes_total < 5 or server.active_sessions:
                await asyncio.sleep(0.005)
        good = await call_agi(server.port, "good")
    assert server.probes_total == 5 and server.sessions_total == 7
    assert good.variables == MATCHED.variables and half.jump is None
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "malformed AGI environment" in warned[0]  # only the one that sent something


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"agi_network: yes\nhello world\n\n",
        b"\n",
    ],
)
async def test_garbage_env_gets_error_status(raw):
    called = []

    async def handler(channel: AgiChannel) -> Outcome:
        called.append(1)
        return MATCHED

    async with running_server(handler, env_timeout=0.5, finish_timeout=0.5) as server:
        result = await call_agi(server.port, raw_env=raw, timeout=3)
        await settle(server)
        good = await call_agi(server.port)
    assert not called[:-1] and len(called) == 1
    assert result.closed_by_server
    assert result.variables == ERROR
    assert good.variables == MATCHED.variables


async def test_one_megabyte_line_is_refused(caplog):
    async with running_server(matched, env_timeout=10, finish_timeout=0.5) as server:
        started = time.monotonic()
        big = await call_agi(server.port, raw_env=b"agi_network: yes\nagi_x: " + b"a" * 1_000_000 + b"\n\n", timeout=15)
        assert time.monotonic() - started < 5  # refused on reading the line, not at the 10 s environment timeout
        await settle(server)
        assert server.active_sessions == 0
        good = await call_agi(server.port)
    assert big.closed_by_server or big.connection_error
    assert big.jump is None
    assert good.variables == MATCHED.variables
    assert any("longer than 8192 bytes" in r.getMessage() for r in caplog.records)


async def test_client_disconnects_mid_env(caplog):
    called = []

    async def handler(channel: AgiChannel) -> Outcome:
        called.append(1)
        return MATCHED

    async with running_server(handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_network_script: did\nagi_uni")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await settle(server)
        assert server.sessions_total == 1 and server.active_sessions == 0
        good = await call_agi(server.port)
    assert not called[:-1] and good.variables == MATCHED.variables
    assert not errors_logged(caplog)


# -- handler failures --------------------------------------------------------


async def test_handler_exception_becomes_error_status(caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        await channel.verbose("about to fail")
        raise KeyError("boom")

    async with running_server(handler) as server:
        env = {"uniqueid": "1700000000.42"}
        result = await call_agi(server.port, env=env)
        await settle(server)
    assert result.variables == ERROR and result.jump is None
    assert result.closed_by_server
    failures = [r for r in errors_logged(caplog) if "handler failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None  # with traceback
    assert failures[0].call_id == "1700000000.42"
    assert "1700000000.42" in failures[0].getMessage()


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"CRMROUTE_STATUS": "matched"},
        Outcome({"BAD NAME": "x"}, None),
        Outcome({"CRMROUTE_ROW": 1}, None),  # type: ignore[dict-item]
        Outcome({"CRMROUTE_STATUS": "matched"}, ("ctx", "", "1")),
        Outcome({"CRMROUTE_STATUS": "matched"}, ("ctx", "1")),  # type: ignore[arg-type]
        Outcome([("CRMROUTE_STATUS", "matched")], None),  # type: ignore[arg-type]
    ],
)
async def test_unusable_outcome_becomes_error_status(bad, caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        return bad

    async with running_server(handler) as server:
        result = await call_agi(server.port)
    assert result.variables == ERROR and result.jump is None
    assert errors_logged(caplog)


async def test_handler_taking_too_long_gets_error_in_time(caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        await asyncio.sleep(30)
        return MATCHED

    async with running_server(handler, session_timeout=0.3) as server:
        started = time.monotonic()
        result = await call_agi(server.port, timeout=5)
        elapsed = time.monotonic() - started
        await settle(server)
    assert result.variables == ERROR and result.jump is None
    assert result.closed_by_server
    assert 0.3 <= elapsed < 0.3 + 3  # the session timeout, not the handler's 30 s
    assert any("longer than 0.3 s" in r.getMessage() for r in errors_logged(caplog))


async def test_handler_stuck_in_a_command_still_gets_error_written():
    """Asterisk answers the stuck GET DATA late; the error status follows it."""

    async def slow_get_data(command: str):
        if command.startswith("GET DATA"):
            await asyncio.sleep(0.4)
            return "200 result= (timeout)"
        return None

    async def handler(channel: AgiChannel) -> Outcome:
        await channel.get_data("beep", 5000, 10)
        return MATCHED

    async with running_server(handler, session_timeout=0.1, finish_timeout=2) as server:
        result = await call_agi(server.port, respond=slow_get_data, timeout=5)
        await settle(server)
    assert result.commands == ["GET DATA beep 5000 10", 'SET VARIABLE CRMROUTE_STATUS "error"']
    assert result.variables == ERROR


async def test_asterisk_that_never_answers_is_left_in_time():
    async def never(command: str):
        await asyncio.sleep(30)

    async with running_server(matched, finish_timeout=0.3) as server:
        call = asyncio.create_task(call_agi(server.port, respond=never, timeout=4))
        while not server.sessions_total:
            await asyncio.sleep(0.005)
        started = time.monotonic()
        await settle(server)
        assert time.monotonic() - started < 3  # the server's 0.3 s finish timeout, not the fake's 4 s
        result = await call  # the fake, stuck like Asterisk would be, gives up on its own
    assert result.commands == ['SET VARIABLE CRMROUTE_STATUS "matched"']


# -- hang-ups ----------------------------------------------------------------


async def test_hangup_mid_decision_sets_variables_but_does_not_jump(caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        await asyncio.sleep(0.2)  # the CRM takes its time; the caller hangs up meanwhile
        return MATCHED

    async with running_server(handler) as server:
        result = await call_agi(server.port, hangup_delay=0.05)
        await settle(server)
        assert server.active_sessions == 0
    assert result.hangup_sent
    assert result.variables == MATCHED.variables  # allowed on a dead channel
    assert result.jump is None and not any(c.startswith("SET CONTEXT") for c in result.commands)
    assert result.closed_by_server
    assert not errors_logged(caplog)


async def test_hangup_during_commands_ends_quietly(caplog):
    caplog.set_level(logging.INFO, logger="crmroute.agi")
    async def handler(channel: AgiChannel) -> Outcome:
        await channel.verbose("one")
        await channel.exec("Ringing")  # 511 on the dead channel
        raise AssertionError("not reached")

    async with running_server(handler) as server:
        result = await call_agi(server.port, hangup_after=1)
        await settle(server)
    assert result.commands == ['VERBOSE "one" 1', "EXEC Ringing"]
    assert result.variables == {} and result.closed_by_server
    assert not errors_logged(caplog)
    assert any("hung up" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_get_data_after_hangup():
    async def handler(channel: AgiChannel) -> Outcome:
        await channel.get_data("beep", 1000, 4)
        return MATCHED

    async with running_server(handler) as server:
        result = await call_agi(server.port, hangup_after=0)
        await settle(server)
    assert result.commands == ["GET DATA beep 1000 4"]


async def test_asterisk_closing_mid_session_ends_quietly(caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        await channel.verbose("one")
        await channel.verbose("two")
        return MATCHED

    async with running_server(handler) as server:
        await call_agi(server.port, close_after=1)
        await settle(server)
        assert server.active_sessions == 0
    assert not errors_logged(caplog)


# -- many calls, closing ----------------------------------------------------


async def test_fifty_concurrent_sessions_one_hangs():
    async def handler(channel: AgiChannel) -> Outcome:
        if channel.env.uniqueid == "hangs":
            await asyncio.Event().wait()
        await asyncio.sleep(0.01)
        return Outcome({"CRMROUTE_STATUS": "matched", "CALL": channel.env.uniqueid}, ("crmroute-queue", "1", "1"))

    async def timed(uid: str):
        started = time.monotonic()
        result = await call_agi(server.port, env={"uniqueid": uid}, timeout=10)
        return uid, result, time.monotonic() - started

    async with running_server(handler, session_timeout=3.0) as server:
        calls = [timed("hangs")] + [timed(f"call-{n}") for n in range(49)]
        results = await asyncio.gather(*calls)
        await settle(server)
        assert server.sessions_total == 50 and server.active_sessions == 0
    for uid, result, elapsed in results:
        if uid == "hangs":
            assert result.variables == ERROR and 3.0 <= elapsed < 3.0 + 3
        else:
            assert result.variables == {"CRMROUTE_STATUS": "matched", "CALL": uid}
            assert result.jump == ("crmroute-queue", "1", "1")
            assert elapsed < 3.0, (uid, elapsed)  # none waited for the hanging one's session timeout


async def test_close_cancels_sessions_in_flight():
    started = asyncio.Event()

    async def handler(channel: AgiChannel) -> Outcome:
        started.set()
        await asyncio.sleep(30)
        return MATCHED

    server = AgiServer(handler, port=0)
    await server.start()
    call = asyncio.create_task(call_agi(server.port, timeout=5))
    await started.wait()
    assert server.active_sessions == 1
    t0 = time.monotonic()
    await server.close(grace=0.1)
    assert time.monotonic() - t0 < 5  # the grace, not the handler's 30 s
    result = await call
    assert server.active_sessions == 0
    assert result.closed_by_server and result.variables == {}
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_server_as_context_manager_and_double_start():
    async with AgiServer(matched, port=0) as server:
        assert server.serving
        with pytest.raises(RuntimeError):
            await server.start()
        result = await call_agi(server.port)
    assert result.variables == MATCHED.variables


async def test_log_lines_name_the_call(caplog):
    caplog.set_level(logging.DEBUG, logger="crmroute.agi")
    async with running_server(matched) as server:
        await call_agi(server.port, env={"uniqueid": "1700000000.7"})
        await settle(server)
    session_records = [r for r in caplog.records if hasattr(r, "call_id")]
    assert session_records
    assert all(r.call_id == "1700000000.7" for r in session_records if "FastAGI did" in r.getMessage())
    assert any("answered CRMROUTE_STATUS=matched" in r.getMessage() for r in session_records)
    assert all("[1700000000.7]" in r.getMessage() for r in session_records if r.call_id == "1700000000.7")


async def test_hangup_from_handler_is_not_an_error(caplog):
    async def handler(channel: AgiChannel) -> Outcome:
        raise AgiHangup("gone")

    async with running_server(handler) as server:
        result = await call_agi(server.port)
    assert result.variables == {} and result.closed_by_server
    assert not errors_logged(caplog)
