"""The call logger's outbox: finished calls, and one delivery per integration that wants each.

A finished call is written once (``calllog_calls.linked_id`` is unique), with
a delivery row for every enabled integration whose log options want it
(``calllog_deliveries``, unique per integration and ``Linkedid``): writing the
same call again — a duplicate event, a second crmroute on the same Asterisk —
adds nothing. Deliveries are ``pending`` until the worker delivers them
(``delivered``, with the CRM's activity id), ``parked`` after too many
failures (with the last error), ``dropped`` by an admin, or ``skipped`` when
the integration no longer wants the call.

Calls still in progress are kept too (``calllog_open_calls``, the call
tracker's state of each, saved as it changes and removed in the transaction
that writes the finished call), so a restart of crmroute takes them back. A worker claims due deliveries with
a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so workers sharing one
store never deliver the same row at once; connectors' ``log_call`` being
idempotent on the call id covers a worker that dies between logging and
writing the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from crmroute.calllog.calls import ANSWERED, INBOUND, OUTBOUND, Call
from crmroute.errors import Conflict, NotFound
from crmroute.store.db import is_id
from crmroute.store.models import CallDelivery, CallLogCall, CallLogOpenCall, DecisionRecord, Integration, Rule

PENDING, DELIVERED, PARKED, DROPPED, SKIPPED = "pending", "delivered", "parked", "dropped", "skipped"
STATUSES = (PENDING, DELIVERED, PARKED, DROPPED, SKIPPED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def wants(options: Mapping[str, Any], call: Call | Mapping[str, Any]) -> bool:
    """Whether an integration's log options ask for this call (SPEC 4: inbound answered / missed, outbound)."""
    direction = call.direction if isinstance(call, Call) else call.get("direction")
    outcome = call.outcome if isinstance(call, Call) else call.get("outcome")
    if direction == INBOUND:
        return bool(options.get("inbound_answered" if outcome == ANSWERED else "inbound_missed"))
    if direction == OUTBOUND:
        return bool(options.get("outbound"))
    return False


# --- writing finished calls ------------------------------------------------------------------


def add_calls(session: Session, calls: Sequence[Call]) -> int:
    """Store the inbound and outbound calls not stored yet, with their deliveries; how many were new.

    Internal calls are not stored. The caller commits.
    """
    calls = [c for c in calls if c.direction in (INBOUND, OUTBOUND)]
    if not calls:
        return 0
    known = set(session.scalars(select(CallLogCall.linked_id).where(
        CallLogCall.linked_id.in_({c.linked_id[:64] for c in calls}))))  # fmt: skip
    fresh: dict[str, Call] = {}
    for call in calls:
        if call.linked_id[:64] not in known:
            fresh.setdefault(call.linked_id[:64], call)
    if not fresh:
        return 0
    decisions = find_decisions(session, [uid for c in fresh.values() for uid in c.agi_uniqueids])
    targets = [(i.id, dict(i.log_options or {})) for i in session.scalars(select(Integration).where(Integration.enabled))]
    try:
        with session.begin_nested():
            for call in fresh.values():
                _add(session, call, decisions, targets)
        return len(fresh)
    except IntegrityError:  # another writer stored one of them meanwhile: one by one
        added = 0
        for call in fresh.values():
            try:
                with session.begin_nested():
                    _add(session, call, decisions, targets)
                added += 1
            except IntegrityError:
                pass
        return added


def _add(session: Session, call: Call, decisions: Mapping[str, dict], targets: list[tuple[int, dict]]) -> None:
    decision = next((decisions[u] for u in reversed(call.agi_uniqueids) if u in decisions), {})
    row = CallLogCall(linked_id=call.linked_id[:64], started_at=call.started_at, direction=call.direction,
                      outcome=call.outcome, external_number=call.external_number[:64], pbx=call.pbx[:32],
                      data=call.to_dict(), decision=decision)  # fmt: skip
    session.add(row)
    session.flush()
    for integration_id, options in targets:
        if wants(options, call):
            session.add(CallDelivery(call_id=row.id, integration_id=integration_id, linked_id=row.linked_id,
                                     status=PENDING, attempts=0, next_attempt_at=utcnow()))  # fmt: skip
    session.flush()


def find_decisions(session: Session, uniqueids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The routing decision logged for each AGI session (``call_id`` = the channel's Uniqueid)."""
    uids = {u[:64] for u in uniqueids if u}
    if not uids:
        return {}
    rows = session.scalars(select(DecisionRecord).where(DecisionRecord.call_id.in_(uids), DecisionRecord.source == "agi")
                           .order_by(DecisionRecord.id))  # fmt: skip
    found = {row.call_id: decision_data(row) for row in rows}
    names = {d["rule"] for d in found.values() if d["rule"]}
    if names:
        pairs = session.execute(select(Rule.name, Rule.integration_id).where(Rule.name.in_(names))).all()
        integration_of = {name: integration_id for name, integration_id in pairs}
        for data in found.values():
            data["integration_id"] = integration_of.get(data["rule"])
    return found


def decision_data(row: DecisionRecord) -> dict[str, Any]:
    return {"id": row.id, "rule": row.rule, "status": row.status, "dest_type": row.dest_type, "dest": row.dest,
            "did": row.did, "ivr": row.ivr, "caller": row.caller, "value": row.value, "record_module": row.record_module,
            "record_id": row.record_id, "integration_id": None}  # fmt: skip


def refresh_decision(session: Session, call_row_id: int) -> dict[str, Any]:
    """Join the decision again (it may have been written after the call): stored when found."""
    row = session.get(CallLogCall, call_row_id)
    if row is None:
        return {}
    if row.decision:
        return dict(row.decision)
    uids = list((row.data or {}).get("agi_uniqueids") or [])
    found = find_decisions(session, uids)
    decision = next((found[u] for u in reversed(uids) if u in found), {})
    if decision:
        row.decision = decision
    return decision


# --- the worker's side --------------------------------------------------------------------------


@dataclass
class Claimed:
    """A delivery the worker holds, with what it needs to deliver it."""

    id: int
    call_row_id: int
    linked_id: str
    attempts: int
    call: dict[str, Any]
    decision: dict[str, Any]


@dataclass
class Target:
    """An integration as the worker sees it."""

    id: int
    name: str
    kind: str
    enabled: bool
    settings: dict[str, Any]
    secrets_enc: str
    log_options: dict[str, Any]


def due_integrations(session: Session, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    query = select(CallDelivery.integration_id).where(*_due(now)).distinct()
    return list(session.scalars(query))


def _due(now: datetime) -> tuple:
    return (CallDelivery.status == PENDING, CallDelivery.next_attempt_at <= now,
            or_(CallDelivery.lease_until.is_(None), CallDelivery.lease_until < now))  # fmt: skip


def target(session: Session, integration_id: int) -> Target | None:
    row = session.get(Integration, integration_id)
    if row is None:
        return None
    return Target(row.id, row.name, row.kind, row.enabled, dict(row.settings or {}), row.secrets_enc or "",
                  dict(row.log_options or {}))  # fmt: skip


def claim(session: Session, integration_id: int, *, limit: int, lease: float, now: datetime | None = None) -> list[Claimed]:
    """Hold up to ``limit`` due deliveries of one integration for ``lease`` seconds (oldest first)."""
    now = now or utcnow()
    query = (select(CallDelivery).where(CallDelivery.integration_id == integration_id, *_due(now))
             .order_by(CallDelivery.next_attempt_at, CallDelivery.id).limit(limit)
             .with_for_update(skip_locked=True))  # fmt: skip
    rows = list(session.scalars(query))
    until = now + timedelta(seconds=lease)
    for row in rows:
        row.lease_until = until
    calls = {c.id: c for c in session.scalars(select(CallLogCall).where(CallLogCall.id.in_({r.call_id for r in rows})))}
    session.flush()
    return [Claimed(r.id, r.call_id, r.linked_id, r.attempts, dict(calls[r.call_id].data or {}),
                    dict(calls[r.call_id].decision or {})) for r in rows]  # fmt: skip


@dataclass
class Result:
    id: int
    status: str  # delivered, pending (retry at next_attempt_at), parked, skipped
    activity_id: str = ""
    error: str = ""
    next_attempt_at: datetime | None = None
    attempted: bool = True  # counts as an attempt


def record(session: Session, results: Sequence[Result], now: datetime | None = None) -> None:
    """Write what the worker did; a row an admin dropped or retried meanwhile keeps the admin's word."""
    now = now or utcnow()
    for result in results:
        values: dict[str, Any] = {"lease_until": None, "updated_at": now}
        if result.attempted:
            values["attempts"] = CallDelivery.attempts + 1
        if result.status == DELIVERED:
            values.update(status=DELIVERED, activity_id=result.activity_id[:128], delivered_at=now, last_error="")
        elif result.status == PENDING:
            values.update(status=PENDING, last_error=result.error, next_attempt_at=result.next_attempt_at or now)
        else:
            values.update(status=result.status, last_error=result.error)
        session.execute(update(CallDelivery).where(CallDelivery.id == result.id, CallDelivery.status == PENDING,
                                                   CallDelivery.lease_until.is_not(None)).values(**values))  # fmt: skip


def release(session: Session, ids: Iterable[int]) -> None:
    """Give claimed deliveries back (a worker stopping before it delivered them): due again now."""
    ids = list(ids)
    if ids:
        session.execute(update(CallDelivery).where(CallDelivery.id.in_(ids), CallDelivery.status == PENDING)
                        .values(lease_until=None))  # fmt: skip


def purge(session: Session, retention_days: int, now: datetime | None = None) -> int:
    """Remove calls older than the retention whose deliveries are all settled (none pending or parked)."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    open_delivery = exists().where(CallDelivery.call_id == CallLogCall.id, CallDelivery.status.in_((PENDING, PARKED)))
    result = session.execute(delete(CallLogCall).where(CallLogCall.created_at < cutoff, ~open_delivery))
    return result.rowcount or 0


# --- calls in progress --------------------------------------------------------------------------


def save_open(session: Session, changed: Mapping[str, Mapping[str, Any]], gone: Iterable[str]) -> None:
    """Save the state of open calls (``CallTracker.changes()``) and forget those no longer open. The caller commits."""
    ids = sorted({lid[:64] for lid in gone} | {lid[:64] for lid in changed})
    for start in range(0, len(ids), 500):
        session.execute(delete(CallLogOpenCall).where(CallLogOpenCall.linked_id.in_(ids[start:start + 500])))
    now = utcnow()
    session.add_all(CallLogOpenCall(linked_id=lid[:64], updated_at=now, data=dict(data)) for lid, data in changed.items())


def open_calls(session: Session) -> list[dict[str, Any]]:
    """The saved state of every open call, for ``CallTracker.restore()``."""
    return [row.data for row in session.scalars(select(CallLogOpenCall).order_by(CallLogOpenCall.updated_at))]


# --- what the API and UI show -------------------------------------------------------------------


def search(
    session: Session, *, status: str = "", integration_id: int | None = None, offset: int = 0, limit: int = 50
) -> tuple[int, list[CallDelivery]]:
    """Deliveries matching the filters, newest first."""
    query = select(CallDelivery)
    if status:
        query = query.where(CallDelivery.status == status)
    if integration_id is not None:
        query = query.where(CallDelivery.integration_id == integration_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.options(joinedload(CallDelivery.call), joinedload(CallDelivery.integration))
                           .order_by(CallDelivery.id.desc()).offset(offset).limit(limit))  # fmt: skip
    return total, list(rows)


def get(session: Session, delivery_id: int) -> CallDelivery:
    row = session.get(CallDelivery, delivery_id, options=[joinedload(CallDelivery.call),
                                                          joinedload(CallDelivery.integration)]) if is_id(delivery_id) else None  # fmt: skip
    if row is None:
        raise NotFound(f"no call log delivery with id {delivery_id}")
    return row


def retry(session: Session, delivery_id: int) -> CallDelivery:
    """Deliver again now, from a fresh count of attempts (a delivered one: ``Conflict``)."""
    row = get(session, delivery_id)
    if row.status == DELIVERED:
        raise Conflict(f"delivery {row.id} was already delivered as {row.activity_id or 'an activity'}")
    row.status, row.attempts, row.next_attempt_at, row.lease_until = PENDING, 0, utcnow(), None
    session.flush()
    return row


def drop(session: Session, delivery_id: int) -> CallDelivery:
    """Give up on a delivery (kept as ``dropped``, so the same call is never logged there later)."""
    row = get(session, delivery_id)
    if row.status == DELIVERED:
        raise Conflict(f"delivery {row.id} was already delivered as {row.activity_id or 'an activity'}")
    row.status, row.lease_until = DROPPED, None
    session.flush()
    return row


def counts(session: Session, integration_id: int | None = None) -> dict[str, int]:
    query = select(CallDelivery.status, func.count()).group_by(CallDelivery.status)
    if integration_id is not None:
        query = query.where(CallDelivery.integration_id == integration_id)
    found = {str(status): int(n) for status, n in session.execute(query).all()}
    return {status: int(found.get(status, 0)) for status in STATUSES}


def recent(session: Session, integration_id: int, limit: int = 10) -> list[dict[str, Any]]:
    return [to_public(r) for r in search(session, integration_id=integration_id, limit=limit)[1]]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()


def to_public(row: CallDelivery) -> dict[str, Any]:
    """A delivery as the API and UI show it (times in UTC ISO-8601), with its call."""
    data = dict(row.call.data or {}) if row.call is not None else {}
    decision = dict(row.call.decision or {}) if row.call is not None else {}
    call = {key: data.get(key) for key in ("direction", "outcome", "external_number", "external_name", "extension",
                                           "agent", "queue", "did", "started_at", "ended_at", "ring_seconds",
                                           "talk_seconds", "recording", "note")}  # fmt: skip
    call["routing"] = {"rule": decision.get("rule") or "", "status": decision.get("status") or
                       (data.get("routing") or {}).get("status", ""),
                       "record": {"module": decision.get("record_module"), "id": decision.get("record_id")}
                       if decision.get("record_id") else None}  # fmt: skip
    return {
        "id": row.id, "linked_id": row.linked_id, "status": row.status, "attempts": row.attempts,
        "integration": {"id": row.integration_id, "name": row.integration.name if row.integration else ""},
        "activity_id": row.activity_id or None, "last_error": row.last_error or None,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == PENDING else None,
        "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
        "delivered_at": _iso(row.delivered_at), "call": call,
    }  # fmt: skip


def integration_names(session: Session) -> list[tuple[int, str]]:
    return [(i, n) for i, n in session.execute(select(Integration.id, Integration.name).order_by(Integration.name)).all()]



# --- who talked with whom (the last-agent index) ---------------------------------------------------------


def connected_calls(
    session: Session, *, since: datetime, after_id: int = 0, limit: int = 5000
) -> list[tuple[int, str, datetime, str, str, int]]:
    """Answered calls started since ``since`` and stored after row ``after_id``, oldest row first:
    ``(id, external_number, started_at, direction, extension, talk_seconds)``."""
    query = (select(CallLogCall.id, CallLogCall.external_number, CallLogCall.started_at, CallLogCall.direction,
                    CallLogCall.data)
             .where(CallLogCall.id > after_id, CallLogCall.started_at >= since, CallLogCall.outcome == ANSWERED)
             .order_by(CallLogCall.id).limit(limit))  # fmt: skip
    found = []
    for row_id, number, started, direction, data in session.execute(query):
        data = data or {}
        started = started if started.tzinfo else started.replace(tzinfo=timezone.utc)
        talk = data.get("talk_seconds") or 0
        found.append((row_id, number or "", started, direction, str(data.get("extension") or ""),
                      int(talk) if isinstance(talk, (int, float)) else 0))  # fmt: skip
    return found
