"""A connector with a rate budget: every request takes a token and a slot; a 429 pauses the integration."""

from __future__ import annotations

import time

import pytest

from crmroute.connectors._http import make_client
from crmroute.connectors.base import Connector, ConnectorSettings, setting_specs
from crmroute.deadline import Deadline
from crmroute.errors import RateLimited
from crmroute.resilience.budget import Budget
from crmroute.settings import Settings


class Plain(Connector):
    kind = "plain"
    title = "Plain CRM"

    def __init__(self, url: str, http) -> None:
        super().__init__(ConnectorSettings(), http)
        self.url = url

    async def get(self, deadline: Deadline):
        return await self.request("GET", self.url, deadline=deadline, operation="lookup", auth=False)


@pytest.fixture
async def http(custom_crm):
    client = make_client(Settings(ca_bundle=custom_crm.ca_path))
    yield client
    await client.aclose()


def test_common_settings_are_optional_and_described():
    specs = {s.name: s for s in setting_specs(ConnectorSettings)}
    for name, kind in (("cache_ttl_s", "integer"), ("requests_per_second", "number"), ("max_concurrency", "integer")):
        assert (specs[name].type, specs[name].required, specs[name].default) == (kind, False, None)
        assert specs[name].help
    assert ConnectorSettings.model_validate({"requests_per_second": "2.5"}).requests_per_second == 2.5
    with pytest.raises(ValueError):
        ConnectorSettings.model_validate({"requests_per_second": 0})


async def test_without_a_budget_nothing_changes(custom_crm, http):
    custom_crm.respond(200, json={"ok": True})
    connector = Plain(custom_crm.url, http)
    assert connector.budget is None
    for _ in range(3):
        assert (await connector.get(Deadline.after_ms(2000))).status_code == 200


async def test_requests_take_tokens_and_refuse_what_would_miss_the_deadline(custom_crm, http):
    custom_crm.respond(200, json={"ok": True})
    connector = Plain(custom_crm.url, http)
    connector.budget = Budget("integration 'Plain'", rate=0.1, burst=2, max_concurrency=5, kind="plain")
    await connector.get(Deadline.after_ms(1000))
    await connector.get(Deadline.after_ms(1000))
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await connector.get(Deadline.after_ms(2000))  # the next token is ~10 s away, however slow the first two
    assert caught.value.reason == "rate_budget"
    assert time.monotonic() - started < 1.0  # refused at once, not after waiting out the deadline
    assert len(custom_crm.requests) == 2


async def test_a_429_pauses_every_call_of_the_integration(custom_crm, http):
    custom_crm.respond(429, json={"message": "slow down"}, headers={"Retry-After": "30"}, once=True)
    custom_crm.respond(200, json={"ok": True})
    budget = Budget("integration 'Plain'", rate=100, max_concurrency=5, kind="plain")
    first, second = Plain(custom_crm.url, http), Plain(custom_crm.url, http)  # e.g. two rules' credentials
    first.budget = second.budget = budget
    with pytest.raises(RateLimited) as caught:
        await first.get(Deadline.after_ms(1000))
    assert caught.value.reason == "rate_limited"
    assert budget.bucket.paused_for() > 29
    with pytest.raises(RateLimited) as caught:
        await second.get(Deadline.after_ms(1000))  # not sent: the integration is paused
    assert caught.value.reason == "rate_budget"
    assert len(custom_crm.requests) == 1


async def test_a_short_retry_after_is_waited_out_through_the_budget(custom_crm, http):
    custom_crm.respond(429, json={"message": "slow down"}, headers={"Retry-After": "1"}, once=True)
    custom_crm.respond(200, json={"ok": True})
    connector = Plain(custom_crm.url, http)
    connector.budget = Budget("integration 'Plain'", rate=100, max_concurrency=5, kind="plain")
    started = time.monotonic()
    response = await connector.get(Deadline.after_ms(3000))
    assert response.status_code == 200 and len(custom_crm.requests) == 2
    assert time.monotonic() - started >= 0.9
