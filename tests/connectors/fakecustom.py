"""A real HTTPS Custom CRM (SPEC section 5) on 127.0.0.1 for tests.

One uvicorn server per test session, in a background thread, with a
certificate from a throwaway ``trustme`` CA; each test gets it reset. Works
from async and sync tests alike, and from subprocesses (it is a real port).

Use the ``custom_crm`` fixture (import it into your ``conftest.py``)::

    from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401

    async def test_vip(custom_crm):
        custom_crm.values = {"Status": "GOLD"}            # any caller: Status is GOLD
        settings = Settings(ca_bundle=custom_crm.ca_path) # trust the fake's CA
        ... custom_url=custom_crm.url ...
        assert custom_crm.last.params["caller_id"] == "+15551234567"

``FakeCustomCRM``
    ``.url``        ``https://127.0.0.1:PORT/lookup`` (any path is served alike)
    ``.base_url``   ``https://127.0.0.1:PORT``
    ``.ca_path``    PEM file of the CA (use as ``CRMROUTE_CA_BUNDLE``)
    ``.requests``   every ``RecordedRequest`` since the reset, oldest first;
                    ``.last`` is the latest one
    What it answers, first match wins:
    1. replies queued with ``respond(..., once=True)``, one per request;
    2. the reply set with ``respond(...)``/``redirect(...)``, for every request;
    3. ``.records = {"+15551234567": {"Status": "GOLD"}}``: per lookup key (the
       ``dtmf`` sent, else ``caller_id``), answered as ``{"Status": "GOLD"}``;
       an unknown key is a 404;
    4. ``.values = {"Status": "GOLD"}``: by ``field_name``, answered as
       ``{"value": "GOLD"}``; an unknown field is a 404 (so by default, with
       nothing set, everything is a 404).
    ``.delay`` (seconds) delays answers of kinds 3 and 4.
    ``respond(status=200, body=b"", *, json=..., content_type=None,
    headers=None, delay=0.0, stream=0, once=False)``: ``json=`` serialises a
    value and labels it ``application/json``; ``body`` (str or bytes) is sent
    as is (``text/plain`` unless ``content_type`` says otherwise);
    ``stream=N`` sends N bytes of ``x`` in 16 KB chunks with no
    Content-Length; ``delay`` waits before the status line (the wait ends
    early if the client goes away).
    ``redirect(location, status=302)``; ``reset()``.

``RecordedRequest``: ``.method``, ``.path``, ``.query`` (raw query string),
``.params`` (dict, last value wins), ``.param_list`` (all pairs),
``.headers`` (dict, lower-case names), ``.body`` (bytes), ``.json()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import json as jsonlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.loopback import Loopback, serve_https

_MISSING: Any = object()
STREAM_CHUNK = 16 * 1024


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    param_list: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0  # the answer's, once sent (vendor fakes record it)
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def params(self) -> dict[str, str]:
        return dict(self.param_list)

    def json(self) -> Any:
        return jsonlib.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    stream: int = 0  # > 0: stream this many bytes, no Content-Length


class FakeCustomCRM:
    """The state of the fake server; see the module docstring."""

    def __init__(self, base_url: str, ca_path: Path) -> None:
        self.base_url = base_url
        self.url = f"{base_url}/lookup"
        self.ca_path = ca_path
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.values: dict[str, Any] = {}
            self.records: dict[str, dict[str, Any]] = {}
            self.delay = 0.0
            self._fixed: Reply | None = None
            self._queue: deque[Reply] = deque()

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, "the fake Custom CRM received no request"
        return self.requests[-1]

    def respond(
        self,
        status: int = 200,
        body: bytes | str = b"",
        *,
        json: Any = _MISSING,
        content_type: str | None = None,
        headers: list[tuple[str, str]] | dict[str, str] | None = None,
        delay: float = 0.0,
        stream: int = 0,
        once: bool = False,
    ) -> None:
        if json is not _MISSING:
            payload = jsonlib.dumps(json).encode()
            kind = content_type or "application/json"
        else:
            payload = body.encode() if isinstance(body, str) else body
            kind = content_type or "text/plain; charset=utf-8"
        extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        reply = Reply(status, payload, kind, extra, delay, stream)
        with self._lock:
            if once:
                self._queue.append(reply)
            else:
                self._fixed = reply

    def redirect(self, location: str, status: int = 302) -> None:
        self.respond(status, b"", headers=[("location", location)])

    # -- server side ---------------------------------------------------

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.popleft()
            if self._fixed is not None:
                return self._fixed
            asked = _asked(request)
            if self.records:
                key = asked.get("dtmf") or asked.get("caller_id") or ""
                if key not in self.records:
                    return _json_reply(404, {"error": "no such record"}, self.delay)
                return _json_reply(200, self.records[key], self.delay)
            name = asked.get("field_name", "")
            if name in self.values:
                return _json_reply(200, {"value": self.values[name]}, self.delay)
            return _json_reply(404, {"error": "no such field"}, self.delay)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=query,
            param_list=parse_qsl(query, keep_blank_values=True),
            headers=headers,
            body=body,
        )
        reply = self._reply_for(request)
        if reply.delay > 0:
            try:
                await asyncio.wait_for(_disconnected(receive), reply.delay)
                return  # the client gave up: nothing to answer
            except TimeoutError:
                pass
        response_headers = [(k.encode(), v.encode()) for k, v in reply.headers]
        if reply.content_type:
            response_headers.append((b"content-type", reply.content_type.encode()))
        if not reply.stream:
            response_headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": response_headers})
        if not reply.stream:
            await send({"type": "http.response.body", "body": reply.body})
            return
        left = reply.stream
        while left > 0:
            size = min(STREAM_CHUNK, left)
            left -= size
            await send({"type": "http.response.body", "body": b"x" * size, "more_body": left > 0})


def _asked(request: RecordedRequest) -> dict[str, str]:
    """The request's field_name/dtmf/caller_id/did, from the query or the JSON body."""
    if request.method == "POST":
        try:
            data = request.json()
        except ValueError:
            return {}
        return {k: "" if v is None else str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return request.params


def _json_reply(status: int, payload: Any, delay: float) -> Reply:
    return Reply(status, jsonlib.dumps(payload).encode(), "application/json", [], delay)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@contextmanager
def serve_custom_crm(directory: Path) -> Iterator[FakeCustomCRM]:
    """Run the fake on a free loopback port until the block ends (files go in ``directory``)."""
    fakes: list[FakeCustomCRM] = []

    def build(where: Loopback) -> FakeCustomCRM:
        fakes.append(FakeCustomCRM(where.base_url, where.ca_path))
        return fakes[0]

    with serve_https(build, directory, "fake-custom-crm"):
        yield fakes[0]


@pytest.fixture(scope="session")
def custom_crm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCustomCRM]:
    """The session's fake Custom CRM, not reset: prefer ``custom_crm``."""
    with serve_custom_crm(tmp_path_factory.mktemp("custom-crm")) as fake:
        yield fake


@pytest.fixture
def custom_crm(custom_crm_server: FakeCustomCRM) -> Iterator[FakeCustomCRM]:
    """The fake Custom CRM, reset for this test (nothing set: every lookup is a 404)."""
    custom_crm_server.reset()
    yield custom_crm_server
    custom_crm_server.reset()
