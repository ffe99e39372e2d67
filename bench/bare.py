"""Baseline (a): a bare asyncio FastAGI server doing the protocol steps crmroute does, with no logic.

Per connection: read the ``agi_*`` environment up to its empty line, send the
six ``SET VARIABLE`` and ``SET CONTEXT`` / ``EXTENSION`` / ``PRIORITY`` a routed
call gets, reading each reply, then close. No rules, no CRM, no logging.

    python bench/bare.py      # prints PORT <n>; stops on SIGTERM or when stdin closes
"""

from __future__ import annotations

import asyncio
import signal
import sys

COMMANDS = [
    b'SET VARIABLE CRMROUTE_STATUS "matched"\n',
    b'SET VARIABLE CRMROUTE_DEST_TYPE "queue"\n',
    b'SET VARIABLE CRMROUTE_DEST "103"\n',
    b'SET VARIABLE CRMROUTE_VALUE "GOLD"\n',
    b'SET VARIABLE CRMROUTE_RULE "VIP"\n',
    b'SET VARIABLE CRMROUTE_ROW "1"\n',
    b"SET CONTEXT crmroute-queue\n",
    b"SET EXTENSION 103\n",
    b"SET PRIORITY 1\n",
]


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while (await reader.readline()).strip():
            pass
        for command in COMMANDS:
            writer.write(command)
            await writer.drain()
            if not (await reader.readline()).startswith(b"200"):
                break
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(session, "127.0.0.1", 0, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
