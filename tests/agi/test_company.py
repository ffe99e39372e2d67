"""Keep the caller company: ringing or music on hold while the CRM is asked, and only then."""

from __future__ import annotations

import copy
from typing import Any

from tests.agi.conftest import base_rules, sessions_ended
from tests.agi.fakeasterisk import call_agi

CALLER = "+15551230001"


def rules(url: str, **vip: Any) -> dict:
    data = copy.deepcopy(base_rules(url))
    data["rules"][0].update(vip)
    return data


async def call(stack, caller: str = CALLER, **options: Any):
    return await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": caller}, **options)


def execs(result) -> list[str]:
    return [c for c in result.commands if c.startswith("EXEC")]


async def test_ringing_while_the_crm_is_asked(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="ringing"))
    custom_crm.values = {"Status": "GOLD"}
    custom_crm.delay = 0.2
    result = await call(stack)
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert result.commands[0] == "EXEC Ringing"  # before any variable is set
    assert execs(result) == ["EXEC Ringing"]  # ringing needs no stop: the next application takes over


async def test_music_on_hold_is_started_and_stopped_before_the_answer(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh", moh_class="sales"))
    custom_crm.values = {"Status": "GOLD"}
    result = await call(stack)
    assert result.commands[:2] == ["EXEC StartMusicOnHold sales", "EXEC StopMusicOnHold"]
    assert result.commands[2].startswith("SET VARIABLE CRMROUTE_STATUS")
    assert result.jump == ("crmroute-queue", "103", "1")


async def test_music_on_hold_is_stopped_when_the_crm_fails(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh"))
    custom_crm.respond(200, json={"value": "GOLD"}, delay=5)  # past VIP's 1000 ms deadline
    result = await call(stack)
    assert result.variables["CRMROUTE_STATUS"] == "fallback"
    assert execs(result) == ["EXEC StartMusicOnHold default", "EXEC StopMusicOnHold"]
    assert result.seconds < 1.0 + 2.5  # the deadline, not the CRM's 5 s; the rest is room for a loaded machine


async def test_nothing_is_played_for_a_cached_value(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh"), cache_ttl_s="60")
    custom_crm.values = {"Status": "GOLD"}
    first, second = await call(stack), await call(stack)
    assert len(execs(first)) == 2
    assert execs(second) == [] and second.variables["CRMROUTE_STATUS"] == "matched"


async def test_nothing_is_played_when_the_crm_is_not_asked(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="ringing"), breaker_failures="1")
    withheld = await call(stack, "anonymous")
    assert withheld.variables["CRMROUTE_STATUS"] == "default" and execs(withheld) == []
    custom_crm.respond(500, "down")
    failed = await call(stack, "+15550000001")
    assert execs(failed) == ["EXEC Ringing"]  # asked (and failed): the circuit opens
    refused = await call(stack, "+15550000002")
    assert execs(refused) == [] and refused.variables["CRMROUTE_STATUS"] == "fallback"


async def test_none_plays_nothing(stack_factory, custom_crm):
    stack = await stack_factory()
    custom_crm.values = {"Status": "GOLD"}
    assert execs(await call(stack)) == []


async def test_an_asterisk_without_the_application_still_gets_its_answer(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh"))
    custom_crm.values = {"Status": "GOLD"}
    result = await call(stack, respond=lambda c: "200 result=-2" if c.startswith("EXEC") else None)
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert execs(result) == ["EXEC StartMusicOnHold default"]  # no stop for music that never started


async def test_a_slow_asterisk_does_not_hold_the_answer_long(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh"))
    custom_crm.values = {"Status": "GOLD"}

    async def slow_exec(command: str):
        if command.startswith("EXEC"):
            import asyncio

            await asyncio.sleep(3)  # longer than the 1 s allowed per company command
        return None

    result = await call(stack, respond=slow_exec, timeout=8)
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert result.jump == ("crmroute-queue", "103", "1")


async def test_caller_hanging_up_during_music_ends_cleanly(stack_factory, custom_crm):
    stack = await stack_factory(rules(custom_crm.url, keep_company="moh"))
    custom_crm.values = {"Status": "GOLD"}
    custom_crm.delay = 0.5
    result = await call(stack, hangup_after=1)  # hangs up right after StartMusicOnHold is answered
    assert result.closed_by_server and result.hangup_sent
    assert result.variables["CRMROUTE_STATUS"] == "matched"  # still written (Asterisk allows it on a dead channel)
    assert result.jump is None  # but no jump: the 511 to StopMusicOnHold showed the channel is gone
    assert await sessions_ended(stack.server)


async def test_keep_company_in_the_rules_file_round_trip(stack_factory, custom_crm):
    from crmroute import rulesfile

    stack = await stack_factory(rules(custom_crm.url, keep_company="moh", moh_class="sales", cache_ttl_s=15))
    with stack.store.factory() as session:
        exported = rulesfile.export_rules(session, stack.store.box)
    vip = next(r for r in exported["rules"] if r["name"] == "VIP")
    assert (vip["keep_company"], vip["moh_class"], vip["cache_ttl_s"]) == ("moh", "sales", 15)
