"""How long a configuration change takes to reach the other nodes of a cluster (issue 13: within 200 ms).

Three ``crmroute serve`` nodes on 127.0.0.2, .3 and .4 share a fresh PostgreSQL database (and Redis, as a
cluster would). ``--changes`` times, a rule's default destination is changed through the first node's API;
each other node reports in ``/healthz`` how the change reached it (``via``: ``notify`` or ``poll``) and how
long after the change it was applied (``delay_ms``, on the announcing node's clock: the same machine here).
A call is then placed on each other node, which must route on the new rule. Prints the delays' median,
p90 and maximum.

    .venv/bin/python bench/notify.py                  # 20 changes, about a minute
    .venv/bin/python bench/notify.py --changes 50

Needs PostgreSQL and Redis on 127.0.0.1 (``BENCH_PG_URL``, ``BENCH_REDIS_URL``, as ``bench/run.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from loadgen import percentile  # noqa: E402
from run import CRMROUTE, cluster_store  # noqa: E402

from tests.agi.fakeasterisk import call_agi  # noqa: E402

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
RULES = {
    "destinations": [{"type": "extension", "number": str(n)} for n in range(100, 200)],
    "rules": [{"name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
               "custom_url": "https://127.0.0.1:9/lookup", "default_destination": "100",  # nothing listens
               "rows": []}],
    "dids": [{"number": "5551000", "rule": "VIP"}],
}  # fmt: skip


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Node:
    def __init__(self, host: str, env: dict[str, str], directory: Path) -> None:
        self.host, self.agi_port, self.http_port = host, free_port(host), free_port(host)
        self.log = directory / f"{host}.log"
        node_env = env | {"CRMROUTE_NODE_ID": host, "CRMROUTE_AGI_HOST": host, "CRMROUTE_AGI_PORT": str(self.agi_port),
                          "CRMROUTE_HTTP_HOST": host, "CRMROUTE_HTTP_PORT": str(self.http_port)}  # fmt: skip
        self.process = subprocess.Popen([CRMROUTE, "serve"], env=node_env, stdout=self.log.open("wb"),
                                        stderr=subprocess.STDOUT)  # fmt: skip
        self.http = httpx.Client(base_url=f"http://{host}:{self.http_port}", timeout=30)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.host} exited: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/healthz").json().get("ready"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.host} not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def config_of(node: Node, token: str, version: int, timeout: float = 10.0) -> dict:
    """The node's config status once it has ``version``."""
    deadline = time.monotonic() + timeout
    while True:
        config = node.http.get("/healthz", headers={"Authorization": f"Bearer {token}"}).json()["config"]
        if config["version"] >= version:
            return config
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.host} did not apply version {version}: {config}")
        time.sleep(0.02)


def setup(env: dict[str, str], directory: Path) -> str:
    """Migrate, import the rules, create a user; the API token."""
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    run = lambda *args, **kw: subprocess.run([CRMROUTE, *args], env=env, check=True, capture_output=True,  # noqa: E731
                                             text=True, **kw)  # fmt: skip
    run("db", "upgrade")
    run("rules", "import", str(rules))
    run("user", "create", "bench", "--password-stdin", input="correct horse battery\n")
    return run("token", "create", "bench").stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmroute-notify-") as tmp, cluster_store() as shared:
        if shared is None:
            return 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
        env |= shared | {"CRMROUTE_DATA_DIR": str(Path(tmp) / "data"), "CRMROUTE_AGI_ALLOW": "127.0.0.0/8",
                         "CRMROUTE_LOG_LEVEL": "warning"}  # fmt: skip
        token = setup(env, Path(tmp))
        nodes = [Node(host, env, Path(tmp)) for host in HOSTS]
        try:
            for node in nodes:
                node.wait_ready()
            auth = {"Authorization": f"Bearer {token}"}
            rule = next(r for r in nodes[0].http.get("/api/v1/rules", headers=auth).json()["items"])
            body = {k: v for k, v in rule.items() if k not in ("id", "has_custom_headers", "used_by")}
            delays, vias, wrong = [], [], 0
            version = config_of(nodes[0], token, 0)["version"]
            for change in range(args.changes):
                dest = str(101 + change % 99)
                answer = nodes[0].http.put(f"/api/v1/rules/{rule['id']}", headers=auth,
                                           json=body | {"default_destination": dest})  # fmt: skip
                answer.raise_for_status()
                version = config_of(nodes[0], token, version + 1)["version"]  # the changing node has it too
                for node in nodes[1:]:
                    config = config_of(node, token, version)
                    delays.append(config.get("delay_ms", float("nan")))
                    vias.append(config["via"])
                    call = asyncio.run(call_agi(node.agi_port, host=node.host, env={"extension": "5551000"},
                                                timeout=15))  # fmt: skip
                    wrong += call.variables.get("CRMROUTE_DEST") != dest
                time.sleep(0.3)  # apart from each other
            delays.sort()
            print(f"{len(delays)} applications of {args.changes} changes on {len(nodes) - 1} nodes "
                  f"(load average {os.getloadavg()[0]:.2f}):")  # fmt: skip
            print(f"  delay ms: median {percentile(delays, 50):.1f}, p90 {percentile(delays, 90):.1f}, "
                  f"max {delays[-1]:.1f} (target 200)")  # fmt: skip
            print(f"  via notify: {vias.count('notify')}, via poll: {vias.count('poll')}; "
                  f"calls routed on the old rule after the change was applied: {wrong}")  # fmt: skip
        finally:
            for node in nodes:
                node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
