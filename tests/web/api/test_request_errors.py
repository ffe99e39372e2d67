"""Requests the fuzzer found answered with 500s or undocumented codes: each gets a documented, named answer."""

from __future__ import annotations

import pytest

from crmroute.web.api._common import MAX_INT
from tests.web.api.conftest import SQLITE_ONLY, fields

TOO_BIG = str(MAX_INT + 1)  # 9223372036854775808


def openapi(web) -> dict:
    return web.api().get("/api/v1/openapi.json").json()


@SQLITE_ONLY
def test_every_integer_parameter_is_bounded_in_the_schema(web):
    document = openapi(web)
    found = 0
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema = param["schema"]
                options = schema.get("anyOf", [schema])
                for option in options:
                    if option.get("type") == "integer":
                        found += 1
                        assert option.get("maximum", MAX_INT + 1) <= MAX_INT, (method, path, param["name"])
                        assert "minimum" in option, (method, path, param["name"])
    assert found > 30  # every path id, offset and limit


@SQLITE_ONLY
@pytest.mark.parametrize("resource", ["rules", "destinations", "dids", "ivrs", "integrations", "decisions",
                                      "calllog", "users", "tokens"])  # fmt: skip
def test_offsets_beyond_64_bits_are_422_on_every_list(api, resource):
    assert fields(api.get(f"/api/v1/{resource}?offset={TOO_BIG}")).keys() == {"offset"}
    assert fields(api.get(f"/api/v1/{resource}?offset=-{TOO_BIG}")).keys() == {"offset"}
    assert api.get(f"/api/v1/{resource}?offset={MAX_INT}").json()["items"] == []  # the largest one is fine


@SQLITE_ONLY
def test_huge_ids_are_422_on_the_parameter(api):
    assert fields(api.get("/api/v1/calllog?integration=-18446744073709551615")).keys() == {"integration"}
    assert fields(api.get(f"/api/v1/calllog?integration={TOO_BIG}")).keys() == {"integration"}
    assert fields(api.get(f"/api/v1/decisions/{TOO_BIG}")).keys() == {"decision_id"}
    assert fields(api.delete(f"/api/v1/tokens/{TOO_BIG}")).keys() == {"token_id"}
    assert fields(api.post(f"/api/v1/calllog/{TOO_BIG}/retry")).keys() == {"delivery_id"}
    assert api.get(f"/api/v1/decisions/{MAX_INT}").status_code == 404


@SQLITE_ONLY
def test_filters_with_a_fixed_set_of_values_are_enums(web, api):
    params = {p["name"]: p["schema"] for p in openapi(web)["paths"]["/api/v1/calllog"]["get"]["parameters"]}
    assert set(params["status"]["enum"]) == {"", "pending", "delivered", "parked", "dropped", "skipped"}
    assert fields(api.get("/api/v1/calllog?status=great")) == {
        "status": "must be one of pending, delivered, parked, dropped or skipped"
    }
    assert api.get("/api/v1/calllog?status=").status_code == 200  # empty: any


@SQLITE_ONLY
@pytest.mark.parametrize("body", [b'{"name": "\xff\xfe"}', b"\xc3\x28", b"[" * 100_000], ids=["latin", "bad", "deep"])
def test_unreadable_json_bodies_are_422_for_the_body(api, body):
    response = api.post("/api/v1/tokens", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["field"] == "" and problem["message"].startswith("the request body ")


@SQLITE_ONLY
def test_405_lists_every_method_of_the_path(api):
    assert api.options("/api/v1/rules").headers["Allow"] == "GET, POST"
    assert api.patch("/api/v1/rules/1", json={}).headers["Allow"] == "GET, PUT, DELETE"
    assert api.put("/api/v1/users/1").headers["Allow"] == "DELETE"
    assert api.options("/api/v1/users/1/password").status_code == 405


@SQLITE_ONLY
def test_metrics_is_documented_as_text(web):
    op = openapi(web)["paths"]["/metrics"]["get"]
    assert set(op["responses"]["200"]["content"]) == {"text/plain"}
    assert web.client().get("/metrics").headers["content-type"].startswith("text/plain")


@pytest.fixture
def outage(web, data_dir, db_url):
    """The SQLite database's directory goes away (as in tests/resilience/test_database_outage.py)."""
    away = data_dir.with_name("data-away")

    def begin() -> None:
        web.store.engine.dispose()  # pooled connections would keep the moved file open
        data_dir.rename(away)

    yield begin
    if away.exists():
        away.rename(data_dir)


@SQLITE_ONLY
def test_database_outage_is_503_json_for_the_api_and_a_page_for_the_ui(web, outage):
    api, browser = web.api(), web.browser()
    outage()
    for response in (api.get("/api/v1/rules"), api.post("/api/v1/destinations", json={"type": "queue", "number": "1"}),
                     browser.get("/api/v1/dids")):  # fmt: skip
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": "the database is unavailable; try again shortly"}
    page = browser.get("/rules")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "The database cannot be reached" in page.text
    assert web.client().get("/healthz").status_code == 503  # as before


@SQLITE_ONLY
def test_the_503_is_documented(web):
    assert "503" in openapi(web)["paths"]["/api/v1/rules"]["get"]["responses"]
