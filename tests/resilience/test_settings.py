"""The cache, breaker and Custom CRM budget settings: defaults, values, errors naming the variable."""

from __future__ import annotations

import pytest

from crmroute.errors import ConfigError
from crmroute.settings import Settings


def test_defaults():
    settings = Settings.from_env({})
    assert (settings.cache_ttl_s, settings.cache_negative_ttl_s, settings.cache_max_entries) == (60, 10, 100_000)
    assert (settings.breaker_failures, settings.breaker_cooldown_s) == (5, 30)
    assert (settings.custom_requests_per_second, settings.custom_max_concurrency) == (50.0, 50)


def test_values_are_read():
    settings = Settings.from_env({
        "CRMROUTE_CACHE_TTL_S": "0", "CRMROUTE_CACHE_NEGATIVE_TTL_S": "3", "CRMROUTE_CACHE_MAX_ENTRIES": "500",
        "CRMROUTE_BREAKER_FAILURES": "0", "CRMROUTE_BREAKER_COOLDOWN_S": "5",
        "CRMROUTE_CUSTOM_REQUESTS_PER_SECOND": "2.5", "CRMROUTE_CUSTOM_MAX_CONCURRENCY": "4",
    })  # fmt: skip
    assert (settings.cache_ttl_s, settings.cache_negative_ttl_s, settings.cache_max_entries) == (0, 3, 500)
    assert (settings.breaker_failures, settings.breaker_cooldown_s) == (0, 5)
    assert (settings.custom_requests_per_second, settings.custom_max_concurrency) == (2.5, 4)


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({
            "CRMROUTE_CACHE_TTL_S": "-1", "CRMROUTE_CACHE_NEGATIVE_TTL_S": "ten", "CRMROUTE_CACHE_MAX_ENTRIES": "1e9",
            "CRMROUTE_BREAKER_FAILURES": "x", "CRMROUTE_BREAKER_COOLDOWN_S": "0",
            "CRMROUTE_CUSTOM_REQUESTS_PER_SECOND": "nan", "CRMROUTE_CUSTOM_MAX_CONCURRENCY": "0",
        })  # fmt: skip
    assert [field for field, _ in caught.value.problems] == [
        "CRMROUTE_CACHE_TTL_S", "CRMROUTE_CACHE_NEGATIVE_TTL_S", "CRMROUTE_CACHE_MAX_ENTRIES",
        "CRMROUTE_BREAKER_FAILURES", "CRMROUTE_BREAKER_COOLDOWN_S", "CRMROUTE_CUSTOM_REQUESTS_PER_SECOND",
        "CRMROUTE_CUSTOM_MAX_CONCURRENCY",
    ]  # fmt: skip
    assert "CRMROUTE_CACHE_TTL_S: must be between 0 and 86400" in str(caught.value)
