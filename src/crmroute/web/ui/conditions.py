"""A rule row's conditions as the form writes them: one per line, in a short text form.

::

    Region = EU                 another CRM field (any row operator: Tier not_empty, Score >= 50)
    schedule Office hours       a schedule is open
    not schedule Office hours   ("not" before any condition)
    did 5551000, _5552XXX       the DID called
    country GB, IE              the caller's country
    matches many                how many records matched: none, one or many

``parse`` gives the API's condition objects (validated by ``ConditionIn``
like everywhere else); ``format`` writes stored ones back.
"""

from __future__ import annotations

from typing import Any

from crmroute.routing.compare import Operator, parse_operator

KEYWORDS = ("schedule", "did", "country", "matches")
NO_OPERAND = (Operator.EMPTY, Operator.NOT_EMPTY)


def parse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The conditions written in ``text``, and a message for each line that is not one."""
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        negate = False
        if line.lower().startswith("not "):
            negate, line = True, line[4:].strip()
        head, _, rest = line.partition(" ")
        rest = rest.strip()
        operator, _, value = rest.partition(" ")
        try:
            op = parse_operator(operator) if operator else None
        except ValueError:
            op = None
        if op is not None:
            item: dict[str, Any] = {"field": head, "operator": str(op), "value": value.strip()}
        elif head.lower() in KEYWORDS and rest:
            kind = head.lower()
            item = {kind: rest if kind in ("schedule", "matches") else [p.strip() for p in rest.split(",") if p.strip()]}
        else:
            problems.append(f"line {number}: {line!r} is not a condition; write e.g. 'Region = EU', "
                            "'schedule Office hours', 'did 5551000', 'country GB' or 'matches many'")  # fmt: skip
            continue
        found.append(item | ({"not": True} if negate else {}))
    return found, problems


def format(conditions: list[dict[str, Any]]) -> str:
    lines = []
    for item in conditions or ():
        prefix = "not " if item.get("not") else ""
        if "field" in item:
            op = item.get("operator", "=")
            value = "" if op in NO_OPERAND else f" {item.get('value', '')}"
            lines.append(f"{prefix}{item['field']} {op}{value}".rstrip())
        else:
            kind = next((k for k in KEYWORDS if k in item), None)
            if kind is None:
                continue
            value = item[kind]
            lines.append(f"{prefix}{kind} {', '.join(value) if isinstance(value, list) else value}")
    return "\n".join(lines)
