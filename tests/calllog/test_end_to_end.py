"""End to end: a call routed over FastAGI, its AMI events from a fake Asterisk, its activity in the Zoho fake.

The routing decision (AGI session ``asttest-1795657672.0``, as in the recorded
stream) finds Alice Gold in Zoho; the call logger, fed the recorded events by
the real AMI client, logs the call against that record without looking the
number up again. Then the connection drops and Asterisk restarts mid-call.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from crmroute import rulesfile
from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.calllog.worker import CallLogger
from crmroute.service import build_router
from crmroute.store.models import CallDelivery, DecisionRecord
from tests.agi.fakeasterisk import call_agi
from tests.calllog.conftest import ZOHO_ALICE, zoho_settings
from tests.calllog.fakeami import SECRET, USERNAME, FakeAmi, running_ami
from tests.calllog.helpers import ANSWERED_ID
from tests.calllog.scenarios import Scenario, inbound_ringing

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def rules_for(zoho) -> dict:
    connection = zoho_settings(zoho)
    return {
        "integrations": [{"name": "Main Zoho", "kind": "zoho", **connection,
                          "log_options": {"inbound_answered": True, "inbound_missed": True,
                                          "subject_template": "{outcome} call from {external_number} via {rule}"}}],
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
        "rules": [{"name": "VIP", "crm_field": "Customer_Tier", "location": "did", "crm_source": "integration",
                   "integration": "Main Zoho", "crm_module": "contacts", "default_destination": "100",
                   "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}]}],
        "dids": [{"number": "5551000", "rule": "VIP"}],
    }  # fmt: skip


async def delivered(store, count: int, timeout: float = 15.0) -> list[CallDelivery]:
    async with asyncio.timeout(timeout):
        while True:
            with store.factory() as session:
                rows = list(session.scalars(select(CallDelivery).options(joinedload(CallDelivery.call))))
            if len(rows) >= count and all(r.status == "delivered" for r in rows):
                return rows
            await asyncio.sleep(0.05)


def logger_settings(store, ami: FakeAmi):
    return dataclasses.replace(store.settings, ami_host="127.0.0.1", ami_port=ami.port, ami_username=USERNAME,
                               ami_secret=SECRET, calllog_inbound_contexts=("from-trunk",))  # fmt: skip


async def test_a_routed_call_is_logged_against_the_record_routing_found(store, zoho):
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(zoho)), environ={}))
    router = build_router(store)
    await router.start()
    server = AgiServer(CallHandler(router, JumpTable.from_settings(store.settings)), port=0, allow=store.settings.agi_allow)
    await server.start()
    call_logger = None
    try:
        result = await call_agi(server.port, "did", env={"extension": "5551000", "callerid": "+15551230001",
                                                          "uniqueid": ANSWERED_ID})  # fmt: skip
        assert result.variables["CRMROUTE_STATUS"] == "matched" and result.jump == ("crmroute-queue", "103", "1")
        await router.decision_log.flush()
        with store.factory() as session:
            decision = session.scalars(select(DecisionRecord)).one()
        assert (decision.call_id, decision.record_module, decision.record_id) == (ANSWERED_ID, "Contacts", ZOHO_ALICE)
        before = len(zoho.api_requests())

        async with running_ami() as ami:
            call_logger = CallLogger(logger_settings(store, ami), store.factory, router.pool.get, poll=0.05,
                                     ami_options={"timeout": 1.0, "backoff_min": 0.05})  # fmt: skip
            await call_logger.start()
            await ami.wait_logins(1)
            assert call_logger.status()["state"] == "connected"
            await ami.replay("inbound-answered", chunk=512)
            (row,) = await delivered(store, 1)
        (activity,) = zoho.activities
        assert activity["Subject"] == f"answered call from +15551230001 via VIP [{ANSWERED_ID}]"
        assert activity["Who_Id"] == {"id": ZOHO_ALICE} and activity["Call_Type"] == "Inbound"
        assert row.activity_id == activity["id"]
        searched = [r.path for r in zoho.api_requests()[before:] if r.path.endswith("/search")]
        assert searched and all(p.endswith("/Calls/search") for p in searched)  # the logged-call check: no number lookup
    finally:
        if call_logger is not None:
            await call_logger.close()
        await server.close()
        await router.close()
        await router.http.aclose()


async def test_dropped_connection_and_asterisk_restart_mid_call(store, zoho):
    rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(zoho)), environ={}))
    router = build_router(store, with_log=False)
    async with running_ami() as ami:
        call_logger = CallLogger(logger_settings(store, ami), store.factory, router.pool.get, poll=0.05,
                                 ami_options={"timeout": 1.0, "backoff_min": 0.05, "backoff_max": 0.1})  # fmt: skip
        call_logger.tracker.config = dataclasses.replace(call_logger.tracker.config, grace=0.0)
        await call_logger.start()
        try:
            await ami.wait_logins(1)
            first = Scenario(prefix="pbx-1795800000")
            trunk, agent = inbound_ringing(first)  # answered by 201, talking
            await ami.send(first.bytes())
            # the connection drops; the call goes on on Asterisk's side
            ami.channels = [{"Channel": trunk.name, "Uniqueid": trunk.uniqueid, "Linkedid": trunk.linkedid},
                            {"Channel": agent.name, "Uniqueid": agent.uniqueid, "Linkedid": agent.linkedid}]  # fmt: skip
            await ami.drop()
            await ami.wait_logins(2)
            assert call_logger.tracker.open_calls == 1
            end = Scenario(prefix="pbx-1795800000", t0=first.t + 40)
            end.hangup(agent)
            end.hangup(trunk)
            await ami.send(end.bytes())
            (done,) = await delivered(store, 1)
            assert done.linked_id == trunk.linkedid

            second = Scenario(prefix="pbx-1795800100")
            trunk2, _ = inbound_ringing(second)
            await ami.send(second.bytes())
            await asyncio.sleep(0.1)
            await ami.restart(down=0.3)  # Asterisk restarts: every channel is gone
            await ami.wait_logins(3)
            rows = await delivered(store, 2)
        finally:
            await call_logger.close()
            await router.close()
            await router.http.aclose()
    by_id = {a["Subject"].rsplit("[", 1)[1].rstrip("]"): a for a in zoho.activities}
    assert set(by_id) == {trunk.linkedid, trunk2.linkedid} and len(zoho.activities) == 2
    assert by_id[trunk.linkedid]["Call_Duration"] == "00:40"  # talked through the drop
    assert by_id[trunk2.linkedid]["Call_Type"] == "Inbound"  # answered before the restart
    assert "AMI connection" in next(r for r in rows if r.linked_id == trunk2.linkedid).call.data["note"]
