"""The README's quick start on a fresh clone: `make run` seeds the embedded directory and routes a real FastAGI call.

`make run` itself runs, in the checkout, on a new data directory in tmp_path and free ports, with this venv
(``VENV=``; ``-o`` keeps make from reinstalling it). Nothing outside the machine is asked: the directory is a file.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.agi.fakeasterisk import call_agi
from tests.test_cli import free_port, run

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
STARTUP_S = 90  # a loaded machine starts the service slowly

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not (VENV / "bin" / "crmroute").exists(),
                                reason="needs make and the crmroute script in this venv")  # fmt: skip


def readme_block(command: str) -> list[str]:
    """The output the README's quick start shows for ``command`` (the lines after ``$ command``)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"$ .venv/bin/crmroute {command}\n") + len(f"$ .venv/bin/crmroute {command}\n")
    block = text[start:text.index("```", start)]
    return [line[3:] for line in block.splitlines() if line.strip()]  # the README indents the block by three spaces


def without_timings(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("timings:")]


class MakeRun:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", str(VENV / ".installed"), "run", f"VENV={VENV}"], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def wait_until_up(self, http_port: int) -> None:
        started = time.monotonic()
        while time.monotonic() - started < STARTUP_S:
            assert self.process.poll() is None, self.stop()
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).json()["agi"] == "listening":
                    return
            except (httpx.TransportError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"make run did not come up: {self.stop()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # make and the crmroute it started: our own group
        output, _ = self.process.communicate(timeout=30)
        return output


async def agi(port: int, script: str, **kwargs) -> dict[str, str]:
    result = await call_agi(port, script, timeout=15.0, **kwargs)
    return result.variables | {"jump": ",".join(result.jump or ())}


def test_make_run_on_a_fresh_clone_routes_a_fastagi_call_by_the_embedded_directory(tmp_path):
    data = tmp_path / "data"  # a fresh clone has none
    agi_port, http_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
    env = base | {"CRMROUTE_DATA_DIR": str(data), "CRMROUTE_AGI_PORT": str(agi_port),
                  "CRMROUTE_HTTP_PORT": str(http_port), "NO_PROXY": "127.0.0.1"}  # fmt: skip
    first = MakeRun(env)
    try:
        first.wait_until_up(http_port)
        assert (data / "directory.csv").read_bytes() == (ROOT / "examples/quickstart/directory.csv").read_bytes()

        call = asyncio.run(agi(agi_port, "did", env={"extension": "5551000", "callerid": "+15551230001"}))
        assert call["CRMROUTE_STATUS"] == "matched" and call["CRMROUTE_VALUE"] == "GOLD", call
        assert (call["CRMROUTE_RULE"], call["CRMROUTE_ROW"]) == ("VIP", "1")
        assert (call["CRMROUTE_DEST_TYPE"], call["CRMROUTE_DEST"]) == ("queue", "103")
        assert call["jump"] == "crmroute-queue,103,1"
        ivr = asyncio.run(agi(agi_port, "ivr/7", env={"callerid": "+15551230009"}, digits="4242"))
        assert (ivr["CRMROUTE_STATUS"], ivr["CRMROUTE_DEST_TYPE"], ivr["CRMROUTE_DEST"]) == ("matched", "queue", "103")
        unknown = asyncio.run(agi(agi_port, "did", env={"extension": "5551000", "callerid": "+15557770000"}))
        assert (unknown["CRMROUTE_STATUS"], unknown["CRMROUTE_DEST"]) == ("default", "100")

        # the README's dry runs, line for line (timings aside)
        for command in ("route --did 5551000 --caller +15551230001",
                        "route --ivr 7 --caller +15551230009 --dtmf 4242"):  # fmt: skip
            shown = run(env, *command.split())
            assert shown.returncode == 0, shown.stderr
            assert without_timings(shown.stdout.splitlines()) == without_timings(readme_block(command))
            assert re.fullmatch(r"timings: +CRM [0-9.]+ ms, total [0-9.]+ ms",
                                [line for line in shown.stdout.splitlines() if line.startswith("timings:")][0])

        # the README's edit: Alice's GOLD becomes SILVER, and the running service sends her to IVR 5
        path = data / "directory.csv"
        path.write_text(path.read_text().replace("Alice Gold,olivia.owner@example.com,GOLD",
                                                 "Alice Gold,olivia.owner@example.com,SILVER"))  # fmt: skip
        started = time.monotonic()
        while (call := asyncio.run(agi(agi_port, "did", env={"extension": "5551000", "callerid": "+15551230001"})))[
            "CRMROUTE_VALUE"
        ] != "SILVER":  # fmt: skip
            assert time.monotonic() - started < 20, call
            time.sleep(0.2)
        assert (call["CRMROUTE_DEST_TYPE"], call["CRMROUTE_DEST"]) == ("ivr", "5")
    finally:
        output = first.stop()
    assert "integrations: 1 created" in output and "rules: 2 created" in output, output

    again = MakeRun(env)  # a second make run: the store is not empty, nothing is imported, the edit stays
    try:
        again.wait_until_up(http_port)
    finally:
        output = again.stop()
    assert "nothing imported (--if-empty)" in output and "created" not in output, output
    assert "SILVER" in (data / "directory.csv").read_text()


def test_the_readme_shows_the_sample_directory_as_shipped():
    text = (ROOT / "README.md").read_text()
    start = text.index("```csv\n") + len("```csv\n")
    shown = [line.strip() for line in text[start:text.index("```", start)].splitlines() if line.strip()]
    assert shown == (ROOT / "examples/quickstart/directory.csv").read_text().splitlines()
