"""Whether this node is ready to take calls, for /healthz and a load balancer's or operator's eyes.

``ready``: the AGI listener is up and the rules are loaded (a node routes on
its loaded rules while the database is away). ``shared_state``: ``ok`` when
the database answers (and, on PostgreSQL, change notices arrive), else
``degraded``: calls still route, on what this node had, but changes made on
other nodes do not reach it and its decisions and call log wait in memory.
"""

from __future__ import annotations

from typing import Any

from crmroute.settings import Settings


def node_readiness(settings: Settings, router: Any, agi_server: Any, database_ok: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"node": settings.node}
    routes = agi_server is not None and router is not None and router.decision_log is not None
    if not routes:
        out |= {"ready": False, "not_ready": "this process runs no AGI server"}
    elif not agi_server.serving:
        out |= {"ready": False, "not_ready": "the AGI listener is down"}
    elif router.book.version < 0:
        out |= {"ready": False, "not_ready": "the rules are not loaded yet"}
    else:
        out["ready"] = True
    problems = [] if database_ok else ["database unreachable"]
    if router is not None and router.guards.shared_status().startswith("local fallback"):
        problems.append("Redis unreachable (local cache, budgets and breakers)")
    sync = getattr(router, "sync", None)
    if sync is not None:
        out["config"] = sync.status()  # the rule book's version and how the last change arrived
        if database_ok and out["config"]["notices"].startswith("down"):
            problems.append("change notices down (polling)")
    out["shared_state"] = "degraded" if problems else "ok"
    if problems:
        out["shared_state_problems"] = problems
    return out
