"""Several real ``crmroute serve`` processes sharing one PostgreSQL store, each on its own loopback address.

    with running_nodes(store, tmp_path, count=3) as nodes:   # 127.0.0.2, .3, .4
        nodes[0].api(token).put(...)
        nodes[1].health(token)["config"]

Each node's AGI and HTTP ports are free ports on its own address; its
output goes to ``tmp_path/node-N.log`` (shown by ``node.log()``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from crmroute import rulesfile
from crmroute.store import users
from crmroute.store.db import transaction


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    name: str
    host: str
    agi_port: int
    http_port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def health(self, token: str = "") -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}/healthz", headers=headers, timeout=10).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, env: Mapping[str, str]) -> None:
        node_env = dict(env) | {
            "CRMROUTE_NODE_ID": self.name, "CRMROUTE_AGI_HOST": self.host, "CRMROUTE_AGI_PORT": str(self.agi_port),
            "CRMROUTE_HTTP_HOST": self.host, "CRMROUTE_HTTP_PORT": str(self.http_port),
        }  # fmt: skip
        with self.log_path.open("a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "crmroute", "serve"], env=node_env, stdout=out,
                                            stderr=subprocess.STDOUT)  # fmt: skip

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Until /healthz says ready (a loaded machine starts a process slowly)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"{self.name} exited:\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if self.health().get("ready"):
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def node_env(store: Any, **more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
    shared = {"CRMROUTE_DATA_DIR": str(store.settings.data_dir), "CRMROUTE_DATABASE_URL": store.settings.db_url,
              "CRMROUTE_AGI_ALLOW": "127.0.0.0/8"}  # fmt: skip
    return base | shared | {f"CRMROUTE_{k.upper()}": v for k, v in more.items()}


@contextlib.contextmanager
def running_nodes(store: Any, tmp_path: Path, count: int = 3, **env: str) -> Iterator[list[Node]]:
    """``count`` nodes on 127.0.0.2, 127.0.0.3 ..., started together and ready; stopped at the end."""
    nodes = []
    for n in range(count):
        host = f"127.0.0.{n + 2}"
        nodes.append(Node(f"node-{n + 1}", host, free_port(host), free_port(host), tmp_path / f"node-{n + 1}.log"))
    try:
        for node in nodes:
            node.start(node_env(store, **env))
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def seed(store: Any, rules: dict) -> str:
    """Import ``rules`` (a rules-file document) and create the user ``admin``; an API token of theirs."""
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules), environ={}))
    with transaction(store.factory) as session:
        users.create_user(session, "admin", "correct horse")
    with transaction(store.factory) as session:
        return users.create_token(session, "admin", "tests")
