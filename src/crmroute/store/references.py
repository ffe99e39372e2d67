"""Cross-object checks shared by the rules file, the REST API and the UI.

A rule names an integration, a default extension and row destinations; a DID
or IVR names a rule of its own location. ``References`` is what exists (the
store, optionally overlaid with a rules file being imported); the ``check_*``
functions return ``(field, message)`` problems with paths relative to the
object checked (``rows[1].option``), which callers prefix (``rules[0].``).
The usage queries below also back the deletion policy: nothing in use is
deleted, so a rule never points at something that is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.schemas import DidIn, IvrIn, RuleIn, RulesFile, join_path
from crmroute.store.models import Destination, Did, Integration, Ivr, Rule, RuleRow, Schedule

Problem = tuple[str, str]
Assignment = tuple[str, str]  # ("did", "5551000") or ("ivr", "7")


@dataclass
class References:
    """The names a rule, DID or IVR may point at."""

    integrations: set[str] = field(default_factory=set)
    destinations: set[tuple[str, str]] = field(default_factory=set)  # (type, ref)
    rule_locations: dict[str, str] = field(default_factory=dict)  # rule name -> did/ivr
    assigned: dict[str, list[Assignment]] = field(default_factory=dict)  # rule name -> DIDs/IVRs using it
    schedules: set[str] = field(default_factory=set)

    @classmethod
    def stored(cls, session: Session) -> References:
        refs = cls(
            integrations=set(session.scalars(select(Integration.name))),
            schedules=set(session.scalars(select(Schedule.name))),
            destinations={(t, r) for t, r in session.execute(select(Destination.type, Destination.ref))},
            rule_locations={n: loc for n, loc in session.execute(select(Rule.name, Rule.location))},
        )
        for name, kind, number in _assignments(session):
            refs.assigned.setdefault(name, []).append((kind, number))
        return refs

    def overlay(self, data: RulesFile) -> References:
        """What will exist once ``data`` is imported (it creates or updates, never deletes)."""
        dids = {d.number for d in data.dids}
        ivrs = {i.number for i in data.ivrs}
        assigned: dict[str, list[Assignment]] = {}
        for name, items in self.assigned.items():  # the file's own DIDs/IVRs are checked as such
            kept = [(k, n) for k, n in items if n not in (dids if k == "did" else ivrs)]
            if kept:
                assigned[name] = kept
        return References(
            integrations=self.integrations | {i.name for i in data.integrations},
            destinations=self.destinations | {(d.type, d.ref) for d in data.destinations},
            rule_locations=self.rule_locations | {r.name: r.location for r in data.rules},
            assigned=assigned,
            schedules=self.schedules | {s.name for s in data.schedules},
        )


def _assignments(session: Session) -> Iterable[tuple[str, str, str]]:
    for name, number in session.execute(select(Rule.name, Did.number).join(Did.rule).order_by(Did.number)):
        yield name, "did", number
    for name, number in session.execute(select(Rule.name, Ivr.number).join(Ivr.rule).order_by(Ivr.number)):
        yield name, "ivr", number


def check_rule(refs: References, rule: RuleIn, assigned: Sequence[Assignment] = ()) -> list[Problem]:
    """A rule's integration and destinations exist; ``assigned`` (its DIDs/IVRs) fit its location."""
    found: list[Problem] = []
    if rule.crm_source == "integration" and rule.integration and rule.integration not in refs.integrations:
        found.append(("integration", f"no integration named {rule.integration!r}"))
    if ("extension", rule.default_destination) not in refs.destinations:
        found.append(("default_destination", f"no extension {rule.default_destination!r} among destinations"))
    for j, row in enumerate(rule.rows):
        if row.destination in ("owner", "last_agent"):  # the agent is found per call
            continue
        if (row.destination, row.option) not in refs.destinations:
            found.append((f"rows[{j}].option", f"no {row.destination} {row.option!r} among destinations"))
        for k, condition in enumerate(row.conditions):
            if condition.schedule is not None and condition.schedule not in refs.schedules:
                found.append((f"rows[{j}].conditions[{k}].schedule", f"no schedule named {condition.schedule!r}"))
    others = [(kind, number) for kind, number in assigned if kind != rule.location]
    if others:
        message = (f"rule {rule.name!r} is used by {describe(others)}; "
                   f"assign {_pronoun(others)} another rule before changing the location to {rule.location}")
        found.append(("location", message))
    return found


def check_assignment(refs: References, location: str, item: DidIn | IvrIn) -> list[Problem]:
    """A DID's (``location="did"``) or IVR's rule exists and has that location."""
    if item.rule not in refs.rule_locations:
        return [("rule", f"no rule named {item.rule!r}")]
    if refs.rule_locations[item.rule] != location:
        return [("rule", f"rule {item.rule!r} has location {refs.rule_locations[item.rule]}, not {location}")]
    return []


def prefixed(prefix: str, problems: Iterable[Problem]) -> list[Problem]:
    return [(join_path(prefix, path), message) for path, message in problems]


# --- what uses what ---------------------------------------------------------------


def rule_assignments(session: Session, rule_id: int) -> list[Assignment]:
    """The DIDs and IVRs that send calls to this rule, DIDs first, by number."""
    dids = session.scalars(select(Did.number).where(Did.rule_id == rule_id).order_by(Did.number))
    ivrs = session.scalars(select(Ivr.number).where(Ivr.rule_id == rule_id).order_by(Ivr.number))
    return [("did", n) for n in dids] + [("ivr", n) for n in ivrs]


def rules_using_destination(session: Session, type: str, ref: str) -> list[str]:
    """Names of the rules whose rows (or, for an extension, default) name this destination."""
    by_row = select(Rule.name).join(RuleRow, RuleRow.rule_id == Rule.id).where(
        RuleRow.destination == type, RuleRow.option == ref
    )
    names = set(session.scalars(by_row))
    if type == "extension":
        names |= set(session.scalars(select(Rule.name).where(Rule.default_destination == ref)))
    return sorted(names)


def rules_using_integration(session: Session, integration_id: int) -> list[str]:
    return list(session.scalars(select(Rule.name).where(Rule.integration_id == integration_id).order_by(Rule.name)))


def describe(assignments: Sequence[Assignment]) -> str:
    """``DID 5551000 and IVR 7``, ``DIDs 5551000, 5552000 and IVR 7``."""
    parts = []
    for kind, label in (("did", "DID"), ("ivr", "IVR")):
        numbers = [n for k, n in assignments if k == kind]
        if numbers:
            parts.append(f"{label}{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}")
    return " and ".join(parts)


def describe_rules(names: Sequence[str]) -> str:
    """``rule 'VIP'``, ``rules 'A', 'B' and 'C'``."""
    quoted = [repr(n) for n in names]
    if len(quoted) == 1:
        return f"rule {quoted[0]}"
    return f"rules {', '.join(quoted[:-1])} and {quoted[-1]}"


def _pronoun(items: Sequence[object]) -> str:
    return "it" if len(items) == 1 else "them"
