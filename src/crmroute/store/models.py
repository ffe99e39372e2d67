"""The stored rows. One class per table; secrets are kept in ``*_enc`` columns."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from crmroute.names import name_key


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Meta(Base):
    """Key/value facts about the store; ``config_version`` bumps on every config change."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class Destination(Base):
    """An extension, queue, IVR or recording that rules may send calls to."""

    __tablename__ = "destinations"
    __table_args__ = (UniqueConstraint("type", "ref", name="uq_destinations_type_ref"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    # The number for extensions, queues and IVRs; the sound name for recordings.
    ref: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), default="")
    voicemail: Mapped[bool] = mapped_column(Boolean, default=False)


class Integration(Base):
    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("name_key", name="uq_integrations_name_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    name_key: Mapped[str] = mapped_column(Text)  # names.name_key(name), set with the name: unique
    kind: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets_enc: Mapped[str] = mapped_column(Text, default="")  # encrypted JSON object
    log_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Read-only views of what points here (the deletion policy refuses to break them).
    rules: Mapped[list[Rule]] = relationship(viewonly=True, order_by="Rule.name")

    @validates("name")
    def _keyed(self, _key: str, name: str) -> str:
        self.name_key = name_key(name)
        return name


class Rule(Base):
    __tablename__ = "rules"
    __table_args__ = (UniqueConstraint("name_key", name="uq_rules_name_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    name_key: Mapped[str] = mapped_column(Text)  # names.name_key(name), set with the name: unique
    crm_field: Mapped[str] = mapped_column(String(255))
    location: Mapped[str] = mapped_column(String(8))
    greeting: Mapped[str] = mapped_column(String(255), default="")
    dtmf_timeout_ms: Mapped[int] = mapped_column(Integer, default=5000)
    dtmf_max_digits: Mapped[int] = mapped_column(Integer, default=10)
    crm_source: Mapped[str] = mapped_column(String(16))
    integration_id: Mapped[int | None] = mapped_column(ForeignKey("integrations.id", ondelete="RESTRICT"))
    crm_module: Mapped[str] = mapped_column(String(16), default="")
    crm_username: Mapped[str] = mapped_column(String(255), default="")
    crm_password_enc: Mapped[str] = mapped_column(Text, default="")
    custom_url: Mapped[str] = mapped_column(Text, default="")
    custom_post: Mapped[bool] = mapped_column(Boolean, default=False)
    custom_headers_enc: Mapped[str] = mapped_column(Text, default="")  # encrypted JSON list
    default_destination: Mapped[str] = mapped_column(String(64))
    default_voicemail: Mapped[str] = mapped_column(String(8), default="not_set")
    deadline_ms: Mapped[int | None] = mapped_column(Integer)
    cache_ttl_s: Mapped[int | None] = mapped_column(Integer)
    keep_company: Mapped[str] = mapped_column(String(8), default="none")
    moh_class: Mapped[str] = mapped_column(String(64), default="default")
    default_agent: Mapped[str] = mapped_column(String(16), default="")  # "", owner or last_agent
    check_availability: Mapped[bool] = mapped_column(Boolean, default=True)
    last_agent_days: Mapped[int] = mapped_column(Integer, default=30)
    last_agent_outbound: Mapped[bool] = mapped_column(Boolean, default=False)
    last_agent_min_talk_s: Mapped[int] = mapped_column(Integer, default=5)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    integration: Mapped[Integration | None] = relationship()
    rows: Mapped[list[RuleRow]] = relationship(
        back_populates="rule", order_by="RuleRow.position", cascade="all, delete-orphan"
    )
    dids: Mapped[list[Did]] = relationship(viewonly=True, order_by="Did.number")
    ivrs: Mapped[list[Ivr]] = relationship(viewonly=True, order_by="Ivr.number")

    @validates("name")
    def _keyed(self, _key: str, name: str) -> str:
        self.name_key = name_key(name)
        return name


class RuleRow(Base):
    __tablename__ = "rule_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text, default="")
    destination: Mapped[str] = mapped_column(String(16))
    option: Mapped[str] = mapped_column(String(128))  # "" for owner / last_agent
    conditions: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")  # ConditionIn.to_data() each

    rule: Mapped[Rule] = relationship(back_populates="rows")


class Schedule(Base):
    """Weekly opening hours with holidays in a time zone; rows' conditions name it."""

    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    timezone: Mapped[str] = mapped_column(String(64))
    hours: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the written form, days grouped
    holidays: Mapped[list[Any]] = mapped_column(default=list)  # "2026-12-25" or {date, name}
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Did(Base):
    __tablename__ = "dids"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)  # a number or an Asterisk pattern (_X.)
    name: Mapped[str] = mapped_column(String(128), default="")
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="RESTRICT"))
    rule: Mapped[Rule] = relationship()


class Ivr(Base):
    __tablename__ = "ivrs"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="RESTRICT"))
    rule: Mapped[Rule] = relationship()


class DecisionRecord(Base):
    """One routed call (or dry run): the decision log of SPEC 8."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(8), default="agi")  # agi or dry_run
    call_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    channel: Mapped[str] = mapped_column(String(128), default="")
    caller: Mapped[str] = mapped_column(String(64), default="", index=True)
    did: Mapped[str] = mapped_column(String(64), default="")
    ivr: Mapped[str] = mapped_column(String(64), default="")
    rule: Mapped[str] = mapped_column(String(128), default="", index=True)
    lookup_key: Mapped[str] = mapped_column(String(128), default="")
    key_source: Mapped[str] = mapped_column(String(16), default="")
    value: Mapped[str] = mapped_column(Text, default="")
    record_module: Mapped[str] = mapped_column(String(64), default="")
    record_id: Mapped[str] = mapped_column(String(128), default="")
    row: Mapped[int | None] = mapped_column(Integer)
    dest_type: Mapped[str] = mapped_column(String(16), default="")
    dest: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    crm_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)  # the value came from the value cache
    node: Mapped[str] = mapped_column(String(64), default="")  # CRMROUTE_NODE_ID of the node that routed it
    trace: Mapped[list[Any]] = mapped_column(default=list)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)  # sha256 hex of the token
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[User] = relationship()


class License(Base):
    """The installed license file (at most one row is in force: the newest)."""

    __tablename__ = "licenses"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    installed_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A signed-in browser: the cookie holds the token, the table its hash."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    user: Mapped[User] = relationship()


class CallLogCall(Base):
    """A finished call (from AMI events) in the call logger's outbox; one per Asterisk ``Linkedid``."""

    __tablename__ = "calllog_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    linked_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime] = mapped_column()
    direction: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    external_number: Mapped[str] = mapped_column(String(64), default="")
    pbx: Mapped[str] = mapped_column(String(32), default="", server_default="")  # the AMI source's name
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # crmroute.calllog.calls.Call.to_dict()
    decision: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the routing decision joined, if any


class CallDelivery(Base):
    """One call to log into one integration's CRM: pending until delivered, parked after too many failures."""

    __tablename__ = "calllog_deliveries"
    __table_args__ = (UniqueConstraint("integration_id", "linked_id", name="uq_calllog_deliveries_integration_call"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calllog_calls.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"), index=True)
    linked_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, parked, dropped, skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str] = mapped_column(Text, default="")
    activity_id: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()

    call: Mapped[CallLogCall] = relationship()
    integration: Mapped[Integration] = relationship()


class CallLogOpenCall(Base):
    """A call in progress as the call tracker last saved it, so a restart of crmroute can take it back."""

    __tablename__ = "calllog_open_calls"
    linked_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # crmroute.calllog.calls.CallTracker.changes()


class Agent(Base):
    """A person calls may go to: an extension, the devices whose state says whether they are free."""

    __tablename__ = "agents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    extension: Mapped[str] = mapped_column(String(64), unique=True)
    devices: Mapped[list[Any]] = mapped_column(default=list)  # empty: PJSIP/{extension}
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    identities: Mapped[list[AgentIdentity]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", order_by="AgentIdentity.id"
    )


class AgentIdentity(Base):
    """Who an agent is in one integration's CRM: the user id and/or the e-mail."""

    __tablename__ = "agent_identities"
    __table_args__ = (UniqueConstraint("agent_id", "integration_id", name="uq_agent_identities_agent_integration"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(255), default="")

    agent: Mapped[Agent] = relationship(back_populates="identities")
    integration: Mapped[Integration] = relationship()


class ConnectorCredential(Base):
    """A connector's live credentials (access token, session, rotated refresh token), shared by every process.

    ``state_enc`` is encrypted JSON (see ``store/credentials.py``); ``origin`` fingerprints the credentials as
    configured, so a rotated refresh token is dropped when an admin pastes new ones. ``lease_*``: the one
    process renewing the credentials right now (an atomic ``UPDATE ... WHERE lease_until < now``).
    """

    __tablename__ = "connector_credentials"
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True)
    principal: Mapped[str] = mapped_column(String(255), primary_key=True, default="")  # a rule's CRM username, or ""
    origin: Mapped[str] = mapped_column(String(64), default="")
    base_origin: Mapped[str] = mapped_column(String(64), default="")  # the integration's part of ``origin``
    state_enc: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    refused_at: Mapped[datetime | None] = mapped_column(nullable=True)
    refused_message: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClusterLease(Base):
    """A job one node at a time does (reading an AMI source): held until ``expires_at`` unless renewed."""

    __tablename__ = "cluster_leases"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(160))
    expires_at: Mapped[datetime] = mapped_column()
    acquired_at: Mapped[datetime] = mapped_column()


class DecisionStat(Base):
    """Decision log counts per time bucket, for the dashboard (``store/dashboard.py`` keeps them).

    ``span`` is the bucket length in seconds (60 or 3600), ``bucket`` its start in epoch seconds; ``metric``
    says what ``k1``..``k3`` hold: ``status`` (status, reason, cached), ``row`` (rule, row number or ""),
    ``latency`` (integration, upper bound of a CRM latency bucket in ms) and ``cache`` (hit or miss).
    """

    __tablename__ = "decision_stats"
    __table_args__ = (UniqueConstraint("metric", "span", "bucket", "k1", "k2", "k3", name="uq_decision_stats_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    metric: Mapped[str] = mapped_column(String(16))
    span: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[int] = mapped_column(Integer)
    k1: Mapped[str] = mapped_column(String(128), default="")
    k2: Mapped[str] = mapped_column(String(64), default="")
    k3: Mapped[str] = mapped_column(String(16), default="")
    calls: Mapped[int] = mapped_column(Integer, default=0)
