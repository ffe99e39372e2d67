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

How failures surface from :class:`AgiChannel`:

- ``511`` reply, or the connection closed / reset by Asterisk: ``AgiHangup``
  (Asterisk closes a FastAGI socket only when the AGI step is over, i.e. the
  channel is gone for us).
- ``510``, ``520`` usage block, unparsable line, line too long, or no reply
  within the timeout: ``AgiProtocolError``.

A command whose reply did not arrive in time (or whose caller was cancelled)
is remembered: the next command first reads and discards the late reply, so
the conversation stays in step. Only garbage from Asterisk leaves the
channel unusable (every later command raises ``AgiProtocolError``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn
from urllib.parse import parse_qsl

from crmroute.errors import AgiHangup, AgiProtocolError

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE = 8192  # bytes per line, newline excluded
DEFAULT_REPLY_TIMEOUT = 10.0  # seconds to wait for one reply
MAX_ENV_LINES = 200  # Asterisk sends ~25 plus one per AGI() argument
MAX_USAGE_LINES = 200  # lines in one 520 usage block

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


async def read_env(
    reader: asyncio.StreamReader,
    *,
    timeout: float,
    max_line: int = DEFAULT_MAX_LINE,
    max_lines: int = MAX_ENV_LINES,
) -> AgiEnv:
    """Read the ``agi_*`` block up to its empty line, within ``timeout`` seconds.

    Raises ``AgiProtocolError`` on a timeout, EOF, a line longer than
    ``max_line`` bytes, a line that is not ``agi_name: value``, a repeated
    name, more than ``max_lines`` lines, or an empty block.
    """
    values: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await _read_line(reader, max_line)
                if line is None:
                    raise AgiProtocolError(f"connection closed after {len(values)} AGI environment lines")
                if line == "":
                    break
                if len(values) >= max_lines:
                    raise AgiProtocolError(f"AGI environment longer than {max_lines} lines")
                name, sep, value = line.partition(":")
                if not sep or not _ENV_NAME.fullmatch(name):
                    raise AgiProtocolError(f"not an AGI environment line: {_shorten(line)!r}")
                if value.startswith(" "):
                    value = value[1:]
                key = name[4:].lower()
                if key in values:
                    raise AgiProtocolError(f"AGI environment repeats {name}")
                values[key] = value
    except TimeoutError:
        raise AgiProtocolError(
            f"no complete AGI environment within {timeout:g} s ({len(values)} lines read)"
        ) from None
    if not values:
        raise AgiProtocolError("empty AGI environment")
    return AgiEnv(values)


# -- replies ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
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
    result = _RESULT.fullmatch(status.group(3))
    if not result:
        raise AgiProtocolError(f"reply without result=: {_shorten(line)!r}")
    rest = result.group(2) or ""
    data = _DATA.fullmatch(rest)
    return Reply(int(status.group(1)), result.group(1), data.group(1) if data else "", line)


# -- the channel -----------------------------------------------------------


class AgiChannel:
    """One AGI conversation over an already-read environment.

    Commands are serialised (one in flight at a time). ``hung_up`` becomes
    true when Asterisk says ``HANGUP`` or answers ``511``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        env: AgiEnv,
        *,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.env = env
        self.reply_timeout = reply_timeout
        self.hung_up = False
        self._reader = reader
        self._writer = writer
        self._max_line = max_line
        self._lock = asyncio.Lock()
        self._unanswered = 0  # commands sent whose reply was not read yet
        self._usage: list[str] | None = None  # inside a 520- block
        self._broken: str = ""  # why the stream is out of step, if it is
        self._closed = False  # EOF or reset seen

    @property
    def broken(self) -> bool:
        """True once Asterisk sent something unparsable: no command can follow."""
        return bool(self._broken)

    async def command(self, line: str, *, timeout: float | None = None) -> Reply:
        """Send one command line and return its ``200`` reply.

        ``timeout`` (seconds, default ``reply_timeout``) covers sending,
        reading any late reply to an earlier command, and reading this one.
        """
        _check_command(line)
        limit = self.reply_timeout if timeout is None else timeout
        async with self._lock:
            if self._broken:
                raise AgiProtocolError(f"AGI stream out of step ({self._broken}); cannot send {_verb(line)}")
            if self._closed:
                raise AgiHangup("connection to Asterisk is closed")
            try:
                async with asyncio.timeout(limit) as scope:
                    await self._catch_up()
                    await self._send(line)
                    return await self._read_reply(line)
            except TimeoutError:
                if not scope.expired():
                    raise
                raise AgiProtocolError(f"no reply to {_verb(line)} within {limit:g} s") from None

    async def set_variable(self, name: str, value: str) -> Reply:
        """``SET VARIABLE NAME "value"``; CR, LF and NUL are dropped from ``value``."""
        _check_token(name, "variable name")
        return await self.command(f"SET VARIABLE {name} {quote(value)}")

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
            self.hung_up = True
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
        return await self.command(f"SET CONTEXT {_arg(_nonempty(context, 'context'))}")

    async def set_extension(self, extension: str) -> Reply:
        return await self.command(f"SET EXTENSION {_arg(_nonempty(extension, 'extension'))}")

    async def set_priority(self, priority: int | str) -> Reply:
        """A priority number or a label (``lbl``)."""
        return await self.command(f"SET PRIORITY {_arg(_nonempty(str(priority), 'priority'))}")

    async def verbose(self, message: str, level: int = 1) -> Reply:
        """Write ``message`` to the Asterisk console at verbose ``level`` (1-4)."""
        return await self.command(f"VERBOSE {quote(message)} {int(level)}")

    # -- internals ---------------------------------------------------------

    async def _send(self, line: str) -> None:
        self._writer.write(line.encode() + b"\n")
        self._unanswered += 1
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._closed = True
            raise AgiHangup(f"connection to Asterisk lost: {exc}") from exc

    async def _catch_up(self) -> None:
        """Read and drop replies to earlier commands that timed out or were cancelled."""
        while self._unanswered:
            try:
                await self._read_reply("(late reply)")
            except AgiHangup:
                if self._closed:
                    raise
            except AgiProtocolError:
                if self._broken:
                    raise

    async def _read_reply(self, command: str) -> Reply:
        """Read lines until one complete reply; consumes ``HANGUP`` lines."""
        while True:
            line = await self._next_line()
            if self._usage is not None:
                if line.startswith("520 "):
                    usage, self._usage = self._usage, None
                    self._unanswered -= 1
                    text = " ".join(part.strip() for part in usage[1:] if part.strip())
                    raise AgiProtocolError(f"invalid syntax for {_verb(command)}: {_shorten(text, 300)}")
                if len(self._usage) >= MAX_USAGE_LINES:
                    self._fail(f"520 usage block longer than {MAX_USAGE_LINES} lines")
                self._usage.append(line)
                continue
            if line == HANGUP_LINE:
                self.hung_up = True
                continue
            status = _STATUS_LINE.fullmatch(line)
            if not status:
                self._fail(f"unexpected line from Asterisk: {_shorten(line)!r}")
            code, sep = int(status.group(1)), status.group(2)
            if sep == "-":
                if code != 520:
                    self._fail(f"unexpected multi-line reply: {_shorten(line)!r}")
                self._usage = [line]
                continue
            if code == 200:
                try:
                    reply = parse_reply(line)
                except AgiProtocolError as exc:
                    self._fail(str(exc))
                self._unanswered -= 1
                return reply
            self._unanswered -= 1
            if code == 511:
                self.hung_up = True
                raise AgiHangup(f"{_verb(command)} refused: channel is dead")
            if code == 510:
                raise AgiProtocolError(f"invalid or unknown command: {_shorten(command)!r}")
            if code == 520:
                raise AgiProtocolError(f"invalid syntax for {_verb(command)}")
            raise AgiProtocolError(f"{_verb(command)} failed: {_shorten(line)!r}")

    async def _next_line(self) -> str:
        try:
            line = await _read_line(self._reader, self._max_line)
        except AgiProtocolError as exc:
            self._fail(str(exc))
        except (ConnectionError, OSError) as exc:
            self._closed = True
            raise AgiHangup(f"connection to Asterisk lost: {exc}") from exc
        if line is None:
            self._closed = True
            raise AgiHangup("Asterisk closed the connection")
        return line

    def _fail(self, reason: str) -> NoReturn:
        self._broken = reason
        raise AgiProtocolError(reason)


# -- helpers ---------------------------------------------------------------


async def _read_line(reader: asyncio.StreamReader, max_line: int) -> str | None:
    """One line without its ``\\n`` / ``\\r\\n``; ``None`` at EOF (a partial last line included)."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"line longer than {max_line} bytes") from None
    raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > max_line:
        raise AgiProtocolError(f"line longer than {max_line} bytes")
    return raw.decode("utf-8", errors="replace")


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
