"""Schemathesis against the API in process: no 5xx, and every answer as the OpenAPI document says.

One bounded, reproducible run (fixed seed, deterministic generation, MAX_EXAMPLES per operation, all
phases: examples, coverage, fuzzing, stateful) against the ASGI app on a migrated SQLite store, with
the admin's bearer token. Every check is on. The refusals tolerated below are schema-valid requests
that the document cannot tell from good ones; each says why. Anything else fails the test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import schemathesis
from schemathesis.engine import Status, events, from_schema

from tests.web.api.conftest import SQLITE_ONLY

MAX_EXAMPLES = 20
SEED = 20261

# A 422 on these fields answers a schema-valid body: the value must name an object that is stored
# (the document cannot list what exists), or pass a check only code can make.
NAMES_STORED = {
    r"rule": "a DID or IVR names a stored rule",
    r"default_destination|rows\[\d+\]\.option": "a rule's destinations must be stored ones",
    r"integration": "a rule names a stored integration",
    r"(settings|secrets)(\..+)?": "each CRM kind's connector checks its own settings (the document keeps them open)",
    r"rows\[\d+\]\.value": "a regex operand must compile",
    r"identities\..+": "an agent's identities name stored integrations",
    r"rows\[\d+\]\.conditions\[\d+\]\.schedule": "a row's schedule condition names a stored schedule",
    r"rows\[\d+\]\.conditions\[\d+\]\.did": "a DID condition's Asterisk pattern must compile",
    r"timezone": "a schedule's time zone must be in the time zone database",
    r"hours": "opening hours must be real times, each range ending after it starts, days and ranges not repeated",
    r"holidays(\[\d+\]\.date)?": "a holiday must be a real date, each given once",
}
# Operations whose body is a file only parsing can judge.
FILE_BODIES = {
    "POST /api/v1/license": "a license must be signed by the configured key",
    "POST /api/v1/import": "a rules file (YAML text) is judged by parsing it; the document can only say 'text'",
}
# Known and owned elsewhere in issue 11: remove when that lands.
PENDING: dict[tuple[str, str], str] = {}  # (operation, check) -> why it is tolerated for now


@dataclass
class Figures:
    requests: int = 0
    server_errors: int = 0
    tolerated: int = 0
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, check) -> an example

    def __str__(self) -> str:
        return (f"{self.requests} requests, {self.server_errors} 5xx, {len(self.failures)} failing "
                f"(operation, check), {self.tolerated} tolerated refusals")  # fmt: skip


def tolerated(label: str, check: str, response) -> bool:
    if (label, check) in PENDING:
        return True
    if check != "positive_data_acceptance" or response is None or response.status_code != 422:
        return False
    if label in FILE_BODIES:
        return True
    try:
        problems = json.loads(response.content)["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(problems) and all(any(re.fullmatch(p, item["field"]) for p in NAMES_STORED) for item in problems)


def run(app, token: str) -> Figures:
    config = schemathesis.Config.from_dict({
        "seed": SEED, "workers": 1, "continue-on-failure": True,
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    })  # fmt: skip
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, config=config,
                                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    figures = Figures()
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            raise AssertionError(f"schemathesis could not run: {event}")
        if not isinstance(event, events.ScenarioFinished):
            continue
        recorder = event.recorder
        for interaction in recorder.interactions.values():
            figures.requests += 1
            figures.server_errors += interaction.response is not None and interaction.response.status_code >= 500
        for case_id, nodes in recorder.checks.items():
            interaction = recorder.interactions.get(case_id)
            for node in nodes:
                if node.status != Status.FAILURE or node.failure_info is None:
                    continue
                label = event.label or recorder.label
                if tolerated(label, node.name, interaction.response if interaction else None):
                    figures.tolerated += 1
                    continue
                failure = node.failure_info
                figures.failures.setdefault((label, node.name), f"{failure.failure.title}\n{failure.code_sample}")
    return figures


@SQLITE_ONLY
def test_schemathesis_finds_no_server_error_and_no_schema_violation(web, capsys):
    figures = run(web.app, web.token)
    with capsys.disabled():
        print(f"\nschemathesis (seed {SEED}, {MAX_EXAMPLES} examples per operation): {figures}")
    assert figures.requests > 1000, figures  # the run did reach the API
    assert not figures.failures, "\n\n".join(f"{op} {check}: {sample}" for (op, check), sample in figures.failures.items())
    assert figures.server_errors == 0
