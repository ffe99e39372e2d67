"""Fixtures for resilience tests: the loopback Custom CRM and the AGI stack of tests/agi."""

from tests.agi.conftest import stack, stack_factory  # noqa: F401
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401
