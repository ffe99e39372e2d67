"""The errors crmroute raises.

    CrmrouteError
      ConfigError       invalid setting or rule; names the field
      ConnectorError    .kind .operation; text safe to show an admin
        AuthError RateLimited ConnectorTimeout ConnectorUnavailable
        UnexpectedResponse
      AgiError          AgiHangup AgiProtocolError
      StoreError        NotFound Conflict
      LicenseError

Failures of the outside world (a CRM, Asterisk, the database) are kept apart
from misuse, which stays ``TypeError``/``RuntimeError``. In a call a
``ConnectorError`` gives status ``fallback``; anything else ``error``.
"""

from __future__ import annotations


class CrmrouteError(Exception):
    """Base of every error crmroute raises on purpose."""


class ConfigError(CrmrouteError):
    """Invalid setting, rule or file. ``problems`` lists (field, message) pairs; ``source`` names the file."""

    def __init__(self, problems: list[tuple[str, str]] | str, field: str = "", *, source: str = "") -> None:
        if isinstance(problems, str):
            problems = [(field, problems)]
        self.problems = problems
        self.source = source
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))


class ConnectorError(CrmrouteError):
    """A CRM failed. ``reason`` is a short code kept in the decision log."""

    reason = "crm_error"

    def __init__(self, message: str, *, kind: str = "", operation: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.operation = operation
        if reason:
            self.reason = reason


class AuthError(ConnectorError):
    reason = "auth"


class RateLimited(ConnectorError):
    reason = "rate_limited"


class ConnectorTimeout(ConnectorError):
    reason = "timeout"


class ConnectorUnavailable(ConnectorError):
    reason = "unavailable"


class UnexpectedResponse(ConnectorError):
    reason = "bad_response"


class AgiError(CrmrouteError):
    """The AGI conversation with Asterisk went wrong."""


class AgiHangup(AgiError):
    """The channel hung up (``HANGUP`` line or a ``511`` reply)."""


class AgiProtocolError(AgiError):
    """Asterisk (or whatever connected) said something that is not AGI."""


class StoreError(CrmrouteError):
    """The store refused an operation."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class LicenseError(CrmrouteError):
    """A license file is malformed, badly signed, or for another key."""
