"""owner / last_agent end to end: real FastAGI sessions, the strict Salesforce fake, AMI device states.

The owner comes with the lookup (no CRM request more than plain routing); a busy owner (a fake Asterisk's
AMI stream, or the recorded Asterisk 22 stream) sends the call on to the next matching row; the last agent
comes from crmroute's own call-log rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from sqlalchemy import select

from crmroute import rulesfile
from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.calllog.calls import Call
from crmroute.calllog.presence import Availability
from crmroute.calllog.worker import CallLogger
from crmroute.service import Store, build_router
from crmroute.settings import Settings
from crmroute.store import calllog
from crmroute.store.models import DecisionRecord
from tests.agi.fakeasterisk import call_agi
from tests.calllog.fakeami import SECRET, USERNAME, event, recorded_messages, running_ami
from tests.connectors.fakecrm import FakeRecord
from tests.connectors.test_salesforce import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, fake, fake_server  # noqa: F401

CALLER = "+14155552671"
OWNER_ID = "005000000000OLV"


def rules(fake, *, rows: list[dict], default_agent: str = "", olivia_devices: list[str] | None = None) -> dict:
    olivia = {"name": "Olivia", "extension": "201", "identities": {"Sales CRM": OWNER_ID}}
    if olivia_devices:
        olivia["devices"] = olivia_devices
    rule = {"name": "Owner", "crm_field": "Status__c", "location": "did", "crm_source": "integration",
            "integration": "Sales CRM", "crm_module": "contacts", "default_destination": "100", "rows": rows}
    if default_agent:
        rule["default_agent"] = default_agent
    return {
        "integrations": [{"name": "Sales CRM", "kind": "salesforce",
                          "settings": {"login_url": fake.base_url, "client_id": CLIENT_ID},
                          "secrets": {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}}],
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
        "agents": [olivia, {"name": "Peter", "extension": "202"}],
        "rules": [rule],
        "dids": [{"number": "5551000", "rule": "Owner"}],
    }  # fmt: skip


OWNER_THEN_QUEUE = [{"operator": "not_empty", "value": "", "destination": "owner"},
                    {"operator": "=", "value": "gold", "destination": "queue", "option": "103"}]  # fmt: skip


class Service:
    """crmroute's AGI half on a temporary store, with the rules given."""

    def __init__(self, fake, tmp_path, data: dict, **env: str) -> None:
        self.settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(tmp_path), "CRMROUTE_CA_BUNDLE": str(fake.ca_path),
                                           **env})  # fmt: skip
        self.store = Store(self.settings)
        self.store.upgrade()
        rulesfile.import_rules(self.store.factory, self.store.box, rulesfile.parse(yaml.safe_dump(data), environ={}))

    async def __aenter__(self) -> Service:
        self.router = build_router(self.store)
        await self.router.start()
        self.server = AgiServer(CallHandler(self.router, JumpTable.from_settings(self.settings)), port=0,
                                allow=self.settings.agi_allow)  # fmt: skip
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.close()
        await self.router.close()
        await self.router.http.aclose()
        self.store.close()

    async def call(self):
        return await call_agi(self.server.port, "did", env={"extension": "5551000", "callerid": CALLER})

    async def last_trace(self) -> list[str]:
        await self.router.decision_log.flush()
        with self.store.factory() as session:
            return session.scalars(select(DecisionRecord).order_by(DecisionRecord.id.desc())).first().trace


def seed(fake, owner: str = OWNER_ID) -> None:
    fake.records = [FakeRecord(module="contacts", id="003000000000001", phone="(415) 555-2671",
                               fields={"Status__c": "GOLD", "OwnerId": owner}, name="Alice Gold")]  # fmt: skip


@pytest.mark.parametrize(("preset", "context"), [("asterisk", "crmroute-extension"), ("freepbx", "from-did-direct")])
async def test_the_call_goes_to_the_owners_extension_with_no_extra_crm_request(fake, tmp_path, preset, context):
    seed(fake)
    plain_rows = [{"operator": "=", "value": "gold", "destination": "queue", "option": "103"}]
    async with Service(fake, tmp_path / "plain", rules(fake, rows=plain_rows)) as plain:
        await plain.call()  # signs in
        plain.router.guards.cache.clear()
        before = len(fake.requests)
        assert (await plain.call()).variables["CRMROUTE_DEST_TYPE"] == "queue"
        plain_requests = len(fake.requests) - before
    data = rules(fake, rows=OWNER_THEN_QUEUE)
    async with Service(fake, tmp_path / "owner", data, CRMROUTE_JUMP_PRESET=preset) as owner:
        await owner.call()
        owner.router.guards.cache.clear()
        before = len(fake.requests)
        result = await owner.call()
        assert len(fake.requests) - before == plain_requests == 1
        assert result.variables["CRMROUTE_STATUS"] == "matched"
        assert result.variables["CRMROUTE_DEST_TYPE"] == "owner" and result.variables["CRMROUTE_DEST"] == "201"
        assert result.variables["CRMROUTE_AGENT"] == "Olivia" and result.variables["CRMROUTE_ROW"] == "1"
        assert result.jump == (context, "201", "1")
        trace = "\n".join(await owner.last_trace())
        assert f"owner: {OWNER_ID} → extension 201 (agent Olivia)" in trace
        result = await owner.call()  # from the value cache: the owner is kept with it
        assert result.variables["CRMROUTE_DEST"] == "201"


async def test_an_owner_who_is_no_agent_falls_through(fake, tmp_path):
    seed(fake, owner="005000000000XYZ")
    async with Service(fake, tmp_path, rules(fake, rows=OWNER_THEN_QUEUE)) as service:
        result = await service.call()
        assert result.variables["CRMROUTE_DEST_TYPE"] == "queue" and result.variables["CRMROUTE_ROW"] == "2"
        assert "CRMROUTE_AGENT" not in result.variables
        trace = "\n".join(await service.last_trace())
        assert "owner '005000000000XYZ' of Contact 003000000000001 is no agent" in trace


async def until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_busy_owner_per_the_fake_asterisk_falls_through_until_free(fake, tmp_path):
    seed(fake)
    async with running_ami() as ami, Service(fake, tmp_path, rules(fake, rows=OWNER_THEN_QUEUE)) as service:
        ami.device_states = {"PJSIP/201": "INUSE"}
        settings = dataclasses.replace(service.settings, ami_host="127.0.0.1", ami_port=ami.port,
                                       ami_username=USERNAME, ami_secret=SECRET)  # fmt: skip
        call_logger = CallLogger(settings, service.store.factory, lambda _id: None, poll=0.05,
                                 ami_options={"timeout": 2.0, "backoff_min": 0.05, "backoff_max": 0.1})  # fmt: skip
        service.router.presence = call_logger.availability
        await call_logger.start()
        try:
            await until(lambda: call_logger.availability.refreshed_at is not None)
            result = await service.call()
            assert result.variables["CRMROUTE_DEST_TYPE"] == "queue" and result.variables["CRMROUTE_DEST"] == "103"
            assert "agent Olivia is busy (PJSIP/201 INUSE): skipped" in "\n".join(await service.last_trace())
            await ami.send(event("DeviceStateChange", Privilege="call,all", Device="PJSIP/201", State="NOT_INUSE"))
            await until(lambda: call_logger.availability.state(service.router.book.agents.agents[0]) == "available")
            result = await service.call()
            assert result.variables["CRMROUTE_DEST_TYPE"] == "owner" and result.variables["CRMROUTE_DEST"] == "201"
            await ami.drop()  # AMI gone: states unknown, assumed available
            await until(lambda: call_logger.availability.refreshed_at is None)
            assert (await service.call()).variables["CRMROUTE_DEST"] == "201"
        finally:
            await call_logger.close()


async def test_the_recorded_asterisk_stream_makes_the_queue_agent_busy_then_free(fake, tmp_path):
    seed(fake)
    data = rules(fake, rows=OWNER_THEN_QUEUE, olivia_devices=["Local/201@queue-agents"])
    async with Service(fake, tmp_path, data) as service:
        presence = service.router.presence = Availability()
        messages = recorded_messages("inbound-answered")
        connect = next(i for i, m in enumerate(messages) if m.event == "AgentConnect")
        for message in messages[: connect + 1]:
            presence.feed(message)
        result = await service.call()
        assert result.variables["CRMROUTE_DEST"] == "103"
        assert "agent Olivia is busy (Local/201@queue-agents INUSE)" in "\n".join(await service.last_trace())
        for message in messages[connect + 1:]:
            presence.feed(message)
        assert (await service.call()).variables["CRMROUTE_DEST"] == "201"


def logged_call(linked_id: str, extension: str, *, days_ago: float, talk: int, direction: str = "inbound") -> Call:
    started = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return Call(linked_id=linked_id, direction=direction, outcome="answered", started_at=started,
                ended_at=started + timedelta(seconds=talk + 5), external_number="4155552671", extension=extension,
                talk_seconds=talk)  # fmt: skip


async def test_the_last_agent_comes_from_the_call_log(fake, tmp_path):
    seed(fake)
    rows = [{"operator": "not_empty", "value": "", "destination": "last_agent"}]
    async with Service(fake, tmp_path, rules(fake, rows=rows)) as service:
        result = await service.call()
        assert result.variables["CRMROUTE_DEST"] == "100" and result.variables["CRMROUTE_STATUS"] == "default"
        with service.store.factory.begin() as session:
            calllog.add_calls(session, [logged_call("1700000000.1", "201", days_ago=3, talk=90),
                                        logged_call("1700000000.2", "202", days_ago=1, talk=2),  # too short
                                        logged_call("1700000000.3", "202", days_ago=40, talk=90)])  # too old
        await asyncio.to_thread(service.router.load_last_agents)  # what the reload loop does every second
        result = await service.call()
        assert result.variables["CRMROUTE_DEST_TYPE"] == "last_agent" and result.variables["CRMROUTE_DEST"] == "201"
        assert result.jump == ("crmroute-extension", "201", "1")
        assert "inbound call on" in "\n".join(await service.last_trace())
