"""Replay the FastAGI sessions recorded from a real Asterisk 22.10.1.

Asterisk answers commands strictly in order, so its side of a recording
(``<`` lines) is one stream: the environment, then every reply. Feeding
that stream to ``read_env`` and ``AgiChannel`` while sending the
recording's own commands (``>`` lines) must give each command the reply
Asterisk gave it. (The recorder read one line per command, so in ``badcmd``
its transcript interleaves the two 520 usage blocks with later commands;
the stream itself is what Asterisk wrote.)
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from crmroute.agi.protocol import AgiChannel, Reply
from crmroute.agi.server import Outcome
from crmroute.errors import AgiHangup, AgiProtocolError
from tests.agi.conftest import sessions_ended
from tests.agi.fakeasterisk import memory_connection, running_server

# A copy of shared/reference/asterisk/sessions-22.10.1.jsonl (real Asterisk 22.10.1).
RECORDING = Path(__file__).parent / "fixtures" / "sessions-22.10.1.jsonl"


def load_sessions() -> dict[str, dict]:
    sessions = {}
    for line in RECORDING.read_text().splitlines():
        if line.strip():
            session = json.loads(line)
            sessions[session["script"]] = session
    return sessions


SESSIONS = load_sessions()


def asterisk_lines(session: dict) -> list[str]:
    return [line for direction, line in session["transcript"] if direction == "<"]


def server_commands(session: dict) -> list[str]:
    return [line for direction, line in session["transcript"] if direction == ">"]


def ok(result: str, data: str = "") -> tuple:
    return ("reply", result, data)


# What each recorded command must come to: a reply (result, data) or an error.
EXPECTED: dict[str, list[tuple]] = {
    "route?did=5551000": [
        ok("1", "+15550001111"),  # GET VARIABLE CALLERID(num)
        ok("1", "+15550001111"),  # GET FULL VARIABLE ${CALLERID(num)}
        ok("0"),  # GET VARIABLE NO_SUCH_VAR
        ok("1"),
        ok("1"),
        ok("1"),
        ok("0"),  # SET CONTEXT
        ok("0"),  # SET EXTENSION
        ok("0"),  # SET PRIORITY
    ],
    "ivr/7": [ok("4242"), ok("1")],
    "ivrtimeout": [ok("", "timeout"), ok("1")],
    "badcmd": [
        ("error", AgiProtocolError, "invalid or unknown command"),  # FOO BAR -> 510
        ("error", AgiProtocolError, "Stream the given .* Returns the digits"),  # GET DATA -> 520 block
        ("error", AgiProtocolError, "Sets a variable"),  # SET VARIABLE -> 520 block
        ("error", AgiHangup, "closed"),  # the recording ends before the last two replies
        ("error", AgiHangup, "closed"),
    ],
    "execs": [ok("0"), ok("0"), ok("0"), ok("-2"), ok("4"), ok("1")],
    "hangup": [ok("1"), ok("1"), ("error", AgiHangup, "dead")],
    "label": [ok("0"), ok("0"), ok("0")],
}


def test_every_recorded_session_has_expectations():
    assert set(SESSIONS) == set(EXPECTED)
    for script, session in SESSIONS.items():
        assert len(server_commands(session)) == len(EXPECTED[script]), script


async def run_commands(channel: AgiChannel, commands: list[str]) -> list[tuple]:
    outcomes: list[tuple] = []
    for command in commands:
        try:
            reply = await channel.command(command, timeout=1)
        except (AgiHangup, AgiProtocolError) as exc:
            outcomes.append(("error", type(exc), str(exc)))
        else:
            assert isinstance(reply, Reply) and reply.code == 200
            outcomes.append(("reply", reply.result, reply.data))
    return outcomes


def sent(script: str, commands: list[str]) -> list[str]:
    """The commands that reach the wire: none after Asterisk closed the connection."""
    return commands[:4] if script == "badcmd" else commands


def check(outcomes: list[tuple], expected: list[tuple]) -> None:
    assert len(outcomes) == len(expected)
    for got, want in zip(outcomes, expected):
        if want[0] == "reply":
            assert got == want
        else:
            assert got[0] == "error" and got[1] is want[1], got
            assert re.search(want[2], got[2]), got


@pytest.mark.parametrize("script", sorted(EXPECTED))
async def test_env_of_recorded_session(script):
    session = SESSIONS[script]
    lines = asterisk_lines(session)
    env = await memory_connection(lines)[0].read_env(1)
    env_lines = lines[: lines.index("")]
    assert len(env) == len(env_lines)
    assert env.script == script
    assert env.request == f"agi://127.0.0.1:4573/{script}"
    assert env.get("network") == "yes"
    assert env.get("version") == "22.10.1"
    assert env.get("accountcode") == ""
    assert env.uniqueid.startswith("asttest-")
    assert env.channel.startswith("Local/")
    if script == "route?did=5551000":
        assert (env.callerid, env.calleridname, env.extension, env.dnid) == ("+15550001111", "Test Caller", "5551000", "")
        assert env.path == "route" and env.query == {"did": "5551000"}
        assert env.args == []
    elif script == "ivr/7":
        assert (env.callerid, env.context, env.extension) == ("", "cap-ivr", "s")
        assert env.args == []
    else:
        assert env.args == ["arg one", "arg2"]
        assert env.context == "cap-misc"


@pytest.mark.parametrize("script", sorted(EXPECTED))
async def test_replay_recorded_replies(script):
    session = SESSIONS[script]
    connection, writer = memory_connection(asterisk_lines(session))
    channel = AgiChannel(connection, await connection.read_env(1))
    commands = server_commands(session)
    check(await run_commands(channel, commands), EXPECTED[script])
    assert writer.lines == sent(script, commands)
    assert channel.hung_up == (script == "hangup")


async def test_recorded_hangup_arrives_before_the_reply():
    session = SESSIONS["hangup"]
    connection, _ = memory_connection(asterisk_lines(session))
    channel = AgiChannel(connection, await connection.read_env(1))
    assert not channel.hung_up
    assert (await channel.set_variable("CRMROUTE_STATUS", "matched")).result == "1"
    assert channel.hung_up  # seen while waiting for that reply
    assert (await channel.set_variable("CRMROUTE_DEST", "103")).result == "1"  # allowed on a dead channel
    with pytest.raises(AgiHangup):
        await channel.set_context("x")


async def test_helpers_write_the_recorded_commands():
    """The helper methods produce byte for byte what the recorder sent."""
    cases = {
        "route?did=5551000": lambda ch: [
            ch.get_variable("CALLERID(num)"),
            ch.command("GET FULL VARIABLE ${CALLERID(num)}"),
            ch.get_variable("NO_SUCH_VAR"),
            ch.set_variable("CRMROUTE_STATUS", "matched"),
            ch.set_variable("CRMROUTE_VALUE", 'A "quoted" value with spaces'),
            ch.set_variable("CRMROUTE_DEST", "103"),
            ch.set_context("crmroute-queue"),
            ch.set_extension("103"),
            ch.set_priority(1),
        ],
        "ivr/7": lambda ch: [ch.get_data("beep", 4000, 10), ch.set_variable("CRMROUTE_STATUS", "matched")],
        "ivrtimeout": lambda ch: [ch.get_data("beep", 800, 4), ch.set_variable("CRMROUTE_STATUS", "default")],
        "execs": lambda ch: [
            ch.exec("Ringing"),
            ch.exec("StartMusicOnHold", "default"),
            ch.exec("StopMusicOnHold"),
            ch.exec("NoSuchApp", "x"),
            ch.command("CHANNEL STATUS"),
            ch.set_variable("CRMROUTE_STATUS", "matched"),
        ],
        "label": lambda ch: [ch.set_context("crmroute-queue"), ch.set_extension("103"), ch.set_priority("lbl")],
    }
    for script, calls in cases.items():
        session = SESSIONS[script]
        connection, writer = memory_connection(asterisk_lines(session))
        channel = AgiChannel(connection, await connection.read_env(1))
        results = [await call for call in calls(channel)]
        assert writer.lines == server_commands(session), script
        if script == "ivr/7":
            assert results[0] == "4242"
        if script == "ivrtimeout":
            assert results[0] == ""
        if script == "route?did=5551000":
            assert results[:3:2] == ["+15550001111", None]


class ReplayAsterisk:
    """Plays Asterisk's recorded side over TCP: the environment, then, once the
    first command arrives, everything Asterisk wrote after it."""

    def __init__(self, session: dict) -> None:
        lines = asterisk_lines(session)
        cut = lines.index("") + 1
        self.env = "".join(f"{line}\n" for line in lines[:cut]).encode()
        self.replies = "".join(f"{line}\n" for line in lines[cut:]).encode()
        self.commands: list[str] = []

    async def call(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(self.env)
        await writer.drain()
        async with asyncio.timeout(5):
            while line := await reader.readline():
                self.commands.append(line.decode().rstrip("\n"))
                if len(self.commands) == 1:
                    writer.write(self.replies)
                    writer.write_eof()  # the recording ends here
                    await writer.drain()
        writer.close()


@pytest.mark.parametrize("script", sorted(EXPECTED))
async def test_replay_over_tcp_through_the_server(script):
    """The same replay through ``AgiServer`` on a real socket."""
    session = SESSIONS[script]
    commands = server_commands(session)
    seen: list[tuple] = []

    async def handler(channel: AgiChannel) -> Outcome:
        assert channel.env.script == script
        seen.extend(await run_commands(channel, commands))
        return Outcome({}, None)

    async with running_server(handler) as server:
        fake = ReplayAsterisk(session)
        await fake.call(server.port)
        assert await sessions_ended(server)
    check(seen, EXPECTED[script])
    assert fake.commands == sent(script, commands)
