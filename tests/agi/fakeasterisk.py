"""A fake Asterisk that places FastAGI calls over a real TCP socket.

It speaks as Asterisk 22 does in ``reference/asterisk/sessions-22.10.1.jsonl``:
sends the ``agi_*`` block and an empty line, then answers each command in
order, parses arguments the way res_agi does (quotes, backslash escapes),
and reports what the server left on the channel.

    result = await call_agi(port, script="did", env={"extension": "5551000"})
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert result.jump == ("crmroute-queue", "103", "1")

Default replies: ``SET VARIABLE`` -> ``200 result=1``; ``SET CONTEXT`` /
``EXTENSION`` / ``PRIORITY`` -> ``200 result=0``; ``GET DATA`` -> the
``digits`` given or ``200 result= (timeout)``; ``GET [FULL] VARIABLE`` ->
``200 result=1 (value)`` from ``channel_vars`` or ``200 result=0``; ``EXEC``
-> ``200 result=0``; ``VERBOSE`` -> ``200 result=1``; a command missing
arguments -> a ``520`` usage block; anything else -> ``510``. After the
caller hangs up (``hangup_after`` / ``hangup_delay``) the fake sends
``HANGUP`` once; ``SET VARIABLE``, ``GET VARIABLE``, ``GET FULL VARIABLE``,
``VERBOSE`` and ``NOOP`` still work, every other command gets ``511``.

``running_server(handler, **options)`` starts an ``AgiServer`` on a free
loopback port for a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from crmroute.agi.protocol import AgiConnection
from crmroute.agi.server import AgiServer, Handler

Reply = str | list[str] | None
Responder = Callable[[str], Reply | Awaitable[Reply]]

USAGE_BEGIN = "520-Invalid command syntax.  Proper usage follows:"
USAGE_END = "520 End of proper usage."
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
INVALID = "510 Invalid or unknown command"

# Minimum argument counts (words included) and the usage text res_agi prints.
_USAGE = {
    ("SET", "VARIABLE"): (4, ["Sets a variable to the current channel."]),
    ("GET", "VARIABLE"): (3, ["Returns 0 if <replaceable>variablename</replaceable> is not set."]),
    ("GET", "FULL", "VARIABLE"): (4, ["Evaluates the given expression against the channel specified by channelname."]),
    ("SET", "CONTEXT"): (3, ["Sets the context for continuation upon exiting the application."]),
    ("SET", "EXTENSION"): (3, ["Changes the extension for continuation upon exiting the application."]),
    ("SET", "PRIORITY"): (3, ["Changes the priority for continuation upon exiting the application."]),
    ("GET", "DATA"): (
        3,
        [
            "Stream the given <replaceable>file</replaceable>, and receive DTMF data.",
            "Returns the digits received from the channel at the other end.",
        ],
    ),
    ("EXEC",): (2, ["Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>."]),
    ("VERBOSE",): (2, ["Sends <replaceable>message</replaceable> to the console via verbose message system."]),
    ("NOOP",): (1, ["Does nothing."]),
    ("ANSWER",): (1, ["Answers channel if not already in answer state."]),
    ("CHANNEL", "STATUS"): (2, ["Returns the status of the specified <replaceable>channelname</replaceable>."]),
}
_ALLOWED_WHEN_DEAD = {("SET", "VARIABLE"), ("GET", "VARIABLE"), ("GET", "FULL", "VARIABLE"), ("VERBOSE",), ("NOOP",)}
_ids = itertools.count(1)


def default_env(port: int, script: str = "did", *, args: Sequence[str] = (), **fields: str) -> list[tuple[str, str]]:
    """The environment Asterisk 22 sends, as ``(name, value)`` pairs without ``agi_``.

    ``fields`` override or add values (``callerid="unknown"``, ``extension="s"``).
    """
    script = script.lstrip("/")
    uid = f"fake-{int(time.time())}.{next(_ids)}"
    env = {
        "network": "yes",
        "network_script": script,
        "request": f"agi://127.0.0.1:{port}/{script}",
        "channel": "PJSIP/trunk-00000001",
        "language": "en",
        "type": "PJSIP",
        "uniqueid": uid,
        "version": "22.10.1",
        "callerid": "+15550001111",
        "calleridname": "Test Caller",
        "callingpres": "0",
        "callingani2": "0",
        "callington": "0",
        "callingtns": "0",
        "dnid": "unknown",
        "rdnis": "unknown",
        "context": "from-did",
        "extension": "5551000",
        "priority": "1",
        "enhanced": "0.0",
        "accountcode": "",
        "threadid": "140286501643968",
    }
    for name, value in fields.items():
        env[name.removeprefix("agi_")] = value
    pairs = list(env.items())
    pairs += [(f"arg_{n}", a) for n, a in enumerate(args, 1)]
    return pairs


def env_bytes(pairs: Sequence[tuple[str, str]], *, blank_line: bool = True) -> bytes:
    """Encode an environment as Asterisk does (``agi_name: value\\n`` ... ``\\n``)."""
    text = "".join(f"agi_{name}: {value}\n" for name, value in pairs)
    return (text + ("\n" if blank_line else "")).encode()


def parse_args(line: str) -> list[str]:
    """Split a command line as res_agi's ``parse_args`` does."""
    argv: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                argv.append("".join(current))
                current = None
            continue
        if ch == '"' and not escaped:
            quoted = not quoted
            if current is None:
                current = []
            continue
        if ch == "\\" and quoted and not escaped:
            escaped = True
            if current is None:
                current = []
            continue
        escaped = False
        if current is None:
            current = []
        current.append(ch)
    if current is not None:
        argv.append("".join(current))
    return argv


@dataclass
class AgiResult:
    """What the server did during one fake call."""

    variables: dict[str, str] = field(default_factory=dict)
    context: str | None = None
    extension: str | None = None
    priority: str | None = None
    commands: list[str] = field(default_factory=list)  # in the order received
    closed_by_server: bool = False  # the server closed the socket (vs our timeout)
    hangup_sent: bool = False
    connection_error: str = ""  # e.g. reset while we were writing
    seconds: float = 0.0

    @property
    def jump(self) -> tuple[str, str, str] | None:
        """``(context, extension, priority)`` once all three were set, else ``None``."""
        if self.context is None or self.extension is None or self.priority is None:
            return None
        return (self.context, self.extension, self.priority)


class FakeAsterisk:
    """One scripted Asterisk side of a FastAGI call (see the module docstring)."""

    def __init__(
        self,
        *,
        digits: str | None = None,
        hangup_after: int | None = None,
        hangup_delay: float | None = None,
        respond: Responder | None = None,
        channel_vars: Mapping[str, str] | None = None,
        reply_delay: float = 0.0,
        close_after: int | None = None,
        sighup: bool = True,
    ) -> None:
        self.digits = digits
        self.hangup_after = hangup_after
        self.hangup_delay = hangup_delay
        self.respond = respond
        self.channel_vars = dict(channel_vars or {})
        self.reply_delay = reply_delay
        self.close_after = close_after
        self.sighup = sighup
        self.dead = False
        self._writer: asyncio.StreamWriter | None = None
        self._result = AgiResult()

    async def call(self, host: str, port: int, env: bytes, *, timeout: float = 5.0) -> AgiResult:
        """Connect, send ``env``, answer commands until the server closes or ``timeout``."""
        result = self._result
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        hangup_task = None
        try:
            async with asyncio.timeout(timeout):
                if not await self._write(env):
                    result.closed_by_server = await _closed(reader)
                    return result
                if self.hangup_after == 0:
                    await self.hang_up()
                if self.hangup_delay is not None:
                    hangup_task = asyncio.create_task(self._hang_up_later(self.hangup_delay))
                await self._serve(reader)
        except TimeoutError:
            pass
        finally:
            if hangup_task is not None:
                hangup_task.cancel()
            result.seconds = time.monotonic() - started
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        return result

    async def hang_up(self) -> None:
        """The caller hangs up: Asterisk writes ``HANGUP`` once."""
        if not self.dead:
            self.dead = True
            self._result.hangup_sent = True
            await self._write(b"HANGUP\n")

    async def _hang_up_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.hang_up()

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        result = self._result
        while True:
            try:
                raw = await reader.readline()
            except (ConnectionError, OSError) as exc:  # reset: the server closed with unread data
                result.connection_error = str(exc)
                result.closed_by_server = True
                return
            if not raw.endswith(b"\n"):
                result.closed_by_server = True
                if self.sighup and not self.dead:  # as Asterisk does after a normal session
                    await self._write(b"HANGUP\n")
                return
            command = raw.decode(errors="replace").rstrip("\r\n")
            result.commands.append(command)
            if self.close_after is not None and len(result.commands) > self.close_after:
                assert self._writer is not None
                self._writer.close()  # Asterisk goes away without answering
                return
            lines = await self._reply(command)
            if self.reply_delay:
                await asyncio.sleep(self.reply_delay)
            if not await self._write("".join(f"{line}\n" for line in lines).encode()):
                result.closed_by_server = await _closed(reader)
                return
            if self.hangup_after is not None and len(result.commands) == self.hangup_after:
                await self.hang_up()

    async def _reply(self, command: str) -> list[str]:
        if self.respond is not None:
            custom = self.respond(command)
            if inspect.isawaitable(custom):
                custom = await custom
            if custom is not None:
                return [custom] if isinstance(custom, str) else list(custom)
        return self.default_reply(command)

    def default_reply(self, command: str) -> list[str]:
        """What Asterisk answers to ``command`` (records what it set)."""
        argv = parse_args(command)
        words = tuple(w.upper() for w in argv)
        key = next((k for k in sorted(_USAGE, key=len, reverse=True) if words[: len(k)] == k), None)
        if key is None:
            return [INVALID]
        minimum, usage = _USAGE[key]
        if len(argv) < minimum:
            return [USAGE_BEGIN, *usage, USAGE_END]
        if self.dead and key not in _ALLOWED_WHEN_DEAD:
            return [DEAD]
        result = self._result
        if key == ("SET", "VARIABLE"):
            result.variables[argv[2]] = argv[3]
            self.channel_vars[argv[2]] = argv[3]
            return ["200 result=1"]
        if key in (("GET", "VARIABLE"), ("GET", "FULL", "VARIABLE")):
            name = argv[len(key)]
            if key[1] == "FULL":
                name = name.removeprefix("${").removesuffix("}")
            if name in self.channel_vars:
                return [f"200 result=1 ({self.channel_vars[name]})"]
            return ["200 result=0"]
        if key == ("SET", "CONTEXT"):
            result.context = argv[2]
            return ["200 result=0"]
        if key == ("SET", "EXTENSION"):
            result.extension = argv[2]
            return ["200 result=0"]
        if key == ("SET", "PRIORITY"):
            result.priority = argv[2]
            return ["200 result=0"]
        if key == ("GET", "DATA"):
            return [f"200 result={self.digits}" if self.digits else "200 result= (timeout)"]
        if key == ("CHANNEL", "STATUS"):
            return ["200 result=4"]
        if key in (("VERBOSE",), ("NOOP",)):
            return ["200 result=1"] if key == ("VERBOSE",) else ["200 result=0"]
        return ["200 result=0"]  # EXEC, ANSWER

    async def _write(self, data: bytes) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            self._result.connection_error = str(exc)
            return False
        return True


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Read until EOF: True when the server closed (or reset) the connection."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    return True


async def call_agi(
    port: int,
    script: str = "did",
    *,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    raw_env: bytes | None = None,
    blank_line: bool = True,
    timeout: float = 5.0,
    digits: str | None = None,
    hangup_after: int | None = None,
    hangup_delay: float | None = None,
    respond: Responder | None = None,
    channel_vars: Mapping[str, str] | None = None,
    reply_delay: float = 0.0,
    close_after: int | None = None,
    sighup: bool = True,
) -> AgiResult:
    """Place one FastAGI call to ``host:port/script`` and report what the server did.

    ``env`` overrides environment fields (names with or without ``agi_``);
    ``raw_env`` replaces the whole environment block with bytes of your own.
    ``channel_vars`` start with ``CALLERID(num)`` set to the caller ID.
    """
    pairs = default_env(port, script, args=args, **dict(env or {}))
    fields = dict(pairs)
    vars_ = {"CALLERID(num)": fields["callerid"], "CALLERID(name)": fields["calleridname"]}
    vars_.update(channel_vars or {})
    fake = FakeAsterisk(
        digits=digits,
        hangup_after=hangup_after,
        hangup_delay=hangup_delay,
        respond=respond,
        channel_vars=vars_,
        reply_delay=reply_delay,
        close_after=close_after,
        sighup=sighup,
    )
    data = raw_env if raw_env is not None else env_bytes(pairs, blank_line=blank_line)
    return await fake.call(host, port, data, timeout=timeout)


@contextlib.asynccontextmanager
async def running_server(handler: Handler, **options: object) -> AsyncIterator[AgiServer]:
    """An ``AgiServer`` on ``127.0.0.1`` and a free port, closed afterwards."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    server = AgiServer(handler, **options)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.close()


# -- in memory, for protocol tests without sockets --------------------------


class MemoryTransport(asyncio.Transport):
    """Stands in for the socket under an ``AgiConnection``: keeps what was written."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    @property
    def lines(self) -> list[str]:
        """What was written, one command per item."""
        return self.data.decode().splitlines()


def memory_connection(
    lines: Sequence[str] = (), *, eof: bool = True, max_line: int = 8192
) -> tuple[AgiConnection, MemoryTransport]:
    """An ``AgiConnection`` that has already received ``lines`` (each ended with ``\n``), then EOF."""
    connection = AgiConnection(max_line=max_line)
    transport = MemoryTransport()
    connection.connection_made(transport)
    if lines:
        connection.data_received("".join(f"{line}\n" for line in lines).encode())
    if eof:
        connection.eof_received()
    return connection, transport
