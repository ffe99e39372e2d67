"""The Asterisk Manager Interface: the wire, and a client that stays connected.

Only the protocol and the connection live here (bytes in, :class:`Message`
out; actions out); what the events mean is ``crmroute.calllog.calls``' job.

Facts taken from a real Asterisk 22 (``reference/asterisk/ami-*.txt``, copied
to ``tests/calllog/fixtures``):

- On connect Asterisk sends one banner line, ``Asterisk Call Manager/11.0.0``
  (the AMI version, not Asterisk's), then nothing until the client logs in.
- Lines end with CRLF; a message is ``Key: Value`` lines ended by one empty
  line. A value may be empty (``AccountCode: `` with a trailing space) and may
  hold colons (``AppData: agi://127.0.0.1:4573/did``,
  ``EventTV: 2026-11-26T01:47:51.601+0000``): split at the first colon.
- A key may repeat in one message (``Output:`` lines of a ``Command``,
  ``ChanVariable:``); :meth:`Message.get_all` returns them all in order.
- Older Asterisk answers ``Command`` with ``Response: Follows``, a few headers,
  free text lines (which may contain colons or be empty) and a line
  ``--END COMMAND--`` before the empty line; that text is ``Message.output``.
- Events and responses interleave; a response carries the ``ActionID`` the
  action was sent with. A list action (``CoreShowChannels``) answers
  ``EventList: start``, then events carrying the same ``ActionID``, then a
  ``...Complete`` event with ``EventList: Complete``.
- Unsolicited ``Response: Goodbye`` precedes a close by Asterisk (Logoff,
  shutdown); a restart is an EOF, then a new banner on the next connect.

Garbage (lines without a colon, overlong lines, bytes that are not UTF-8, a
message with neither ``Event`` nor ``Response``) is counted and skipped; it
never stops the reader.

:class:`AmiClient` logs in, answers for the session with a ``Ping`` every
``ping_interval`` seconds (no answer within ``timeout``: the connection is
dead and dropped), and reconnects after any drop with exponential backoff
(``backoff_min`` doubling to ``backoff_max``; back to the minimum after a
session that logged in). Its :attr:`AmiClient.status` says ``connected``,
``connecting``, ``reconnecting`` or ``stopped``, since when, and the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from crmroute.errors import CrmrouteError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5038
BANNER_PREFIX = "Asterisk Call Manager/"
END_COMMAND = "--END COMMAND--"
MAX_LINE = 65_536  # bytes in one line, end of line excluded
MAX_HEADERS = 4_096  # lines in one message
MAX_OUTPUT_LINES = 100_000  # lines of one Response: Follows text
DEFAULT_TIMEOUT = 10.0  # seconds for connect, banner, login, and each action
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_BACKOFF = (0.5, 30.0)  # seconds: first wait after a drop, longest wait


class AmiError(CrmrouteError):
    """The AMI connection failed (network, timeout, refused login, not AMI)."""


class AmiAuthError(AmiError):
    """Asterisk refused the login (wrong user or secret, or not allowed from here)."""


class AmiDisconnected(AmiError):
    """The connection ended before the answer came."""


# -- the wire ----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One AMI message: its ``Key: Value`` lines in order, and any ``Response: Follows`` text.

    Keys are looked up ignoring case; :meth:`get` returns the first value.
    ``received`` is when the last line arrived (``time.time()``).
    """

    headers: tuple[tuple[str, str], ...]
    output: tuple[str, ...] = ()
    received: float = 0.0

    @classmethod
    def of(cls, fields: Mapping[str, str] | None = None, *, received: float = 0.0, **more: str) -> Message:
        """A message from a mapping (tests, synthetic events): ``Message.of(Event="Hangup", Uniqueid="1.1")``."""
        items = list((fields or {}).items()) + list(more.items())
        return cls(tuple((str(k), str(v)) for k, v in items), received=received)

    def get(self, name: str, default: str = "") -> str:
        folded = name.casefold()
        for key, value in self.headers:
            if key.casefold() == folded:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        folded = name.casefold()
        return [value for key, value in self.headers if key.casefold() == folded]

    def __getitem__(self, name: str) -> str:
        folded = name.casefold()
        for key, value in self.headers:
            if key.casefold() == folded:
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key.casefold() == name.casefold() for key, _ in self.headers)

    def keys(self) -> Iterator[str]:
        return (key for key, _ in self.headers)

    @property
    def event(self) -> str:
        return self.get("Event")

    @property
    def response(self) -> str:
        return self.get("Response")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str]:
        """First value of each key (later repeats are in ``get_all``)."""
        data: dict[str, str] = {}
        for key, value in self.headers:
            data.setdefault(key, value)
        return data


class Parser:
    """Bytes in, messages out; no I/O. ``feed()`` takes any chunking of the stream.

    ``banner`` is the first line when it is Asterisk's; ``garbage`` counts what was skipped.
    With ``actions`` it reads the other side (``Action:`` messages, for a fake Asterisk).
    """

    def __init__(self, *, max_line: int = MAX_LINE, clock: Callable[[], float] = time.time,
                 actions: bool = False) -> None:  # fmt: skip
        self._actions = actions
        self.banner: str | None = None
        self.garbage = 0
        self._max_line = max_line
        self._clock = clock
        self._buffer = bytearray()
        self._skipping_line = False  # inside an overlong line: drop bytes up to its end
        self._first_line = True
        self._headers: list[tuple[str, str]] = []
        self._output: list[str] = []
        self._follows = False  # inside a Response: Follows text
        self._dropping = False  # the message grew too big: drop it up to its empty line

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        found: list[Message] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:  # no end in sight: drop it, and the rest of the line
                    self._buffer.clear()
                    if not self._skipping_line:
                        self.garbage += 1
                    self._skipping_line = True
                return found
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping_line:
                self._skipping_line = False
                continue
            if len(raw) > self._max_line + 1:
                self.garbage += 1
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            message = self._line(raw.decode("utf-8", errors="replace"))
            if message is not None:
                found.append(message)

    def _line(self, text: str) -> Message | None:
        if self._first_line:
            self._first_line = False
            if text.startswith(BANNER_PREFIX):
                self.banner = text
                return None
        if self._dropping:
            if text == "":
                self._dropping = False
                self._reset()
            return None
        if self._follows:
            return self._follows_line(text)
        if text == "":
            return self._end()
        key, colon, value = text.partition(":")
        key = key.strip()
        if not colon or not key or " " in key:
            self.garbage += 1
            return None
        self._headers.append((key, value[1:] if value.startswith(" ") else value))
        if key.casefold() == "response" and value.strip().casefold() == "follows":
            self._follows = True
        return self._check_size()

    def _follows_line(self, text: str) -> Message | None:
        if text.endswith(END_COMMAND):
            before = text[: -len(END_COMMAND)]
            if before:
                self._output.append(before)
            self._follows = False  # the empty line that follows ends the message
            return None
        key, colon, value = text.partition(":")
        if not self._output and colon and key.strip().casefold() in ("privilege", "actionid", "message"):
            self._headers.append((key.strip(), value[1:] if value.startswith(" ") else value))
        else:
            self._output.append(text)
        return self._check_size()

    def _check_size(self) -> None:
        if len(self._headers) > MAX_HEADERS or len(self._output) > MAX_OUTPUT_LINES:
            self.garbage += 1
            self._dropping = True
            self._follows = False
        return None

    def _end(self) -> Message | None:
        if not self._headers:
            return None  # a stray empty line
        message = Message(tuple(self._headers), tuple(self._output), self._clock())
        self._reset()
        if not (message.event or message.response or (self._actions and "Action" in message)):
            self.garbage += 1
            return None
        return message

    def _reset(self) -> None:
        self._headers = []
        self._output = []
        self._follows = False


def encode_action(fields: Mapping[str, Any]) -> bytes:
    """``{"Action": "Ping", "ActionID": "1"}`` -> ``b"Action: Ping\\r\\nActionID: 1\\r\\n\\r\\n"``.

    A list value sends the key once per item (``Variable``). Line breaks in a
    key or value would inject another header: refused (``ValueError``).
    """
    lines = []
    for key, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            text = str(item)
            if any(c in text or c in key for c in "\r\n"):
                raise ValueError(f"AMI header {key!r} must not contain a line break")
            lines.append(f"{key}: {text}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- the client ----------------------------------------------------------------


STATES = ("off", "connecting", "connected", "reconnecting", "stopped")


@dataclass
class AmiStatus:
    state: str = "off"
    since: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    last_error: str = ""
    connects: int = 0  # successful logins
    disconnects: int = 0  # sessions that ended after logging in

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since.isoformat(), "last_error": self.last_error,
                "connects": self.connects, "disconnects": self.disconnects}  # fmt: skip


class _Pending:
    def __init__(self, collect: bool) -> None:
        self.future: asyncio.Future[tuple[Message, list[Message]]] = asyncio.get_running_loop().create_future()
        self.collect = collect
        self.response: Message | None = None
        self.events: list[Message] = []


class AmiClient:
    """A long-lived AMI session: login, keep-alive, reconnect; events go to ``on_event``.

    ``on_event(message)`` is called for every event, in order, on the event
    loop (it must not block). ``on_connect(client)`` runs after each login
    (e.g. to ask ``CoreShowChannels``); ``on_disconnect()`` after each drop.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        username: str = "",
        secret: str = "",
        *,
        on_event: Callable[[Message], None] = lambda message: None,
        on_connect: Callable[[AmiClient], Awaitable[None]] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        backoff_min: float = DEFAULT_BACKOFF[0],
        backoff_max: float = DEFAULT_BACKOFF[1],
        events: str = "on",
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.events = events
        self.status = AmiStatus()
        self.garbage = 0
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"AmiClient({self.host}:{self.port}, user={self.username!r}, <secret hidden>)"

    @property
    def connected(self) -> bool:
        return self.status.state == "connected"

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="ami-client")

    async def close(self) -> None:
        """Log off (best effort) and stop reconnecting."""
        self._stopping.set()
        if self._writer is not None and self.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.action({"Action": "Logoff"}, timeout=1.0), 1.5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state("stopped")

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until ``close()``."""
        delay = self.backoff_min
        first = True
        while not self._stopping.is_set():
            self._set_state("connecting" if first else "reconnecting")
            first = False
            logged_in = False
            try:
                logged_in = await self._session()
            except asyncio.CancelledError:
                raise
            except AmiAuthError as exc:
                self._failed(str(exc))
            except (OSError, EOFError, AmiError, TimeoutError) as exc:
                self._failed(_describe(exc, self))
            except Exception as exc:  # a bug must not end the logger for good
                logger.exception("AMI session to %s:%d failed", self.host, self.port)
                self._failed(f"{type(exc).__name__}: {exc}")
            if self._stopping.is_set():
                break
            if logged_in:
                delay = self.backoff_min
            self._set_state("reconnecting")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, self.backoff_max)

    async def action(
        self, fields: Mapping[str, Any], *, timeout: float | None = None, collect: bool = False
    ) -> Message:
        """Send an action, wait for its response (``AmiError`` on timeout or drop).

        With ``collect`` (list actions such as ``CoreShowChannels``) the events
        of the list are gathered in :meth:`last_list` order and returned by
        :meth:`action_list`.
        """
        response, _ = await self._send(fields, timeout=timeout, collect=collect)
        return response

    async def action_list(self, fields: Mapping[str, Any], *, timeout: float | None = None) -> list[Message]:
        """A list action's events (``CoreShowChannel`` x N), up to its ``EventList: Complete``."""
        response, events = await self._send(fields, timeout=timeout, collect=True)
        if response.response.casefold() != "success":
            raise AmiError(f"Asterisk refused {fields.get('Action')}: {response.get('Message') or response.response}")
        return events

    async def _send(
        self, fields: Mapping[str, Any], *, timeout: float | None, collect: bool
    ) -> tuple[Message, list[Message]]:
        writer = self._writer
        if writer is None:
            raise AmiDisconnected("not connected to Asterisk")
        action_id = str(fields.get("ActionID") or f"crmroute-{next(self._ids)}")
        data = encode_action({**fields, "ActionID": action_id})
        pending = _Pending(collect)
        self._pending[action_id] = pending
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                return await pending.future
        except TimeoutError:
            raise AmiError(f"no answer to {fields.get('Action')} within {self.timeout if timeout is None else timeout:g} s") from None
        finally:
            self._pending.pop(action_id, None)

    # --- one session -------------------------------------------------------------------

    async def _session(self) -> bool:
        """One connection: banner, login, serve until it drops. True when the login succeeded."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        parser = Parser()
        logged_in = False
        reading: asyncio.Task | None = None
        try:
            async with asyncio.timeout(self.timeout):
                early: list[Message] = []
                while parser.banner is None:
                    data = await reader.read(4096)
                    if not data:
                        raise AmiDisconnected("Asterisk closed the connection before its banner")
                    early += parser.feed(data)
                    if parser.banner is None and (early or parser.garbage):
                        raise AmiError(f"{self.host}:{self.port} is not an Asterisk Manager Interface (no banner)")
            self._writer = writer
            reading = asyncio.create_task(self._read(reader, parser), name="ami-reader")
            login = await self.action({"Action": "Login", "Username": self.username, "Secret": self._secret,
                                       "Events": self.events})  # fmt: skip
            if login.response.casefold() != "success":
                raise AmiAuthError(f"Asterisk refused the login of {self.username!r}: "
                                   f"{login.get('Message') or login.response}")  # fmt: skip
            logged_in = True
            self.status.connects += 1
            self._set_state("connected", error="")
            logger.info("AMI: connected to %s:%d (%s) as %r", self.host, self.port, parser.banner, self.username)
            if self.on_connect is not None:
                await self.on_connect(self)
            await self._keep_alive(reading)
            return True
        finally:
            self._writer = None
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
            for pending in list(self._pending.values()):
                if not pending.future.done():
                    pending.future.set_exception(AmiDisconnected("the AMI connection ended"))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            if logged_in:
                self.status.disconnects += 1
                if self.on_disconnect is not None:
                    try:
                        self.on_disconnect()
                    except Exception:
                        logger.exception("AMI: on_disconnect failed")

    async def _keep_alive(self, reading: asyncio.Task) -> None:
        """Ping until the reader ends (EOF, error) or a ping goes unanswered."""
        while True:
            done, _ = await asyncio.wait({reading}, timeout=self.ping_interval)
            if done:
                reading.result()  # raises what ended it
                raise AmiDisconnected("Asterisk closed the connection")
            await self.action({"Action": "Ping"})

    async def _read(self, reader: asyncio.StreamReader, parser: Parser) -> None:
        while True:
            data = await reader.read(65_536)
            if not data:
                return
            for message in parser.feed(data):
                self._dispatch(message)
            self.garbage = parser.garbage

    def _dispatch(self, message: Message) -> None:
        action_id = message.action_id
        pending = self._pending.get(action_id) if action_id else None
        if pending is not None and not pending.future.done():
            if message.response and pending.response is None:
                pending.response = message
                if not pending.collect or message.get("EventList").casefold() != "start":
                    pending.future.set_result((message, pending.events))
                return
            if message.event and pending.collect and pending.response is not None:
                if message.get("EventList").casefold() == "complete":
                    pending.future.set_result((pending.response, pending.events))
                else:
                    pending.events.append(message)
                return
        if message.event:
            try:
                self.on_event(message)
            except Exception:
                logger.exception("AMI: handling a %s event failed", message.event)

    def _set_state(self, state: str, *, error: str | None = None) -> None:
        if state != self.status.state:
            self.status.state = state
            self.status.since = datetime.now(timezone.utc)
        if error is not None:
            self.status.last_error = error

    def _failed(self, error: str) -> None:
        if error != self.status.last_error or self.status.state == "connected":
            logger.warning("AMI: %s:%d: %s; reconnecting", self.host, self.port, error)
        self.status.last_error = error


def _describe(exc: BaseException, client: AmiClient) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {client.host}:{client.port} within {client.timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {client.host}:{client.port} refused"
    if isinstance(exc, OSError):
        return f"cannot reach {client.host}:{client.port}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__
