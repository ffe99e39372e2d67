"""A local CRM stand-in speaking the Custom CRM contract (SPEC 5) over HTTPS, for the benchmark.

    python bench/crm.py --cert cert.pem --key key.pem [--latency-ms 5] [--error-rate 0.0] [--never]

Prints ``PORT <n>`` once listening on 127.0.0.1. Every lookup answers
``{"value": "GOLD", "id": "c1", "owner": "usr_olivia"}`` after ``--latency-ms`` (the
Custom CRM reads ``value``; the owner scenario's Proprietary CRM reads the record) (a share ``--error-rate`` of
them ``500``); with ``--never`` it reads requests and never answers.
``GET /_stats`` answers ``{"requests": N, "errors": E, "open": O}`` and is not
counted. HTTP/1.1 with keep-alive; stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import ssl
import sys


class Stats:
    requests = 0
    errors = 0
    open = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace,
                 rng: random.Random) -> None:  # fmt: skip
    Stats.open += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            if target.startswith("/_stats"):
                body = json.dumps({"requests": Stats.requests, "errors": Stats.errors, "open": Stats.open}).encode()
                status = b"200 OK"
            else:
                Stats.requests += 1
                if args.never:
                    await asyncio.Event().wait()  # holds the connection until the client gives up
                if args.latency_ms:
                    await asyncio.sleep(args.latency_ms / 1000)
                if args.error_rate and rng.random() < args.error_rate:
                    Stats.errors += 1
                    status, body = b"500 Internal Server Error", b'{"error": "injected"}'
                else:
                    status, body = b"200 OK", b'{"value": "GOLD", "id": "c1", "owner": "usr_olivia"}'
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        Stats.open -= 1
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--never", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    rng = random.Random(args.seed)
    server = await asyncio.start_server(lambda r, w: handle(r, w, args, rng), "127.0.0.1", 0, ssl=context,
                                        backlog=4096)  # fmt: skip
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
