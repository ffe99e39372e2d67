"""Pipedrive against a strict fake of its v1/v2 API: API token and OAuth, person search, activities."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crmroute.connectors._http import make_client
from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import CallActivity, Record, setting_specs
from crmroute.connectors.pipedrive import PipedriveConnector, PipedriveSettings
from crmroute.errors import AuthError, ConnectorError, ConnectorUnavailable, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from crmroute.settings import Settings
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

API_TOKEN = "9a4c1e0d2b7f4a6e8c3d5b1a0f9e8d7c6b5a4f3e"
CLIENT_ID = "b1c0e7d6a5f4e3d2"
CLIENT_SECRET = "pd-s3cret-client-value"
REFRESH_TOKEN = "10001:20002:r3fresh0000"
STATUS = "d4de1c1518b4531717c676029a45911c340390a6"  # custom field "Status" (varchar)
ACCOUNT_NO = "5e2b7a9c1d3f4e6a8b0c2d4e6f8a0b1c3d5e7f9a"  # custom field "Account number" (varchar)
LEVEL = "8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"  # custom field "Level" (enum)
LEVEL_OPTIONS = {31: "Gold", 32: "Silver"}
ORG_PHONE = "0c5a7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c"  # custom field "Phone" (phone), on organizations
CUSTOM_FIELDS = {STATUS: ("Status", "varchar"), ACCOUNT_NO: ("Account number", "varchar"), LEVEL: ("Level", "enum"),
                 ORG_PHONE: ("Phone", "phone")}  # fmt: skip
SEARCHABLE_TYPES = {"address", "varchar", "text", "varchar_auto", "double", "monetary", "phone"}  # the search docs
STANDARD_FIELDS = {
    "persons": {"name": "Name", "first_name": "First name", "last_name": "Last name", "phone": "Phone",
                "email": "Email", "org_id": "Organization", "owner_id": "Owner", "add_time": "Person created",
                "update_time": "Update time", "label_ids": "Labels", "visible_to": "Visible to"},
    "organizations": {"name": "Name", "owner_id": "Owner", "address": "Address", "add_time": "Organization created",
                      "update_time": "Update time", "label_ids": "Labels", "visible_to": "Visible to"},
    "deals": {"title": "Title", "person_id": "Contact person", "org_id": "Organization", "owner_id": "Owner",
              "add_time": "Deal created", "update_time": "Update time", "value": "Value"},
}  # fmt: skip
ACTIVITY_TYPES = {"call", "meeting", "task", "deadline", "email", "lunch"}
ACTIVITY_KEYS = {"subject", "type", "owner_id", "deal_id", "lead_id", "person_id", "org_id", "project_id", "due_date",
                 "due_time", "duration", "busy", "done", "location", "participants", "attendees",
                 "public_description", "priority", "note"}  # fmt: skip
ACTIVITY_LIST_PARAMS = {"filter_id", "ids", "owner_id", "deal_id", "lead_id", "person_id", "org_id", "updated_since",
                        "updated_until", "sort_by", "sort_direction", "include_fields", "limit", "cursor"}  # fmt: skip
LIST_PARAMS = {"filter_id", "ids", "owner_id", "org_id", "deal_id", "updated_since", "updated_until", "sort_by",
               "sort_direction", "include_fields", "custom_fields", "include_option_labels", "include_labels", "limit",
               "cursor"}  # fmt: skip
GET_PARAMS = {"include_fields", "custom_fields", "include_option_labels", "include_labels"}
SEARCH_PARAMS = {"term", "fields", "exact_match", "organization_id", "person_id", "include_fields", "limit", "cursor"}
SEARCHABLE = {"persons": {"name", "email", "phone", "notes", "custom_fields"},
              "organizations": {"name", "address", "notes", "custom_fields"},
              "leads": {"title", "notes", "custom_fields"}}  # fmt: skip
USERS = {9: {"id": 9, "name": "Ann Owner", "email": "ann@example.com", "active_flag": True}}
LEAD_IDS = ("adf21080-0e10-11eb-879b-05d71fb426ec", "b2f21080-0e10-11eb-879b-05d71fb426ec",
            "c3f21080-0e10-11eb-879b-05d71fb426ec")  # fmt: skip


# --- the fake ---------------------------------------------------------------------------------


def fail(status: int, error: str, code: str = "", info: str = "Please check developers.pipedrive.com") -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": error, "error_info": info, "data": None, "additional_data": None}
    if code:
        body["code"] = code
    if status == 401:
        body["errorCode"] = 401
    return JSONResponse(body, status_code=status)


def invalid(message: str) -> JSONResponse:
    return fail(400, f"Validation failed: {message}", "ERR_SCHEMA_VALIDATION_FAILED", info="")


def ok(data: Any, additional: Any = None) -> JSONResponse:
    return JSONResponse({"success": True, "data": data, "additional_data": additional})


def is_custom(name: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", name))


class Store:
    """Persons, organizations and leads in Pipedrive's shapes, rendered from ``fake.records``."""

    def __init__(self, fake: VendorFake) -> None:
        self.persons: dict[int, dict[str, Any]] = {}
        self.orgs: dict[int, dict[str, Any]] = {}
        self.leads: dict[str, dict[str, Any]] = {}
        self.custom: dict[tuple[str, Any], dict[str, Any]] = {}
        for index, rec in enumerate(fake.records):
            custom = {k: v for k, v in rec.fields.items() if is_custom(k)}
            standard = {k: v for k, v in rec.fields.items() if not is_custom(k)}
            if rec.module == "accounts":  # the organization's number lives in its phone custom field
                self.orgs[int(rec.id)] = self._org(int(rec.id), rec.name, rec.modified,
                                                   {ORG_PHONE: rec.phone or None} | custom)  # fmt: skip
                continue
            person_id = int(rec.id) if rec.module == "contacts" else 9000 + index
            org = standard.get("org_id")
            if isinstance(org, dict):  # a lookup: the person's organization
                org_id = 500 + index
                self.orgs[org_id] = self._org(org_id, org.get("name", "Org"), rec.modified,
                                              {k: v for k, v in org.items() if is_custom(k)})  # fmt: skip
                org = org_id
            phones = [p for p in [rec.phone, standard.get("mobile")] if p]
            person = {"id": person_id, "name": rec.name, "first_name": rec.name.split()[0],
                      "last_name": rec.name.split()[-1], "owner_id": standard.get("owner_id", 9),
                      "org_id": int(org) if org is not None else None, "add_time": "2024-01-01T00:00:00Z",
                      "update_time": rec.modified, "emails": [], "is_deleted": False, "visible_to": 3,
                      "label_ids": [], "picture_id": None,
                      "phones": [{"label": "mobile" if p == standard.get("mobile") else "work", "value": p,
                                  "primary": i == 0} for i, p in enumerate(phones)]}  # fmt: skip
            if rec.module == "leads":
                self.persons[person_id] = person | {"custom_fields": self._custom({})}
                self.leads[rec.id] = {"id": rec.id, "title": f"{rec.name} lead", "owner_id": 9, "creator_id": 9,
                                      "label_ids": [], "person_id": person_id, "organization_id": person["org_id"],
                                      "source_name": "API", "origin": "API", "is_archived": False, "was_seen": False,
                                      "value": None, "expected_close_date": None, "next_activity_id": None,
                                      "add_time": "2024-01-01T00:00:00.000Z", "update_time": rec.modified,
                                      "visible_to": "3", "cc_email": "acme+lead@pipedrivemail.com"}  # fmt: skip
                self.leads[rec.id].update({k: v for k, v in custom.items() if v is not None})  # unset: absent (v1)
            else:
                self.persons[person_id] = person | {"custom_fields": self._custom(custom)}
        for created in fake.state.get("created_persons", []):
            self.persons[created["id"]] = created

    @staticmethod
    def _custom(values: dict[str, Any]) -> dict[str, Any]:
        return {key: values.get(key) for key in CUSTOM_FIELDS}

    def _org(self, org_id: int, name: str, modified: str, custom: dict[str, Any]) -> dict[str, Any]:
        return {"id": org_id, "name": name, "owner_id": 9, "add_time": "2024-01-01T00:00:00Z", "update_time": modified,
                "visible_to": 3, "label_ids": [], "address": None, "is_deleted": False,
                "custom_fields": self._custom(custom)}  # fmt: skip

    def table(self, obj: str) -> dict[Any, dict[str, Any]]:
        return {"persons": self.persons, "organizations": self.orgs, "leads": self.leads}[obj]


def render(row: dict[str, Any], labels: bool) -> dict[str, Any]:
    """A v2 record as the API sends it: enum custom fields as option ids, or {id, label} with labels."""
    out = json.loads(json.dumps(row))
    custom = out.get("custom_fields") or {}
    for key, value in custom.items():
        if CUSTOM_FIELDS.get(key, ("", ""))[1] == "enum" and value is not None:
            option = next(i for i, label in LEVEL_OPTIONS.items() if label == value)
            custom[key] = {"id": option, "label": value} if labels else option
    return out


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/", "/v1/users/me")
    ids = itertools.count(7001)

    def authorized(request: Request) -> bool:
        if request.query_params.get("api_token"):
            fake.state["query_tokens"] = fake.state.get("query_tokens", 0) + 1
        api_token = request.headers.get("x-api-token", "")
        if api_token:
            return api_token in fake.state.get("api_tokens", set())
        return fake.authorized(request)

    def guard(request: Request, allowed: set[str]) -> JSONResponse | None:
        if not authorized(request):
            fake.state["unauthorized"] = fake.state.get("unauthorized", 0) + 1
            return fail(401, "unauthorized access")
        unknown = set(request.query_params) - allowed
        if unknown:
            return invalid(f"unknown query parameter '{sorted(unknown)[0]}'")
        return None

    def limit_of(request: Request, maximum: int, default: int = 100) -> int | JSONResponse:
        raw = request.query_params.get("limit", str(default))
        if not raw.isdigit() or not 1 <= int(raw) <= maximum:
            return invalid(f"limit: must be <= {maximum}")
        return int(raw)

    async def token(request: Request) -> JSONResponse:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"success": False, "message": "Invalid client credentials", "error": "invalid_client"},
                                status_code=401)  # fmt: skip
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return JSONResponse({"success": False, "message": "form body expected"}, status_code=400)
        form = dict(parse_qsl((await request.body()).decode()))
        fake.state.setdefault("token_forms", []).append(form)
        valid = fake.state.setdefault("refresh_tokens", {REFRESH_TOKEN})
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"success": False, "message": "Unsupported grant type",
                                 "error": "unsupported_grant_type"}, status_code=400)  # fmt: skip
        if fake.reject_credentials or form.get("refresh_token") not in valid:
            return JSONResponse({"success": False, "message": "Invalid grant: refresh token is invalid",
                                 "error": "invalid_grant"}, status_code=400)  # fmt: skip
        rotated = f"10001:20002:r{len(valid)}"
        valid.add(rotated)
        return JSONResponse({"access_token": fake.issue_token("v1u"), "token_type": "Bearer", "refresh_token": rotated,
                             "scope": "base,contacts:full,leads:read,activities:full,search:read",
                             "expires_in": fake.state.get("expires_in", 3599),
                             "api_domain": fake.state.get("api_domain", fake.base_url)})  # fmt: skip

    async def me(request: Request) -> JSONResponse:
        if fake.reject_credentials or not authorized(request):
            return fail(401, "unauthorized access")
        fake.state["me_checks"] = fake.state.get("me_checks", 0) + 1
        return ok({"id": 9, "name": "Ann Owner", "company_id": 7, "company_domain": "acme", "lang": 1})

    async def search(request: Request) -> JSONResponse:
        obj = request.path_params["object"]
        if obj not in SEARCHABLE:
            return fail(404, "Unknown method .")
        if (denied := guard(request, SEARCH_PARAMS)) is not None:
            return denied
        term = request.query_params.get("term", "")
        exact = request.query_params.get("exact_match") == "true"
        if len(term) < (1 if exact else 2):
            return invalid("term: must be at least 2 characters")
        fields = set(request.query_params.get("fields", ",".join(SEARCHABLE[obj])).split(","))
        if not fields <= SEARCHABLE[obj]:
            return invalid(f"fields: {sorted(fields - SEARCHABLE[obj])[0]} is not allowed")
        limit = limit_of(request, 100 if obj == "persons" else 500)
        if isinstance(limit, JSONResponse):
            return limit
        store = Store(fake)

        def hit(text: Any) -> bool:
            if text is None:
                return False
            text = str(text)
            return text.casefold() == term.casefold() if exact else term.casefold() in text.casefold()

        def phone_hit(phone: str) -> bool:  # assumed: phone search ignores the stored number's punctuation
            if exact:
                return digits_of(phone) == digits_of(term)
            return term in phone or (term.isdigit() and term in digits_of(phone))

        items = []
        for row in store.table(obj).values():
            texts: list[Any] = []
            if "name" in fields or "title" in fields:
                texts.append(row.get("name", row.get("title")))
            if "email" in fields:
                texts += [e["value"] for e in row.get("emails", [])]
            custom = row.get("custom_fields", row) if obj != "leads" else {k: v for k, v in row.items() if is_custom(k)}
            matched_custom = [v for k, v in custom.items() if "custom_fields" in fields and is_custom(k)
                              and CUSTOM_FIELDS[k][1] in SEARCHABLE_TYPES and v is not None
                              and (phone_hit(v) if CUSTOM_FIELDS[k][1] == "phone" else hit(v))]  # fmt: skip
            phones = [p["value"] for p in row.get("phones", [])]
            phone_matched = "phone" in fields and any(phone_hit(p) for p in phones)
            if any(hit(t) for t in texts) or matched_custom or phone_matched:
                if obj == "persons":
                    org = store.orgs.get(row["org_id"]) if row.get("org_id") else None
                    item = {"id": row["id"], "type": "person", "name": row["name"], "phones": phones, "emails": [],
                            "visible_to": 3, "owner": {"id": row["owner_id"]}, "custom_fields": matched_custom,
                            "notes": [], "organization": {"id": org["id"], "name": org["name"], "address": None}
                            if org else None}  # fmt: skip
                elif obj == "organizations":
                    item = {"id": row["id"], "type": "organization", "name": row["name"], "address": None,
                            "visible_to": 3, "owner": {"id": 9}, "custom_fields": matched_custom, "notes": []}  # fmt: skip
                else:
                    item = {"id": row["id"], "type": "lead", "title": row["title"], "owner": {"id": 9},
                            "person": {"id": row["person_id"]}, "organization": None, "phone": None, "email": None,
                            "custom_fields": matched_custom, "notes": [], "value": None, "currency": "USD",
                            "visible_to": 3, "is_archived": False}  # fmt: skip
                items.append({"result_score": 0.9, "item": item})
        page = items[:limit]
        fake.state.setdefault("searched", []).append((obj, dict(request.query_params)))
        return ok({"items": page}, {"next_cursor": "eyJmaWVsZCI6ImlkIn0" if len(items) > limit else None})

    async def listing(request: Request) -> JSONResponse:
        obj = request.path_params["object"]
        if obj not in ("persons", "organizations"):
            return fail(404, "Unknown method .")
        if (denied := guard(request, LIST_PARAMS)) is not None:
            return denied
        limit = limit_of(request, 500)
        if isinstance(limit, JSONResponse):
            return limit
        params = request.query_params
        if params.get("sort_by", "id") not in ("id", "update_time", "add_time") or \
                params.get("sort_direction", "asc") not in ("asc", "desc"):  # fmt: skip
            return invalid("sort_by/sort_direction")
        rows = list(Store(fake).table(obj).values())
        if "ids" in params:
            wanted = [int(i) for i in params["ids"].split(",") if i.isdigit()]
            if len(wanted) > 100:
                return invalid("ids: up to 100 ids")
            rows = [r for r in rows if r["id"] in wanted]
        descending = params.get("sort_direction") == "desc"
        rows.sort(key=lambda r: str(r.get(params.get("sort_by", "id")) or ""), reverse=descending)
        labels = params.get("include_option_labels") == "true"
        return ok([render(r, labels) for r in rows[:limit]], {"next_cursor": None})

    async def one(request: Request) -> JSONResponse:
        obj, raw = request.path_params["object"], request.path_params["id"]
        if obj not in ("persons", "organizations"):
            return fail(404, "Unknown method .")
        if (denied := guard(request, GET_PARAMS)) is not None:
            return denied
        if not raw.isdigit():
            return invalid("id: must be integer")
        row = Store(fake).table(obj).get(int(raw))
        if row is None:
            return fail(404, f"{obj[:-1].title()} not found", "ERR_NOT_FOUND", info="")
        return ok(render(row, request.query_params.get("include_option_labels") == "true"))

    async def leads(request: Request) -> JSONResponse:
        if (denied := guard(request, {"limit", "start", "owner_id", "person_id", "organization_id", "filter_id",
                                      "updated_since", "sort", "archived_status"})) is not None:  # fmt: skip
            return denied
        rows = list(Store(fake).leads.values())
        if "person_id" in request.query_params:
            rows = [r for r in rows if str(r["person_id"]) == request.query_params["person_id"]]
        rows.sort(key=lambda r: r["add_time"])  # "sorted by the time they were created, from oldest to newest"
        return ok(rows, {"pagination": {"start": 0, "limit": 100, "more_items_in_collection": False}})

    async def lead(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        lead_id = request.path_params["id"]
        if not re.fullmatch(r"[0-9a-f-]{36}", lead_id):
            return invalid("id: must be a uuid")
        row = Store(fake).leads.get(lead_id)
        return ok(row) if row else fail(404, "Lead not found", "ERR_NOT_FOUND", info="")

    async def catalogue(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        kind = {"personFields": "persons", "organizationFields": "organizations", "dealFields": "deals"}.get(name)
        if kind is None:
            return fail(404, "Unknown method .")
        if (denied := guard(request, {"start", "limit"})) is not None:
            return denied
        fake.state["catalogue_reads"] = fake.state.get("catalogue_reads", 0) + 1
        items = [{"id": i, "key": k, "name": n, "field_type": "varchar", "edit_flag": False}
                 for i, (k, n) in enumerate(STANDARD_FIELDS[kind].items(), 1)]  # fmt: skip
        for i, (key, (label, field_type)) in enumerate(CUSTOM_FIELDS.items(), 100):
            item: dict[str, Any] = {"id": i, "key": key, "name": label, "field_type": field_type, "edit_flag": True}
            if field_type == "enum":
                item["options"] = [{"id": k, "label": v} for k, v in LEVEL_OPTIONS.items()]
            items.append(item)
        start, limit = int(request.query_params.get("start", 0)), int(request.query_params.get("limit", 100))
        more = start + limit < len(items)
        return ok(items[start:start + limit], {"pagination": {"start": start, "limit": limit,
                                               "more_items_in_collection": more, "next_start": start + limit}})  # fmt: skip

    async def users(request: Request) -> JSONResponse:
        """``GET /v1/users``: every user of the company, one answer (no paging parameters)."""
        if (denied := guard(request, set())) is not None:
            return denied
        return ok(list(fake.state.get("users", USERS).values()))

    async def user(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        found = USERS.get(int(request.path_params["id"])) if request.path_params["id"].isdigit() else None
        return ok(found) if found else fail(404, "User not found", info="")

    async def activities(request: Request) -> JSONResponse:
        if request.method == "GET":
            if (denied := guard(request, ACTIVITY_LIST_PARAMS)) is not None:
                return denied
            limit = limit_of(request, 500)
            if isinstance(limit, JSONResponse):
                return limit
            rows = list(fake.activities)
            params = request.query_params
            if "person_id" in params:  # "whose primary participant is the given person"
                rows = [r for r in rows if any(str(p["person_id"]) == params["person_id"] and p.get("primary")
                                               for p in r.get("participants") or [])]  # fmt: skip
            for key in ("org_id", "lead_id", "deal_id"):
                if key in params:
                    rows = [r for r in rows if str(r.get(key)) == params[key]]
            if "updated_since" in params:
                rows = [r for r in rows if r["update_time"] >= params["updated_since"]]
            descending = params.get("sort_direction") == "desc"
            rows.sort(key=lambda r: (r[params.get("sort_by", "id")], r["id"]), reverse=descending)
            fake.state.setdefault("activity_lookups", []).append(dict(params))
            return ok(rows[:limit], {"next_cursor": None})
        if (denied := guard(request, set())) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return invalid("body is not JSON")
        problems = sorted(set(body) - ACTIVITY_KEYS)
        if problems:
            return invalid(f"unknown field '{problems[0]}'")
        if body.get("type") not in ACTIVITY_TYPES:
            return invalid(f"type: unknown activity type {body.get('type')!r}")
        checks = {"due_date": r"\d{4}-\d{2}-\d{2}", "due_time": r"\d{2}:\d{2}", "duration": r"\d{2}:\d{2}"}
        for key, pattern in checks.items():
            if key in body and not re.fullmatch(pattern, str(body[key])):
                return invalid(f"{key}: bad format")
        if not isinstance(body.get("done", False), bool):
            return invalid("done: must be boolean")
        store = Store(fake)
        for participant in body.get("participants") or []:
            if set(participant) - {"person_id", "primary"} or participant.get("person_id") not in store.persons:
                return invalid("participants: unknown person")
        if "org_id" in body and body["org_id"] not in store.orgs:
            return invalid("org_id: organization not found")
        if "lead_id" in body and body["lead_id"] not in store.leads:
            return invalid("lead_id: lead not found")
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        stored = {"id": next(ids), "owner_id": 9, "add_time": stamp, "update_time": stamp} | body
        fake.activities.append(stored)
        return ok(stored)

    async def create_person(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        body = json.loads(await request.body())
        unknown = set(body) - {"name", "owner_id", "org_id", "add_time", "update_time", "emails", "phones",
                               "visible_to", "label_ids", "marketing_status", "custom_fields"}  # fmt: skip
        if unknown or not body.get("name"):
            return invalid("name is required; unknown fields refused")
        for phone in body.get("phones") or []:
            if not isinstance(phone, dict) or set(phone) - {"value", "primary", "label"}:
                return invalid("phones: objects with value, primary, label")
        person = {"id": next(ids), "name": body["name"], "first_name": body["name"], "last_name": None, "owner_id": 9,
                  "org_id": None, "add_time": "2026-11-26T09:31:00Z", "update_time": "2026-11-26T09:31:00Z",
                  "emails": [], "phones": body.get("phones", []), "is_deleted": False, "visible_to": 3,
                  "label_ids": [], "picture_id": None, "custom_fields": {k: None for k in CUSTOM_FIELDS}}  # fmt: skip
        fake.state.setdefault("created_persons", []).append(person)
        fake.created.append(person)
        return ok(person)

    return Starlette(routes=[
        Route("/oauth/token", token, methods=["POST"]),
        Route("/v1/users", users, methods=["GET"]),
        Route("/v1/users/me", me, methods=["GET"]),
        Route("/v1/users/{id}", user, methods=["GET"]),
        Route("/v1/leads", leads, methods=["GET"]),
        Route("/v1/leads/{id}", lead, methods=["GET"]),
        Route("/v1/{name}", catalogue, methods=["GET"]),
        Route("/api/v2/activities", activities, methods=["GET", "POST"]),
        Route("/api/v2/persons", create_person, methods=["POST"]),
        Route("/api/v2/{object}/search", search, methods=["GET"]),
        Route("/api/v2/{object}", listing, methods=["GET"]),
        Route("/api/v2/{object}/{id}", one, methods=["GET"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)



# --- the contract -----------------------------------------------------------------------------------


class TestPipedrive(ConnectorContract):
    OWNER_FIELDS = {"owner_id": 10}
    OWNER_ID = "10"
    kind = "pipedrive"
    MODULE = "contacts"
    FIELD = STATUS  # a custom person field's 40-character key
    NESTED_FIELD = "org_id.name"  # the person's organization, one request more
    NESTED_FIELDS = {"org_id": {"name": "Acme Corp"}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("101", "102", "103")
    KEY_FIELD = ACCOUNT_NO
    MOBILE_FIELDS = {"contacts": "mobile", "leads": "mobile"}  # a person's second phone, labelled mobile

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"api_url": fake.base_url, "oauth_url": fake.base_url, "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN, "org_phone_field": ORG_PHONE}  # fmt: skip


# --- Pipedrive's own behaviour -----------------------------------------------------------------------

D = ConnectorContract.deadline
KEY = LookupKey(CALLER, "caller_id")


def person(index: int = 0, **changes: Any) -> FakeRecord:
    return TestPipedrive().record(index, **changes)


@pytest.fixture
async def client(fake):
    http = make_client(Settings(ca_bundle=fake.ca_path))
    yield http
    await http.aclose()


def oauth(fake: VendorFake, client, **overrides: Any) -> PipedriveConnector:
    values = TestPipedrive().settings(fake) | overrides
    return PipedriveConnector(PipedriveSettings.model_validate(values), client, region="US")


def with_token(fake: VendorFake, client, *, password: str = "", **overrides: Any) -> PipedriveConnector:
    fake.state.setdefault("api_tokens", set()).add(API_TOKEN)
    values = {"api_url": fake.base_url, "api_token": API_TOKEN} | overrides
    return PipedriveConnector(PipedriveSettings.model_validate(values), client, region="US", password=password)


def paths(fake: VendorFake) -> list[str]:
    return [r.path for r in fake.api_requests()]


# settings


def test_settings_need_a_token_or_the_oauth_triple():
    with pytest.raises(ValueError, match="missing: client_secret, refresh_token"):
        PipedriveSettings.model_validate({"client_id": CLIENT_ID})
    with pytest.raises(ValueError, match="https"):
        PipedriveSettings.model_validate({"api_token": API_TOKEN, "api_url": "http://acme.pipedrive.com"})
    specs = {s.name: s for s in setting_specs(PipedriveSettings)}
    assert {n for n, s in specs.items() if s.secret} == {"api_token", "client_secret", "refresh_token"}
    assert specs["activity_type"].default == "call" and specs["oauth_url"].type == "url"


# auth: API token


async def test_api_token_goes_in_a_header_never_the_url(fake, client):
    connector = with_token(fake, client)
    fake.records = [person()]
    for _ in range(2):
        assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"
    assert fake.state["me_checks"] == 1 and fake.token_requests == 0
    assert all(r.headers.get("x-api-token") == API_TOKEN and "authorization" not in r.headers for r in fake.requests)
    assert not any(API_TOKEN in r.query for r in fake.requests) and not fake.state.get("query_tokens")


async def test_a_rules_password_is_that_users_api_token(fake, client):
    other = "0f0e0d0c0b0a09080706050403020100ffeeddcc"
    fake.state["api_tokens"] = {other}
    connector = PipedriveConnector(PipedriveSettings.model_validate({"api_url": fake.base_url, "api_token": API_TOKEN}),
                                   client, region="US", username="bob", password=other)  # fmt: skip
    fake.records = [person()]
    assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"
    assert {r.headers.get("x-api-token") for r in fake.requests} == {other}


async def test_a_revoked_api_token_is_an_auth_error(fake, client):
    connector = with_token(fake, client)
    fake.reject_credentials = True
    with pytest.raises(AuthError, match="API token rejected: unauthorized access") as caught:
        await connector.authenticate(deadline=D())
    assert API_TOKEN not in str(caught.value)


# auth: OAuth


async def test_refresh_uses_basic_auth_and_a_form_body(fake, client):
    await oauth(fake, client).authenticate(deadline=D())
    request = next(r for r in fake.requests if r.path == "/oauth/token")
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert request.method == "POST" and request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.body.decode())) == {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN}


async def test_token_is_refreshed_before_expiry_with_the_rotated_refresh_token(fake, client):
    fake.state["expires_in"] = 2  # expires_in is honoured: a 2 s token is stale after 1 s (half its life)
    connector = oauth(fake, client)
    fake.records = [person()]
    await connector.fetch(KEY, "contacts", STATUS, deadline=D())
    await asyncio.sleep(1.1)
    await connector.fetch(KEY, "contacts", STATUS, deadline=D())
    forms = fake.state["token_forms"]
    assert len(forms) == 2 and fake.state.get("unauthorized", 0) == 0
    assert forms[0]["refresh_token"] == REFRESH_TOKEN and forms[1]["refresh_token"] == "10001:20002:r1"
    assert all(r.headers["authorization"].startswith("Bearer ") for r in fake.api_requests())


async def test_the_tokens_api_domain_is_the_base_url_by_default(fake, client):
    fake.state["api_domain"] = fake.base_url
    connector = oauth(fake, client, api_url="https://api.pipedrive.com")
    fake.records = [person()]
    assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"  # went to the fake, not the default


async def test_a_revoked_refresh_token_says_so(fake, client):
    fake.reject_credentials = True
    with pytest.raises(AuthError, match="token rejected: refresh token revoked or expired"):
        await oauth(fake, client).authenticate(deadline=D())


async def test_wrong_client_credentials_say_so(fake, client):
    with pytest.raises(AuthError, match="client id or secret wrong"):
        await oauth(fake, client, client_secret="wrong").authenticate(deadline=D())


# finding persons


async def test_phone_search_then_one_read_of_the_matches(fake, client):
    fake.records = [person()]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"
    search, read = fake.api_requests()
    assert search.path == "/api/v2/persons/search"
    assert search.params == {"term": "4155552671", "fields": "phone", "limit": "50"}
    assert read.path == "/api/v2/persons"
    assert read.params == {"ids": "101", "limit": "10", "include_option_labels": "true", "sort_by": "update_time",
                           "sort_direction": "desc"}  # fmt: skip


@pytest.mark.parametrize("stored", ["+14155552671", "(415) 555-2671", "415-555-2671", "+1 415 555 2671 ext. 9"])
async def test_stored_formats_are_found(fake, client, stored):
    fake.records = [person(phone=stored)]
    assert await oauth(fake, client).fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"


async def test_a_longer_number_containing_the_digits_is_not_the_caller(fake, client):
    fake.records = [person(phone="+1 415 555 26710"), person(1, phone="+44 4155 552671")]
    assert await oauth(fake, client).find_record(KEY, "contacts", deadline=D()) is None
    assert paths(fake) == ["/api/v2/persons/search"]  # nothing verified, nothing read


async def test_a_second_phone_is_searched_too(fake, client):
    fake.records = [person(phone="+1 212 555 0100", fields={STATUS: "GOLD", "mobile": "415.555.2671"})]
    assert await oauth(fake, client).fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"


async def test_several_matches_are_sorted_by_the_api_and_counted(fake, client):
    fake.records = [person(0, id=str(200 + i), modified=f"2026-0{i + 1}-01T00:00:00Z") for i in range(5)]
    record = await oauth(fake, client, match_pick="oldest").find_record(KEY, "contacts", deadline=D())
    assert record.id == "200" and record.matches == 5
    assert fake.api_requests()[-1].params["sort_direction"] == "asc"
    first = await oauth(fake, client, match_pick="first").find_record(KEY, "contacts", deadline=D())
    assert first.id == "200" and first.matches == 5
    assert fake.api_requests()[-1].params == {"ids": "200", "limit": "10", "include_option_labels": "true"}


async def test_record_links_to_the_pipedrive_ui(fake, client):
    fake.records = [person()]
    record = await with_token(fake, client).find_record(KEY, "contacts", deadline=D())
    assert record.url == "https://acme.pipedrive.com/person/101"


# fields


async def test_custom_fields_are_merged_and_option_fields_read_as_labels(fake, client):
    fake.records = [person(fields={STATUS: "GOLD", LEVEL: "Silver"})]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "contacts", fields=[LEVEL], deadline=D())
    assert record.fields[STATUS] == "GOLD" and "custom_fields" not in record.fields
    assert await connector.read_field(record, LEVEL, deadline=D()) == "Silver"
    assert await connector.read_field(record, "name", deadline=D()) == "Alice Gold"
    assert "catalogue_reads" not in fake.state  # keys need no field list


async def test_a_display_name_is_resolved_once_through_the_fields_api(fake, client):
    fake.records = [person()]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "contacts", "Status", deadline=D()) == "GOLD"
    assert await connector.fetch(KEY, "contacts", "account number", deadline=D()) == "12345"
    reads = [r for r in fake.api_requests() if r.path == "/v1/personFields"]
    assert reads[0].params == {"start": "0", "limit": "25"}
    assert fake.state["catalogue_reads"] == 1


async def test_an_unknown_field_is_named(fake, client):
    fake.records = [person()]
    connector = oauth(fake, client)
    with pytest.raises(UnexpectedResponse, match="field Status__c does not exist on persons"):
        await connector.fetch(KEY, "contacts", "Status__c", deadline=D())
    with pytest.raises(UnexpectedResponse, match="does not exist on persons"):
        await connector.fetch(KEY, "contacts", "Status__c", deadline=D())
    assert fake.state["catalogue_reads"] == 1  # remembered


async def test_the_owner_lookup(fake, client):
    fake.records = [person()]
    assert await oauth(fake, client).fetch(KEY, "contacts", "owner_id.email", deadline=D()) == "ann@example.com"
    assert paths(fake)[-1] == "/v1/users/9"


async def test_an_organization_custom_field_through_the_person(fake, client):
    fake.records = [person(fields={STATUS: "GOLD", "org_id": {"name": "Acme Corp", STATUS: "PLATINUM"}})]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "contacts", "org_id.Status", deadline=D()) == "PLATINUM"
    assert await connector.fetch(KEY, "contacts", "organization.name", deadline=D()) == "Acme Corp"


# modules


async def test_accounts_are_organizations_found_by_their_phone_field(fake, client):
    fake.records = [FakeRecord(module="accounts", id="300", name="Acme Corp", phone="+1 (415) 555-2671",
                               fields={STATUS: "KEY ACCOUNT"}),
                    FakeRecord(module="accounts", id="301", name="Decoy Ltd", phone="(415) 999-2671",
                               fields={STATUS: "DECOY", ACCOUNT_NO: "A-4155552671-9"}),
                    person(fields={STATUS: "GOLD"})]  # fmt: skip
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "accounts", fields=[STATUS], deadline=D())
    assert record.module == "organizations" and record.id == "300" and record.matches == 1
    assert await connector.read_field(record, STATUS, deadline=D()) == "KEY ACCOUNT"
    search, read = fake.api_requests()
    assert search.path == "/api/v2/organizations/search"
    assert search.params == {"term": "4155552671", "fields": "custom_fields", "limit": "50"}
    assert read.path == "/api/v2/organizations" and read.params["ids"] == "300"  # 301 matched another field only


async def test_the_org_phone_field_by_its_name(fake, client):
    fake.records = [FakeRecord(module="accounts", id="300", name="Acme Corp", phone="415.555.2671")]
    connector = oauth(fake, client, org_phone_field="phone")
    assert (await connector.find_record(KEY, "accounts", deadline=D())).id == "300"
    assert (await connector.find_record(KEY, "accounts", deadline=D())).id == "300"
    assert fake.state["catalogue_reads"] == 1


async def test_accounts_without_org_phone_field_name_the_setting(fake, client):
    fake.records = [FakeRecord(module="accounts", id="300", name="Acme Corp", phone="+14155552671")]
    connector = oauth(fake, client, org_phone_field="")
    await connector.authenticate(deadline=D())
    with pytest.raises(ConnectorError, match="set org_phone_field") as caught:
        await connector.find_record(KEY, "accounts", deadline=D())
    assert caught.value.reason == "misconfigured" and fake.api_requests() == []
    assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) is None  # persons need no setting


def test_org_phone_field_is_explained():
    spec = {s.name: s for s in setting_specs(PipedriveSettings)}["org_phone_field"]
    assert "Copy API key" in spec.help and "Phone" in spec.help and not spec.secret


async def test_requests_per_uncached_call(fake, client):
    fake.records = [person(0, phone="(415) 555-0001", fields={STATUS: "GOLD"})]
    connector = oauth(fake, client)
    for caller in ("+14155550001", "+14155550002"):
        await connector.fetch(LookupKey(caller, "caller_id"), "contacts", STATUS, deadline=D())
    assert paths(fake) == ["/api/v2/persons/search", "/api/v2/persons", "/api/v2/persons/search"]  # found: 2, not: 1


async def test_leads_are_the_callers_persons_leads(fake, client):
    fake.records = [person(0, module="leads", id=LEAD_IDS[0], fields={STATUS: "OLD"}, modified="2025-01-01T00:00:00Z"),
                    person(1, module="leads", id=LEAD_IDS[1], fields={STATUS: "HOT"}, modified="2026-01-01T00:00:00Z")]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "leads", deadline=D())
    assert record.module == "leads" and record.id == LEAD_IDS[1] and record.matches == 2
    assert await connector.read_field(record, STATUS, deadline=D()) == "HOT"
    assert await connector.read_field(record, ACCOUNT_NO, deadline=D()) is None  # unset: absent in v1; known field
    reads = [r for r in fake.api_requests() if r.path == "/v1/leads"]
    assert sorted(r.params["person_id"] for r in reads) == ["9000", "9001"]
    assert await connector.read_field(record, "person_id.name", deadline=D()) == "Alice Gold"


async def test_a_lead_by_its_id(fake, client):
    fake.records = [person(0, module="leads", id=LEAD_IDS[2])]
    connector = oauth(fake, client)
    assert await connector.fetch(LookupKey(LEAD_IDS[2], "dtmf"), "leads", STATUS, deadline=D()) == "GOLD"
    assert await connector.find_record(LookupKey("12345", "dtmf"), "leads", deadline=D()) is None


# typed keys


async def test_typed_key_is_an_exact_custom_field_search(fake, client):
    fake.records = [person(phone="")]
    connector = oauth(fake, client, key_field=ACCOUNT_NO)
    assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", STATUS, deadline=D()) == "GOLD"
    search = fake.api_requests()[0]
    assert search.path == "/api/v2/persons/search"
    assert search.params == {"term": "12345", "fields": "custom_fields", "exact_match": "true", "limit": "50"}


async def test_typed_key_by_display_name_and_by_record_id(fake, client):
    fake.records = [person(phone="")]
    assert await oauth(fake, client, key_field="Account number").fetch(
        LookupKey("12345", "dtmf"), "contacts", STATUS, deadline=D()) == "GOLD"  # fmt: skip
    connector = oauth(fake, client)
    assert await connector.fetch(LookupKey("101", "dtmf"), "contacts", STATUS, deadline=D()) == "GOLD"
    assert fake.api_requests()[-1].path == "/api/v2/persons/101"
    assert await connector.find_record(LookupKey("999", "dtmf"), "contacts", deadline=D()) is None


# errors


async def test_errors_carry_pipedrives_text(fake, client):
    connector = oauth(fake, client)
    await connector.authenticate(deadline=D())
    fake.fail_next(402, {"success": False, "error": "Company account is not open", "error_info": "Please check "
                         "developers.pipedrive.com"})  # fmt: skip
    with pytest.raises(ConnectorUnavailable, match="not active .*Company account is not open"):
        await connector.fetch(KEY, "contacts", STATUS, deadline=D())
    fake.fail_next(403, {"success": False, "error": "You do not have permission to access this resource"})
    with pytest.raises(AuthError, match="permission"):
        await connector.fetch(KEY, "contacts", STATUS, deadline=D())
    fake.fail_next(200, {"success": False, "error": "Search is temporarily disabled"})
    with pytest.raises(UnexpectedResponse, match="refused search persons: Search is temporarily disabled"):
        await connector.fetch(KEY, "contacts", STATUS, deadline=D())


async def test_rate_limit_headers_and_retry_after(fake, client):
    connector = oauth(fake, client)
    fake.records = [person()]
    await connector.authenticate(deadline=D())
    headers = {"Retry-After": "0", "x-ratelimit-limit": "40", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"}
    fake.fail_next(429, {"success": False, "error": "Request over limit"}, headers=headers)
    assert await connector.fetch(KEY, "contacts", STATUS, deadline=D()) == "GOLD"
    fake.fail_next(429, {"success": False, "error": "Request over limit"}, headers=headers | {"Retry-After": "10"})
    with pytest.raises(RateLimited):
        await connector.fetch(KEY, "contacts", STATUS, deadline=D(1))


async def test_a_nearly_spent_daily_budget_is_logged_once(fake, client, caplog):
    connector = oauth(fake, client)
    await connector.authenticate(deadline=D())
    for _ in range(2):
        fake.fail_next(200, {"success": True, "data": {"items": []}, "additional_data": {"next_cursor": None}},
                       headers={"x-daily-requests-left": "42", "x-ratelimit-remaining": "19"})  # fmt: skip
        assert await connector.find_record(KEY, "contacts", deadline=D()) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["pipedrive: 42 requests left in the company's daily budget"]


# call log


def call(record: Record | None = None, **changes: Any) -> CallActivity:
    base = CallActivity(
        call_id="1795657573.7", direction="inbound", outcome="answered", external_number=CALLER,
        started_at=datetime(2026, 11, 26, 9, 30, 5, tzinfo=timezone.utc), ring_seconds=6, talk_seconds=93,
        extension="201", recording="https://pbx.example.com/rec/7.wav", subject="Inbound call",
        description="Answered <by> 201", record=record,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


async def test_the_activity_is_pipedrives_shape(fake, client):
    fake.records = [person(fields={STATUS: "GOLD", "org_id": {"name": "Acme Corp"}})]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    activity_id = await connector.log_call(call(record), LogOptions(inbound_answered=True), deadline=D())
    [stored] = fake.activities
    assert activity_id == str(stored["id"])
    assert {k: v for k, v in stored.items() if k not in ("id", "owner_id", "add_time", "update_time")} == {
        "subject": "Inbound call", "type": "call", "done": True, "due_date": "2026-11-26", "due_time": "09:30",
        "duration": "00:02", "participants": [{"person_id": 101, "primary": True}], "org_id": 500,
        "note": "Answered &lt;by&gt; 201<br>Inbound call, answered<br>Number: +14155552671<br>Extension: 201<br>"
                "Ringing: 6 s, talking: 93 s<br>Recording: <a href=\"https://pbx.example.com/rec/7.wav\">"
                "https://pbx.example.com/rec/7.wav</a><br>Call ID: 1795657573.7",
    }  # fmt: skip
    assert fake.state["activity_lookups"] == [{"person_id": "101", "sort_by": "add_time", "sort_direction": "desc",
                                               "limit": "20"}]  # fmt: skip


async def test_a_similar_call_id_is_not_the_same_call(fake, client):
    fake.records = [person()]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    first = await connector.log_call(call(record, call_id="1795657573.1"), LogOptions(), deadline=D())
    second = await connector.log_call(call(record, call_id="1795657573.12"), LogOptions(), deadline=D())
    again = await connector.log_call(call(record, call_id="1795657573.1"), LogOptions(), deadline=D())
    assert first != second and again == first and len(fake.activities) == 2


async def test_organization_and_lead_links(fake, client):
    fake.records = [FakeRecord(module="accounts", id="300", name="Acme Corp", phone="+14155552671"),
                    person(0, fields={STATUS: "GOLD", "org_id": 300}),
                    person(1, module="leads", id=LEAD_IDS[0], phone="+1 212 555 0100")]  # fmt: skip
    connector = oauth(fake, client)
    org = await connector.find_record(KEY, "accounts", deadline=D())
    await connector.log_call(call(org, call_id="a"), LogOptions(), deadline=D())
    lead = await connector.find_record(LookupKey("+12125550100", "caller_id"), "leads", deadline=D())
    await connector.log_call(call(lead, call_id="b", direction="outbound", outcome="missed", talk_seconds=0),
                             LogOptions(outbound=True), deadline=D())  # fmt: skip
    by_org, by_lead = fake.activities
    assert by_org["org_id"] == 300 and "participants" not in by_org
    assert by_lead["lead_id"] == LEAD_IDS[0] and by_lead["participants"] == [{"person_id": 9002, "primary": True}]
    assert by_lead["duration"] == "00:00" and by_lead["subject"] == "Inbound call"
    assert "Outbound call, missed" in by_lead["note"]
    assert fake.state["activity_lookups"][0]["org_id"] == "300"
    assert fake.state["activity_lookups"][1]["lead_id"] == LEAD_IDS[0]


async def test_an_unknown_caller_is_logged_unlinked_unless_asked(fake, client):
    connector = oauth(fake, client)
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=3)
    first = await connector.log_call(call(None, subject="", started_at=started), LogOptions(), deadline=D())
    assert fake.created == [] and "participants" not in fake.activities[0]
    assert fake.activities[0]["subject"] == "Inbound call from +14155552671"
    assert fake.state["activity_lookups"][0]["updated_since"] == started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await connector.log_call(call(None, started_at=started), LogOptions(), deadline=D()) == first
    await connector.log_call(call(None, call_id="new"), LogOptions(create_unknown=True), deadline=D())
    [created] = fake.created
    assert created["phones"] == [{"value": "+14155552671", "primary": True, "label": "work"}]
    assert fake.activities[-1]["participants"] == [{"person_id": created["id"], "primary": True}]


async def test_a_custom_activity_type_is_used(fake, client):
    fake.records = [person()]
    await oauth(fake, client, activity_type="meeting").log_call(call(None), LogOptions(), deadline=D())
    assert fake.activities[0]["type"] == "meeting"
    with pytest.raises(UnexpectedResponse, match="unknown activity type"):
        await oauth(fake, client, activity_type="phone_call").log_call(call(None, call_id="x"), LogOptions(),
                                                                      deadline=D())  # fmt: skip


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_leaves_deactivated_users_out(fake, client):
    fake.state["users"] = USERS | {
        10: {"id": 10, "name": "Olivia Owner", "email": "Olivia.Owner@example.com", "active_flag": True},
        11: {"id": 11, "name": "Former", "email": "former@example.com", "active_flag": False},
    }  # fmt: skip
    for connector in (oauth(fake, client), with_token(fake, client)):
        users = await connector.list_users(deadline=D())
        assert [(u.id, u.name, u.email) for u in users] == [("9", "Ann Owner", "ann@example.com"),
                                                            ("10", "Olivia Owner", "Olivia.Owner@example.com")]
    assert paths(fake).count("/v1/users") == 2
