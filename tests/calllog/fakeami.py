"""A fake Asterisk Manager Interface on loopback, speaking as Asterisk 22 does in ``fixtures/ami-*.txt``.

    async with running_ami() as ami:             # FakeAmi on a free 127.0.0.1 port
        ...client connects, logs in as crm / s3cret...
        await ami.wait_logins(1)
        await ami.replay("inbound-answered")     # the recorded stream, exactly as Asterisk sent it
        await ami.send(event("Hangup", ...))     # or any bytes, garbage included
        await ami.drop()                         # the connection dies (RST), the listener stays
        await ami.restart()                      # Asterisk restarts: connections closed, port down a moment

It sends the banner, answers ``Login`` (``Authentication accepted`` then
``FullyBooted``, or ``Authentication failed``), ``Ping`` (``Ping: Pong``,
unless ``answer_ping`` is off), ``CoreShowChannels`` (``EventList: start``,
one ``CoreShowChannel`` per entry of ``channels``, ``CoreShowChannelsComplete``),
``DeviceStateList`` (a ``DeviceStateChange`` per entry of ``device_states``,
``DeviceStateListComplete``), ``ExtensionStateList`` (an ``ExtensionStatus`` per
entry of ``extension_states``, ``ExtensionStateListComplete``; Asterisk 13+)
and ``Logoff`` (``Goodbye``, then closes); other actions get
``Response: Error``. Every action received is kept in ``actions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from crmroute.calllog.ami import Message, Parser

FIXTURES = Path(__file__).parent / "fixtures"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
USERNAME, SECRET = "crm", "s3cret"


def recorded(name: str) -> bytes:
    """A recorded stream without its banner line: everything Asterisk sent after it."""
    data = (FIXTURES / f"ami-{name}.txt").read_bytes()
    assert data.startswith(BANNER)
    return data[len(BANNER):]


def recorded_messages(name: str, received: float = 1_000.0) -> list[Message]:
    parser = Parser(clock=lambda: received)
    messages = parser.feed((FIXTURES / f"ami-{name}.txt").read_bytes())
    assert parser.garbage == 0
    return messages


def event(name: str, **fields: Any) -> bytes:
    """One event as Asterisk writes it: ``Event: name``, ``Key: Value`` lines (CRLF), an empty line."""
    lines = [f"Event: {name}"] + [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(action_id: str, status: str = "Success", **fields: Any) -> bytes:
    lines = [f"Response: {status}", f"ActionID: {action_id}"] + [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.logged_in = False


class FakeAmi:
    def __init__(self, *, username: str = USERNAME, secret: str = SECRET) -> None:
        self.username, self.secret = username, secret
        self.port = 0
        self.actions: list[dict[str, str]] = []
        self.logins = 0
        self.refused_logins = 0
        self.channels: list[dict[str, str]] = []  # what CoreShowChannels lists
        self.device_states: dict[str, str] = {}  # what DeviceStateList lists: device -> state
        self.extension_states: list[dict[str, Any]] = []  # what ExtensionStateList lists (Exten, Context, Status ...)
        self.answer_ping = True
        self.uptime = 3600
        self._server: asyncio.Server | None = None
        self._connections: list[_Connection] = []
        self._login_event = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.drop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def restart(self, down: float = 0.2) -> None:
        """Asterisk restarts: every connection closes, the port refuses for ``down`` s, uptime starts over."""
        await self.stop()
        await asyncio.sleep(down)
        self.uptime = 1
        self.channels = []
        await self.start()

    async def drop(self) -> None:
        """Kill every connection without a word (a network failure)."""
        for conn in list(self._connections):
            conn.writer.transport.abort()
        self._connections.clear()

    @property
    def connected(self) -> int:
        return sum(1 for c in self._connections if c.logged_in)

    async def wait_logins(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.logins < count:
                self._login_event.clear()
                await self._login_event.wait()
        await asyncio.sleep(0.05)  # let the client's on_connect (CoreShowChannels) run

    async def send(self, data: bytes) -> None:
        """Bytes to every logged-in connection."""
        for conn in list(self._connections):
            if conn.logged_in and not conn.writer.is_closing():
                conn.writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await conn.writer.drain()

    async def replay(self, name: str, *, chunk: int = 0) -> None:
        """A recorded stream, whole or in ``chunk``-byte pieces."""
        data = recorded(name)
        if not chunk:
            await self.send(data)
            return
        for start in range(0, len(data), chunk):
            await self.send(data[start:start + chunk])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        self._connections.append(conn)
        parser = Parser(actions=True)
        try:
            writer.write(BANNER)
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for action in parser.feed(data):
                    await self._answer(conn, action)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if conn in self._connections:
                self._connections.remove(conn)
            writer.close()

    async def _answer(self, conn: _Connection, action: Message) -> None:
        fields = action.as_dict()
        self.actions.append(fields)
        name, action_id = fields.get("Action", "").lower(), fields.get("ActionID", "")
        out = conn.writer
        if name == "login":
            if fields.get("Username") == self.username and fields.get("Secret") == self.secret:
                out.write(response(action_id, Message="Authentication accepted"))
                out.write(event("FullyBooted", Privilege="system,all", Uptime=self.uptime, LastReload=self.uptime,
                                Status="Fully Booted"))  # fmt: skip
                conn.logged_in = True
                self.logins += 1
                self._login_event.set()
            else:
                self.refused_logins += 1
                out.write(response(action_id, "Error", Message="Authentication failed"))
        elif not conn.logged_in:
            out.write(response(action_id, "Error", Message="Missing action in request"))
        elif name == "ping":
            if self.answer_ping:
                out.write(response(action_id, Ping="Pong", Timestamp=f"{time.time():.6f}"))
        elif name == "coreshowchannels":
            out.write(response(action_id, EventList="start", Message="Channels will follow"))
            for channel in self.channels:
                out.write(event("CoreShowChannel", ActionID=action_id, **channel))
            out.write(event("CoreShowChannelsComplete", ActionID=action_id, EventList="Complete",
                            ListItems=len(self.channels)))  # fmt: skip
        elif name == "logoff":
            out.write(response(action_id, "Goodbye", Message="Thanks for all the fish."))
            await out.drain()
            out.close()
            return
        elif name == "devicestatelist":
            out.write(response(action_id, EventList="start", Message="Device State Changes will follow"))
            for device, state in self.device_states.items():
                out.write(event("DeviceStateChange", ActionID=action_id, Device=device, State=state))
            out.write(event("DeviceStateListComplete", ActionID=action_id, EventList="Complete",
                            ListItems=len(self.device_states)))  # fmt: skip
        elif name == "extensionstatelist":
            out.write(response(action_id, EventList="start", Message="Extension Statuses will follow"))
            for item in self.extension_states:
                out.write(event("ExtensionStatus", ActionID=action_id, **item))
            out.write(event("ExtensionStateListComplete", ActionID=action_id, EventList="Complete",
                            ListItems=len(self.extension_states)))  # fmt: skip
        else:
            out.write(response(action_id, "Error", Message="Invalid/unknown command"))
        await out.drain()


@contextlib.asynccontextmanager
async def running_ami(**options: Any) -> AsyncIterator[FakeAmi]:
    ami = FakeAmi(**options)
    await ami.start()
    try:
        yield ami
    finally:
        await ami.stop()
