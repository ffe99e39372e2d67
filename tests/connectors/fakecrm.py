"""Strict loopback fakes of vendor CRM APIs: the shared harness.

A vendor's test module writes its fake as a Starlette app built around a
``VendorFake`` (the state the test controls), and gets fixtures from
``vendor_fixtures``::

    def make_app(fake: VendorFake) -> Starlette: ...      # the vendor's documented endpoints
    fake_server, fake = vendor_fixtures(make_app)          # module-level, in test_<kind>.py

The server is real HTTPS on 127.0.0.1 (a ``trustme`` CA, ``fake.ca_path``),
one per test module, reset for each test. Before the vendor app sees a
request, the harness records it and applies the faults the test queued:

    fake.fail_next(500)                          # next API request answers 500
    fake.fail_next(429, headers={"Retry-After": "0"})
    fake.fail_next(200, body=b"{not json")       # garbage with a 200
    fake.delay = 2.0                             # every API request waits (auth requests too unless
                                                 # they are under fake.auth_paths)
    fake.expire_tokens()                         # issued tokens stop working: expect one refresh
    fake.reject_credentials = True               # the token endpoint refuses

Vendor apps use ``fake.issue_token()``, ``fake.authorized(request)``,
``fake.records`` (a neutral ``FakeRecord`` list they render in the vendor's
shape), and append created call activities to ``fake.activities``.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.requests import Request

from tests.connectors.fakecustom import RecordedRequest, _disconnected
from tests.loopback import Loopback, serve_https


@dataclass
class FakeRecord:
    """A CRM record in neutral form; each vendor fake renders it in its own shape."""

    module: str  # accounts, contacts or leads
    id: str
    phone: str = ""  # as the CRM stores it, e.g. "(415) 555-2671"
    fields: dict[str, Any] = field(default_factory=dict)  # API name -> value; nested dicts for lookups
    modified: str = "2026-01-01T00:00:00Z"  # ISO-8601
    name: str = "Test Record"


@dataclass
class Fault:
    status: int
    body: bytes
    headers: dict[str, str]
    content_type: str


class VendorFake:
    def __init__(self, base_url: str, ca_path: Path) -> None:
        self.base_url = base_url
        self.ca_path = ca_path
        self.auth_paths: tuple[str, ...] = ()  # path prefixes that count as authentication
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.records: list[FakeRecord] = []
            self.activities: list[dict[str, Any]] = []
            self.created: list[dict[str, Any]] = []  # contacts/leads created for unknown numbers
            self.tokens: set[str] = set()
            self.token_requests = 0
            self.reject_credentials = False
            self.delay = 0.0
            self.state: dict[str, Any] = {}  # for a vendor's own bookkeeping
            self._faults: deque[Fault] = deque()

    # --- what tests call -------------------------------------------------------

    def fail_next(
        self, status: int, body: bytes | str | Any = b"", *, headers: dict[str, str] | None = None,
        content_type: str = "application/json", times: int = 1,
    ) -> None:  # fmt: skip
        if not isinstance(body, (bytes, str)):
            body = jsonlib.dumps(body)
        payload = body.encode() if isinstance(body, str) else body
        with self._lock:
            for _ in range(times):
                self._faults.append(Fault(status, payload, dict(headers or {}), content_type))

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def api_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if not self._is_auth(r.path)]

    # --- what vendor apps call -----------------------------------------------------

    def issue_token(self, prefix: str = "tok") -> str:
        token = f"{prefix}-{secrets.token_hex(8)}"
        with self._lock:
            self.tokens.add(token)
            self.token_requests += 1
        return token

    def authorized(self, request: Request, header: str = "authorization", scheme: str = "Bearer") -> bool:
        value = request.headers.get(header, "")
        if scheme:
            prefix = f"{scheme} "
            if not value.startswith(prefix):
                return False
            value = value[len(prefix):]
        return value in self.tokens

    # --- the harness -------------------------------------------------------------------

    def _is_auth(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.auth_paths)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            if self._faults and not self._is_auth(path):
                return self._faults.popleft()
        return None


def harness(fake: VendorFake, app: Any) -> Callable:
    """ASGI wrapper: record, then fault or delay, then the vendor app."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        recorded = RecordedRequest(scope["method"], scope["path"], query, parse_qsl(query, keep_blank_values=True),
                                   headers, body)  # fmt: skip
        fake.requests.append(recorded)
        if fake.delay and not fake._is_auth(scope["path"]):
            try:  # the wait ends early when the client gives up
                await asyncio.wait_for(_disconnected(receive), fake.delay)
                return
            except TimeoutError:
                pass
        fault = fake._take_fault(scope["path"])
        if fault is not None:
            response_headers = [(b"content-type", fault.content_type.encode()),
                                (b"content-length", str(len(fault.body)).encode())]  # fmt: skip
            response_headers += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
            await send({"type": "http.response.start", "status": fault.status, "headers": response_headers})
            await send({"type": "http.response.body", "body": fault.body})
            return

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def sent(message: dict) -> None:
            if message["type"] == "http.response.start":
                recorded.status = message["status"]
            await send(message)

        await app(scope, replay, sent)

    return asgi


@contextmanager
def serve_vendor(make_app: Callable[[VendorFake], Any], directory: Path) -> Iterator[VendorFake]:
    """Run a vendor fake on loopback HTTPS until the block ends (certificate files go in ``directory``)."""
    fakes: list[VendorFake] = []

    def build(where: Loopback) -> Any:
        fakes.append(VendorFake(where.base_url, where.ca_path))
        return harness(fakes[0], make_app(fakes[0]))

    with serve_https(build, directory, "fake-vendor"):
        yield fakes[0]


def vendor_fixtures(make_app: Callable[[VendorFake], Any]) -> tuple[Any, Any]:
    """``(fake_server, fake)`` fixtures for a test module: one server, reset per test."""

    @pytest.fixture(scope="module")
    def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorFake]:
        with serve_vendor(make_app, tmp_path_factory.mktemp("fake-vendor")) as server:
            yield server

    @pytest.fixture
    def fake(fake_server: VendorFake) -> Iterator[VendorFake]:
        fake_server.reset()
        yield fake_server
        fake_server.reset()

    return fake_server, fake
