"""A real ``crmroute serve`` stopped mid-stream (SIGTERM) or killed (SIGKILL), then started again.

The fake Asterisk and the strict Zoho fake stay up; crmroute goes down and
comes back. Each test has three calls: one that hangs up just before the
stop (inside its 2 s grace), one talking across the restart, and one routed
while crmroute was down, which the restarted process only learns of from
``CoreShowChannels`` and the decision log. Each is logged in Zoho exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from crmroute import rulesfile
from crmroute.store.models import CallLogOpenCall
from tests.calllog.fakeami import SECRET, USERNAME, FakeAmi, running_ami
from tests.calllog.helpers import add_decision
from tests.calllog.scenarios import Chan, Scenario, inbound_ringing
from tests.calllog.test_end_to_end import rules_for

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def serve(store, ami: FakeAmi, ca_bundle: Path, log: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
    env = base | {
        "CRMROUTE_DATA_DIR": str(store.settings.data_dir), "CRMROUTE_DATABASE_URL": store.settings.db_url,
        "CRMROUTE_CA_BUNDLE": str(ca_bundle), "CRMROUTE_AGI_PORT": "0", "CRMROUTE_HTTP_PORT": "0",
        "CRMROUTE_AMI_HOST": "127.0.0.1", "CRMROUTE_AMI_PORT": str(ami.port), "CRMROUTE_AMI_USERNAME": USERNAME,
        "CRMROUTE_AMI_SECRET": SECRET, "CRMROUTE_CALLLOG_INBOUND_CONTEXTS": "from-trunk",
    }  # fmt: skip
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "crmroute", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


async def saved(store, linked_id: str, *, hung_up: bool, timeout: float = 15.0) -> None:
    """Wait until crmroute has saved the call's state (with every leg hung up, when ``hung_up``)."""
    async with asyncio.timeout(timeout):
        while True:
            with store.factory() as session:
                row = session.get(CallLogOpenCall, linked_id)
                if row is not None and (not hung_up or all(leg["hungup_at"] is not None
                                                           for leg in row.data["legs"].values())):  # fmt: skip
                    return
            await asyncio.sleep(0.05)


async def activities(zoho, count: int, log: Path, timeout: float = 30.0) -> Counter[str]:
    try:
        async with asyncio.timeout(timeout):
            while len(zoho.activities) < count:
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{len(zoho.activities)} of {count} calls logged in {timeout:.0f} s; crmroute said:\n"
                    + log.read_text())  # fmt: skip
    await asyncio.sleep(1.0)  # anything more that would come
    return Counter(a["Subject"].rsplit("[", 1)[1].rstrip("]") for a in zoho.activities)


def channels(*legs: Chan, bridge: str) -> list[dict[str, str]]:
    """What CoreShowChannels lists for legs up and bridged (as Asterisk 22 names the fields)."""
    return [{"Channel": c.name, "ChannelState": "6", "ChannelStateDesc": "Up", "CallerIDNum": c.caller or "<unknown>",
             "CallerIDName": "<unknown>", "ConnectedLineNum": "", "ConnectedLineName": "", "Language": "en",
             "AccountCode": "", "Context": "crmroute-queue", "Exten": "103", "Priority": "1", "Uniqueid": c.uniqueid,
             "Linkedid": c.linkedid, "Application": "Queue", "ApplicationData": "103", "Duration": "00:00:20",
             "BridgeId": bridge} for c in legs]  # fmt: skip


def hangups(prefix: str, t0: float, *legs: Chan) -> bytes:
    s = Scenario(prefix=prefix, t0=t0)
    for leg in legs:
        s.hangup(leg)
    return s.bytes()


async def stop_and_start_again(store, zoho, ca_bundle, tmp_path, sig: signal.Signals) -> tuple[Counter[str], dict]:
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(zoho)), environ={}))
    log = tmp_path / "serve.log"
    first, second = Scenario(prefix="pbx-stop-1"), Scenario(prefix="pbx-stop-2")
    ended_trunk, ended_agent = inbound_ringing(first)
    up_trunk, up_agent = inbound_ringing(second)
    down = Scenario(prefix="pbx-stop-3")  # routed by crmroute's AGI while the call logger was down
    down_trunk, down_agent = inbound_ringing(down)
    add_decision(store, down_trunk.uniqueid, rule="VIP")
    process = None
    async with running_ami() as ami:
        try:
            process = serve(store, ami, ca_bundle, log)
            await ami.wait_logins(1, timeout=60)
            await ami.send(first.bytes() + second.bytes())
            await saved(store, up_trunk.linkedid, hung_up=False)
            await ami.send(hangups("pbx-stop-1", first.t + 30, ended_agent, ended_trunk))
            await saved(store, ended_trunk.linkedid, hung_up=True)  # seen, inside its grace: not written yet
            process.send_signal(sig)
            code = await asyncio.to_thread(process.wait, 30)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), log.read_text()

            ami.channels = channels(up_trunk, up_agent, bridge="b-2") + channels(down_trunk, down_agent, bridge="b-3")
            process = serve(store, ami, ca_bundle, log)
            await ami.wait_logins(2, timeout=60)
            await ami.send(hangups("pbx-stop-2", second.t + 40, up_agent, up_trunk)
                           + hangups("pbx-stop-3", down.t + 40, down_agent, down_trunk))  # fmt: skip
            counts = await activities(zoho, 3, log)
        finally:
            if process is not None and process.poll() is None:
                process.terminate()
                await asyncio.to_thread(process.wait, 30)
    by_id = {a["Subject"].rsplit("[", 1)[1].rstrip("]"): a for a in zoho.activities}
    assert set(counts) == {ended_trunk.linkedid, up_trunk.linkedid, down_trunk.linkedid}, log.read_text()
    assert max(counts.values()) == 1, f"a call was logged twice: {counts}"
    return counts, {"ended": by_id[ended_trunk.linkedid], "up": by_id[up_trunk.linkedid],
                    "down": by_id[down_trunk.linkedid]}  # fmt: skip


async def test_sigterm_mid_stream_loses_no_call_and_logs_each_once(store, zoho, ca_bundle, tmp_path):
    _, calls = await stop_and_start_again(store, zoho, ca_bundle, tmp_path, signal.SIGTERM)
    assert calls["ended"]["Call_Duration"] == "00:30"  # hung up while crmroute was stopping
    assert calls["up"]["Call_Duration"] == "00:40"  # talked across the restart, every event of it kept
    assert all(c["Call_Type"] == "Inbound" for c in calls.values())
    assert calls["down"]["Subject"].startswith("answered call from +15551230011 via VIP")  # from the decision log


async def test_sigkill_mid_stream_logs_each_call_once(store, zoho, ca_bundle, tmp_path):
    # what a crash keeps: the state saved within the last half second, and Asterisk's channel list
    _, calls = await stop_and_start_again(store, zoho, ca_bundle, tmp_path, signal.SIGKILL)
    assert calls["up"]["Call_Duration"] == "00:40"
    assert all(c["Call_Type"] == "Inbound" for c in calls.values())
    assert calls["down"]["Subject"].startswith("answered call from +15551230011 via VIP")
