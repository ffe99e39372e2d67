"""The rule-level Custom CRM against a real loopback HTTPS server."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from crmroute.connectors._http import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    make_client,
    map_http_error,
    safe_url,
    send_capped,
)
from crmroute.connectors.custom import fetch_custom, validate_custom_url, validate_header
from crmroute.errors import (
    ConfigError,
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    RateLimited,
    UnexpectedResponse,
)
from crmroute.routing.engine import LookupKey
from crmroute.settings import Settings

CALLER = "+15551234567"
DID = "18005550100"
SECRET = "s3cr3t-header-value"


@pytest.fixture
async def client(custom_crm):
    http = make_client(Settings(ca_bundle=custom_crm.ca_path))
    yield http
    await http.aclose()


async def fetch(client, custom_crm, *, url=None, post=False, headers=(), field="Status", key=None, timeout=2.0):
    return await fetch_custom(
        client,
        url=url or custom_crm.url,
        post=post,
        headers=list(headers),
        field_name=field,
        key=key or LookupKey(CALLER, "caller_id"),
        caller_id=CALLER,
        did=DID,
        timeout=timeout,
    )


# -- the request -------------------------------------------------------------


async def test_get_sends_field_and_caller_id_without_dtmf(client, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    assert await fetch(client, custom_crm) == "GOLD"
    request = custom_crm.last
    assert request.method == "GET"
    assert request.path == "/lookup"
    assert request.params == {"field_name": "Status", "caller_id": CALLER}
    assert "dtmf" not in request.params
    assert request.body == b""
    assert request.headers["user-agent"] == USER_AGENT


async def test_get_sends_dtmf_only_when_typed(client, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    await fetch(client, custom_crm, key=LookupKey("4711", "dtmf"))
    assert custom_crm.last.params == {"field_name": "Status", "dtmf": "4711", "caller_id": CALLER}


async def test_get_caller_id_is_the_key_when_the_key_is_the_caller(client, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    await fetch_custom(
        client,
        url=custom_crm.url,
        post=False,
        headers=[],
        field_name="Status",
        key=LookupKey("+441234", "caller_id"),
        caller_id="",
        did=DID,
        timeout=2,
    )
    assert custom_crm.last.params["caller_id"] == "+441234"


async def test_get_keeps_the_url_query(client, custom_crm):
    custom_crm.values = {"Account Name": "ACME & Co"}
    url = custom_crm.url + "?tenant=a%20b&x=1"
    assert await fetch(client, custom_crm, url=url, field="Account Name") == "ACME & Co"
    request = custom_crm.last
    assert request.query.startswith("tenant=a%20b&x=1&field_name=")
    assert request.params == {"tenant": "a b", "x": "1", "field_name": "Account Name", "caller_id": CALLER}


async def test_post_sends_json_body(client, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    assert await fetch(client, custom_crm, post=True) == "GOLD"
    request = custom_crm.last
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"field_name": "Status", "dtmf": None, "caller_id": CALLER, "did": DID}
    assert request.query == ""


async def test_post_with_dtmf(client, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    await fetch(client, custom_crm, post=True, key=LookupKey("99", "dtmf"))
    assert custom_crm.last.json() == {"field_name": "Status", "dtmf": "99", "caller_id": CALLER, "did": DID}


@pytest.mark.parametrize("post", [False, True])
async def test_custom_headers_arrive(client, custom_crm, post):
    custom_crm.values = {"Status": "GOLD"}
    headers = [("Authorization", "Bearer abc.def"), ("X-Api-Key", SECRET), ("Content-Type", "text/x-mine")]
    await fetch(client, custom_crm, post=post, headers=headers)
    received = custom_crm.last.headers
    assert received["authorization"] == "Bearer abc.def"
    assert received["x-api-key"] == SECRET
    if post:  # the JSON body keeps its own content type
        assert received["content-type"] == "application/json"


async def test_invalid_header_is_refused_before_sending(client, custom_crm):
    with pytest.raises(ConfigError) as caught:
        await fetch(client, custom_crm, headers=[("X-Bad", "line\r\nInjected: " + SECRET)])
    assert caught.value.problems[0][0] == "custom_headers"
    assert SECRET not in str(caught.value)
    assert custom_crm.requests == []


async def test_http_url_is_refused(client, custom_crm):
    with pytest.raises(ConfigError) as caught:
        await fetch(client, custom_crm, url=custom_crm.url.replace("https://", "http://"))
    assert caught.value.problems == [("custom_url", "must start with https://")]
    assert custom_crm.requests == []


# -- the answer --------------------------------------------------------------

JSON = "application/json"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ('{"value": "GOLD"}', JSON, "GOLD"),
        ('{"value": "GOLD", "Status": "SILVER"}', JSON, "GOLD"),
        ('{"Status": "SILVER", "other": 1}', JSON, "SILVER"),
        ('{"status": "bronze"}', JSON, "bronze"),
        ('{"other": "x"}', JSON, None),
        ('{"value": null}', JSON, None),
        ('{"value": ""}', JSON, ""),
        ('{"value": 50.0}', JSON, "50.0"),
        ('{"value": 1.50}', JSON, "1.50"),
        ('{"value": 7}', JSON, "7"),
        ('{"value": true}', JSON, "true"),
        ('{"value": ["a", 1.0]}', JSON, '["a",1.0]'),
        ('{"value": {"tier": "GOLD"}}', JSON, '{"tier":"GOLD"}'),
        ('"GOLD"', JSON, "GOLD"),
        ("42", JSON, "42"),
        ("12.0", "text/plain", "12.0"),
        ("1e3", JSON, "1e3"),
        ("false", JSON, "false"),
        ("null", JSON, None),
        ("", JSON, None),
        ("  \n", "text/plain", None),
        ("  GOLD customer \n", "text/plain", "GOLD customer"),
        ("GOLD", None, "GOLD"),
        ('["a", "b"]', JSON, '["a", "b"]'),
        ("{not json", "text/html", "{not json"),
    ],
)
async def test_answer_shapes(client, custom_crm, body, content_type, expected):
    custom_crm.respond(200, body, content_type=content_type or "")
    assert await fetch(client, custom_crm) == expected


async def test_answer_per_charset(client, custom_crm):
    custom_crm.respond(200, "Müller".encode("latin-1"), content_type="text/plain; charset=ISO-8859-1")
    assert await fetch(client, custom_crm) == "Müller"


async def test_answer_undeclared_charset_is_utf8_with_replacement(client, custom_crm):
    custom_crm.respond(200, b"\xef\xbb\xbfG\xc3\xbcl \xff!", content_type="text/plain")
    assert await fetch(client, custom_crm) == "Gül \ufffd!"


async def test_malformed_json_labelled_json_is_an_error(client, custom_crm):
    custom_crm.respond(200, '{"value": ', content_type="application/json; charset=utf-8")
    with pytest.raises(UnexpectedResponse) as caught:
        await fetch(client, custom_crm)
    assert caught.value.reason == "bad_json"
    assert caught.value.kind == "custom"


async def test_404_is_the_empty_value(client, custom_crm):
    assert await fetch(client, custom_crm, field="Unknown") is None
    custom_crm.respond(404, "no such record")
    assert await fetch(client, custom_crm) is None


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (500, UnexpectedResponse, "http_500"),
        (503, UnexpectedResponse, "http_503"),
        (401, UnexpectedResponse, "http_401"),
        (400, UnexpectedResponse, "http_400"),
        (429, RateLimited, "http_429"),
        (204, None, None),
    ],
)
async def test_status_codes(client, custom_crm, status, error, reason):
    custom_crm.respond(status, "" if status == 204 else "oops")
    if error is None:
        assert await fetch(client, custom_crm) is None
        return
    with pytest.raises(error) as caught:
        await fetch(client, custom_crm)
    assert caught.value.reason == reason
    assert f"HTTP {status}" in str(caught.value)


async def test_redirect_is_not_followed(client, custom_crm):
    custom_crm.redirect(custom_crm.base_url + "/elsewhere")
    with pytest.raises(UnexpectedResponse) as caught:
        await fetch(client, custom_crm)
    assert caught.value.reason == "http_302"
    assert len(custom_crm.requests) == 1


async def test_slow_answer_times_out(client, custom_crm):
    custom_crm.respond(json={"value": "late"}, delay=5)
    started = time.monotonic()
    with pytest.raises(ConnectorTimeout) as caught:
        await fetch(client, custom_crm, timeout=0.2)
    assert time.monotonic() - started < 2.5  # the 0.2 s timeout, not the 5 s answer
    assert caught.value.reason == "timeout"
    assert isinstance(caught.value, ConnectorError)


async def test_slow_values_mode_times_out_too(client, custom_crm):
    custom_crm.values, custom_crm.delay = {"Status": "GOLD"}, 3
    with pytest.raises(ConnectorTimeout):
        await fetch(client, custom_crm, timeout=0.2)


async def test_untrusted_certificate_is_a_tls_failure(custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    async with make_client(Settings()) as untrusting:
        with pytest.raises(ConnectorUnavailable) as caught:
            await fetch(untrusting, custom_crm)
    assert caught.value.reason == "tls"
    assert "certificate verify failed" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert custom_crm.requests == []


async def test_ca_bundle_from_settings_env_is_trusted(custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    settings = Settings.from_env({"CRMROUTE_CA_BUNDLE": str(custom_crm.ca_path)})
    async with make_client(settings) as http:
        assert await fetch(http, custom_crm) == "GOLD"


async def test_refused_connection(client):
    with socket.socket() as probe, pytest.raises(ConnectorUnavailable) as caught:
        probe.bind(("127.0.0.1", 0))  # bound, never listening: refused, and no parallel test can take the port
        port = probe.getsockname()[1]
        await fetch_custom(
            client,
            url=f"https://127.0.0.1:{port}/lookup",
            post=False,
            headers=[],
            field_name="Status",
            key=LookupKey(CALLER, "caller_id"),
            caller_id=CALLER,
            did=DID,
            timeout=2,
        )
    assert caught.value.reason == "connect"


async def test_streamed_body_over_64_kb_is_too_large(client, custom_crm):
    custom_crm.respond(200, stream=4 * MAX_RESPONSE_BYTES)
    with pytest.raises(UnexpectedResponse) as caught:
        await fetch(client, custom_crm)
    assert caught.value.reason == "too_large"


async def test_declared_body_over_64_kb_is_too_large(client, custom_crm):
    custom_crm.respond(200, b"x" * (MAX_RESPONSE_BYTES + 1))
    with pytest.raises(UnexpectedResponse) as caught:
        await fetch(client, custom_crm)
    assert caught.value.reason == "too_large"


async def test_body_of_exactly_64_kb_is_read(client, custom_crm):
    custom_crm.respond(200, stream=MAX_RESPONSE_BYTES, content_type="text/plain")
    assert await fetch(client, custom_crm) == "x" * MAX_RESPONSE_BYTES


@pytest.mark.parametrize(
    "behaviour",
    [
        {"status": 500, "body": SECRET},
        {"status": 429},
        {"status": 302, "headers": {"location": "https://example.com/?token=" + SECRET}},
        {"status": 200, "stream": 2 * MAX_RESPONSE_BYTES},
        {"status": 200, "body": "{bad", "content_type": "application/json"},
        {"status": 200, "delay": 3},
    ],
)
async def test_error_messages_hold_no_secrets(client, custom_crm, behaviour):
    custom_crm.respond(**behaviour)
    url = custom_crm.url + "?api_key=QUERY-SECRET"
    with pytest.raises(ConnectorError) as caught:
        await fetch(client, custom_crm, url=url, headers=[("X-Api-Key", SECRET)], timeout=0.3)
    text = f"{caught.value} {caught.value!r}"
    assert SECRET not in text
    assert "QUERY-SECRET" not in text
    assert custom_crm.url in text


# -- validators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://crm.example.com/lookup", None),
        ("HTTPS://crm.example.com/lookup?x=1", None),
        ("https://127.0.0.1:8443/", None),
        ("http://crm.example.com/lookup", "must start with https://"),
        ("ftp://crm.example.com/", "must start with https://"),
        ("crm.example.com", "must start with https://"),
        ("", "is required"),
        (None, "is required"),
        ("https://", "must name a host, like https://crm.example.com/lookup"),
        ("https:///path", "must name a host, like https://crm.example.com/lookup"),
        ("https://crm.example.com/a b", "must not contain spaces or control characters"),
        ("https://crm.example.com/\n", "must not contain spaces or control characters"),
    ],
)
def test_validate_custom_url(url, problem):
    assert validate_custom_url(url) == problem


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("Authorization", "Bearer x.y", True),
        ("X-Api-Key", "abc\tdef", True),
        ("X_Custom.Header~1", "", True),
        ("", "v", False),
        ("Bad Name", "v", False),
        ("Bad:Name", "v", False),
        ("Host", "evil.example", False),
        ("content-length", "3", False),
        ("Transfer-Encoding", "chunked", False),
        ("Connection", "close", False),
        ("X-Ok", "a\r\nInjected: 1", False),
        ("X-Ok", "a\nb", False),
        ("X-Ok", "caf\u00e9", False),
        ("X-Ok", "nul\x00", False),
        ("X-Ok", None, False),
    ],
)
def test_validate_header(name, value, ok):
    problem = validate_header(name, value)
    assert (problem is None) is ok
    if problem and value:
        assert value not in problem


# -- the shared client's pieces ----------------------------------------------


def test_safe_url_strips_userinfo_query_and_fragment():
    assert safe_url("https://user:pw@crm.example.com:8443/a/b?token=x#frag") == "https://crm.example.com:8443/a/b"
    assert safe_url(httpx.URL("https://[::1]:8443/p?q=1")) == "https://[::1]:8443/p"


@pytest.mark.parametrize(
    ("exc", "error", "reason"),
    [
        (httpx.ConnectTimeout("t"), ConnectorTimeout, "timeout"),
        (httpx.ReadTimeout("t"), ConnectorTimeout, "timeout"),
        (httpx.WriteTimeout("t"), ConnectorTimeout, "timeout"),
        (httpx.PoolTimeout("t"), ConnectorTimeout, "timeout"),
        (TimeoutError(), ConnectorTimeout, "timeout"),
        (httpx.ConnectError("refused"), ConnectorUnavailable, "connect"),
        (httpx.ReadError("reset"), ConnectorUnavailable, "network"),
        (httpx.RemoteProtocolError("Illegal header value " + SECRET), ConnectorUnavailable, "network"),
        (httpx.DecodingError("bad gzip"), UnexpectedResponse, "bad_encoding"),
    ],
)
def test_map_http_error(exc, error, reason):
    mapped = map_http_error(exc, url="https://u:p@crm.example.com/x?k=v", kind="custom", operation="fetch")
    assert type(mapped) is error
    assert mapped.reason == reason
    assert (mapped.kind, mapped.operation) == ("custom", "fetch")
    assert "https://crm.example.com/x" in str(mapped)
    assert SECRET not in str(mapped) and "k=v" not in str(mapped) and "u:p" not in str(mapped)


async def test_send_capped_chains_the_cause_and_hides_exception_text():
    def explode(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Illegal header value " + SECRET, request=request)

    async with make_client(Settings(), transport=httpx.MockTransport(explode)) as http:
        with pytest.raises(ConnectorUnavailable) as caught:
            await send_capped(http, "GET", "https://crm.example.com/x", timeout=1, kind="custom")
    assert caught.value.reason == "network"
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert SECRET not in str(caught.value)


async def test_send_capped_reads_small_bodies():
    async with make_client(
        Settings(), transport=httpx.MockTransport(lambda r: httpx.Response(201, text="ok"))
    ) as http:
        response = await send_capped(http, "GET", "https://crm.example.com/x", timeout=1)
    assert (response.status_code, response.content, response.text) == (201, b"ok", "ok")
