"""The OpenAPI document lists every route of SPEC 10, tagged."""

from __future__ import annotations

from tests.web.api.conftest import SQLITE_ONLY

EXPECTED = {
    "/api/v1/rules": {"get", "post"}, "/api/v1/rules/{rule_id}": {"get", "put", "delete"},
    "/api/v1/destinations": {"get", "post"}, "/api/v1/destinations/{dest_id}": {"get", "put", "delete"},
    "/api/v1/dids": {"get", "post"}, "/api/v1/dids/{did_id}": {"get", "put", "delete"},
    "/api/v1/ivrs": {"get", "post"}, "/api/v1/ivrs/{ivr_id}": {"get", "put", "delete"},
    "/api/v1/integrations": {"get", "post"}, "/api/v1/integrations/{integration_id}": {"get", "put", "delete"},
    "/api/v1/integrations/{integration_id}/test": {"post"},
    "/api/v1/decisions": {"get"}, "/api/v1/decisions/{decision_id}": {"get"}, "/api/v1/route": {"post"},
    "/api/v1/import": {"post"}, "/api/v1/export": {"get"}, "/api/v1/license": {"get", "post"},
    "/api/v1/users": {"get", "post"}, "/api/v1/users/{user_id}": {"delete"},
    "/api/v1/users/{user_id}/password": {"post"}, "/api/v1/tokens": {"get", "post"},
    "/api/v1/tokens/{token_id}": {"delete"},
    "/api/v1/calllog": {"get"}, "/api/v1/calllog/{delivery_id}": {"get", "delete"},
    "/api/v1/calllog/{delivery_id}/retry": {"post"},
    "/api/v1/agents": {"get", "post"}, "/api/v1/agents/{agent_id}": {"get", "put", "delete"},
    "/api/v1/agents/resolve": {"get"}, "/api/v1/agents/sync": {"post"},
    "/api/v1/schedules": {"get", "post"}, "/api/v1/schedules/{schedule_id}": {"get", "put", "delete"},
}  # fmt: skip


@SQLITE_ONLY
def test_openapi_lists_the_api(web):
    assert web.client().get("/api/v1/openapi.json").status_code == 401  # the document is behind auth too
    document = web.api().get("/api/v1/openapi.json").json()
    paths = {p: {m for m in ops if m in ("get", "post", "put", "delete")} for p, ops in document["paths"].items()
             if p.startswith("/api/v1/")}  # fmt: skip
    assert paths == EXPECTED
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/v1/"):
                assert op.get("tags"), (method, path)
    schemas = document["components"]["schemas"]
    assert {"RuleIn", "RulePublic", "RulesFile", "RouteIn", "RouteResult", "LicensePublic", "TokenCreated"} <= set(schemas)
    assert document["paths"]["/api/v1/rules"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RulePublic"
    }
    assert "application/yaml" in document["paths"]["/api/v1/import"]["post"]["requestBody"]["content"]


@SQLITE_ONLY
def test_the_document_says_what_is_required(web):
    """Bodies the document calls valid are ones the API accepts (schemathesis found these refused)."""
    import jsonschema_rs

    document = web.api().get("/api/v1/openapi.json").json()

    def valid(name: str, body: object) -> bool:
        schema = {**document["components"]["schemas"][name], "components": document["components"]}  # for its $refs
        return jsonschema_rs.validator_for(schema).is_valid(body)

    assert not valid("DestinationIn", {"type": "ivr"})  # the number is required for every type but recording
    assert valid("DestinationIn", {"type": "ivr", "number": "5"}) and not valid("DestinationIn", {"type": "recording"})
    assert not valid("UserIn", {"username": "ann", "password": "0"})  # at least 8 characters
    assert not valid("RuleIn", {"name": "A", "crm_field": "S", "location": "did", "crm_source": "custom",
                                "default_destination": "100"})  # custom_url  # fmt: skip
    assert not valid("RouteIn", {}) and not valid("RouteIn", {"did": "1", "ivr": "2"}) and valid("RouteIn", {"ivr": "2"})
    assert document["components"]["schemas"]["IntegrationIn"]["properties"]["kind"]["enum"][0] == "bullhorn"


@SQLITE_ONLY
def test_non_text_numbers_and_flags_are_refused(seeded):
    from tests.web.api.conftest import fields

    assert fields(seeded.post("/api/v1/ivrs", json={"number": None, "rule": "VIP"})).keys() >= {"number"}  # not "None"
    assert fields(seeded.post("/api/v1/destinations", json={"type": "extension", "number": "7", "voicemail": 0})) == {
        "voicemail": "must be true or false"
    }
    assert seeded.post("/api/v1/destinations", json={"type": "queue", "number": 107}).status_code == 201  # YAML-style
