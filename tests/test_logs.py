"""Logging: JSON lines on request, each call's lines carrying its unique id."""

from __future__ import annotations

import json
import logging

from crmroute import logs
from crmroute.settings import Settings


def test_json_lines_carry_the_call_id(capsys):
    logs.configure(Settings.from_env({"CRMROUTE_LOG_FORMAT": "json", "CRMROUTE_LOG_LEVEL": "debug"}))
    try:
        logging.getLogger("crmroute.agi.server").info("call from %s", "+1555", extra={"call_id": "1795657573.1"})
        logging.getLogger("crmroute.test").warning("no call here")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "call from +1555" and lines[0]["call_id"] == "1795657573.1"
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "crmroute.agi.server" and lines[0]["time"]
    assert "call_id" not in lines[1] and lines[1]["level"] == "warning"


def test_text_lines_name_the_call(capsys):
    logs.configure(Settings.from_env({}))
    try:
        logging.getLogger("crmroute.x").info("routed", extra={"call_id": "abc.1"})
        logging.getLogger("httpx").info("HTTP Request: GET https://crm/?token=secret")  # quietened
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "routed [call abc.1]" in err and "secret" not in err


async def test_agi_session_lines_carry_the_call_id(caplog):
    from tests.agi.fakeasterisk import call_agi, running_server

    caplog.set_level(logging.INFO)

    async def handler(channel):
        raise RuntimeError("boom")

    async with running_server(handler) as server:
        await call_agi(server.port, "did", env={"uniqueid": "1795657573.42"})
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert failures and all(getattr(r, "call_id", "") == "1795657573.42" for r in failures)
