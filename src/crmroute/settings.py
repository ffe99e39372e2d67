"""Settings, read once from ``CRMROUTE_*`` environment variables.

``Settings.from_env()`` is called by the CLI and the result passed down; no
module reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crmroute.errors import ConfigError

DEFAULT_HTTP_PORT = 8080
DEFAULT_AGI_PORT = 4573
DEFAULT_DEADLINE_MS = 2500
DEFAULT_RETENTION_DAYS = 90
JUMP_MODES = ("goto", "variables")
JUMP_PRESETS = ("asterisk", "freepbx")
JUMP_TYPES = ("queue", "ivr", "recording", "extension", "voicemail")
LOOPBACK = "127.0.0.0/8,::1/128"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    agi_host: str = "127.0.0.1"
    agi_port: int = DEFAULT_AGI_PORT
    agi_allow: tuple[IpNetwork, ...] = field(default_factory=lambda: parse_networks(LOOPBACK))
    ca_bundle: Path | None = None
    license_key: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    jump_mode: str = "goto"
    jump_preset: str = "asterisk"
    jump_overrides: Mapping[str, str] = field(default_factory=dict)
    default_region: str = "US"
    deadline_ms: int = DEFAULT_DEADLINE_MS
    secret_key: str = ""
    decision_retention_days: int = DEFAULT_RETENTION_DAYS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        problems: list[tuple[str, str]] = []

        def get(name: str, default: str = "") -> str:
            return env.get(f"CRMROUTE_{name}", default).strip()

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = get(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                problems.append((f"CRMROUTE_{name}", f"must be a whole number, got {raw!r}"))
                return default
            if not low <= value <= high:
                problems.append((f"CRMROUTE_{name}", f"must be between {low} and {high}"))
            return value

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = get(name, default).lower()
            if value not in allowed:
                problems.append((f"CRMROUTE_{name}", f"must be one of {', '.join(allowed)}"))
                return default
            return value

        data_dir = Path(get("DATA_DIR", "data"))
        try:
            allow = parse_networks(get("AGI_ALLOW", LOOPBACK))
        except ValueError as exc:
            problems.append(("CRMROUTE_AGI_ALLOW", str(exc)))
            allow = parse_networks(LOOPBACK)
        ca_bundle = Path(get("CA_BUNDLE")) if get("CA_BUNDLE") else None
        if ca_bundle is not None and not ca_bundle.is_file():
            problems.append(("CRMROUTE_CA_BUNDLE", f"no such file: {ca_bundle}"))
        log_level = get("LOG_LEVEL", "info").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(("CRMROUTE_LOG_LEVEL", "must be debug, info, warning, error or critical"))
            log_level = "INFO"
        overrides = {t: get(f"JUMP_{t.upper()}") for t in JUMP_TYPES if get(f"JUMP_{t.upper()}")}
        for t, template in overrides.items():
            if template.count(",") != 2:
                problems.append((f"CRMROUTE_JUMP_{t.upper()}", "must be context,extension,priority"))
        region = get("DEFAULT_REGION", "US").upper()
        if len(region) != 2 or not region.isalpha():
            problems.append(("CRMROUTE_DEFAULT_REGION", "must be a two-letter country code like US"))

        settings = cls(
            data_dir=data_dir,
            database_url=get("DATABASE_URL"),
            http_host=get("HTTP_HOST", "127.0.0.1"),
            http_port=integer("HTTP_PORT", DEFAULT_HTTP_PORT, 0, 65535),
            agi_host=get("AGI_HOST", "127.0.0.1"),
            agi_port=integer("AGI_PORT", DEFAULT_AGI_PORT, 0, 65535),
            agi_allow=allow,
            ca_bundle=ca_bundle,
            license_key=get("LICENSE_KEY"),
            log_level=log_level,
            log_format=choice("LOG_FORMAT", "text", ("text", "json")),
            jump_mode=choice("JUMP_MODE", "goto", JUMP_MODES),
            jump_preset=choice("JUMP_PRESET", "asterisk", JUMP_PRESETS),
            jump_overrides=overrides,
            default_region=region,
            deadline_ms=integer("DEADLINE_MS", DEFAULT_DEADLINE_MS, 50, 60_000),
            secret_key=get("SECRET_KEY"),
            decision_retention_days=integer("DECISION_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0, 36500),
        )
        if problems:
            raise ConfigError(problems)
        return settings

    @property
    def db_url(self) -> str:
        """The database URL in force: the configured one, else SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crmroute.db').resolve()}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` -> networks; a bare address is a /32 (or /128)."""
    networks = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    if not networks:
        raise ValueError("at least one address or network is required")
    return tuple(networks)
