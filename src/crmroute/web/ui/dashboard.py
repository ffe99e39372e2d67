"""The home page: charts of the decision log (calls by status, fallbacks, CRM latency, cache, rule rows)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmroute.store import dashboard
from crmroute.web import charts
from crmroute.web.deps import PageUser
from crmroute.web.templating import render

router = APIRouter()

WINDOW_LABELS = {"hour": "Last hour", "day": "Last day", "week": "Last week"}
PAGE_ROLL_UP = 200_000  # decisions a page view counts at most before it draws (the writer keeps up in between)


@router.get("/", response_class=HTMLResponse)
async def dashboard_page(request: Request, principal: PageUser, window: str = "hour") -> Response:
    window = window if window in dashboard.WINDOWS else "hour"
    factory = request.app.state.store.factory

    def load() -> dashboard.Dashboard:
        dashboard.roll_up(factory, max_rows=PAGE_ROLL_UP)
        with factory() as session:
            return dashboard.summary(session, window)

    data = await anyio.to_thread.run_sync(load)
    title = f"Calls per minute by status, {WINDOW_LABELS[window].lower()}"
    rules = [
        (rule, charts.bar_list([(f"{r['row']}. {r['label']}", r["calls"]) for r in rule.rows]
                               + [("no row matched (default)", rule.default_calls)], chart="rows", css="row",
                               dead_note="never matched"))
        for rule in data.rules
    ]  # fmt: skip
    return render(
        request, "dashboard/show.html", principal, data=data, window=window, windows=WINDOW_LABELS,
        calls_chart=charts.stacked_columns(data.buckets, data.span, data.by_status, title=title),
        reasons_chart=charts.bar_list(data.fallback_reasons, chart="fallbacks", css="s-fallback",
                                      empty="No fallbacks in this period."),
        latency_chart=charts.latency_bars(data.latency),
        cache_chart=charts.ratio_ring(data.cache_hits, data.cache_misses),
        rule_charts=rules,
    )  # fmt: skip
