"""The call logger on three ``crmroute serve`` nodes sharing PostgreSQL, with two Asterisks (two fake AMIs).

Each AMI source is read by exactly one node (its lease); SIGKILL that node
mid-call and another takes the source over within 10 s, takes back the call
in progress from the store and Asterisk's channel list, and the call is logged
once. Deliveries put straight into the outbox are shared by the nodes
(``FOR UPDATE SKIP LOCKED``) and each call reaches the strict Zoho fake once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import Counter

import pytest
import yaml
from sqlalchemy import select

from crmroute import rulesfile
from crmroute.store import calllog as outbox
from crmroute.store.db import transaction
from crmroute.store.models import CallLogCall, ClusterLease
from tests.calllog.fakeami import SECRET, USERNAME, running_ami
from tests.calllog.helpers import recorded_calls
from tests.calllog.scenarios import Scenario, inbound_ringing
from tests.calllog.test_end_to_end import rules_for
from tests.calllog.test_restart import activities, channels, hangups, saved
from tests.cluster import running_nodes

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

TAKEOVER_S = 10.0


def lease_holders(store) -> dict[str, str]:
    with store.factory() as session:
        return {r.name: r.holder.split(" ", 1)[0] for r in session.scalars(select(ClusterLease))}


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


async def test_a_killed_nodes_ami_source_moves_within_10_s_and_no_call_is_lost_or_doubled(store, zoho, ca_bundle,
                                                                                           tmp_path):  # fmt: skip
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(zoho)), environ={}))
    async with running_ami() as pbx1, running_ami() as pbx2:
        env = {"ca_bundle": str(ca_bundle), "ami_sources": f"pbx1=127.0.0.1:{pbx1.port},pbx2=127.0.0.1:{pbx2.port}",
               "ami_username": USERNAME, "ami_secret": SECRET, "calllog_inbound_contexts": "from-trunk"}  # fmt: skip
        with running_nodes(store, tmp_path, count=3, **env) as nodes:
            await pbx1.wait_logins(1, timeout=60)
            await pbx2.wait_logins(1, timeout=60)
            holders = await wait_for(lambda: len(lease_holders(store)) == 2 and lease_holders(store), 30, "leases")
            await asyncio.sleep(2 * 1.0 + 0.5)  # a few renewal rounds: nobody else logs in to a held source
            assert pbx1.logins == 1 and pbx2.logins == 1, "an AMI source was read by two nodes"

            # pbx1: one call over before the crash, one talking across it; pbx2: one call meanwhile
            done, talking, other = Scenario(prefix="pbx1-c1"), Scenario(prefix="pbx1-c2"), Scenario(prefix="pbx2-c1")
            done_trunk, done_agent = inbound_ringing(done)
            up_trunk, up_agent = inbound_ringing(talking)
            other_trunk, other_agent = inbound_ringing(other)
            await pbx1.send(done.bytes() + talking.bytes() + hangups("pbx1-c1", done.t + 20, done_agent, done_trunk))
            await pbx2.send(other.bytes())
            await saved(store, up_trunk.linkedid, hung_up=False, timeout=30)

            victim = next(n for n in nodes if n.name == holders["ami:pbx1"])
            pbx1.channels = channels(up_trunk, up_agent, bridge="b-2")
            killed_at = time.monotonic()
            victim.kill()
            await pbx1.wait_logins(2, timeout=60)
            took = time.monotonic() - killed_at
            assert took < TAKEOVER_S, f"pbx1 taken over after {took:.1f} s"
            new_holder = lease_holders(store)["ami:pbx1"]
            assert new_holder != victim.name

            await pbx1.send(hangups("pbx1-c2", talking.t + 40, up_agent, up_trunk))
            await pbx2.send(hangups("pbx2-c1", other.t + 30, other_agent, other_trunk))
            counts = await activities(zoho, 3, nodes[0].log_path, timeout=60)
    assert set(counts) == {done_trunk.linkedid, up_trunk.linkedid, other_trunk.linkedid}
    assert max(counts.values()) == 1, f"a call was logged twice: {counts}"
    by_id = {a["Subject"].rsplit("[", 1)[1].rstrip("]"): a for a in zoho.activities}
    assert by_id[up_trunk.linkedid]["Call_Duration"] == "00:40"  # talked across the takeover
    with store.factory() as session:
        pbx_of = dict(session.execute(select(CallLogCall.linked_id, CallLogCall.pbx)).all())
    assert pbx_of == {done_trunk.linkedid: "pbx1", up_trunk.linkedid: "pbx1", other_trunk.linkedid: "pbx2"}


async def test_nodes_deliver_the_outbox_together_and_log_each_call_once(store, zoho, ca_bundle, tmp_path):
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(zoho)), environ={}))
    template = next(c for c in recorded_calls("inbound-answered"))
    calls = [dataclasses.replace(template, linked_id=f"outbox-{n}.1", pbx="pbx1") for n in range(60)]
    async with running_ami() as pbx1:
        env = {"ca_bundle": str(ca_bundle), "ami_sources": f"pbx1=127.0.0.1:{pbx1.port}", "ami_username": USERNAME,
               "ami_secret": SECRET}  # fmt: skip
        with running_nodes(store, tmp_path, count=2, **env) as nodes:
            with transaction(store.factory) as session:  # as a call logger writes them: every node sees them due
                assert outbox.add_calls(session, calls) == 60
            counts = await activities(zoho, 60, nodes[0].log_path, timeout=120)
            logs = [node.log() for node in nodes]
    assert len(counts) == 60 and max(counts.values()) == 1, f"a call was logged twice: {counts}"
    by_node = Counter({n.name: len(re.findall(r"call log: call outbox-\d+\.1 logged in", log))
                       for n, log in zip(nodes, logs)})  # fmt: skip
    assert sum(by_node.values()) == 60
    assert all(by_node.values()), f"one node delivered everything: {by_node}"
    with store.factory() as session:
        assert outbox.counts(session)["delivered"] == 60
