"""The dashboard's numbers: decision log counts rolled up per minute and per hour.

Reading 10 million decision rows per page view is too slow, so calls are
counted once into ``decision_stats`` (a few rows per minute and per hour) and
the dashboard sums those. ``roll_up()`` counts the decisions written since it
last ran (the highest rolled-up id is kept in ``meta``), so any writer — the
decision log of any AGI process, an import, a test — is picked up; the
decision writer calls it every few seconds and the dashboard before it reads.
Two processes rolling up at once cannot count a row twice: the watermark is
moved with a compare-and-set in the same transaction as the counts.

CRM latency percentiles come from a histogram (``LATENCY_BOUNDS``): p50/p95
are the upper bound of the bucket the percentile falls in.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Integer, case, cast, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from crmroute.store.models import DecisionRecord, DecisionStat, Integration, Meta, Rule, RuleRow

logger = logging.getLogger(__name__)

WATERMARK = "dashboard_rolled_id"
CHUNK = 200_000  # decision ids counted per transaction
MINUTE, HOUR = 60, 3600
MINUTE_KEEP = 3 * 3600  # per-minute counts serve the last hour; older ones are not kept
LATENCY_BOUNDS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 2500, 3000, 5000, 10_000)
OVER = "inf"
STATUSES = ("matched", "default", "fallback", "error")  # the chart's series; no_rule/unlicensed count as error
WINDOWS = {"hour": (MINUTE, 60), "day": (HOUR, 24), "week": (HOUR, 168)}  # bucket span, buckets shown


def _epoch(at: datetime) -> int:
    return int((at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp())


def _minute_sql(dialect: str) -> Any:
    """The decision's minute (epoch seconds), computed by the database."""
    if dialect == "postgresql":
        seconds = cast(func.floor(func.extract("epoch", DecisionRecord.created_at)), BigInteger)
    else:
        seconds = cast(func.strftime("%s", DecisionRecord.created_at), Integer)
    return (seconds // MINUTE) * MINUTE


def _latency_sql() -> Any:
    ms = DecisionRecord.crm_ms
    return case(*[(ms <= bound, str(bound)) for bound in LATENCY_BOUNDS], else_=OVER)


def count(session: Session, low: int, high: int, now: float) -> Counter[tuple[str, int, int, str, str, str]]:
    """Counts keyed by (metric, span, bucket, k1, k2, k3) of the calls with ``low < id <= high`` (not dry runs).

    The database groups the rows per minute; hours are summed here, and minutes kept only for recent calls.
    """
    d = DecisionRecord
    minute = _minute_sql(session.get_bind().dialect.name).label("minute")
    calls = (d.id > low, d.id <= high, d.source == "agi")
    looked_up = (*calls, d.cached.is_(False), d.crm_ms.is_not(None))
    queries = {
        "status": select(minute, d.status, d.reason, d.cached, func.count()).where(*calls)
                  .group_by(minute, d.status, d.reason, d.cached),
        "row": select(minute, d.rule, d.row, literal(""), func.count()).where(*calls).group_by(minute, d.rule, d.row),
        "hit": select(minute, literal("hit"), literal(""), literal(""), func.count()).where(*calls, d.cached.is_(True))
               .group_by(minute),
        "miss": select(minute, literal("miss"), literal(""), literal(""), func.count()).where(*looked_up)
                .group_by(minute),
        "latency": select(minute, d.rule, _latency_sql().label("le"), literal(""), func.count()).where(*looked_up)
                   .group_by(minute, d.rule, "le"),
    }  # fmt: skip
    integration_of = integration_names(session)
    recent = int(now) - MINUTE_KEEP
    counts: Counter[tuple[str, int, int, str, str, str]] = Counter()
    for name, query in queries.items():
        for at, k1, k2, k3, n in session.execute(query):
            at = int(at)
            if name == "status":
                k1 = k1 if k1 in STATUSES else "error"
                k2, k3 = k2 or "", "1" if k3 else "0"
            elif name == "row":
                k2 = str(k2) if k2 else ""
            elif name == "latency":
                k1 = integration_of.get(k1, k1)
            key = ("cache" if name in ("hit", "miss") else name, str(k1)[:128], str(k2)[:64], k3)
            counts[(key[0], HOUR, at - at % HOUR, *key[1:])] += n
            if at >= recent:
                counts[(key[0], MINUTE, at, *key[1:])] += n
    return counts


def integration_names(session: Session) -> dict[str, str]:
    """Rule name to the name of the CRM it asks (``custom`` for a rule's own Custom CRM URL)."""
    query = select(Rule.name, Rule.crm_source, Integration.name).outerjoin(Integration, Rule.integration)
    return {rule: (integration or "custom") if source == "integration" else "custom"
            for rule, source, integration in session.execute(query)}  # fmt: skip


def _upsert(session: Session, counts: Counter) -> None:
    if not counts:
        return
    dialect = session.get_bind().dialect.name
    table = DecisionStat.__table__
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["metric", "span", "bucket", "k1", "k2", "k3"],
        set_={"calls": table.c.calls + statement.excluded.calls},
    )
    values = [{"metric": m, "span": s, "bucket": b, "k1": k1, "k2": k2, "k3": k3, "calls": n}
              for (m, s, b, k1, k2, k3), n in sorted(counts.items())]  # fmt: skip (sorted: no deadlock between writers)
    for start in range(0, len(values), 5000):
        session.execute(statement, values[start : start + 5000])


def roll_up(factory: sessionmaker[Session], *, max_rows: int | None = None, now: float | None = None) -> int:
    """Count the decisions written since the last roll-up; returns how many ids it went past.

    ``max_rows`` bounds the work of one call (a page view); ``None`` catches up completely.
    """
    now = now if now is not None else time.time()
    done = 0
    while max_rows is None or done < max_rows:
        chunk = CHUNK if max_rows is None else min(CHUNK, max_rows - done)
        try:
            read = _roll_up_chunk(factory, chunk, now)
        except (IntegrityError, OperationalError) as exc:  # another process is rolling up the same rows
            logger.debug("dashboard roll-up skipped: %s", exc)
            break
        done += read
        if read < chunk:
            break
    _drop_old_minutes(factory, now)
    return done


def _roll_up_chunk(factory: sessionmaker[Session], limit: int, now: float) -> int:
    with factory() as session, session.begin():
        mark = session.scalar(select(Meta.value).where(Meta.key == WATERMARK))
        if mark is None:
            session.add(Meta(key=WATERMARK, value="0"))
            session.flush()
            mark = "0"
        low = int(mark or 0)
        newest = session.scalar(select(func.max(DecisionRecord.id))) or 0
        high = min(low + limit, newest)
        if high <= low:
            return 0
        moved = session.execute(
            update(Meta).where(Meta.key == WATERMARK, Meta.value == mark).values(value=str(high))
        ).rowcount
        if moved != 1:  # another process moved it first: its counts stand, ours are dropped
            session.rollback()
            return 0
        _upsert(session, count(session, low, high, now))
        return high - low


def _drop_old_minutes(factory: sessionmaker[Session], now: float) -> None:
    cutoff = int(now) - MINUTE_KEEP
    try:
        with factory() as session, session.begin():
            for metric in ("status", "row", "cache", "latency"):  # each delete uses the key's index prefix
                session.execute(DecisionStat.__table__.delete().where(
                    DecisionStat.metric == metric, DecisionStat.span == MINUTE, DecisionStat.bucket < cutoff))
    except OperationalError as exc:
        logger.debug("dashboard: old minute counts not dropped: %s", exc)


def purge(session: Session, before: datetime) -> int:
    """Drop hourly counts older than the decision log's retention."""
    cutoff = _epoch(before)
    removed = 0
    for metric in ("status", "row", "cache", "latency"):
        removed += session.execute(DecisionStat.__table__.delete().where(
            DecisionStat.metric == metric, DecisionStat.span == HOUR, DecisionStat.bucket < cutoff)).rowcount or 0
    return removed


# --- what the dashboard shows -----------------------------------------------------------


@dataclass
class RuleRows:
    rule: str
    rows: list[dict[str, Any]]  # {"row": 1, "label": "= GOLD → queue 103", "calls": n}
    default_calls: int = 0


@dataclass
class Dashboard:
    window: str
    span: int
    buckets: list[int]  # bucket starts, epoch seconds, oldest first
    by_status: dict[str, list[int]]  # status -> calls per bucket
    fallback_reasons: list[tuple[str, int]]
    latency: list[dict[str, Any]]  # {"integration", "calls", "p50", "p95"}
    cache_hits: int
    cache_misses: int
    rules: list[RuleRows] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(series) for series in self.by_status.values())


def percentile(histogram: dict[str, int], q: float) -> str:
    """The upper bound (ms, or ``inf``) of the bucket holding the q-th fraction of calls."""
    total = sum(histogram.values())
    if not total:
        return ""
    running = 0
    for bound in [*map(str, LATENCY_BOUNDS), OVER]:
        running += histogram.get(bound, 0)
        if running >= q * total:
            return bound
    return OVER


def window_start(window: str, now: float) -> tuple[int, int, list[int]]:
    span, n = WINDOWS[window]
    last = int(now) - int(now) % span
    buckets = [last - span * i for i in range(n - 1, -1, -1)]
    return span, buckets[0], buckets


def summary(session: Session, window: str, now: float | None = None) -> Dashboard:
    """The dashboard's numbers for ``window`` (``hour``, ``day`` or ``week``) up to ``now``."""
    span, start, buckets = window_start(window, now if now is not None else time.time())
    s = DecisionStat

    def where(metric: str) -> tuple:
        return (s.metric == metric, s.span == span, s.bucket >= start)

    index = {b: i for i, b in enumerate(buckets)}
    by_status = {status: [0] * len(buckets) for status in STATUSES}
    for bucket, status, calls in session.execute(
        select(s.bucket, s.k1, func.sum(s.calls)).where(*where("status")).group_by(s.bucket, s.k1)
    ):
        if bucket in index and status in by_status:
            by_status[status][index[bucket]] += int(calls)
    reasons = session.execute(
        select(s.k2, func.sum(s.calls)).where(*where("status"), s.k1 == "fallback").group_by(s.k2)
    ).all()
    fallback_reasons = sorted(((reason or "unknown", int(n)) for reason, n in reasons), key=lambda r: (-r[1], r[0]))
    histograms: dict[str, dict[str, int]] = {}
    for name, bound, calls in session.execute(
        select(s.k1, s.k2, func.sum(s.calls)).where(*where("latency")).group_by(s.k1, s.k2)
    ):
        histograms.setdefault(name, {})[bound] = int(calls)
    latency = [{"integration": name, "calls": sum(h.values()), "p50": percentile(h, 0.5), "p95": percentile(h, 0.95)}
               for name, h in sorted(histograms.items())]  # fmt: skip
    cache = dict(session.execute(select(s.k1, func.sum(s.calls)).where(*where("cache")).group_by(s.k1)).all())
    matched: dict[tuple[str, str], int] = {
        (rule, row): int(n)
        for rule, row, n in session.execute(
            select(s.k1, s.k2, func.sum(s.calls)).where(*where("row")).group_by(s.k1, s.k2)
        )
    }
    return Dashboard(window, span, buckets, by_status, fallback_reasons, latency, int(cache.get("hit") or 0),
                     int(cache.get("miss") or 0), rule_rows(session, matched))  # fmt: skip


def rule_rows(session: Session, matched: dict[tuple[str, str], int]) -> list[RuleRows]:
    """Every current rule's rows with how often each matched (0: a dead row), by rule name."""
    found: dict[str, RuleRows] = {}
    query = select(Rule.name, RuleRow.position, RuleRow.operator, RuleRow.value, RuleRow.destination,
                   RuleRow.option).join(RuleRow, RuleRow.rule_id == Rule.id).order_by(Rule.name, RuleRow.position)
    for name, position, operator, value, destination, option in session.execute(query):
        entry = found.setdefault(name, RuleRows(name, [], matched.get((name, ""), 0)))
        number = position  # positions start at 1, like CRMROUTE_ROW
        label = f"{operator} {value}".strip() + f" → {destination} {option}"
        entry.rows.append({"row": number, "label": label, "calls": matched.get((name, str(number)), 0)})
    for name in session.scalars(select(Rule.name)):
        found.setdefault(name, RuleRows(name, [], matched.get((name, ""), 0)))
    return [found[name] for name in sorted(found, key=str.lower)]
