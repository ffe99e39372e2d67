"""Leases: a job only one node at a time does (reading one AMI source), held in PostgreSQL.

A lease is a row of ``cluster_leases``: its holder keeps it by renewing it
before ``expires_at``; once expired, any node may take it. Times are the
database's own (``now()``), so nodes' clocks need not agree. A holder that
stops cleanly gives its leases back, so another node takes over at once; one
that dies loses them ``ttl`` seconds after its last renewal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from crmroute.store.models import ClusterLease

_TAKE = text("""
INSERT INTO cluster_leases (name, holder, expires_at, acquired_at)
VALUES (:name, :holder, now() + make_interval(secs => :ttl), now())
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    expires_at = EXCLUDED.expires_at,
    acquired_at = CASE WHEN cluster_leases.holder = EXCLUDED.holder THEN cluster_leases.acquired_at ELSE now() END
WHERE cluster_leases.holder = EXCLUDED.holder OR cluster_leases.expires_at < now()
RETURNING holder
""")


def take(session: Session, name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``ttl`` seconds; False while another holder's is unexpired.

    PostgreSQL only (SQLite serves one node: nothing to share). The caller commits.
    """
    return session.execute(_TAKE, {"name": name, "holder": holder, "ttl": float(ttl)}).first() is not None


def give_back(session: Session, name: str, holder: str) -> None:
    """Release the lease if ``holder`` still holds it. The caller commits."""
    session.execute(delete(ClusterLease).where(ClusterLease.name == name, ClusterLease.holder == holder))


def holders(session: Session, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every lease (whose name starts with ``prefix``): holder, since when, until when."""
    rows = session.scalars(select(ClusterLease).where(ClusterLease.name.startswith(prefix, autoescape=True)))
    return {r.name: {"holder": r.holder, "since": _iso(r.acquired_at), "until": _iso(r.expires_at)} for r in rows}


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")
