"""/api/v1/import and /api/v1/export: the rules file over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from crmroute.store.models import Rule
from crmroute.store.secrets import MASK
from crmroute.web.api.transfer import MAX_BODY
from tests.hostile_files import HOSTILE
from tests.web.api.conftest import SQLITE_ONLY, fields

SAMPLE = (Path(__file__).parents[2] / "store" / "sample_rules.yaml").read_text()
ENV = {"ZOHO_SECRET": "zs-from-env", "ZOHO_REFRESH": "zr-from-env", "CRM_KEY": "key-from-env"}


def import_yaml(api, text: str):
    return api.post("/api/v1/import", content=text.encode(), headers={"Content-Type": "application/yaml"})


def with_values(text: str) -> str:
    """The sample with its ${ENV} references replaced by values (the API expands none)."""
    for name, value in ENV.items():
        text = text.replace("${" + name + "}", value)
    return text


def test_yaml_import_then_json_round_trip(web, api):
    response = import_yaml(api, with_values(SAMPLE))
    assert response.status_code == 200, response.text
    assert response.json()["rules"] == {"created": 2, "updated": 0, "unchanged": 0}
    assert response.json()["dids"] == {"created": 1, "updated": 0, "unchanged": 0}
    with web.store.factory() as session:
        rule = session.scalar(select(Rule).where(Rule.name == "VIP"))
        assert web.store.box.decrypt_json(rule.custom_headers_enc, [])[0]["value"] == "key-from-env"

    exported = api.get("/api/v1/export")
    assert exported.headers["content-type"].startswith("application/json")
    data = exported.json()
    for secret in ENV.values():
        assert secret not in exported.text
    assert data["rules"][1]["custom_headers"] == [{"name": "X-Api-Key", "value": MASK}]
    again = api.post("/api/v1/import", json=data)  # the export, as JSON: nothing changes, secrets kept
    assert again.status_code == 200, again.text
    assert all(c["created"] == 0 and c["updated"] == 0 for c in again.json().values())
    as_yaml = api.get("/api/v1/export?format=yaml")
    assert as_yaml.headers["content-type"].startswith("text/yaml") and yaml.safe_load(as_yaml.text) == data


def test_import_is_all_or_nothing_with_every_problem(web, api):
    bad = yaml.safe_load(SAMPLE)
    bad["rules"][0]["custom_url"] = "http://crm.example.com"
    bad["rules"][1]["rows"][0]["option"] = "999"
    bad["dids"].append({"number": "5552000", "rule": "Nope"})
    problems = fields(api.post("/api/v1/import", json=bad))
    assert problems["rules[0].custom_url"] == "must start with https://"
    assert problems["rules[0].custom_headers[0].value"].startswith("${CRM_KEY}: environment variables are expanded only")
    bad["rules"][0]["custom_url"] = "https://crm.example.com"
    bad = yaml.safe_load(with_values(yaml.safe_dump(bad)))
    assert fields(api.post("/api/v1/import", json=bad)) == {
        "rules[1].rows[0].option": "no queue '999' among destinations",
        "dids[1].rule": "no rule named 'Nope'",
    }
    with web.store.factory() as session:
        assert session.scalar(select(func.count()).select_from(Rule)) == 0


def test_the_servers_environment_is_not_readable(api, monkeypatch):
    monkeypatch.setenv("SOME_SERVER_SECRET", "do-not-leak")
    text = "destinations:\n  - {type: queue, number: '1', name: '${SOME_SERVER_SECRET}'}\n"
    problems = fields(import_yaml(api, text))
    assert list(problems) == ["destinations[0].name"]
    assert "expanded only by `crmroute rules import`" in problems["destinations[0].name"]
    assert "do-not-leak" not in str(problems)


@SQLITE_ONLY  # request validation: the same on both engines
def test_bad_bodies(api):
    assert fields(import_yaml(api, "rules: [\n")).keys() == {"file"}
    assert fields(api.post("/api/v1/import", content=b"[1, 2]", headers={"Content-Type": "application/json"})).keys() == {"file"}  # fmt: skip
    assert fields(api.post("/api/v1/import", content=b"x", headers={"Content-Type": "text/csv"})).keys() == {"file"}
    assert fields(api.get("/api/v1/export?format=xml")).keys() == {"format"}


@SQLITE_ONLY  # request validation: the same on both engines
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_by_path(web, api, name):
    hostile = HOSTILE[name]
    content_type = "application/json" if hostile.fmt == "json" else "application/yaml"
    response = api.post("/api/v1/import", content=hostile.data, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == hostile.field and hostile.message in problem["message"]
    assert api.get("/api/v1/export").json()["rules"] == []


@SQLITE_ONLY
def test_an_empty_file_is_refused(api):
    empty = "the file is empty: give at least one of integrations, destinations, rules, dids, ivrs, agents, schedules"
    for body in (b"{}", b"null"):
        response = api.post("/api/v1/import", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and fields(response) == {"file": empty}
    assert fields(import_yaml(api, "")) == {"file": empty}
    named = api.post("/api/v1/import", json={"rules": []})  # a section, even empty, is enough
    assert named.json()["rules"] == {"created": 0, "updated": 0, "unchanged": 0}
    schema = api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/import"]["post"]["requestBody"]
    assert schema["content"]["application/json"]["schema"]["minProperties"] == 1


@SQLITE_ONLY
def test_a_body_past_the_limit_is_refused(api):
    declared = api.post("/api/v1/import", content=b"{}", headers={"Content-Type": "application/json",
                                                                  "Content-Length": str(MAX_BODY + 1)})  # fmt: skip
    assert declared.status_code == 422 and fields(declared) == {"file": "larger than 5 MB"}
    chunks = (b"#" * (1024 * 1024) for _ in range(6))  # no Content-Length: counted as it streams in
    streamed = api.post("/api/v1/import", content=chunks, headers={"Content-Type": "application/yaml"})
    assert streamed.status_code == 422 and fields(streamed) == {"file": "larger than 5 MB"}
