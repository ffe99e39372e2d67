"""The FastAGI wire: the ``agi_*`` environment block, commands and replies.

Only the protocol lives here (asyncio streams in, parsed data out); it knows
nothing of CRMs or routing, and it never opens or closes sockets -- that is
``crmroute.agi.server``'s job.

Facts taken from real Asterisk 22 sessions
(``reference/asterisk/sessions-22.10.1.jsonl``):

- The environment is ``agi_name: value`` lines ended by one empty line; a
  value may be empty (``agi_accountcode: `` with a trailing space).
- A reply is ``200 result=R`` optionally followed by `` (data)``:
  ``200 result=1 (+15550001111)``, ``200 result= (timeout)``.
- ``510 Invalid or unknown command``; ``511 Command Not Permitted on a dead
  channel ...``; a usage error is a block from ``520-...`` to
  ``520 End of proper usage.`` (free text lines in between).
- When the caller hangs up Asterisk writes an unsolicited ``HANGUP`` line,
  before the reply to the command in flight. ``SET VARIABLE`` still works on
  the dead channel; most other commands then answer ``511``.

How the wire is driven (:class:`AgiConnection`, an ``asyncio.Protocol``):
the environment is parsed as its bytes arrive; after it, lines wait in a
queue and are read only while a command awaits its reply, as a stream reader
would read them. Commands go one at a time, each when the previous reply has
arrived; a *batch* of commands (the variables of an answer) is sent from the
reply handler itself, so a whole answer costs one wake-up of the session, not
one per command.

How failures surface from :class:`AgiChannel`:

- ``511`` reply, or the connection closed / reset by Asterisk: ``AgiHangup``
  (Asterisk closes a FastAGI socket only when the AGI step is over, i.e. the
  channel is gone for us).
- ``510``, ``520`` usage block, unparsable line, line too long, or no reply
  within the timeout: ``AgiProtocolError``.

A command whose reply did not arrive in time (or whose caller was cancelled)
is remembered: its late reply is read and dropped before the next command
goes, so the conversation stays in step. Only garbage from Asterisk leaves the
connection unusable (every later command raises ``AgiProtocolError``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import parse_qsl

from crmroute.errors import AgiError, AgiHangup, AgiProtocolError

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE = 8192  # bytes per line, newline excluded
DEFAULT_REPLY_TIMEOUT = 10.0  # seconds to wait for one reply
MAX_ENV_LINES = 200  # Asterisk sends ~25 plus one per AGI() argument
MAX_USAGE_LINES = 200  # lines in one 520 usage block
MAX_ACCEPT_WAIT = 5.0  # seconds: a longer wait to be accepted counts as this much
MAX_QUEUED_LINES = 256  # read but not yet asked for: past this, reading pauses

HANGUP_LINE = "HANGUP"
UNKNOWN = "unknown"  # what Asterisk writes for an absent caller ID / DNID

_ENV_NAME = re.compile(r"agi_[a-z0-9_]+", re.IGNORECASE)
_STATUS_LINE = re.compile(r"(\d{3})([ -])(.*)", re.DOTALL)
_RESULT = re.compile(r"result=(\S*)(?: (.*))?", re.DOTALL)
_DATA = re.compile(r"\((.*)\)(?: endpos=-?\d+)?", re.DOTALL)
_BARE_TOKEN = re.compile(r'[^\s"\\]+')
_FORBIDDEN_IN_COMMAND = ("\n", "\r", "\0")
# Commands named by two words (SET VARIABLE, GET DATA, DATABASE PUT, ...).
_TWO_WORD_COMMANDS = frozenset(
    {"ASYNCAGI", "CHANNEL", "CONTROL", "DATABASE", "GET", "RECEIVE", "SAY", "SEND", "SET", "SPEECH", "STREAM", "TDD", "WAIT"}
)


# -- the environment -------------------------------------------------------


@dataclass(frozen=True)
class AgiEnv:
    """The ``agi_*`` block Asterisk sends first, names kept without ``agi_``.

    ``get()`` returns values exactly as sent. The convenience properties
    return ``""`` when a field is absent; ``callerid``, ``calleridname``,
    ``dnid`` and ``rdnis`` also turn Asterisk's literal ``unknown`` into ``""``.
    """

    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cleaned = {_strip_prefix(k): v for k, v in self.values.items()}
        object.__setattr__(self, "values", MappingProxyType(cleaned))

    @classmethod
    def parsed(cls, values: dict[str, str]) -> AgiEnv:
        """From names already without ``agi_`` (as the connection parses them): nothing to clean."""
        env = object.__new__(cls)
        object.__setattr__(env, "values", MappingProxyType(values))
        return env

    def __hash__(self) -> int:
        return hash(tuple(self.values.items()))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` (with or without the ``agi_`` prefix)."""
        return self.values.get(_strip_prefix(name), default)

    def __getitem__(self, name: str) -> str:
        return self.values[_strip_prefix(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _strip_prefix(name) in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def _field(self, name: str) -> str:
        return self.values.get(name, "")

    def _known(self, name: str) -> str:
        value = self.values.get(name, "")
        return "" if value == UNKNOWN else value

    @property
    def script(self) -> str:
        """``agi_network_script``: the URI path after the host, query included (``ivr/7``)."""
        return self._field("network_script")

    @property
    def path(self) -> str:
        """The script without its query string and surrounding slashes (``route``)."""
        return self.script.split("?", 1)[0].strip("/")

    @property
    def query(self) -> dict[str, str]:
        """The script's query string as a dict (``route?did=5551000`` -> ``{"did": "5551000"}``)."""
        _, _, query = self.script.partition("?")
        return dict(parse_qsl(query, keep_blank_values=True))

    @property
    def request(self) -> str:
        """``agi_request``: the full ``agi://host:port/script`` URI."""
        return self._field("request")

    @property
    def args(self) -> list[str]:
        """``agi_arg_1``, ``agi_arg_2`` ... in order (arguments after a comma in ``AGI()``)."""
        found = []
        n = 1
        while f"arg_{n}" in self.values:
            found.append(self.values[f"arg_{n}"])
            n += 1
        return found

    @property
    def uniqueid(self) -> str:
        return self._field("uniqueid")

    @property
    def channel(self) -> str:
        return self._field("channel")

    @property
    def callerid(self) -> str:
        """Caller number; ``""`` when Asterisk says ``unknown``."""
        return self._known("callerid")

    @property
    def calleridname(self) -> str:
        return self._known("calleridname")

    @property
    def dnid(self) -> str:
        """Dialed number; often ``unknown`` (then ``""``): prefer ``extension`` for DIDs."""
        return self._known("dnid")

    @property
    def rdnis(self) -> str:
        return self._known("rdnis")

    @property
    def context(self) -> str:
        return self._field("context")

    @property
    def extension(self) -> str:
        return self._field("extension")

    @property
    def priority(self) -> str:
        return self._field("priority")

    @property
    def language(self) -> str:
        return self._field("language")


def _strip_prefix(name: str) -> str:
    return name[4:] if name[:4].lower() == "agi_" else name


# -- replies ---------------------------------------------------------------


class Reply(NamedTuple):
    """A ``200`` reply: ``200 result=1 (value)`` -> code 200, result "1", data "value"."""

    code: int
    result: str  # text after "result=", up to the first space; may be ""
    data: str = ""  # text inside the trailing parentheses, "" when none
    raw: str = ""

    @property
    def number(self) -> int | None:
        """``result`` as an int, ``None`` if it is not one (e.g. empty)."""
        try:
            return int(self.result)
        except ValueError:
            return None


def parse_reply(line: str) -> Reply:
    """Parse a ``200 result=...`` line; ``AgiProtocolError`` if it is not one."""
    status = _STATUS_LINE.fullmatch(line)
    if not status or status.group(2) != " ":
        raise AgiProtocolError(f"unexpected line from Asterisk: {_shorten(line)!r}")
    return _reply(int(status.group(1)), status.group(3), line)


def _reply(code: int, text: str, line: str) -> Reply:
    """The reply whose status line is ``line``; ``text`` is what follows its code."""
    result = _RESULT.fullmatch(text)
    if not result:
        raise AgiProtocolError(f"reply without result=: {_shorten(line)!r}")
    rest = result.group(2)
    data = _DATA.fullmatch(rest) if rest else None
    return Reply(code, result.group(1), data.group(1) if data else "", line)


# -- the connection --------------------------------------------------------


class _Batch:
    """Commands to send one at a time, each when the previous one's reply has arrived."""

    __slots__ = ("future", "lines", "on_wire", "replies")

    def __init__(self, lines: list[str], future: asyncio.Future) -> None:
        self.lines = lines
        self.replies: list[Reply] = []
        self.future = future
        self.on_wire = False  # a command of ours was sent and its reply not read yet

    @property
    def current(self) -> str:
        return self.lines[min(len(self.replies), len(self.lines) - 1)]


class AgiConnection(asyncio.Protocol):
    """One FastAGI socket: the environment block, then commands and their replies.

    ``on_connect(connection)`` is called once the socket is up (the server
    starts its session there). ``read_env()`` waits for the environment;
    ``exchange()`` sends commands and returns their replies.
    """

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_env_lines: int = MAX_ENV_LINES,
        on_connect: Callable[[AgiConnection], None] | None = None,
    ) -> None:
        self.max_line = max_line
        self.hung_up = False  # Asterisk said HANGUP or answered 511
        self.transport: asyncio.Transport | None = None
        self._max_env_lines = max_env_lines
        self._on_connect = on_connect
        self._loop = asyncio.get_running_loop()
        self._env: dict[str, str] | None = {}  # None once the environment is complete or refused
        self._env_lines = 0
        self.bytes_received = 0  # 0 at the end: a health check's bare connect, not a call
        self._env_ready: asyncio.Future[AgiEnv] = self._loop.create_future()
        self.connected_at: float | None = None  # time.monotonic() when Asterisk's connection was accepted
        self._tail = b""  # the start of a line whose newline has not arrived
        self._lines: deque[str | AgiProtocolError] = deque()  # read, not yet taken by a command
        self._batches: deque[_Batch] = deque()  # the head is on the wire; abandoned ones wait for their reply
        self._usage: list[str] | None = None  # inside a 520- block
        self._broken = ""  # why the stream is out of step, if it is
        self._eof = False  # nothing more will arrive after the queued lines
        self._closed = False  # a command reached the end of the stream
        self._paused = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.monotonic() - waited_to_be_accepted(transport)
        self.transport = transport  # type: ignore[assignment]
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._eof:  # after a line too long: the rest is not read
            return
        if self._tail:
            data = self._tail + data
        *complete, self._tail = data.split(b"\n")
        for raw in complete:
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if len(raw) > self.max_line:
                self._too_long()
                return
            line = raw.decode("utf-8", errors="replace")
            if self._env is None:
                self._lines.append(line)
            elif not self._env_line(line):
                self._tail = b""  # the rest of a refused environment is not read as replies
                return
        if len(self._tail) > self.max_line + 1:  # + 1: room for a "\r"
            self._too_long()
            return
        if self._lines and self._batches:
            self._pump()
        if len(self._lines) > MAX_QUEUED_LINES and not self._paused and self.transport is not None:
            self._paused = True  # nobody reads: let TCP push back
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._end("connection closed")
        return True  # keep our side open: answers can still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "connection closed")

    # -- for the session ---------------------------------------------------

    async def read_env(self, timeout: float) -> AgiEnv:
        """The environment, once its empty line arrives; ``AgiProtocolError`` when it is
        malformed, cut short, or not complete within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._env_ready
        except TimeoutError:
            self._env = None  # what arrives from now on is read as replies
            raise AgiProtocolError(
                f"no complete AGI environment within {timeout:g} s ({self._env_lines} lines read)"
            ) from None

    async def exchange(self, lines: list[str], timeout: float) -> list[Reply]:
        """Send ``lines`` one at a time and return their ``200`` replies, within ``timeout`` seconds.

        The first reply that is not a ``200`` raises (``AgiHangup`` for 511,
        else ``AgiProtocolError``) and the rest of ``lines`` is not sent.
        """
        if self._broken:
            raise AgiProtocolError(f"AGI stream out of step ({self._broken}); cannot send {_verb(lines[0])}")
        if self._closed:
            raise AgiHangup("connection to Asterisk is closed")
        batch = _Batch(lines, self._loop.create_future())
        self._batches.append(batch)
        if not self._batches[0].on_wire:
            self._pump()
        try:
            async with asyncio.timeout(timeout) as scope:
                return await batch.future
        except TimeoutError:
            if not scope.expired():
                raise
            # the command on the wire is remembered (on_wire): its late reply is dropped
            raise AgiProtocolError(f"no reply to {_verb(batch.current)} within {timeout:g} s") from None

    @property
    def at_eof(self) -> bool:
        """True once Asterisk closed its side (or the socket is gone)."""
        return self._eof

    @property
    def broken(self) -> bool:
        """True once Asterisk sent something unparsable: no command can follow."""
        return bool(self._broken)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- internals ---------------------------------------------------------

    def _env_line(self, line: str) -> bool:
        """Take one environment line; False when the environment is refused."""
        values = self._env
        assert values is not None
        if line == "":
            if not values:
                return self._refuse_env("empty AGI environment")
            self._env = None
            if not self._env_ready.done():
                self._env_ready.set_result(AgiEnv.parsed(values))
            return True
        if len(values) >= self._max_env_lines:
            return self._refuse_env(f"AGI environment longer than {self._max_env_lines} lines")
        name, sep, value = line.partition(":")
        if not sep or not _ENV_NAME.fullmatch(name):
            return self._refuse_env(f"not an AGI environment line: {_shorten(line)!r}")
        key = name[4:].lower()
        if key in values:
            return self._refuse_env(f"AGI environment repeats {name}")
        values[key] = value[1:] if value[:1] == " " else value
        self._env_lines += 1
        return True

    def _refuse_env(self, reason: str) -> bool:
        self._env = None
        if not self._env_ready.done():
            self._env_ready.set_exception(AgiProtocolError(reason))
            self._env_ready.exception()  # retrieved: nobody may be waiting yet, that is no error
        return False

    def _too_long(self) -> None:
        reason = f"line longer than {self.max_line} bytes"
        self._tail = b""
        if self._env is not None:
            self._refuse_env(reason)
        else:
            self._lines.append(AgiProtocolError(reason))  # in turn: the lines before it are still good
            self._pump()
        self._end(reason)  # what follows such a line is not read

    def _end(self, reason: str) -> None:
        """Nothing more will be read: a partial last line is dropped."""
        if self._env is not None:
            self._refuse_env(f"{reason} after {self._env_lines} AGI environment lines")
        self._eof = True
        self._tail = b""
        self._pump()

    def _pump(self) -> None:
        """Hand queued lines to the batch at the head, sending each next command as its turn comes."""
        batches, lines = self._batches, self._lines
        while batches:
            batch = batches[0]
            if not batch.on_wire:
                if batch.future.done():  # abandoned before its turn
                    batches.popleft()
                    continue
                if not self._send(batch):
                    return
            if not lines:
                if self._eof:
                    self._closed = True
                    self._fail_all(lambda: AgiHangup("Asterisk closed the connection"))
                break
            self._take(batch, lines.popleft())
        if self._paused and len(lines) <= MAX_QUEUED_LINES // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _send(self, batch: _Batch) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._closed = True
            self._fail_all(lambda: AgiHangup("connection to Asterisk lost"))
            return False
        transport.write(batch.lines[len(batch.replies)].encode() + b"\n")
        batch.on_wire = True
        return True

    def _take(self, batch: _Batch, line: str | AgiProtocolError) -> None:
        """One line read while ``batch`` waits for a reply."""
        if isinstance(line, AgiProtocolError):
            return self._break(str(line))
        if self._usage is not None:
            if line.startswith("520 "):
                usage, self._usage = self._usage, None
                text = " ".join(part.strip() for part in usage[1:] if part.strip())
                error = AgiProtocolError(f"invalid syntax for {_verb(batch.current)}: {_shorten(text, 300)}")
                return self._done(batch, error)
            if len(self._usage) >= MAX_USAGE_LINES:
                return self._break(f"520 usage block longer than {MAX_USAGE_LINES} lines")
            self._usage.append(line)
            return None
        if line == HANGUP_LINE:
            self.hung_up = True
            return None
        status = _STATUS_LINE.fullmatch(line)
        if not status:
            return self._break(f"unexpected line from Asterisk: {_shorten(line)!r}")
        code, sep = int(status.group(1)), status.group(2)
        if sep == "-":
            if code != 520:
                return self._break(f"unexpected multi-line reply: {_shorten(line)!r}")
            self._usage = [line]
            return None
        if code != 200:
            return self._done(batch, self._error(code, batch.current, line))
        try:
            reply = _reply(code, status.group(3), line)
        except AgiProtocolError as exc:
            return self._break(str(exc))
        batch.replies.append(reply)
        batch.on_wire = False
        if len(batch.replies) == len(batch.lines) or batch.future.done():
            self._done(batch, None)
        return None

    def _error(self, code: int, command: str, line: str) -> AgiHangup | AgiProtocolError:
        if code == 511:
            self.hung_up = True
            return AgiHangup(f"{_verb(command)} refused: channel is dead")
        if code == 510:
            return AgiProtocolError(f"invalid or unknown command: {_shorten(command)!r}")
        if code == 520:
            return AgiProtocolError(f"invalid syntax for {_verb(command)}")
        return AgiProtocolError(f"{_verb(command)} failed: {_shorten(line)!r}")

    def _done(self, batch: _Batch, error: AgiError | None) -> None:
        """``batch`` has its last reply (or an error): it leaves the wire."""
        self._batches.popleft()
        if not batch.future.done():
            if error is None:
                batch.future.set_result(batch.replies)
            else:
                batch.future.set_exception(error)

    def _break(self, reason: str) -> None:
        self._broken = reason
        self._lines.clear()
        self._fail_all(lambda: AgiProtocolError(reason))

    def _fail_all(self, error: Callable[[], AgiError]) -> None:
        while self._batches:
            batch = self._batches.popleft()
            if not batch.future.done():
                batch.future.set_exception(error())


# -- the channel -----------------------------------------------------------


class AgiChannel:
    """One call's AGI conversation, over a connection whose environment was read.

    Commands are serialised (one on the wire at a time). ``hung_up`` becomes
    true when Asterisk says ``HANGUP`` or answers ``511``.
    """

    def __init__(
        self, connection: AgiConnection, env: AgiEnv, *, reply_timeout: float = DEFAULT_REPLY_TIMEOUT
    ) -> None:
        self.env = env
        self.reply_timeout = reply_timeout
        self.connection = connection

    @property
    def hung_up(self) -> bool:
        return self.connection.hung_up

    @property
    def broken(self) -> bool:
        """True once Asterisk sent something unparsable: no command can follow."""
        return self.connection.broken

    async def command(self, line: str, *, timeout: float | None = None) -> Reply:
        """Send one command line and return its ``200`` reply.

        ``timeout`` (seconds, default ``reply_timeout``) covers waiting for
        the commands before it (and late replies to abandoned ones) and this reply.
        """
        _check_command(line)
        replies = await self.connection.exchange([line], self.reply_timeout if timeout is None else timeout)
        return replies[0]

    async def commands(self, lines: list[str], *, timeout: float | None = None) -> list[Reply]:
        """Send ``lines`` in order, each after the previous reply, within one ``timeout`` for all.

        The first failure raises; the commands after it are not sent.
        """
        for line in lines:
            _check_command(line)
        if not lines:
            return []
        return await self.connection.exchange(lines, self.reply_timeout if timeout is None else timeout)

    async def set_variable(self, name: str, value: str) -> Reply:
        """``SET VARIABLE NAME "value"``; CR, LF and NUL are dropped from ``value``."""
        return await self.command(set_variable_line(name, value))

    async def get_variable(self, name: str) -> str | None:
        """The variable's value, or ``None`` when it is not set (``200 result=0``)."""
        _check_token(name, "variable name")
        reply = await self.command(f"GET VARIABLE {name}")
        return reply.data if reply.result == "1" else None

    async def get_data(
        self, sound: str, timeout_ms: int, max_digits: int, *, timeout: float | None = None
    ) -> str:
        """Play ``sound`` and collect up to ``max_digits`` DTMF digits.

        Returns the digits (``""`` when the caller typed none). Asterisk
        waits up to ``timeout_ms`` for each digit after the sound ends, so the
        reply timeout defaults to ``reply_timeout`` plus that for every digit.
        A ``result=-1`` (the channel hung up) raises ``AgiHangup``.
        """
        _check_token(sound, "sound file")
        if timeout_ms <= 0 or max_digits <= 0:
            raise ValueError("timeout_ms and max_digits must be positive")
        if timeout is None:
            timeout = self.reply_timeout + timeout_ms / 1000 * max_digits
        reply = await self.command(f"GET DATA {sound} {int(timeout_ms)} {int(max_digits)}", timeout=timeout)
        if reply.result == "-1":
            self.connection.hung_up = True
            raise AgiHangup("channel hung up during GET DATA")
        return reply.result

    async def exec(self, app: str, *args: str, timeout: float | None = None) -> Reply:
        """``EXEC App arg1,arg2``; ``result=-2`` means no such application."""
        _check_token(app, "application")
        line = f"EXEC {app}"
        if args:
            line += " " + _arg(",".join(args))
        return await self.command(line, timeout=timeout)

    async def set_context(self, context: str) -> Reply:
        return await self.command(f"SET CONTEXT {_jump_part(context, 'context')}")

    async def set_extension(self, extension: str) -> Reply:
        return await self.command(f"SET EXTENSION {_jump_part(extension, 'extension')}")

    async def set_priority(self, priority: int | str) -> Reply:
        """A priority number or a label (``lbl``)."""
        return await self.command(f"SET PRIORITY {_jump_part(priority, 'priority')}")

    async def verbose(self, message: str, level: int = 1) -> Reply:
        """Write ``message`` to the Asterisk console at verbose ``level`` (1-4)."""
        return await self.command(f"VERBOSE {quote(message)} {int(level)}")


# -- helpers ---------------------------------------------------------------


def waited_to_be_accepted(transport: asyncio.BaseTransport) -> float:
    """Seconds since the kernel last received from this new connection, up to ``MAX_ACCEPT_WAIT``.

    A busy event loop accepts late; the kernel knows when Asterisk's request
    came (Linux ``TCP_INFO``: ``tcpi_last_data_recv``, in ms, at byte 52), so
    a call's deadline can count from then. 0 where that cannot be read.
    """
    sock = transport.get_extra_info("socket")
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        (ms,) = struct.unpack_from("I", info, 52)
    except (AttributeError, OSError, struct.error):
        return 0.0
    return min(ms / 1000, MAX_ACCEPT_WAIT)


def set_variable_line(name: str, value: str) -> str:
    """``SET VARIABLE NAME "value"``; ``ValueError`` for a bad name, ``TypeError`` for a value that is no str."""
    _check_token(name, "variable name")
    if not isinstance(value, str):
        raise TypeError(f"variable {name} must be a str, not {type(value).__name__}")
    return f"SET VARIABLE {name} {quote(value)}"


def jump_lines(context: str, extension: str, priority: int | str) -> list[str]:
    """``SET CONTEXT`` / ``SET EXTENSION`` / ``SET PRIORITY`` (a number or a label); none may be empty."""
    return [
        f"SET CONTEXT {_jump_part(context, 'context')}",
        f"SET EXTENSION {_jump_part(extension, 'extension')}",
        f"SET PRIORITY {_jump_part(priority, 'priority')}",
    ]


def _jump_part(value: str | int, what: str) -> str:
    if not isinstance(value, str | int):
        raise TypeError(f"{what} must be a str or int, not {type(value).__name__}")
    return _arg(_nonempty(str(value), what))


def clean(value: str) -> str:
    """``value`` without CR, LF and NUL, which cannot travel in an AGI command."""
    return value.replace("\r", "").replace("\n", "").replace("\0", "")


def quote(value: str) -> str:
    """Quote an argument as Asterisk's parser expects: ``"A \\"b\\" c"``."""
    escaped = clean(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _arg(value: str) -> str:
    """A bare token when it needs no quoting (``crmroute-queue``), else quoted."""
    value = clean(value)
    return value if _BARE_TOKEN.fullmatch(value) else quote(value)


def _nonempty(value: str, what: str) -> str:
    if not clean(value).strip():
        raise ValueError(f"{what} must not be empty")
    return value


def _check_token(value: str, what: str) -> None:
    if not _BARE_TOKEN.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: must be non-empty, without spaces, quotes or backslashes")


def _check_command(line: str) -> None:
    if not line or not line.strip():
        raise ValueError("empty AGI command")
    if any(ch in line for ch in _FORBIDDEN_IN_COMMAND):
        raise ValueError(f"AGI command must be one line: {line!r}")


def _verb(command: str) -> str:
    """The command's name for messages (``GET DATA``, ``EXEC``), never its values."""
    words = command.upper().split()
    if words[:2] == ["GET", "FULL"]:
        return " ".join(words[:3])
    if words and words[0] in _TWO_WORD_COMMANDS:
        return " ".join(words[:2])
    return words[0] if words else command


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
