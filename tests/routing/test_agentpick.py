"""owner / last_agent destinations: the engine's fall-through and the picker's reasons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from crmroute.calllog.ami import Message
from crmroute.calllog.presence import Availability
from crmroute.deadline import Deadline
from crmroute.routing.agentpick import AgentPicker, Owner
from crmroute.routing.agents import Agent, AgentDirectory, Identity
from crmroute.routing.compare import Operator
from crmroute.routing.engine import AgentChoice, AgentOptions, LookupKey, Row, RuleSpec, decide
from crmroute.routing.lastagent import LastAgents, Talk, number_key
from crmroute.routing.trace import Destination, DestType, Status

NOW = datetime.now(timezone.utc)
CRM = 7  # the integration id
OLIVIA = Agent("Olivia", "201", identities={CRM: Identity("005OLIVIA", "olivia@example.com")})
PETER = Agent("Peter", "202", devices=("PJSIP/peter-desk",), identities={CRM: Identity("005PETER")})
DIRECTORY = AgentDirectory([OLIVIA, PETER])
SALES = Destination(DestType.QUEUE, "103")
RULE = RuleSpec(
    name="Owner first",
    crm_field="Status",
    rows=(
        Row(Operator.NOT_EMPTY, "", Destination(DestType.OWNER, "")),
        Row(Operator.EQ, "GOLD", Destination(DestType.LAST_AGENT, "")),
        Row(Operator.NOT_EMPTY, "", SALES),
    ),
    default=Destination(DestType.EXTENSION, "100"),
)
CALLER = "+14155552671"


async def value(key: LookupKey) -> str:
    return "GOLD"


def device(name: str, state: str) -> Message:
    return Message.of(Event="DeviceStateChange", Device=name, State=state)


def picker(owner: Owner, *, presence: Availability | None = None, options: AgentOptions = AgentOptions(),
           last: LastAgents | None = None) -> AgentPicker:  # fmt: skip
    return AgentPicker(DIRECTORY, options, presence=presence, integration_id=CRM, owner=lambda: owner,
                       last_agents=last, caller=CALLER)  # fmt: skip


def history(*talks: Talk) -> LastAgents:
    index = LastAgents()
    for talk in talks:
        index.add("(415) 555-2671", talk)
    return index


async def run(choose, rule: RuleSpec = RULE):
    return await decide(rule, LookupKey(CALLER, "caller_id"), value, Deadline.after_ms(2500), choose=choose)


async def test_the_owners_agent_gets_the_call():
    decision = await run(picker(Owner(True, "005OLIVIA", "Contact 003A")))
    assert decision.status is Status.MATCHED and decision.row == 1
    assert decision.destination == Destination(DestType.OWNER, "201") and decision.agent == "Olivia"
    assert any("owner: 005OLIVIA → extension 201 (agent Olivia)" in step for step in decision.steps)


async def test_an_owner_known_by_e_mail_is_found_ignoring_case():
    decision = await run(picker(Owner(True, "Olivia@Example.com", "Contact 003A")))
    assert decision.destination == Destination(DestType.OWNER, "201")


async def test_a_busy_owner_falls_through_to_the_next_matching_row_and_the_trace_says_why():
    presence = Availability()
    presence.feed(device("PJSIP/201", "INUSE"))
    last = history(Talk(NOW - timedelta(days=2), "202", "inbound", 60))
    decision = await run(picker(Owner(True, "005OLIVIA", "Contact 003A"), presence=presence, last=last))
    assert decision.row == 2 and decision.destination == Destination(DestType.LAST_AGENT, "202")
    assert decision.agent == "Peter"
    trace = "\n".join(decision.steps)
    assert "agent Olivia is busy (PJSIP/201 INUSE): skipped" in trace
    assert "row 1 matched" in trace and "next row" in trace


async def test_the_check_can_be_turned_off_per_rule():
    presence = Availability()
    presence.feed(device("PJSIP/201", "INUSE"))
    choose = picker(Owner(True, "005OLIVIA", "Contact 003A"), presence=presence,
                    options=AgentOptions(check_availability=False))  # fmt: skip
    assert (await run(choose)).destination == Destination(DestType.OWNER, "201")


async def test_unknown_and_idle_count_as_available_unreachable_does_not():
    presence = Availability()  # nothing known: AMI off or no event yet
    owner = Owner(True, "005PETER", "Contact 003A")
    assert (await run(picker(owner, presence=presence))).destination.option == "202"
    presence.feed(device("PJSIP/peter-desk", "NOT_INUSE"))
    assert (await run(picker(owner, presence=presence))).destination.option == "202"
    presence.feed(device("PJSIP/peter-desk", "UNAVAILABLE"))
    decision = await run(picker(owner, presence=presence))
    assert decision.destination == SALES  # owner unreachable, no last agent: row 3
    assert any("agent Peter is unavailable" in step for step in decision.steps)


async def test_no_record_no_owner_or_no_agent_each_explained():
    for owner, why in (
        (Owner(False), "no record found, so no owner"),
        (Owner(True, "", "Contact 003A"), "Contact 003A has no owner"),
        (Owner(True, "005NOBODY", "Contact 003A"), "owner '005NOBODY' of Contact 003A is no agent"),
    ):
        decision = await run(picker(owner))
        assert decision.destination == SALES, why
        assert any(why in step for step in decision.steps), decision.steps


async def test_the_default_can_try_an_agent_before_the_default_extension():
    rule = RuleSpec(name="Sticky", crm_field="Status", rows=(), default=Destination(DestType.EXTENSION, "100"),
                    default_agent=DestType.LAST_AGENT)  # fmt: skip
    last = history(Talk(NOW - timedelta(hours=3), "202", "inbound", 40))
    decision = await run(picker(Owner(False), last=last), rule)
    assert decision.status is Status.DEFAULT and decision.destination == Destination(DestType.LAST_AGENT, "202")
    decision = await run(picker(Owner(False), last=LastAgents()), rule)
    assert decision.destination == Destination(DestType.EXTENSION, "100")
    assert "default: no last_agent agent; extension 100" in decision.steps


async def test_without_a_picker_agent_rows_are_skipped():
    decision = await run(None)
    assert decision.destination == SALES


def test_last_agent_window_talk_time_and_direction():
    index = history(
        Talk(NOW - timedelta(days=40), "205", "inbound", 300),  # too old
        Talk(NOW - timedelta(days=3), "203", "inbound", 120),
        Talk(NOW - timedelta(days=2), "204", "inbound", 2),  # too short
        Talk(NOW - timedelta(days=1), "206", "outbound", 90),  # outbound: only when asked
    )
    since = NOW - timedelta(days=30)
    assert index.find(CALLER, since=since, min_talk_s=5).extension == "203"
    assert index.find(CALLER, since=since, min_talk_s=5, outbound=True).extension == "206"
    assert index.find(CALLER, since=since, min_talk_s=0).extension == "204"
    assert index.find(CALLER, since=NOW - timedelta(days=2, hours=1), min_talk_s=5) is None
    assert index.find("+14155550000", since=since) is None


def test_last_agent_picks_an_unconfigured_extension_too():
    last = history(Talk(NOW - timedelta(days=1), "299", "inbound", 30))
    choice = picker(Owner(False), last=last)(DestType.LAST_AGENT)
    assert choice == AgentChoice("299", "extension 299", choice.note) and "extension 299" in choice.note


def test_numbers_compare_in_any_written_form():
    assert {number_key(n) for n in ("+14155552671", "(415) 555-2671", "14155552671", "4155552671")} == {
        "+14155552671"
    }
