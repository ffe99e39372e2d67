"""Fixtures for AGI tests: the fake Custom CRM, and a whole routing stack on a real port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from crmroute import rulesfile
from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.router import Router
from crmroute.service import Store, build_router
from tests.conftest import make_settings
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401


@dataclass
class Stack:
    """A running AGI server routing through a real store and the fake Custom CRM."""

    store: Store
    router: Router
    server: AgiServer
    crm: Any

    @property
    def port(self) -> int:
        return self.server.port

    def import_rules(self, data: dict, environ: dict | None = None) -> None:
        parsed = rulesfile.parse(yaml.safe_dump(data), environ=environ or {})
        rulesfile.import_rules(self.store.factory, self.store.box, parsed)
        self.router.load()


def base_rules(url: str) -> dict:
    """Destinations and the rules most tests use; tests edit a copy."""
    return {
        "destinations": [
            {"type": "extension", "number": "100", "name": "Reception", "voicemail": True},
            {"type": "queue", "number": "103", "name": "Gold"},
            {"type": "queue", "number": "104", "name": "Silver"},
            {"type": "ivr", "number": "5", "name": "Main menu"},
            {"type": "recording", "name": "closed-today"},
        ],
        "rules": [
            {
                "name": "VIP",
                "crm_field": "Status",
                "location": "did",
                "crm_source": "custom",
                "custom_url": url,
                "custom_headers": [{"name": "X-Api-Key", "value": "${CRM_KEY}"}],
                "default_destination": "100",
                "deadline_ms": 1000,
                "rows": [
                    {"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
                    {"operator": "=", "value": "SILVER", "destination": "ivr", "option": "5"},
                    {"operator": "empty", "value": "", "destination": "recording", "option": "closed-today"},
                ],
            },
            {
                "name": "Account lookup",
                "crm_field": "Balance",
                "location": "ivr",
                "greeting": "enter-account-number",
                "dtmf_timeout_ms": 3000,
                "dtmf_max_digits": 6,
                "crm_source": "custom",
                "custom_url": url,
                "custom_post": True,
                "default_destination": "100",
                "default_voicemail": "yes",
                "rows": [{"operator": ">", "value": "1000", "destination": "queue", "option": "103"}],
            },
        ],
        "dids": [{"number": "5551000", "rule": "VIP"}, {"number": "_555200X", "rule": "VIP"}],
        "ivrs": [{"number": "7", "rule": "Account lookup"}],
    }


CRM_KEY = "k-secret-header-value"


async def sessions_ended(server: AgiServer, timeout: float = 10.0) -> bool:
    """Wait until the server has finished every session (a busy machine may take a while after the
    socket closed); whether it did within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while server.active_sessions:
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False
    return True


@pytest.fixture
async def stack_factory(data_dir: Path, db_url: str, custom_crm) -> AsyncIterator[Callable[..., Any]]:  # noqa: F811
    """Build a stack with settings overrides: ``await stack_factory(jump_preset="freepbx")``.

    The value cache is off unless asked for (``cache_ttl_s="60"``).
    """
    opened: list[Stack] = []

    async def build(rules: dict | None = None, **env: str) -> Stack:
        env.setdefault("cache_ttl_s", "0")  # most tests change the CRM's answer between calls; cache tests turn it on
        settings = make_settings(data_dir, db_url, ca_bundle=str(custom_crm.ca_path), **env)
        store = Store(settings)
        store.upgrade()
        router = build_router(store)
        handler = CallHandler(router, JumpTable.from_settings(settings))
        server = AgiServer(handler, host="127.0.0.1", port=0, allow=settings.agi_allow, session_timeout=10.0)
        stack = Stack(store, router, server, custom_crm)
        opened.append(stack)
        stack.import_rules(rules if rules is not None else base_rules(custom_crm.url), {"CRM_KEY": CRM_KEY})
        await router.start()
        await server.start()
        return stack

    yield build
    for stack in opened:
        await stack.server.close()
        await stack.router.close()
        await stack.router.http.aclose()
        stack.store.close()


@pytest.fixture
async def stack(stack_factory) -> Stack:
    return await stack_factory()
