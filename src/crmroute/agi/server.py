"""The FastAGI server: accepts Asterisk's connections and guards each call.

Per connection, on asyncio (no threads):

1. the peer address must be in ``allow`` (IPv4-mapped IPv6 peers are
   matched as IPv4); anyone else is closed at once, nothing sent;
2. the ``agi_*`` environment is read within ``env_timeout``; a malformed one
   is logged and answered with ``CRMROUTE_STATUS=error`` when the socket
   still works; a connection closed before sending a byte is a health
   check (HAProxy, Kamailio, monitoring): counted in ``probes_total``,
   logged at debug level only;
3. the handler runs under ``session_timeout``; it returns an
   :class:`Outcome` (variables, optional jump);
4. the outcome is written (``SET VARIABLE`` each, then ``SET CONTEXT`` /
   ``SET EXTENSION`` / ``SET PRIORITY``) within ``finish_timeout``;
5. the socket is closed, which ends the AGI step in the dialplan.

Any exception from the handler (but ``AgiHangup``) is logged with its
traceback and becomes ``CRMROUTE_STATUS=error`` without a jump; so does a
handler that outlives ``session_timeout``. A hang-up ends the session
quietly. Nothing one session does reaches another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from crmroute.agi.protocol import (
    DEFAULT_MAX_LINE,
    DEFAULT_REPLY_TIMEOUT,
    AgiChannel,
    AgiConnection,
    AgiEnv,
    jump_lines,
    set_variable_line,
)
from crmroute.agi.variables import error_variables
from crmroute.errors import AgiError, AgiHangup, AgiProtocolError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4573
DEFAULT_ENV_TIMEOUT = 5.0
DEFAULT_SESSION_TIMEOUT = 30.0
DEFAULT_FINISH_TIMEOUT = 5.0
DEFAULT_CLOSE_GRACE = 1.0
LOOPBACK = ("127.0.0.0/8", "::1/128")
BACKLOG = 1024  # connections waiting to be accepted: a burst of calls must not meet a full queue

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Outcome:
    """What to leave on the channel: variables (in order) and where to continue."""

    variables: dict[str, str] = field(default_factory=dict)
    jump: tuple[str, str, str] | None = None  # context, extension, priority

    @classmethod
    def error(cls) -> Outcome:
        """``CRMROUTE_STATUS=error`` and no jump."""
        return cls(error_variables(), None)


Handler = Callable[[AgiChannel], Awaitable[Outcome]]


class CallLog(logging.LoggerAdapter):
    """Prefixes each line with the call's id and passes it as ``extra["call_id"]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra.get('call_id', '-')}] {msg}", kwargs


class AgiServer:
    """Serves FastAGI with ``handler`` for every allowed connection.

    ``active_sessions`` counts sessions in progress, ``sessions_total`` every
    accepted connection, ``refused_total`` connections turned away by the
    allow list.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        allow: Iterable[IpNetwork | str] = LOOPBACK,
        env_timeout: float = DEFAULT_ENV_TIMEOUT,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self._handler = handler
        self.host = host
        self._port = port
        self.allow: tuple[IpNetwork, ...] = tuple(
            a if isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network) else ipaddress.ip_network(a, strict=False)
            for a in allow
        )
        self.env_timeout = env_timeout
        self.session_timeout = session_timeout
        self.finish_timeout = finish_timeout
        self.reply_timeout = reply_timeout
        self.max_line = max_line
        self.active_sessions = 0
        self.sessions_total = 0
        self.refused_total = 0
        self.probes_total = 0  # bare connects that sent nothing: load-balancer and monitoring health checks
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting; ``port`` 0 picks a free port (see ``.port``)."""
        if self._server is not None:
            raise RuntimeError("AgiServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, self._port, backlog=BACKLOG)
        logger.info("FastAGI listening on %s:%s (allow %s)", self.host, self.port, ", ".join(map(str, self.allow)))

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def serve_forever(self) -> None:
        """Start if needed and serve until cancelled; closes on the way out."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Stop accepting, give sessions in flight ``grace`` seconds, cancel the rest."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pending = {t for t in self._tasks if t is not asyncio.current_task()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            logger.info("FastAGI closed with %d session(s) cancelled", len(pending))
        if server is not None:
            try:
                async with asyncio.timeout(grace):
                    await server.wait_closed()
            except TimeoutError:
                pass

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- one connection ----------------------------------------------------

    def is_allowed(self, host: str) -> bool:
        """Whether a peer address (``"::ffff:10.0.0.1"``, ``"fe80::1%eth0"``) may connect."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in net for a in candidates for net in self.allow if a.version == net.version)

    def _new_connection(self) -> AgiConnection:
        return AgiConnection(max_line=self.max_line, on_connect=self._on_connect)

    def _on_connect(self, connection: AgiConnection) -> None:
        assert connection.transport is not None
        peername = connection.transport.get_extra_info("peername")
        host = peername[0] if isinstance(peername, tuple) and peername else ""
        peer = f"{host}:{peername[1]}" if host else str(peername)
        if not self.is_allowed(host):
            self.refused_total += 1
            logger.warning("refused FastAGI connection from %s: not in the allow list", peer)
            connection.close()
            return
        self.active_sessions += 1
        self.sessions_total += 1
        task = asyncio.get_running_loop().create_task(self._session(connection, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, connection: AgiConnection, peer: str) -> None:
        log = CallLog(logger, {"call_id": peer})
        started = time.monotonic()
        try:
            await self._serve(connection, peer, log)
        except asyncio.CancelledError:
            log.info("session cancelled (server closing)")  # the top of the session's own task
        except Exception:  # a bug in this module: still never take the server down
            log.exception("FastAGI session failed")
        finally:
            self.active_sessions -= 1
            connection.close()
            log.debug("session closed after %.0f ms", (time.monotonic() - started) * 1000)

    async def _serve(self, connection: AgiConnection, peer: str, log: CallLog) -> None:
        try:
            env = await connection.read_env(self.env_timeout)
        except AgiProtocolError as exc:
            if connection.at_eof and connection.bytes_received == 0:
                self.probes_total += 1
                log.debug("health check from %s: connected and closed without a word", peer)
                return
            log.warning("malformed AGI environment from %s: %s", peer, exc)
            if not connection.at_eof:
                channel = AgiChannel(connection, AgiEnv(), reply_timeout=self.finish_timeout)
                await self._write(channel, Outcome.error(), log)
            return
        log.extra["call_id"] = env.uniqueid or peer  # type: ignore[index]  # later lines name the call
        log.info("FastAGI %s from %s (caller %s, extension %s)", env.script, peer, env.callerid or "-", env.extension)
        channel = AgiChannel(connection, env, reply_timeout=self.reply_timeout)
        outcome = await self._run_handler(channel, log)
        if outcome is not None:
            await self._write(channel, outcome, log)

    async def _run_handler(self, channel: AgiChannel, log: CallLog) -> Outcome | None:
        """The handler's outcome; ``Outcome.error()`` if it failed; ``None`` after a hang-up."""
        try:
            async with asyncio.timeout(self.session_timeout) as scope:
                outcome = await self._handler(channel)
        except AgiHangup as exc:
            log.info("caller hung up: %s", exc)
            return None
        except TimeoutError:
            if scope.expired():
                log.error("handler took longer than %g s; answering error", self.session_timeout)
            else:
                log.exception("handler failed")
            return Outcome.error()
        except Exception:
            log.exception("handler failed")
            return Outcome.error()
        if not isinstance(outcome, Outcome):
            log.error("handler returned %r instead of an Outcome", outcome)
            return Outcome.error()
        return outcome

    async def _write(self, channel: AgiChannel, outcome: Outcome, log: CallLog) -> None:
        """Set the outcome's variables, then jump (not on a dead channel), within ``finish_timeout``."""
        try:
            variables = [set_variable_line(name, value) for name, value in outcome.variables.items()]
            jump = jump_lines(*outcome.jump) if outcome.jump is not None else []
        except (AttributeError, TypeError, ValueError) as exc:  # variables not a dict, a bad name or value, ...
            log.error("handler returned an unusable outcome (%s); answering error", exc)
            outcome, variables, jump = Outcome.error(), [set_variable_line(*v) for v in error_variables().items()], []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.finish_timeout
        try:
            await channel.commands(variables, timeout=self.finish_timeout)
            jumped = bool(jump) and not channel.hung_up
            if jump and not jumped:
                log.info("caller hung up; variables set, no jump")
            if jumped:
                await channel.commands(jump, timeout=max(deadline - loop.time(), 0.001))
        except AgiHangup as exc:
            log.info("caller hung up while answering: %s", exc)
        except AgiError as exc:
            log.warning("could not answer: %s", exc)
        else:
            log.info(
                "answered %s%s",
                " ".join(f"{k}={v}" for k, v in outcome.variables.items()) or "(no variables)",
                f" -> {','.join(map(str, outcome.jump))}" if jumped and outcome.jump else "",
            )
