"""How fast the dashboard is on a big decision log, in SQLite and PostgreSQL.

Fills ``--rows`` decisions (default 10 million, spread over the last 7 days,
generated inside the database) into a fresh migrated store, then times:

    backfill     the one-time roll-up of the whole log into decision_stats
    incremental  the roll-up of 1,000 new calls (what the decision writer does every few seconds)
    hour/day/week  the dashboard's queries for each period (median of --repeat runs)
    direct       for comparison, one chart (calls by status, last day) straight from the decisions table

    .venv/bin/python bench/dashboard.py                      # both engines, 10M rows (several minutes)
    .venv/bin/python bench/dashboard.py --rows 1000000 --engines sqlite

PostgreSQL: CRMROUTE_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); a scratch
database is created and dropped. Prints a table and writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from crmroute.schemas import DestinationIn, RuleIn  # noqa: E402
from crmroute.service import Store  # noqa: E402
from crmroute.settings import Settings  # noqa: E402
from crmroute.store import dashboard, destinations, rules  # noqa: E402
from crmroute.store.db import transaction  # noqa: E402
from crmroute.store.models import DecisionRecord  # noqa: E402

PG_ADMIN_URL = os.environ.get("CRMROUTE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RULES = 10
ROWS_PER_RULE = 5
WEEK = 7 * 86_400

# One row per generated number n: spread over the week, status/rule/row/latency derived from n.
COLUMNS = ("created_at, source, call_id, channel, caller, did, ivr, rule, lookup_key, key_source, value, "
           "record_module, record_id, row, dest_type, dest, status, reason, error, crm_ms, total_ms, cached, "
           "trace")  # fmt: skip
EXPRESSIONS = """
  {at}, 'agi', 'call-' || n, '', '+1555' || (n % 100000), '5551000', '', 'Rule ' || (n % {rules}), '', 'caller_id',
  '', '', '', CASE WHEN n % 10 < 7 THEN 1 + (n % 4) ELSE NULL END, 'queue', '103',
  CASE WHEN n % 10 < 7 THEN 'matched' WHEN n % 10 < 9 THEN 'default' WHEN n % 100 < 99 THEN 'fallback'
       ELSE 'error' END,
  CASE WHEN n % 10 < 7 THEN '' WHEN n % 10 < 9 THEN 'no_match' WHEN n % 3 = 0 THEN 'timeout' ELSE 'crm_error' END,
  '', CASE WHEN n % 5 = 0 THEN NULL ELSE (n % 997) * 1.0 END, 5.0, {cached}, '[]'
"""


def fill_sqlite(store: Store, rows: int, now: float) -> None:
    at = f"datetime({int(now)} - (n * {WEEK} / {rows}), 'unixepoch') || '.000000'"
    sql = (f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {rows}) "
           f"INSERT INTO decisions ({COLUMNS}) SELECT "
           + EXPRESSIONS.format(at=at, rules=RULES, cached="(n % 5 = 0)") + " FROM seq")  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(text(sql))


def fill_postgresql(store: Store, rows: int, now: float) -> None:
    at = f"to_timestamp({int(now)} - (n::bigint * {WEEK} / {rows}))"
    step = 1_000_000
    for start in range(1, rows + 1, step):  # in slices: one huge statement needs a lot of memory
        stop = min(start + step - 1, rows)
        sql = (f"INSERT INTO decisions ({COLUMNS}) SELECT "
               + EXPRESSIONS.format(at=at, rules=RULES, cached="(n % 5 = 0)").replace("'[]'", "'[]'::json")
               + f" FROM generate_series({start}, {stop}) AS n")  # fmt: skip
        with store.engine.begin() as connection:
            connection.execute(text(sql))
    with store.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE decisions"))


def add_rules(store: Store) -> None:
    with transaction(store.factory) as session:
        for item in [{"type": "extension", "number": "100"}] + [
            {"type": "queue", "number": str(200 + i)} for i in range(ROWS_PER_RULE)
        ]:
            destinations.create(session, DestinationIn.model_validate(item))
        for r in range(RULES):
            rows = [{"operator": "=", "value": f"V{i}", "destination": "queue", "option": str(200 + i)}
                    for i in range(ROWS_PER_RULE)]  # fmt: skip
            rules.create(session, store.box, RuleIn.model_validate({
                "name": f"Rule {r}", "crm_field": "Status", "location": "did", "crm_source": "custom",
                "custom_url": "https://crm.example.com/x", "default_destination": "100", "rows": rows}))  # fmt: skip


def timed(fn, repeat: int = 1) -> float:
    """Median wall time in ms."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(engine: str, url: str, data_dir: Path, rows: int, repeat: int) -> dict:
    settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_DATABASE_URL": url})
    store = Store(settings)
    store.upgrade()
    add_rules(store)
    now = time.time()
    started = time.perf_counter()
    (fill_sqlite if engine == "sqlite" else fill_postgresql)(store, rows, now)
    result: dict = {"engine": engine, "rows": rows, "fill_s": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    dashboard.roll_up(store.factory)
    result["backfill_s"] = round(time.perf_counter() - started, 1)
    at = datetime.now(timezone.utc)
    fresh = [{"created_at": at, "source": "agi", "status": "matched", "rule": "Rule 1", "row": 2, "crm_ms": 40.0,
              "total_ms": 41.0, "trace": []} for _ in range(1000)]  # fmt: skip
    with transaction(store.factory) as session:
        session.execute(insert(DecisionRecord), fresh)
    result["incremental_1000_ms"] = round(timed(lambda: dashboard.roll_up(store.factory)), 1)
    for window in dashboard.WINDOWS:
        def page(window: str = window) -> None:
            with store.factory() as session:
                dashboard.summary(session, window)
        result[f"{window}_ms"] = round(timed(page, repeat), 1)
    since = at - timedelta(days=1)

    def direct() -> None:
        with store.factory() as session:
            session.execute(select(DecisionRecord.status, func.count()).where(DecisionRecord.created_at >= since)
                            .group_by(DecisionRecord.status)).all()  # fmt: skip
    result["direct_day_by_status_ms"] = round(timed(direct, max(1, repeat // 2)), 1)
    with store.factory() as session:
        result["stats_rows"] = session.scalar(text("SELECT count(*) FROM decision_stats"))
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    results = []
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory(prefix="crmroute-dash-") as tmp:
            if engine == "sqlite":
                results.append(run(engine, f"sqlite:///{tmp}/bench.db", Path(tmp), args.rows, args.repeat))
            else:
                name = f"crmroute_bench_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
                    results.append(run(engine, url.replace("postgresql://", "postgresql+psycopg://", 1),
                                       Path(tmp), args.rows, args.repeat))  # fmt: skip
                finally:
                    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(json.dumps(results[-1]), flush=True)
    keys = [k for k in results[0] if k != "engine"]
    print(f"{'':26}" + "".join(f"{r['engine']:>14}" for r in results))
    for key in keys:
        print(f"{key:26}" + "".join(f"{r[key]:>14}" for r in results))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
