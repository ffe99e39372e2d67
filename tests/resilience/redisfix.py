"""Redis for the cluster tests: the machine's (127.0.0.1:6379, skipped when absent) or one a test starts and stops."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crmroute.resilience.shared import SharedState

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own (tests share the machine's Redis); skips when Redis is absent."""
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return f"crmroute-test-{uuid.uuid4().hex[:12]}:"


async def join(stack, prefix: str, node: str, url: str = REDIS_URL, **options: float) -> SharedState:
    """Give a running stack's router the shared state (as CRMROUTE_REDIS_URL would), under ``prefix``."""
    shared = SharedState(url, node, prefix=prefix, **options)
    stack.router.share(shared)
    await shared.start()
    # On a loaded machine the first heartbeat may miss its time (the node then works alone until the next one):
    # the tests want a node that has joined, so they wait for it.
    until = time.monotonic() + 15
    while not shared.up:
        assert time.monotonic() < until, f"node {node} did not reach Redis at {url} in 15 s"
        await asyncio.sleep(0.05)
        await shared.beat()
    return shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own on a free port: ``stop()`` mid-test, ``start()`` again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        until = time.monotonic() + 10
        while not redis_reachable(port=self.port):
            if time.monotonic() > until:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def own_redis(directory: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
