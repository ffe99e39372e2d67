"""Routed-call latency: N sequential FastAGI calls against a local HTTPS Custom CRM.

Everything runs on 127.0.0.1 in one process: a uvicorn Custom CRM (trustme
certificate) answering {"value": "GOLD"}, the crmroute AGI server on a
SQLite store in a temporary data dir, and a client that speaks as Asterisk
does. Each call is timed from connect to the server closing the socket.

    make bench                       # 1,000 calls
    .venv/bin/python bench/run.py --calls 5000 --json bench/results/latest.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme
import uvicorn
import yaml

from crmroute import rulesfile
from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.service import Store, build_router
from crmroute.settings import Settings


async def crm_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b'{"value": "GOLD"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def start_crm(workdir: Path) -> tuple[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_path, cert_path = workdir / "ca.pem", workdir / "cert.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    config = uvicorn.Config(crm_app, host="127.0.0.1", port=0, ssl_certfile=str(cert_path), log_level="error")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"https://127.0.0.1:{port}/lookup", ca_path


ENV_TEMPLATE = (
    "agi_network: yes\nagi_network_script: did\nagi_request: agi://127.0.0.1/did\n"
    "agi_channel: PJSIP/trunk-{n:08x}\nagi_uniqueid: bench.{n}\nagi_callerid: +1555{n:07d}\n"
    "agi_dnid: unknown\nagi_context: from-trunk\nagi_extension: 5551000\nagi_priority: 1\n\n"
)


async def one_call(port: int, n: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ENV_TEMPLATE.format(n=n).encode())
    jumped = False
    while line := await reader.readline():
        command = line.decode().strip()
        writer.write(b"200 result=0\n" if command.startswith("SET PRIORITY") else b"200 result=1\n")
        jumped |= command.startswith("SET PRIORITY")
    writer.close()
    elapsed = time.perf_counter() - started
    if not jumped:
        raise RuntimeError(f"call {n} was not routed")
    return elapsed * 1000


async def bench(calls: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url, ca_path = start_crm(workdir)
        settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(workdir / "data"), "CRMROUTE_CA_BUNDLE": str(ca_path),
                                      "CRMROUTE_LOG_LEVEL": "warning"})  # fmt: skip
        store = Store(settings)
        store.upgrade()
        rules = {
            "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
            "rules": [{"name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
                       "custom_url": url, "default_destination": "100",
                       "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}]}],
            "dids": [{"number": "5551000", "rule": "VIP"}],
        }  # fmt: skip
        rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules), environ={}))
        router = build_router(store)
        await router.start()
        server = AgiServer(CallHandler(router, JumpTable.from_settings(settings)), host="127.0.0.1", port=0,
                           allow=settings.agi_allow)  # fmt: skip
        await server.start()
        for n in range(20):  # warm-up: TLS session, connection pool
            await one_call(server.port, n)
        started = time.perf_counter()
        timings = [await one_call(server.port, n) for n in range(calls)]
        wall = time.perf_counter() - started
        await server.close()
        await router.close()
        await router.http.aclose()
        store.close()
    timings.sort()
    return {
        "calls": calls,
        "median_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[max(0, int(len(timings) * 0.99) - 1)], 3),
        "max_ms": round(timings[-1], 3),
        "calls_per_s": round(calls / wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    result = asyncio.run(bench(args.calls))
    print(f"{'calls':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'calls/s':>8}")
    print(f"{result['calls']:>8} {result['median_ms']:>10} {result['p99_ms']:>8} {result['max_ms']:>8} {result['calls_per_s']:>8}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
