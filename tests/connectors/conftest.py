"""Fixtures for connector tests; the fake servers live in their own modules."""

from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401
from tests.loopback import one_tls_context  # noqa: F401
