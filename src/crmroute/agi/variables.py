"""The channel variables crmroute sets (SPEC section 6), named once.

The dialplan reads these after the AGI step; their names and values are a
contract with every installed dialplan, so change nothing here lightly.
"""

from __future__ import annotations

from crmroute.routing.trace import Decision, Status

CRMROUTE_STATUS = "CRMROUTE_STATUS"
CRMROUTE_DEST_TYPE = "CRMROUTE_DEST_TYPE"
CRMROUTE_DEST = "CRMROUTE_DEST"
CRMROUTE_VALUE = "CRMROUTE_VALUE"
CRMROUTE_RULE = "CRMROUTE_RULE"
CRMROUTE_ROW = "CRMROUTE_ROW"
CRMROUTE_AGENT = "CRMROUTE_AGENT"  # owner / last_agent destinations only: the chosen agent's name

# In the order they are written to the channel.
ALL_VARIABLES = (
    CRMROUTE_STATUS,
    CRMROUTE_DEST_TYPE,
    CRMROUTE_DEST,
    CRMROUTE_VALUE,
    CRMROUTE_RULE,
    CRMROUTE_ROW,
)

# Statuses that carry no destination: only the status (and the rule) is set,
# and the dialplan's next priority handles the call.
STATUSES_WITHOUT_DESTINATION = frozenset({Status.NO_RULE, Status.UNLICENSED, Status.ERROR})


def decision_variables(decision: Decision) -> dict[str, str]:
    """The variables to set for ``decision``, in writing order.

    ``no_rule``, ``unlicensed`` and ``error`` give ``CRMROUTE_STATUS`` and,
    when the rule is known, ``CRMROUTE_RULE``. Every other status gives all
    six; ``CRMROUTE_ROW`` is ``""`` when no row matched (and ``CRMROUTE_AGENT`` when an
    owner / last_agent destination chose an agent). A ``matched``,
    ``default`` or ``fallback`` decision without a destination is a bug and
    raises ``ValueError`` (the AGI server then answers ``error``).
    """
    status = Status(decision.status)
    if status in STATUSES_WITHOUT_DESTINATION:
        variables = {CRMROUTE_STATUS: str(status)}
        if decision.rule:
            variables[CRMROUTE_RULE] = decision.rule
        return variables
    if decision.destination is None:
        raise ValueError(f"a {status} decision needs a destination")
    variables = {
        CRMROUTE_STATUS: str(status),
        CRMROUTE_DEST_TYPE: str(decision.destination.type),
        CRMROUTE_DEST: decision.destination.option,
        CRMROUTE_VALUE: decision.value or "",
        CRMROUTE_RULE: decision.rule,
        CRMROUTE_ROW: "" if decision.row is None else str(decision.row),
    }
    if decision.agent:
        variables[CRMROUTE_AGENT] = decision.agent
    return variables


def error_variables() -> dict[str, str]:
    """What a call gets when anything goes wrong: ``CRMROUTE_STATUS=error``."""
    return {CRMROUTE_STATUS: str(Status.ERROR)}
