"""Jump targets: both presets of SPEC section 6, overrides, validation."""

from __future__ import annotations

import pytest

from crmroute.agi.jumps import PRESETS, JumpTable, setting_name
from crmroute.errors import ConfigError
from crmroute.routing.trace import Destination, DestType
from crmroute.settings import Settings

# SPEC section 6, row by row: type, asterisk preset, freepbx preset.
SPEC_TABLE = [
    ("queue", "crmroute-queue,{dest},1", "ext-queues,{dest},1"),
    ("ivr", "crmroute-ivr,{dest},1", "ivr-{dest},s,1"),
    ("recording", "crmroute-recording,{dest},1", "crmroute-recording,{dest},1"),
    ("extension", "crmroute-extension,{dest},1", "from-did-direct,{dest},1"),
    ("voicemail", "crmroute-voicemail,{dest},1", "ext-local,vmu{dest},1"),
    # SPEC section 11: the agent types jump as extensions
    ("owner", "crmroute-extension,{dest},1", "from-did-direct,{dest},1"),
    ("last_agent", "crmroute-extension,{dest},1", "from-did-direct,{dest},1"),
]


def test_agent_types_follow_the_extension_override_unless_given_their_own():
    table = JumpTable("asterisk", {"extension": "my-exten,{dest},1", "last_agent": "sticky,{dest},1"})
    assert table.target(Destination(DestType.OWNER, "201")) == ("my-exten", "201", "1")
    assert table.target(Destination(DestType.LAST_AGENT, "201")) == ("sticky", "201", "1")


@pytest.mark.parametrize(("dest_type", "asterisk", "freepbx"), SPEC_TABLE)
def test_presets_match_the_spec(dest_type, asterisk, freepbx):
    assert JumpTable("asterisk", {}).template(dest_type) == asterisk
    assert JumpTable("freepbx", {}).template(dest_type) == freepbx


def test_every_type_has_a_row():
    assert {row[0] for row in SPEC_TABLE} == {t.value for t in DestType}
    for templates in PRESETS.values():
        assert set(templates) == set(DestType)


@pytest.mark.parametrize(
    ("preset", "dest_type", "option", "target"),
    [
        ("asterisk", DestType.QUEUE, "103", ("crmroute-queue", "103", "1")),
        ("asterisk", DestType.IVR, "5", ("crmroute-ivr", "5", "1")),
        ("asterisk", DestType.RECORDING, "closed-today", ("crmroute-recording", "closed-today", "1")),
        ("asterisk", DestType.EXTENSION, "100", ("crmroute-extension", "100", "1")),
        ("asterisk", DestType.VOICEMAIL, "100", ("crmroute-voicemail", "100", "1")),
        ("freepbx", DestType.QUEUE, "103", ("ext-queues", "103", "1")),
        ("freepbx", DestType.IVR, "5", ("ivr-5", "s", "1")),
        ("freepbx", DestType.RECORDING, "closed-today", ("crmroute-recording", "closed-today", "1")),
        ("freepbx", DestType.EXTENSION, "100", ("from-did-direct", "100", "1")),
        ("freepbx", DestType.VOICEMAIL, "100", ("ext-local", "vmu100", "1")),
    ],
)
def test_targets(preset, dest_type, option, target):
    assert JumpTable(preset, {}).target(Destination(dest_type, option)) == target


def test_overrides_replace_one_type():
    table = JumpTable("freepbx", {"queue": "my-queues,q{dest},start", "VOICEMAIL": "vm,{dest},1"})
    assert table.target(Destination(DestType.QUEUE, "103")) == ("my-queues", "q103", "start")
    assert table.target(Destination(DestType.VOICEMAIL, "100")) == ("vm", "100", "1")
    assert table.target(Destination(DestType.IVR, "5")) == ("ivr-5", "s", "1")  # untouched


def test_override_without_dest_and_with_spaces_around_parts():
    table = JumpTable("asterisk", {DestType.RECORDING: " play-it , s , 1 "})
    assert table.target(Destination(DestType.RECORDING, "x")) == ("play-it", "s", "1")


def test_dest_with_a_comma_or_braces_stays_in_its_part():
    table = JumpTable("asterisk", {})
    assert table.target(Destination(DestType.RECORDING, "a,{b}")) == ("crmroute-recording", "a,{b}", "1")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ctx,{dest}", "context,extension,priority"),
        ("ctx,{dest},1,extra", "context,extension,priority"),
        ("ctx,,1", "no empty part"),
        (" ,{dest},1", "no empty part"),
        ("", "context,extension,priority"),
        ("ctx,{number},1", "only {dest}"),
        ("ctx,{},1", "only {dest}"),
        ("ctx,{dest,1", "bad braces"),
        ("ctx,{dest,1}", "bad braces"),
        ("my ctx,{dest},1", "spaces"),
    ],
)
def test_bad_override_names_the_variable(template, message):
    with pytest.raises(ConfigError, match=message) as info:
        JumpTable("asterisk", {"queue": template})
    assert info.value.problems[0][0] == "CRMROUTE_JUMP_QUEUE"


def test_unknown_override_type_and_preset_and_mode():
    with pytest.raises(ConfigError) as info:
        JumpTable("asterisk", {"parking": "a,b,c"})
    assert info.value.problems[0][0] == "CRMROUTE_JUMP_PARKING"
    with pytest.raises(ConfigError) as info:
        JumpTable("vicidial", {})
    assert info.value.problems[0][0] == "CRMROUTE_JUMP_PRESET"
    with pytest.raises(ConfigError) as info:
        JumpTable("asterisk", {}, mode="teleport")
    assert info.value.problems[0][0] == "CRMROUTE_JUMP_MODE"


def test_every_bad_override_is_reported():
    with pytest.raises(ConfigError) as info:
        JumpTable("asterisk", {"queue": "x", "ivr": "a,,c"})
    assert [field for field, _ in info.value.problems] == ["CRMROUTE_JUMP_QUEUE", "CRMROUTE_JUMP_IVR"]


def test_empty_destination_option_is_refused():
    with pytest.raises(ValueError):
        JumpTable("asterisk", {}).target(Destination(DestType.QUEUE, ""))


def test_from_settings():
    settings = Settings.from_env(
        {"CRMROUTE_JUMP_PRESET": "freepbx", "CRMROUTE_JUMP_IVR": "menus,{dest},1", "CRMROUTE_JUMP_MODE": "variables"}
    )
    table = JumpTable.from_settings(settings)
    assert table.preset == "freepbx" and table.mode == "variables" and not table.enabled
    assert table.target(Destination(DestType.IVR, "5")) == ("menus", "5", "1")
    assert table.target(Destination(DestType.QUEUE, "103")) == ("ext-queues", "103", "1")
    default = JumpTable.from_settings(Settings.from_env({}))
    assert default.preset == "asterisk" and default.enabled


def test_jump_for():
    dest = Destination(DestType.QUEUE, "103")
    assert JumpTable("asterisk").jump_for(dest) == ("crmroute-queue", "103", "1")
    assert JumpTable("asterisk").jump_for(None) is None
    assert JumpTable("asterisk", mode="variables").jump_for(dest) is None


def test_setting_name():
    assert setting_name(DestType.VOICEMAIL) == "CRMROUTE_JUMP_VOICEMAIL"
    assert setting_name("queue") == "CRMROUTE_JUMP_QUEUE"
