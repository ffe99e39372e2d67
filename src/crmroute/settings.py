"""Settings, read once from ``CRMROUTE_*`` environment variables.

``Settings.from_env()`` is called by the CLI and the result passed down; no
module reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crmroute.errors import ConfigError

DEFAULT_HTTP_PORT = 8080
DEFAULT_AGI_PORT = 4573
DEFAULT_DEADLINE_MS = 2500
DEFAULT_RETENTION_DAYS = 90
DEFAULT_CACHE_TTL_S = 60  # seconds a CRM value is reused; 0 disables the cache
DEFAULT_CACHE_NEGATIVE_TTL_S = 10  # seconds a "no such record" answer is reused
DEFAULT_CACHE_MAX_ENTRIES = 100_000  # least recently used values are dropped past this
DEFAULT_BREAKER_FAILURES = 5  # consecutive CRM failures that open a source's circuit; 0: never
DEFAULT_BREAKER_COOLDOWN_S = 30  # seconds an open circuit waits before letting one probe through
DEFAULT_CUSTOM_REQUESTS_PER_SECOND = 50.0  # budget of each Custom CRM host
DEFAULT_CUSTOM_MAX_CONCURRENCY = 50  # requests in flight to each Custom CRM host
JUMP_MODES = ("goto", "variables")
JUMP_PRESETS = ("asterisk", "freepbx")
JUMP_TYPES = ("queue", "ivr", "recording", "extension", "voicemail", "owner", "last_agent")  # the last two: extension
LOOPBACK = "127.0.0.0/8,::1/128"
DEFAULT_AMI_PORT = 5038
DEFAULT_CALLLOG_MAX_ATTEMPTS = 8
CALLLOG_PRESETS = ("asterisk", "freepbx")  # contexts and number patterns: crmroute.calllog.calls.PRESETS

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PBX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class AmiSource:
    """One Asterisk whose AMI events the call logger reads; its calls are tagged with ``name``."""

    name: str
    host: str
    port: int = DEFAULT_AMI_PORT


DEFAULT_SOUNDS_DIR = "/var/lib/asterisk/sounds/en"


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
    # The call logger (AMI): off unless ami_host and ami_username are set.
    ami_host: str = ""
    ami_port: int = DEFAULT_AMI_PORT
    ami_username: str = ""
    ami_secret: str = field(default="", repr=False)
    ami_sources: tuple[AmiSource, ...] = ()  # CRMROUTE_AMI_SOURCES; empty: the one CRMROUTE_AMI_HOST, if any
    calllog_preset: str = "asterisk"
    calllog_inbound_contexts: tuple[str, ...] = ()  # empty: the preset's
    calllog_outbound_contexts: tuple[str, ...] = ()  # empty: the preset's
    calllog_outbound_number: str = ""  # a regular expression; empty: the preset's
    calllog_max_attempts: int = DEFAULT_CALLLOG_MAX_ATTEMPTS
    jump_mode: str = "goto"
    jump_preset: str = "asterisk"
    jump_overrides: Mapping[str, str] = field(default_factory=dict)
    default_region: str = "US"
    deadline_ms: int = DEFAULT_DEADLINE_MS
    secret_key: str = ""
    decision_retention_days: int = DEFAULT_RETENTION_DAYS
    cache_ttl_s: int = DEFAULT_CACHE_TTL_S
    cache_negative_ttl_s: int = DEFAULT_CACHE_NEGATIVE_TTL_S
    cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_s: int = DEFAULT_BREAKER_COOLDOWN_S
    custom_requests_per_second: float = DEFAULT_CUSTOM_REQUESTS_PER_SECOND
    custom_max_concurrency: int = DEFAULT_CUSTOM_MAX_CONCURRENCY
    trusted_proxies: tuple[IpNetwork, ...] = ()  # whose X-Forwarded-For/-Proto are believed; none by default
    metrics_token: str = field(default="", repr=False)  # when set, /metrics needs it as a bearer token
    sounds_dir: Path = Path(DEFAULT_SOUNDS_DIR)  # Asterisk's sounds of one language: the greeting's suggestions
    redis_url: str = field(default="", repr=False)  # shared state of several nodes; empty: this node alone
    node_id: str = ""  # empty: host name and AGI port (``node``)

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

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = get(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                problems.append((f"CRMROUTE_{name}", f"must be a number, got {raw!r}"))
                return default
            if not low <= value <= high:  # NaN fails this too
                problems.append((f"CRMROUTE_{name}", f"must be between {low:g} and {high:g}"))
                return default
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
        trusted_proxies: tuple[IpNetwork, ...] = ()
        if get("TRUSTED_PROXIES"):
            try:
                trusted_proxies = parse_networks(get("TRUSTED_PROXIES"))
            except ValueError as exc:
                problems.append(("CRMROUTE_TRUSTED_PROXIES", str(exc)))
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
        ami_host, ami_username = get("AMI_HOST"), get("AMI_USERNAME")
        if ami_host and not ami_username:
            problems.append(("CRMROUTE_AMI_USERNAME", "required when CRMROUTE_AMI_HOST is set"))
        elif ami_username and not ami_host and not get("AMI_SOURCES"):
            problems.append(("CRMROUTE_AMI_HOST", "required when CRMROUTE_AMI_USERNAME is set (or AMI_SOURCES)"))
        ami_sources: tuple[AmiSource, ...] = ()
        if get("AMI_SOURCES"):
            try:
                ami_sources = parse_ami_sources(get("AMI_SOURCES"))
            except ValueError as exc:
                problems.append(("CRMROUTE_AMI_SOURCES", str(exc)))
            if ami_host:
                problems.append(("CRMROUTE_AMI_SOURCES", "set either CRMROUTE_AMI_SOURCES or CRMROUTE_AMI_HOST"))
            if not ami_username:
                problems.append(("CRMROUTE_AMI_USERNAME", "required when CRMROUTE_AMI_SOURCES is set"))
        redis_url = get("REDIS_URL")
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append(("CRMROUTE_REDIS_URL", "must be a redis://, rediss:// or unix:// URL"))
        elif redis_url and not get("DATABASE_URL").startswith("postgresql"):
            problems.append(("CRMROUTE_REDIS_URL", "several nodes share one database: set CRMROUTE_DATABASE_URL "
                             "to a postgresql:// URL too"))  # fmt: skip
        node_id = get("NODE_ID")
        if len(node_id) > 64 or not re.fullmatch(r"[A-Za-z0-9._:@-]*", node_id):
            problems.append(("CRMROUTE_NODE_ID", "at most 64 letters, digits and . _ : @ -"))
        outbound_number = get("CALLLOG_OUTBOUND_NUMBER")
        try:
            re.compile(outbound_number)
        except re.error as exc:
            problems.append(("CRMROUTE_CALLLOG_OUTBOUND_NUMBER", f"not a regular expression: {exc}"))

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
            ami_host=ami_host,
            ami_port=integer("AMI_PORT", DEFAULT_AMI_PORT, 1, 65535),
            ami_username=ami_username,
            ami_secret=get("AMI_SECRET"),
            ami_sources=ami_sources,
            calllog_preset=choice("CALLLOG_PRESET", "asterisk", CALLLOG_PRESETS),
            calllog_inbound_contexts=names(get("CALLLOG_INBOUND_CONTEXTS")),
            calllog_outbound_contexts=names(get("CALLLOG_OUTBOUND_CONTEXTS")),
            calllog_outbound_number=outbound_number,
            calllog_max_attempts=integer("CALLLOG_MAX_ATTEMPTS", DEFAULT_CALLLOG_MAX_ATTEMPTS, 1, 1000),
            jump_mode=choice("JUMP_MODE", "goto", JUMP_MODES),
            jump_preset=choice("JUMP_PRESET", "asterisk", JUMP_PRESETS),
            jump_overrides=overrides,
            default_region=region,
            deadline_ms=integer("DEADLINE_MS", DEFAULT_DEADLINE_MS, 50, 60_000),
            secret_key=get("SECRET_KEY"),
            decision_retention_days=integer("DECISION_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0, 36500),
            cache_ttl_s=integer("CACHE_TTL_S", DEFAULT_CACHE_TTL_S, 0, 86_400),
            cache_negative_ttl_s=integer("CACHE_NEGATIVE_TTL_S", DEFAULT_CACHE_NEGATIVE_TTL_S, 0, 86_400),
            cache_max_entries=integer("CACHE_MAX_ENTRIES", DEFAULT_CACHE_MAX_ENTRIES, 0, 10_000_000),
            breaker_failures=integer("BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES, 0, 10_000),
            breaker_cooldown_s=integer("BREAKER_COOLDOWN_S", DEFAULT_BREAKER_COOLDOWN_S, 1, 86_400),
            custom_requests_per_second=number("CUSTOM_REQUESTS_PER_SECOND", DEFAULT_CUSTOM_REQUESTS_PER_SECOND,
                                              0.01, 100_000),
            custom_max_concurrency=integer("CUSTOM_MAX_CONCURRENCY", DEFAULT_CUSTOM_MAX_CONCURRENCY, 1, 100_000),
            trusted_proxies=trusted_proxies,
            metrics_token=get("METRICS_TOKEN"),
            node_id=node_id,
            sounds_dir=Path(get("SOUNDS_DIR", DEFAULT_SOUNDS_DIR)),
            redis_url=redis_url,
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

    @property
    def node(self) -> str:
        """This node's name in logs, /healthz, /metrics and the decision log."""
        return self.node_id or f"{socket.gethostname()}:{self.agi_port}"[:64]

    @property
    def clustered(self) -> bool:
        """Several nodes share state (Redis) and the database (PostgreSQL)."""
        return bool(self.redis_url)

    @property
    def ami_enabled(self) -> bool:
        """Whether the call logger runs: an AMI host (or sources) and user are configured."""
        return bool((self.ami_host or self.ami_sources) and self.ami_username)

    @property
    def ami_list(self) -> tuple[AmiSource, ...]:
        """The AMI sources in force: CRMROUTE_AMI_SOURCES, else the one CRMROUTE_AMI_HOST named ``default``."""
        if self.ami_sources:
            return self.ami_sources
        return (AmiSource("default", self.ami_host, self.ami_port),) if self.ami_host else ()

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


def names(text: str) -> tuple[str, ...]:
    """``"from-trunk, from-pstn*"`` -> ``("from-trunk", "from-pstn*")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_ami_sources(text: str) -> tuple[AmiSource, ...]:
    """``"pbx1=10.0.0.11:5038, pbx2=10.0.0.12"`` -> sources (port 5038 when not given)."""
    sources: list[AmiSource] = []
    for part in names(text):
        name, sep, address = part.partition("=")
        name, address = name.strip(), address.strip()
        if not sep or not address:
            raise ValueError(f"{part!r} is not NAME=HOST[:PORT]")
        if not PBX_NAME.fullmatch(name):
            raise ValueError(f"{name!r}: a PBX name is 1-32 letters, digits, '.', '_' or '-'")
        if any(s.name == name for s in sources):
            raise ValueError(f"{name!r} is named twice")
        host, port = address, DEFAULT_AMI_PORT
        if address.startswith("["):  # [IPv6]:port
            host, _, rest = address[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif address.count(":") == 1:
            host, _, port_text = address.partition(":")
        else:
            port_text = ""
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"{part!r}: the port must be a number from 1 to 65535")
            port = int(port_text)
        sources.append(AmiSource(name, host, port))
    if not sources:
        raise ValueError("at least one NAME=HOST[:PORT] is required")
    return tuple(sources)


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
