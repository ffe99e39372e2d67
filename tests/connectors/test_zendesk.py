"""Zendesk Support against a strict loopback fake of its API (reference section 10).

The fake serves ``POST /oauth/tokens`` (JSON; client credentials and rotating
refresh tokens; OAuth error bodies), ``/api/v2/search.json`` (``type:``, ``role:``,
``phone:`` with Zendesk's digits-only matching where a leading ``*`` matches any
stored format, and ``<field key>:value``; ``sort_by``/``sort_order`` checked),
users, organizations, ``tickets.json?external_id=``, ticket creation with a
``voice_comment`` (and the Talk Partner Edition endpoint, which requires
``via_id``), and end-user creation. It accepts Basic ``{email}/token:{api_token}``
and the Bearer tokens it issued; every response carries ``X-Rate-Limit`` headers.
Users list every user field key in ``user_fields`` (null when empty), as Zendesk does.
Organizations have no phone in Zendesk: an ``accounts`` record's phone is rendered as an
end-user member of that organization (id + ``MEMBER_OFFSET``) carrying the number.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import shlex
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmroute.connectors import registry
from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import Record
from crmroute.connectors.zendesk import ZendeskConnector, ZendeskSettings
from crmroute.errors import AuthError, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

EMAIL = "agent@example.com"
API_TOKEN = "zd-api-token-6wX8yZ"
RULE_EMAIL, RULE_TOKEN = "rule-agent@example.com", "zd-rule-token-2kq"
CLIENT_ID = "crmroute_integration"
CLIENT_SECRET = "zd-oauth-client-secret-81f0"
REFRESH_TOKEN = "zd-refresh-0c9b8a"
RATE_LIMIT = 700
MEMBER_OFFSET = 8_000_000  # the id of the end-user who carries an organization record's phone

USER_KEYS = {"name", "email", "phone", "external_id", "notes", "details", "role", "time_zone", "tags", "alias",
             "organization_id", "shared_phone_number"}  # fmt: skip
ORG_KEYS = {"name", "external_id", "notes", "details", "tags", "domain_names", "group_id"}
USER_FIELD_KEYS = {"customer_tier", "account_number"}
ORG_FIELD_KEYS = {"customer_tier", "account_number", "support_level"}
SORTS = {"updated_at", "created_at", "priority", "status", "ticket_type"}
TICKET_KEYS = {"subject", "requester_id", "organization_id", "external_id", "tags", "voice_comment", "comment",
               "priority", "type", "status", "assignee_id", "group_id", "custom_fields", "brand_id"}  # fmt: skip
VOICE_KEYS = {"from", "to", "recording_url", "started_at", "call_duration", "answered_by_id", "transcription_text",
              "location"}  # fmt: skip
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def problem(status: int, error: str, description: str, details: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "description": description}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status)


def render_org(org_id: int, values: dict[str, Any], updated: str) -> dict[str, Any]:
    org = {"id": org_id, "url": f"https://example.zendesk.com/api/v2/organizations/{org_id}.json", "name": "",
           "external_id": None, "notes": "", "details": "", "tags": [], "domain_names": [], "group_id": None,
           "created_at": "2025-01-01T00:00:00Z", "updated_at": updated,
           "organization_fields": dict.fromkeys(sorted(ORG_FIELD_KEYS))}  # fmt: skip
    for key, value in values.items():
        if key in ORG_KEYS:
            org[key] = value
        else:
            org["organization_fields"][key] = value
    return org


def render_user(user_id: int, name: str, phone: str, updated: str, fake: VendorFake) -> dict[str, Any]:
    return {
        "id": user_id, "url": f"https://example.zendesk.com/api/v2/users/{user_id}.json",
        "name": name, "email": None, "phone": phone or None, "shared_phone_number": None,
        "external_id": None, "notes": "", "details": "", "role": "end-user", "time_zone": "Eastern Time (US & Canada)",
        "tags": [], "alias": "", "organization_id": None, "active": True, "verified": False,
        "created_at": "2025-01-01T00:00:00Z", "updated_at": updated,
        "user_fields": dict.fromkeys(sorted(USER_FIELD_KEYS | set(fake.state.get("user_field_keys", ())))),
    }  # fmt: skip


def directory(fake: VendorFake) -> tuple[list[dict], dict[int, dict]]:
    """Users and organizations rendered from ``fake.records`` in Zendesk's shapes."""
    users, orgs = [], {}
    for record in fake.records:
        if record.module == "accounts":
            orgs[int(record.id)] = render_org(int(record.id), {"name": record.name, **record.fields}, record.modified)
            if record.phone:  # Zendesk keeps numbers on users only: an organization's number is a member's
                users.append(render_user(int(record.id) + MEMBER_OFFSET, f"{record.name} (phone)", record.phone,
                                         record.modified, fake) | {"organization_id": int(record.id)})  # fmt: skip
            continue
        user = render_user(int(record.id), record.name, record.phone, record.modified, fake)
        for key, value in record.fields.items():
            if key == "organization" and isinstance(value, dict):
                org_id = int(record.id) + 7_000_000
                orgs[org_id] = render_org(org_id, value, record.modified)
                user["organization_id"] = org_id
            elif key in USER_KEYS:
                user[key] = value
            else:
                user["user_fields"][key] = value
        if fake.state.get("sparse_fields"):  # a Zendesk that leaves unset field keys out
            user["user_fields"] = {k: v for k, v in user["user_fields"].items() if v is not None}
        users.append(user)
    return users, orgs


def phone_matches(stored: str | None, wanted: str) -> bool:
    if not stored or not re.fullmatch(r"\*?\d+", wanted):
        return False  # Zendesk's phone search takes digits only (a leading * is the wildcard)
    digits = digits_of(stored)
    return digits.endswith(wanted[1:]) if wanted.startswith("*") else digits == wanted


def field_matches(row: dict, custom: str, key: str, value: str) -> bool:
    if key in row and key != custom:
        return str(row[key] or "").lower() == value.lower()
    fields = row.get(custom) or {}
    return key in fields and str(fields[key] or "").lower() == value.lower()


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/",)

    def api_response(body: Any, status: int = 200) -> JSONResponse:
        remaining = fake.state.get("remaining", RATE_LIMIT - 1)
        return JSONResponse(body, status_code=status, headers={"X-Rate-Limit": str(RATE_LIMIT),
                                                               "X-Rate-Limit-Remaining": str(remaining)})  # fmt: skip

    async def tokens(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "invalid_request", "error_description": "JSON body expected"}, status_code=400)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        fake.state.setdefault("grants", []).append({k: v for k, v in body.items() if "secret" not in k})
        if body.get("client_id") != CLIENT_ID or body.get("client_secret") != CLIENT_SECRET or (
            fake.reject_credentials and body.get("grant_type") == "client_credentials"
        ):
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed due to "
                                 "unknown client, no client authentication included, or unsupported authentication "
                                 "method."}, status_code=401)  # fmt: skip
        expires_in = body.get("expires_in")
        if expires_in is not None and not (isinstance(expires_in, int) and 300 < expires_in < 172800):
            return JSONResponse({"error": "invalid_request", "error_description": "expires_in out of range"},
                                status_code=400)  # fmt: skip
        answer: dict[str, Any] = {"access_token": fake.issue_token("zd-at"), "token_type": "bearer",
                                  "scope": body.get("scope", "read write")}  # fmt: skip
        if body.get("grant_type") == "client_credentials":
            pass
        elif body.get("grant_type") == "refresh_token":
            current = fake.state.get("refresh", REFRESH_TOKEN)
            if fake.reject_credentials or body.get("refresh_token") != current:
                return JSONResponse({"error": "invalid_grant", "error_description": "The provided authorization grant "
                                     "is invalid, expired, revoked, does not match the redirection URI used in the "
                                     "authorization request, or was issued to another client."}, status_code=400)  # fmt: skip
            fake.state["refresh"] = answer["refresh_token"] = f"zd-refresh-{fake.token_requests}"
            answer["refresh_token_expires_in"] = 2592000
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if fake.state.get("expires_in") is not None:
            answer["expires_in"] = fake.state["expires_in"]
        return JSONResponse(answer)

    def refused(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            pair = base64.b64decode(header[6:]).decode()
            if pair in (f"{EMAIL}/token:{API_TOKEN}", f"{RULE_EMAIL}/token:{RULE_TOKEN}") and not fake.reject_credentials:
                fake.state.setdefault("basic", []).append(pair.split("/token:")[0])
                return None
        elif fake.authorized(request):
            return None
        fake.state["rejected"] = fake.state.get("rejected", 0) + 1
        if header.startswith("Bearer "):
            return JSONResponse({"error": "invalid_token", "error_description": "The access token provided is "
                                 "expired, revoked, malformed or invalid for other reasons."}, status_code=401)  # fmt: skip
        return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)

    async def search(request: Request) -> Response:
        if denied := refused(request):
            return denied
        params = request.query_params
        query = params.get("query", "").strip()
        if not query:
            return problem(400, "InvalidSearch", "A search query is required")
        if params.get("sort_by", "updated_at") not in SORTS or params.get("sort_order", "desc") not in ("asc", "desc"):
            return problem(400, "InvalidSearch", "Invalid sort_by or sort_order")
        try:
            terms = [t.split(":", 1) if ":" in t else ["", t] for t in shlex.split(query)]
        except ValueError:
            return problem(400, "InvalidSearch", "Unbalanced quotes in query")
        users, orgs = directory(fake)
        kinds = {v for k, v in terms if k == "type"} or {"user", "organization"}
        candidates = [("user", u) for u in users if "user" in kinds]
        candidates += [("organization", o) for o in orgs.values() if "organization" in kinds]
        found = []
        for kind, row in candidates:
            custom = "user_fields" if kind == "user" else "organization_fields"
            ok = True
            for key, value in terms:
                if key == "type":
                    continue
                if key == "role":
                    ok &= kind == "user" and row["role"] == value
                elif key == "phone":
                    ok &= kind == "user" and phone_matches(row.get("phone"), value)
                elif key:
                    ok &= field_matches(row, custom, key, value)
                else:
                    ok &= value.lower() in json.dumps(row).lower()
            if ok:
                found.append(dict(row, result_type=kind))
        found.sort(key=lambda r: r[params.get("sort_by", "updated_at")] or "", reverse=params.get("sort_order") != "asc")
        extra = fake.state.get("count_extra", 0)
        return api_response({"results": found, "facets": None, "previous_page": None, "count": len(found) + extra,
                             "next_page": f"{fake.base_url}/api/v2/search.json?page=2" if extra else None})  # fmt: skip

    async def me(request: Request) -> Response:
        """Show Self: no credential at all is the anonymous user (id null); a wrong one is refused."""
        if not request.headers.get("authorization"):
            return JSONResponse({"user": {"id": None, "name": "Anonymous user", "role": "end-user"}})
        if denied := refused(request):
            return denied
        fake.state["me_checks"] = fake.state.get("me_checks", 0) + 1
        return JSONResponse({"user": {"id": 9001, "name": "Ada Agent", "email": EMAIL, "role": "admin"}})

    async def show(request: Request) -> Response:
        if denied := refused(request):
            return denied
        kind, item_id = request.path_params["kind"], request.path_params["item_id"]
        users, orgs = directory(fake)
        fake.state.setdefault("shown", []).append(f"{kind}/{item_id}")
        if not item_id.isdigit():
            return problem(404, "RecordNotFound", "Not found")
        rows = {u["id"]: u for u in users} if kind == "users" else orgs
        row = rows.get(int(item_id))
        if row is None:
            return problem(404, "RecordNotFound", "Not found")
        return api_response({"user" if kind == "users" else "organization": row})

    async def tickets(request: Request) -> Response:
        if denied := refused(request):
            return denied
        if request.method == "GET":
            wanted = request.query_params.get("external_id")
            rows = [t for t in fake.activities if wanted is None or t.get("external_id") == wanted]
            return api_response({"tickets": rows, "next_page": None, "previous_page": None, "count": len(rows)})
        return await create_ticket(request, talk=False)

    async def voice_tickets(request: Request) -> Response:
        if denied := refused(request):
            return denied
        return await create_ticket(request, talk=True)

    async def create_ticket(request: Request, *, talk: bool) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return problem(400, "InvalidJSON", "The request body is not valid JSON")
        ticket = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(ticket, dict):
            return problem(400, "InvalidJSON", "Expected a ticket object")
        allowed = TICKET_KEYS | ({"via_id"} if talk else set())
        unknown = sorted(set(ticket) - allowed)
        if unknown:
            return problem(422, "RecordInvalid", "Record validation errors",
                           {unknown[0]: [{"description": f"{unknown[0]} is not a ticket property"}]})  # fmt: skip
        if talk and ticket.get("via_id") not in (44, 45, 46):
            return problem(422, "RecordInvalid", "Record validation errors",
                           {"via_id": [{"description": "via_id must be 44, 45 or 46"}]})  # fmt: skip
        voice = ticket.get("voice_comment")
        if not isinstance(voice, dict) and "comment" not in ticket:
            return problem(422, "RecordInvalid", "Record validation errors",
                           {"base": [{"description": "Description: cannot be blank"}]})  # fmt: skip
        if isinstance(voice, dict):
            bad = sorted(set(voice) - VOICE_KEYS)
            if bad or not all(isinstance(voice.get(k), str) and voice[k] for k in ("from", "to")) \
                    or not ISO.match(str(voice.get("started_at", ""))) \
                    or not isinstance(voice.get("call_duration"), int) or not isinstance(voice.get("recording_url"), str):  # fmt: skip
                return problem(422, "RecordInvalid", "Record validation errors",
                               {"voice_comment": [{"description": f"Voice comment is invalid: {voice}"}]})  # fmt: skip
        users, orgs = directory(fake)
        if "requester_id" in ticket and ticket["requester_id"] not in {u["id"] for u in users}:
            return problem(422, "RecordInvalid", "Record validation errors",
                           {"requester": [{"description": "Requester: is invalid", "error": "InvalidValue"}]})  # fmt: skip
        if "organization_id" in ticket and ticket["organization_id"] not in orgs:
            return problem(422, "RecordInvalid", "Record validation errors",
                           {"organization_id": [{"description": "Organization: is invalid"}]})  # fmt: skip
        counter = fake.state["next_ticket"] = fake.state.get("next_ticket", 100) + 1
        stored = dict(ticket, id=counter, endpoint="voice" if talk else "tickets")
        fake.activities.append(stored)
        return api_response({"ticket": {"id": counter, "subject": ticket.get("subject"),
                                        "external_id": ticket.get("external_id"), "status": "new"}}, 201)  # fmt: skip

    async def users_endpoint(request: Request) -> Response:
        return await (list_users(request) if request.method == "GET" else create_user(request))

    async def list_users(request: Request) -> Response:
        """``GET /api/v2/users.json``: ``role`` / ``role[]`` filters; cursor pages (``page[size]`` at most 100,
        ``page[after]``) with ``meta`` and ``links``; without ``page[size]``, offset pages (not used here)."""
        if denied := refused(request):
            return denied
        params = request.query_params
        unknown = set(params) - {"role", "role[]", "permission_set", "external_id", "page[size]", "page[after]"}
        if unknown:
            return problem(400, "InvalidPaginationParameter" if sorted(unknown)[0].startswith("page") else "InvalidParameter",
                           f"Unknown parameter {sorted(unknown)[0]}")  # fmt: skip
        if "page[size]" not in params:
            return problem(400, "InvalidPaginationParameter", "this fake serves cursor pagination only: give page[size]")
        size = params["page[size]"]
        if not size.isdigit() or not 1 <= int(size) <= 100:
            return problem(400, "InvalidPaginationParameter", "page[size] must be between 1 and 100")
        roles = set(params.getlist("role[]")) | ({params["role"]} if "role" in params else set())
        listed = [u for u in fake.state.get("staff", []) if not roles or u["role"] in roles]
        start = 0
        if "page[after]" in params:
            cursor = params["page[after]"]
            if not cursor.startswith("cur-") or not cursor[4:].isdigit():
                return problem(400, "InvalidPaginationParameter", "Invalid cursor")
            start = int(cursor[4:])
        fake.state["user_pages"] = fake.state.get("user_pages", 0) + 1
        end = start + int(size)
        more = end < len(listed)
        after = f"cur-{end}" if more else None
        return api_response({"users": listed[start:end], "meta": {"has_more": more, "after_cursor": after,
                                                                  "before_cursor": f"cur-{start}" if start else None},
                             "links": {"next": f"{fake.base_url}/api/v2/users.json?page%5Bafter%5D={after}&page%5Bsize%5D={size}"
                                       if more else None, "prev": None}})  # fmt: skip

    async def create_user(request: Request) -> Response:
        if denied := refused(request):
            return denied
        body = json.loads(await request.body())
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, dict) or not user.get("name"):
            return problem(422, "RecordInvalid", "Record validation errors",
                           {"name": [{"description": "Name: cannot be blank"}]})  # fmt: skip
        if user.get("role", "end-user") not in ("end-user", "agent", "admin"):
            return problem(422, "RecordInvalid", "Record validation errors", {"role": [{"description": "invalid"}]})
        new_id = 384729109000 + len(fake.created)
        fake.created.append(dict(user, id=new_id))
        fake.records.append(FakeRecord(module="contacts", id=str(new_id), phone=user.get("phone", ""), name=user["name"]))
        return api_response({"user": {"id": new_id, **user}}, 201)

    async def field_definitions(request: Request) -> Response:
        if denied := refused(request):
            return denied
        listing = request.path_params["listing"]
        if listing not in ("user_fields", "organization_fields"):
            return problem(404, "InvalidEndpoint", "Not found")
        keys = USER_FIELD_KEYS | set(fake.state.get("user_field_keys", ())) if listing == "user_fields" else ORG_FIELD_KEYS
        items = [{"id": 360000100 + i, "key": key, "title": key.replace("_", " ").title(), "type": "text",
                  "active": True} for i, key in enumerate(sorted(keys))]  # fmt: skip
        return api_response({listing: items, "next_page": None, "previous_page": None, "count": len(items)})

    return Starlette(routes=[
        Route("/oauth/tokens", tokens, methods=["POST"]),
        Route("/api/v2/search.json", search, methods=["GET"]),
        Route("/api/v2/users/me.json", me, methods=["GET"]),
        Route("/api/v2/tickets.json", tickets, methods=["GET", "POST"]),
        Route("/api/v2/channels/voice/tickets.json", voice_tickets, methods=["POST"]),
        Route("/api/v2/users.json", users_endpoint, methods=["GET", "POST"]),
        Route("/api/v2/{kind:str}/{item_id:str}.json", show, methods=["GET"]),
        Route("/api/v2/{listing:str}.json", field_definitions, methods=["GET"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)


def oauth_settings(fake: VendorFake, **changes: Any) -> dict[str, Any]:
    return {"base_url": fake.base_url, "auth": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET} | changes  # fmt: skip


def token_settings(fake: VendorFake, **changes: Any) -> dict[str, Any]:
    return {"base_url": fake.base_url, "auth": "api_token", "email": EMAIL, "api_token": API_TOKEN} | changes


class TestZendesk(ConnectorContract):
    OWNER_FIELDS = None  # users and organizations carry no owner (tickets have assignees): a gap, in the README
    kind = "zendesk"
    MODULE = "contacts"
    FIELD = "customer_tier"  # a user field key
    NESTED_FIELD = "organization.name"  # the user's organization, fetched by organization_id
    NESTED_FIELDS = {"organization": {"name": "Acme Corp"}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("384729102001", "384729102002", "384729102003")
    KEY_FIELD = "account_number"
    REQUESTS_PER_CALL = (1, 1)
    # No MOBILE_FIELDS: a Zendesk user has one ``phone`` (further numbers are phone_number identities, which
    # the reference does not cover) and organizations have no phone at all (reference section 10).

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return oauth_settings(fake)

    def shared_settings(self, fake: VendorFake) -> dict[str, Any]:  # Zendesk rotates refresh tokens: the hard case
        return oauth_settings(fake, auth="refresh_token", refresh_token=REFRESH_TOKEN)

    def searches(self, fake: VendorFake) -> list[dict[str, str]]:
        return [r.params for r in fake.api_requests() if r.path == "/api/v2/search.json"]

    # --- auth flows ------------------------------------------------------------------------------------

    async def test_api_token_is_basic_auth_without_a_token_request(self, fake, http):
        connector = self.build(fake, http, **token_settings(fake))
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 0 and fake.state["basic"] == [EMAIL]
        expected = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
        assert fake.api_requests()[0].headers["authorization"] == expected

    async def test_a_rules_username_and_password_replace_the_api_token(self, fake, http):
        settings = ZendeskSettings.model_validate(token_settings(fake))
        connector = ZendeskConnector(settings, http, username=RULE_EMAIL, password=RULE_TOKEN)
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.state["basic"] == [RULE_EMAIL]

    async def test_a_wrong_api_token_is_an_auth_error(self, fake, http):
        connector = self.build(fake, http, **token_settings(fake, api_token="nope"))
        with pytest.raises(AuthError, match="Couldn't authenticate you"):
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())

    async def test_client_credentials_request(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline())
        grant = next(r for r in fake.requests if r.path == "/oauth/tokens")
        assert grant.method == "POST" and grant.headers["content-type"].startswith("application/json")
        assert grant.json() == {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                "scope": "read write"}  # fmt: skip
        assert fake.api_requests()[0].headers["authorization"].startswith("Bearer zd-at-")

    async def test_refresh_tokens_rotate_and_a_used_one_is_rejected(self, fake, http):
        settings = oauth_settings(fake, auth="refresh_token", refresh_token=REFRESH_TOKEN)
        connector = self.build(fake, http, **settings)
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline())
        fake.expire_tokens()
        assert await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        sent = [g["refresh_token"] for g in fake.state["grants"]]
        assert sent[0] == REFRESH_TOKEN and sent[1] == "zd-refresh-1"  # the rotated one
        stale = self.build(fake, http, **settings)  # e.g. after a restart: the configured token was used up
        with pytest.raises(AuthError, match="token rejected: refresh token revoked") as caught:
            await stale.authenticate(deadline=self.deadline())
        assert caught.value.reason == "token_rejected"

    async def test_token_expiry_is_read_from_expires_in_and_refreshed_before_it(self, fake, connector):
        fake.records = [self.record()]
        fake.state["expires_in"] = 2  # a 2 s token is refreshed once half its life has passed
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline())
        await asyncio.sleep(1.05)
        assert await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 2 and fake.state.get("rejected", 0) == 0

    async def test_a_pasted_access_token(self, fake, http):
        connector = self.build(fake, http, base_url=fake.base_url, auth="access_token", access_token="zd-static-1")
        fake.tokens.add("zd-static-1")
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 0

    def test_settings(self, fake):
        assert ZendeskSettings.model_validate(oauth_settings(fake, base_url="acme")).base_url == "https://acme.zendesk.com"
        with pytest.raises(ValidationError, match="https://"):
            ZendeskSettings.model_validate(oauth_settings(fake, base_url="http://acme.zendesk.com"))
        with pytest.raises(ValidationError, match="needs client_secret"):
            ZendeskSettings.model_validate(oauth_settings(fake, client_secret=None))
        with pytest.raises(ValidationError, match="needs client_id, client_secret, refresh_token"):
            ZendeskSettings.model_validate({"base_url": "acme", "auth": "refresh_token"})

    # --- phone search ------------------------------------------------------------------------------------

    @pytest.mark.parametrize("stored", ["+1 415.555.2671", "(415) 555-2671", "4155552671", "+14155552671", "1-415-555-2671"])
    async def test_one_wildcard_search_finds_every_stored_format(self, fake, connector, stored):
        fake.records = [self.record(phone=stored)]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        (search,) = self.searches(fake)
        assert search == {"query": "type:user phone:*4155552671 role:end-user", "sort_by": "updated_at",
                          "sort_order": "desc"}  # fmt: skip

    async def test_agents_are_matched_only_when_asked(self, fake, http):
        fake.records = [self.record(fields={self.FIELD: "STAFF", "role": "agent"})]
        key = LookupKey(CALLER, "caller_id")
        assert await self.build(fake, http).fetch(key, "contacts", self.FIELD, deadline=self.deadline()) is None
        anyone = self.build(fake, http, end_users_only=False)
        assert await anyone.fetch(key, "contacts", self.FIELD, deadline=self.deadline()) == "STAFF"
        assert self.searches(fake)[-1]["query"] == "type:user phone:*4155552671"

    async def test_matches_count_every_page(self, fake, connector):
        fake.records = [self.record(0), self.record(1, modified="2026-05-01T00:00:00Z")]
        fake.state["count_extra"] = 150
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert record.id == self.IDS[1] and record.matches == 152
        assert record.url == f"{fake.base_url}/agent/users/{self.IDS[1]}"

    # --- organizations (accounts) ----------------------------------------------------------------------

    async def test_accounts_are_the_callers_organization(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "organization": {"name": "Acme Corp",
                                                                                 "support_level": "premium"}})]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "accounts", deadline=self.deadline())
        assert record.module == "organizations" and record.id == str(int(self.IDS[0]) + 7_000_000)
        assert await connector.read_field(record, "support_level", deadline=self.deadline()) == "premium"
        assert await connector.read_field(record, "name", deadline=self.deadline()) == "Acme Corp"
        assert fake.api_requests()[-1].path == f"/api/v2/organizations/{record.id}.json"

    async def test_a_caller_without_organization_has_no_account(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD"})]
        assert await connector.find_record(LookupKey(CALLER, "caller_id"), "accounts", deadline=self.deadline()) is None

    async def test_organization_fields_of_a_user_take_one_request(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "organization": {"name": "Acme", "support_level": "basic"}})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        for _ in range(2):
            assert await connector.read_field(record, "organization.support_level", deadline=self.deadline()) == "basic"
        assert len([r for r in fake.api_requests() if "/organizations/" in r.path]) == 1

    def test_there_are_no_leads(self):
        assert "leads" not in ZendeskConnector.MODULES

    # --- fields and keys ----------------------------------------------------------------------------------

    async def test_custom_and_standard_fields(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "external_id": "CRM-7"})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert await connector.read_field(record, "user_fields.customer_tier", deadline=self.deadline()) == "GOLD"
        assert await connector.read_field(record, "external_id", deadline=self.deadline()) == "CRM-7"
        assert await connector.read_field(record, "notes", deadline=self.deadline()) is None
        with pytest.raises(UnexpectedResponse, match="field status does not exist on Zendesk users"):
            await connector.read_field(record, "status", deadline=self.deadline())

    async def test_an_unset_field_left_out_of_user_fields_is_empty_not_unknown(self, fake, connector):
        fake.state["sparse_fields"] = True
        fake.records = [self.record(fields={self.FIELD: None, self.KEY_FIELD: "12345"})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert "customer_tier" not in record.fields["user_fields"]
        for _ in range(2):
            assert await connector.read_field(record, self.FIELD, deadline=self.deadline()) is None
        with pytest.raises(UnexpectedResponse, match="field Customer_Tier does not exist"):
            await connector.read_field(record, "Customer_Tier", deadline=self.deadline())
        assert [r.path for r in fake.api_requests()].count("/api/v2/user_fields.json") == 1  # cached

    async def test_typed_keys_by_id_and_by_field(self, fake, http):
        fake.records = [self.record(fields={self.FIELD: "GOLD", self.KEY_FIELD: "12345"}),
                        FakeRecord("accounts", "360001", name="Globex", fields={"account_number": "777"})]  # fmt: skip
        by_id = self.build(fake, http)
        assert await by_id.fetch(LookupKey(self.IDS[0], "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.api_requests()[-1].path == f"/api/v2/users/{self.IDS[0]}.json"
        assert await by_id.find_record(LookupKey("999", "dtmf"), "contacts", deadline=self.deadline()) is None
        by_field = self.build(fake, http, key_field=self.KEY_FIELD)
        record = await by_field.find_record(LookupKey("777", "dtmf"), "accounts", deadline=self.deadline())
        assert record.module == "organizations" and record.id == "360001"
        assert self.searches(fake)[-1]["query"] == "type:organization account_number:777"

    # --- call log ---------------------------------------------------------------------------------------------

    async def test_the_call_is_a_ticket_with_a_voice_comment(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "organization": {"name": "Acme"}})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        ticket_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert str(stored["id"]) == ticket_id and stored["endpoint"] == "tickets"
        assert stored["subject"] == f"Inbound call from {CALLER}" and stored["external_id"] == "crmroute-1795657573.1"
        assert stored["requester_id"] == int(self.IDS[0]) and stored["organization_id"] == int(self.IDS[0]) + 7_000_000
        assert stored["voice_comment"] == {"from": CALLER, "to": "201", "recording_url": "",
                                           "started_at": "2026-11-26T09:30:00Z", "call_duration": 93}  # fmt: skip
        lookup = next(r for r in fake.api_requests() if r.path == "/api/v2/tickets.json" and r.method == "GET")
        assert lookup.params == {"external_id": "crmroute-1795657573.1"}

    async def test_talk_partner_edition_sets_the_via_id(self, fake, http):
        connector = self.build(fake, http, call_log="talk_partner")
        fake.records = [self.record()]
        call = self.call(None, "out-9")
        call.direction, call.subject, call.recording = "outbound", "", "https://pbx.example.com/rec/out-9.wav"
        await connector.log_call(call, LogOptions(outbound=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["endpoint"] == "voice" and stored["via_id"] == 46 and stored["subject"] == f"Call to {CALLER}"
        assert stored["voice_comment"]["from"] == "201" and stored["voice_comment"]["to"] == CALLER
        assert stored["voice_comment"]["recording_url"] == "https://pbx.example.com/rec/out-9.wav"
        inbound = self.call(None, "in-9")
        await connector.log_call(inbound, LogOptions(inbound_answered=True), deadline=self.deadline())
        assert fake.activities[-1]["via_id"] == 45

    async def test_an_organization_record_still_finds_the_requester(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "organization": {"name": "Acme"}})]
        account = await connector.find_record(LookupKey(CALLER, "caller_id"), "accounts", deadline=self.deadline())
        await connector.log_call(self.call(account, "org-1"), LogOptions(inbound_answered=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["organization_id"] == int(account.id) and stored["requester_id"] == int(self.IDS[0])

    async def test_unknown_caller_without_create_has_no_requester(self, fake, connector):
        await connector.log_call(self.call(None, "anon-1"), LogOptions(inbound_missed=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert "requester_id" not in stored and fake.created == []

    async def test_unknown_callers_become_end_users(self, fake, connector):
        await connector.log_call(self.call(None, "new-1"), LogOptions(create_unknown=True), deadline=self.deadline())
        (created,) = fake.created
        assert created["role"] == "end-user" and created["phone"] == CALLER and created["name"] == f"Caller {CALLER}"
        assert fake.activities[0]["requester_id"] == created["id"]

    # --- errors and limits ---------------------------------------------------------------------------------

    async def test_forbidden_is_an_auth_error_that_says_permission(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, {"error": {"title": "Forbidden", "message": "You do not have access to this page."}})
        with pytest.raises(AuthError, match="lacks permission.*You do not have access") as caught:
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert caught.value.reason == "forbidden"

    async def test_validation_errors_carry_their_details(self, fake, connector):
        fake.records = [self.record()]
        record = Record("users", "384729100000", {})  # a requester Zendesk does not know
        with pytest.raises(UnexpectedResponse, match="HTTP 422.*RecordInvalid.*requester: Requester: is invalid"):
            await connector.log_call(self.call(record, "bad-1"), LogOptions(), deadline=self.deadline())

    async def test_a_low_rate_limit_budget_is_logged(self, fake, connector, caplog):
        caplog.set_level(logging.WARNING, logger="crmroute.connectors.zendesk")
        fake.records = [self.record()]
        fake.state["remaining"] = 12
        await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert "12 of 700 API requests left" in caplog.text


def test_the_kind_is_registered():
    assert registry()["zendesk"] is ZendeskConnector


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_lists_agents_and_admins_by_cursor(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    staff = [{"id": 900000 + i, "name": f"Agent {i}", "email": f"agent{i}@example.com", "role": "agent", "active": True}
             for i in range(150)]  # fmt: skip
    staff += [{"id": 1, "name": "Admin", "email": "admin@example.com", "role": "admin", "active": True},
              {"id": 2, "name": "Customer", "email": "c@example.com", "role": "end-user", "active": True},
              {"id": 3, "name": "Deleted", "email": "d@example.com", "role": "agent", "active": False}]
    fake.state["staff"] = staff
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        users = await TestZendesk().build(fake, http).list_users(deadline=TestZendesk.deadline())
    finally:
        await http.aclose()
    assert len(users) == 151 and fake.state["user_pages"] == 2  # 100 + 51 (the deleted agent is left out)
    assert users[0].id == "900000" and users[0].email == "agent0@example.com"
    assert {"1"} <= {u.id for u in users} and not {"2", "3"} & {u.id for u in users}
    listing = [r for r in fake.api_requests() if r.path == "/api/v2/users.json"]
    assert listing[1].params["page[after]"] == "cur-100"
