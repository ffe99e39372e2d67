"""Baseline (b): process AGI. A small agi://-to-stdin bridge starts a script per call, the way PBX-style
AGIs run (Asterisk's ``AGI(script)``): the environment goes to the script's standard input, its
commands to Asterisk, Asterisk's replies back to its standard input, until the script exits.

    python bench/procagi_bridge.py --script bench/procagi_script.py -- SCRIPT ARGS...
                                  # prints PORT <n>; stops on SIGTERM or when stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys


async def relay_commands(process: asyncio.subprocess.Process, writer: asyncio.StreamWriter) -> None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        writer.write(line)
        await writer.drain()


async def relay_replies(reader: asyncio.StreamReader, process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    while line := await reader.readline():
        process.stdin.write(line)
        await process.stdin.drain()


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: list[str]) -> None:
    process = None
    try:
        env = b""
        while line := await reader.readline():
            env += line
            if not line.strip():
                break
        process = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                       stdout=asyncio.subprocess.PIPE)  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(env)
        await process.stdin.drain()
        replies = asyncio.create_task(relay_replies(reader, process))
        await relay_commands(process, writer)
        replies.cancel()
        await process.wait()
    except (ConnectionError, OSError):
        pass
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the script to start per call, with its arguments")
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    server = await asyncio.start_server(lambda r, w: session(r, w, command), "127.0.0.1", 0, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    await stop.wait()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


if __name__ == "__main__":
    asyncio.run(main())
