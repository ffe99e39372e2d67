"""Channel variables for each kind of decision (SPEC section 6)."""

from __future__ import annotations

import pytest

from crmroute.agi.variables import (
    ALL_VARIABLES,
    CRMROUTE_DEST,
    CRMROUTE_DEST_TYPE,
    CRMROUTE_ROW,
    CRMROUTE_RULE,
    CRMROUTE_STATUS,
    CRMROUTE_VALUE,
    decision_variables,
    error_variables,
)
from crmroute.routing.trace import Decision, Destination, DestType, Status


def test_names():
    assert ALL_VARIABLES == (
        "CRMROUTE_STATUS",
        "CRMROUTE_DEST_TYPE",
        "CRMROUTE_DEST",
        "CRMROUTE_VALUE",
        "CRMROUTE_RULE",
        "CRMROUTE_ROW",
    )


def test_matched_gives_all_six_in_order():
    decision = Decision(Status.MATCHED, rule="VIP", destination=Destination(DestType.QUEUE, "103"), value="GOLD", row=2)
    variables = decision_variables(decision)
    assert variables == {
        CRMROUTE_STATUS: "matched",
        CRMROUTE_DEST_TYPE: "queue",
        CRMROUTE_DEST: "103",
        CRMROUTE_VALUE: "GOLD",
        CRMROUTE_RULE: "VIP",
        CRMROUTE_ROW: "2",
    }
    assert tuple(variables) == ALL_VARIABLES


@pytest.mark.parametrize(
    ("status", "dest", "value"),
    [
        (Status.DEFAULT, Destination(DestType.EXTENSION, "100"), "PLATINUM"),
        (Status.DEFAULT, Destination(DestType.VOICEMAIL, "100"), ""),
        (Status.FALLBACK, Destination(DestType.EXTENSION, "100"), ""),
    ],
)
def test_default_and_fallback_have_empty_row(status, dest, value):
    variables = decision_variables(Decision(status, rule="VIP", destination=dest, value=value))
    assert tuple(variables) == ALL_VARIABLES
    assert variables[CRMROUTE_STATUS] == str(status)
    assert variables[CRMROUTE_DEST_TYPE] == str(dest.type)
    assert variables[CRMROUTE_DEST] == dest.option
    assert variables[CRMROUTE_VALUE] == value
    assert variables[CRMROUTE_ROW] == ""


@pytest.mark.parametrize("status", [Status.NO_RULE, Status.UNLICENSED, Status.ERROR])
def test_statuses_without_destination(status):
    assert decision_variables(Decision(status)) == {CRMROUTE_STATUS: str(status)}
    with_rule = Decision(status, rule="VIP", destination=Destination(DestType.QUEUE, "103"), value="x", row=1)
    assert decision_variables(with_rule) == {CRMROUTE_STATUS: str(status), CRMROUTE_RULE: "VIP"}


def test_status_given_as_plain_string():
    assert decision_variables(Decision("no_rule")) == {CRMROUTE_STATUS: "no_rule"}  # type: ignore[arg-type]


def test_destination_required_for_matched():
    with pytest.raises(ValueError):
        decision_variables(Decision(Status.MATCHED, rule="VIP"))


def test_error_variables():
    assert error_variables() == {CRMROUTE_STATUS: "error"}
    assert error_variables() is not error_variables()
