"""The rules file's ``schedules`` and rows' ``conditions``: import, references, export, idempotency, the rule book."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from crmroute import rulesfile
from crmroute.errors import ConfigError
from crmroute.rulebook import load_rulebook
from crmroute.routing.conditions import FieldCondition, ScheduleCondition

FILE = """
destinations:
  - {type: extension, number: 100}
  - {type: queue, number: 103}
  - {type: recording, name: closed-today}
schedules:
  - name: Office hours
    timezone: Europe/London
    hours: {mon-fri: ["09:00-12:30", "13:30-17:30"], sat: "10:00-12:00"}
    holidays: [2026-12-25, {date: 2026-12-26, name: Boxing Day}]
rules:
  - name: VIP
    crm_field: Status
    location: did
    crm_source: custom
    custom_url: https://crm.example.com/lookup
    default_destination: 100
    rows:
      - operator: "="
        value: GOLD
        destination: queue
        option: 103
        conditions:
          - {field: Region, operator: "=", value: EU}
          - {schedule: Office hours}
          - {did: [5551000, _5552XXX]}
          - {country: gb}
          - {matches: many, not: true}
      - {operator: "=", value: GOLD, destination: recording, option: closed-today}
"""


def import_text(store, content: str):
    return rulesfile.import_rules(store.factory, store.box, rulesfile.parse(content, environ={}))


def test_schedules_and_conditions_import_export_and_are_idempotent(store):
    summary = import_text(store, FILE)
    assert summary.as_dict()["schedules"] == {"created": 1, "updated": 0, "unchanged": 0}
    with store.factory() as session:
        exported = rulesfile.export_rules(session, store.box)
    assert exported["schedules"] == [{
        "name": "Office hours", "timezone": "Europe/London",
        "hours": {"mon-fri": ["09:00-12:30", "13:30-17:30"], "sat": ["10:00-12:00"]},
        "holidays": ["2026-12-25", {"date": "2026-12-26", "name": "Boxing Day"}],
    }]  # fmt: skip
    rows = exported["rules"][0]["rows"]
    assert rows[0]["conditions"] == [
        {"field": "Region", "operator": "=", "value": "EU"}, {"schedule": "Office hours"},
        {"did": ["5551000", "_5552XXX"]}, {"country": ["GB"]}, {"matches": "many", "not": True},
    ]
    assert "conditions" not in rows[1]
    again = import_text(store, rulesfile.dump(exported))
    assert all(c["created"] == 0 and c["updated"] == 0 for c in again.as_dict().values())
    assert import_text(store, FILE).as_dict()["rules"] == {"created": 0, "updated": 0, "unchanged": 1}


def test_the_rule_book_compiles_conditions_with_their_schedule(store, settings):
    import_text(store, FILE)
    with store.factory() as session:
        book = load_rulebook(session, store.box, settings)
    rule = book.rules["VIP"]
    assert rule.spec.extra_fields == ("Region",)
    first = rule.spec.rows[0].conditions
    assert isinstance(first[0], FieldCondition) and isinstance(first[1], ScheduleCondition)
    assert first[1].schedule.is_open(datetime(2026, 3, 30, 8, 0, tzinfo=timezone.utc))  # 09:00 BST
    assert not first[1].schedule.is_open(datetime(2026, 12, 25, 10, 0, tzinfo=timezone.utc))


def test_conditions_name_schedules_that_exist(store):
    broken = FILE.replace("- {schedule: Office hours}", "- {schedule: Night shift}")
    with pytest.raises(ConfigError) as caught:
        import_text(store, broken)
    assert caught.value.problems == [("rules[0].rows[0].conditions[1].schedule", "no schedule named 'Night shift'")]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (("timezone: Europe/London", "timezone: Europe/Londres"), "schedules[0].timezone"),
        (('sat: "10:00-12:00"', 'sat: "12:00-10:00"'), "schedules[0].hours"),
        (("- {country: gb}", "- {country: zz}"), "rules[0].rows[0].conditions[3].country"),
        (("- {matches: many, not: true}", "- {matches: several}"), "rules[0].rows[0].conditions[4].matches"),
        (("- {did: [5551000, _5552XXX]}", "- {did: [555-1000]}"), "rules[0].rows[0].conditions[2].did"),
        (('operator: "=", value: EU}', 'operator: "<", value: EU}'), "rules[0].rows[0].conditions[0].value"),
    ],
)
def test_bad_conditions_and_schedules_name_the_field(change, path):
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(FILE.replace(*change), environ={})
    assert [p for p, _ in caught.value.problems] == [path], caught.value.problems


def test_a_schedules_section_alone_is_a_file(store):
    only = {"schedules": [{"name": "Always", "timezone": "UTC", "hours": {"mon-sun": "00:00-24:00"}}]}
    assert import_text(store, yaml.safe_dump(only)).as_dict()["schedules"]["created"] == 1
