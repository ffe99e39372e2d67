"""A FastAGI load generator that speaks as Asterisk does.

Each call connects, sends an Asterisk 22 ``agi_*`` environment and its empty
line, answers every command (``200 result=1``; ``SET CONTEXT`` / ``EXTENSION``
/ ``PRIORITY`` and ``EXEC`` get ``200 result=0``) and ends when the server
closes the connection. Built on ``asyncio.Protocol`` to spend as little CPU
per call as it can, since it shares the machine with the server it loads.

Per call it records the decision latency (environment sent -> first command
received: the server has decided by then), the session time (connect ->
closed by the server) and the ``CRMROUTE_STATUS`` left on the channel.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

ENV = (
    "agi_network: yes\nagi_network_script: did\nagi_request: agi://127.0.0.1:{port}/did\n"
    "agi_channel: PJSIP/trunk-{n:08x}\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795650000.{n}\n"
    "agi_version: 22.10.1\nagi_callerid: {caller}\nagi_calleridname: Bench Caller\nagi_callingpres: 0\n"
    "agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: unknown\nagi_rdnis: unknown\n"
    "agi_context: from-trunk\nagi_extension: 5551000\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n"
    "agi_threadid: 140286501643968\n\n"
)
OK, ZERO = b"200 result=1\n", b"200 result=0\n"
ZERO_COMMANDS = (b"SET CONTEXT", b"SET EXTENSION", b"SET PRIORITY", b"EXEC")
STATUS_PREFIX = b"SET VARIABLE CRMROUTE_STATUS "


@dataclass
class CallResult:
    decision_s: float | None  # env sent -> first command
    session_s: float
    status: str  # CRMROUTE_STATUS, "" when none was set
    error: str = ""


class _AgiCall(asyncio.Protocol):
    def __init__(self, env: bytes, done: asyncio.Future) -> None:
        self.env = env
        self.done = done
        self.buffer = b""
        self.sent = 0.0
        self.first: float | None = None
        self.status = ""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sent = time.perf_counter()
        transport.write(self.env)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.buffer += data
        replies = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
            if line.startswith(STATUS_PREFIX):
                self.status = line[len(STATUS_PREFIX):].strip(b'"\r ').decode()
            replies.append(ZERO if line.startswith(ZERO_COMMANDS) else OK)
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


@dataclass
class LoadResult:
    calls: int
    seconds: float
    results: list[CallResult] = field(repr=False, default_factory=list)
    generator_cpu_s: float = 0.0  # CPU this (load generator) process used meanwhile

    @property
    def generator_busy(self) -> float:
        """Share of one core the load generator used: near 1.0 means it, not the server, set the pace."""
        return self.generator_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def statuses(self) -> dict[str, int]:
        return dict(Counter(r.status or (f"error:{r.error}" if r.error else "none") for r in self.results))

    def decision_ms(self) -> list[float]:
        return sorted(r.decision_s * 1000 for r in self.results if r.decision_s is not None)

    def session_ms(self) -> list[float]:
        return sorted(r.session_s * 1000 for r in self.results)


async def one_call(port: int, n: int, caller: str, *, timeout: float = 30.0) -> CallResult:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    env = ENV.format(port=port, n=n, caller=caller).encode()
    started = time.perf_counter()
    protocol = _AgiCall(env, done)
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", port)
            await done
    except (OSError, TimeoutError) as exc:
        if transport is not None:
            transport.abort()
        return CallResult(None, time.perf_counter() - started, protocol.status, type(exc).__name__)
    decision = protocol.first - protocol.sent if protocol.first is not None else None
    return CallResult(decision, time.perf_counter() - started, protocol.status)


async def run_load(
    port: int,
    calls: int,
    concurrency: int,
    caller_for: Callable[[int], str],
    *,
    rate: float | None = None,
    first_n: int = 0,
    timeout: float = 30.0,
) -> LoadResult:
    """``calls`` calls with at most ``concurrency`` in flight; closed loop, or paced at ``rate`` calls/s."""
    # What earlier runs left (their results) is frozen out of the collector, so that a full
    # collection here does not stall this process's loop and show up as the server's latency.
    gc.collect()
    gc.freeze()
    numbers = itertools.count(first_n)
    results: list[CallResult] = []
    started = time.perf_counter()
    cpu_started = time.process_time()

    if rate is None:
        remaining = itertools.count()

        async def worker() -> None:
            while next(remaining) < calls:
                n = next(numbers)
                results.append(await one_call(port, n, caller_for(n), timeout=timeout))

        await asyncio.gather(*(worker() for _ in range(min(concurrency, calls))))
    else:
        slots = asyncio.Semaphore(concurrency)
        tasks = []

        async def paced(n: int) -> None:
            try:
                results.append(await one_call(port, n, caller_for(n), timeout=timeout))
            finally:
                slots.release()

        for i in range(calls):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            n = next(numbers)
            tasks.append(asyncio.create_task(paced(n)))
        await asyncio.gather(*tasks)
    return LoadResult(calls, time.perf_counter() - started, results, time.process_time() - cpu_started)


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of sorted ``values``."""
    if not values:
        return None
    rank = max(1, min(len(values), int(round(p / 100 * len(values) + 0.5))))
    return values[rank - 1]
