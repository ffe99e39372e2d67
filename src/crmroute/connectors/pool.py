"""One live connector per integration (and per rule-level credentials), rebuilt when settings change.

Connectors keep their tokens and share the one HTTP client, so a call never
pays for a login the previous call already made. With a ``CredentialStore``
(the router's, the Test action's, the CLI's) the tokens, sessions and rotated
refresh tokens are also shared with every other process: see
``store/credentials.py``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
from pydantic import ValidationError

from crmroute.connectors import registry
from crmroute.connectors.base import Connector
from crmroute.errors import ConnectorUnavailable
from crmroute.schemas import problems
from crmroute.store.credentials import CredentialStore, SharedCredentials, origins
from crmroute.store.secrets import SecretBox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSpec:
    """What the pool needs to build a connector: an integration's stored settings."""

    integration_id: int
    name: str
    kind: str
    enabled: bool
    settings: dict
    secrets_enc: str = field(repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    log_level: str = "info"  # the integration's own: "debug" logs each request (no secrets)

    @cached_property  # asked on every call of the integration: hashed once per spec
    def fingerprint(self) -> str:
        text = f"{self.kind}|{sorted(self.settings.items())}|{self.secrets_enc}|{self.enabled}|{self.password}|{self.log_level}"
        return hashlib.sha256(text.encode()).hexdigest()


class ConnectorPool:
    def __init__(
        self, http: httpx.AsyncClient, box: SecretBox, region: str = "US", credentials: CredentialStore | None = None,
        *, data_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.http = http
        self.data_dir = data_dir  # a relative file setting (the directory kind's path) is read from here
        self.box = box
        self.region = region
        self.credentials = credentials  # None: tokens in this process's memory only
        self._live: dict[tuple[int, str], tuple[str, Connector]] = {}

    def get(self, spec: ConnectorSpec) -> Connector:
        """The live connector for ``spec``; ``ConnectorUnavailable`` when it cannot be built."""
        if not spec.enabled:
            raise ConnectorUnavailable(f"integration {spec.name!r} is disabled", kind=spec.kind,
                                       operation="connect", reason="disabled")  # fmt: skip
        key = (spec.integration_id, spec.username)
        live = self._live.get(key)
        if live is not None and live[0] == spec.fingerprint:
            return live[1]
        connector = self.build(spec)
        self._live[key] = (spec.fingerprint, connector)
        return connector

    def build(self, spec: ConnectorSpec, *, for_test: bool = False) -> Connector:
        """A new connector; ``for_test``: the Test action's, which tries credentials recorded as refused once more."""
        cls = registry().get(spec.kind)
        if cls is None:
            raise ConnectorUnavailable(f"no connector for CRM kind {spec.kind!r}", kind=spec.kind,
                                       operation="connect", reason="no_connector")  # fmt: skip
        values = dict(spec.settings) | self.box.decrypt_json(spec.secrets_enc, {})
        try:
            settings = cls.Settings.model_validate(values)
        except ValidationError as exc:
            found = "; ".join(f"{f}: {m}" for f, m in problems(exc))
            raise ConnectorUnavailable(f"integration {spec.name!r} is misconfigured: {found}", kind=spec.kind,
                                       operation="connect", reason="misconfigured") from None  # fmt: skip
        connector = cls(settings, self.http, region=self.region, username=spec.username, password=spec.password)
        connector.log_requests = spec.log_level == "debug"
        connector.data_dir = self.data_dir
        if self.credentials is not None:
            origin, base = origins(spec.kind, settings, spec.username, spec.password)
            shared = SharedCredentials(self.credentials, spec.integration_id, spec.username, origin, base, spec.name)
            shared.retry_refused = for_test
            connector.credentials = shared
        return connector

    async def aclose(self) -> None:
        for _, connector in self._live.values():
            await connector.aclose()
        self._live.clear()
