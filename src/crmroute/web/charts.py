"""Charts drawn on the server as inline SVG (no script, no other site), for the dashboard.

Bars are SVG shapes stretched to their box (``preserveAspectRatio="none"``);
every text (labels, axes, values) is HTML beside them, so it stays readable
on a phone instead of shrinking with the drawing. Each shape carries its
numbers as ``data-*`` attributes (what tests and scripts read).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape

from markupsafe import Markup


def _attrs(**attrs: object) -> str:
    return "".join(f' {name.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"'
                   for name, value in attrs.items())


def _tick(at: int, span: int) -> str:
    moment = datetime.fromtimestamp(at, timezone.utc)
    return moment.strftime("%H:%M") if span < 3600 else moment.strftime("%a %H:00")


def stacked_columns(buckets: Sequence[int], span: int, series: dict[str, Sequence[int]], *, title: str) -> Markup:
    """Calls per minute in each bucket, one column per bucket, stacked by series (status)."""
    per_minute = span / 60
    totals = [sum(values[i] for values in series.values()) for i in range(len(buckets))]
    top = max(totals, default=0) / per_minute
    height, width = 100.0, float(len(buckets))
    shapes = []
    for i, bucket in enumerate(buckets):
        y = height
        for name, values in series.items():
            calls = values[i]
            if not calls:
                continue
            h = (calls / per_minute) / top * height if top else 0
            y -= h
            shapes.append(f"<rect{_attrs(x=i + 0.1, y=round(y, 3), width=0.8, height=round(h, 3))}"
                          f'{_attrs(class_=f"bar s-{name}", data_status=name, data_bucket=bucket, data_calls=calls)}>'
                          f"<title>{escape(_tick(bucket, span))} {escape(name)}: {calls}</title></rect>")  # fmt: skip
    svg = (f'<svg viewBox="0 0 {width:g} {height:g}" preserveAspectRatio="none" role="img"'
           f'{_attrs(aria_label=title, data_chart="calls", data_buckets=len(buckets), data_total=sum(totals))}>'
           + "".join(shapes) + "</svg>")  # fmt: skip
    mid = buckets[len(buckets) // 2] if buckets else 0
    axis = "".join(f"<span>{escape(_tick(b, span))}</span>" for b in (buckets[0], mid, buckets[-1])) if buckets else ""
    legend = "".join(f'<li><span class="swatch s-{escape(n)}"></span>{escape(n)} <b>{sum(v)}</b></li>'
                     for n, v in series.items())  # fmt: skip
    peak = f"{top:.1f}".rstrip("0").rstrip(".") if top else "0"
    return Markup(f'<div class="columns-chart"><div class="y-top">{peak}/min</div>'
                  f'<div class="plot">{svg}</div><div class="x-axis">{axis}</div>'
                  f'<ul class="legend">{legend}</ul></div>')  # fmt: skip


def bar_list(items: Sequence[tuple[str, int]], *, chart: str, unit: str = "", css: str = "",
             empty: str = "Nothing yet.", top: float | None = None, dead_note: str = "") -> Markup:  # fmt: skip
    """One labelled horizontal bar per item, lengths to scale (``top``: the full length's value)."""
    if not items:
        return Markup(f'<p class="hint" data-chart="{escape(chart)}" data-empty>{escape(empty)}</p>')
    top = top or max((value for _, value in items), default=0) or 1
    rows = []
    for label, value in items:
        pct = max(0.0, min(100.0, value / top * 100))
        dead = " dead" if value == 0 and dead_note else ""
        note = f' <em class="dead-note">{escape(dead_note)}</em>' if dead else ""
        rows.append(
            f'<li class="bar-row{dead}"><span class="bar-label">{escape(label)}{note}</span>'
            f'<svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect{_attrs(class_=f"bar {css}".strip(), x=0, y=0, width=round(pct, 3), height=10)}'
            f'{_attrs(data_label=label, data_value=value)}>'
            f'</rect></svg><span class="bar-value">{value}{escape(unit)}</span></li>'
        )  # fmt: skip
    return Markup(f'<ul class="bar-list"{_attrs(data_chart=chart, data_items=len(items))}>{"".join(rows)}</ul>')


def latency_bars(latency: Sequence[dict], *, chart: str = "latency") -> Markup:
    """p50 and p95 CRM latency per integration, on one scale."""
    if not latency:
        return Markup(f'<p class="hint" data-chart="{chart}" data-empty>No CRM lookups in this period.</p>')
    values = [float(v) for item in latency for v in (item["p50"], item["p95"]) if v not in ("", "inf")]
    top = max(values, default=1.0) or 1.0
    rows = []
    for item in latency:
        bars = []
        for i, key in enumerate(("p50", "p95")):
            value = item[key]
            pct = 100.0 if value == "inf" else float(value or 0) / top * 100
            bars.append(f"<rect{_attrs(class_=f'bar {key}', x=0, y=i * 6, width=round(min(pct, 100.0), 3), height=5)}"
                        f"{_attrs(data_integration=item['integration'], data_percentile=key, data_ms=value)}>"
                        "</rect>")  # fmt: skip
        label = f"≤ {item['p50']} / ≤ {item['p95']} ms"
        rows.append(f'<li class="bar-row"><span class="bar-label">{escape(item["integration"])}'
                    f' <small>({item["calls"]} lookups)</small></span>'
                    f'<svg viewBox="0 0 100 11" preserveAspectRatio="none" aria-hidden="true">{"".join(bars)}</svg>'
                    f'<span class="bar-value">{escape(label)}</span></li>')  # fmt: skip
    legend = ('<ul class="legend"><li><span class="swatch p50"></span>p50</li>'
              '<li><span class="swatch p95"></span>p95</li></ul>')  # fmt: skip
    items = _attrs(data_chart=chart, data_items=len(latency))
    return Markup(f'<ul class="bar-list"{items}>{"".join(rows)}</ul>{legend}')


def ratio_ring(hits: int, misses: int, *, chart: str = "cache") -> Markup:
    """The cache hit ratio as a ring, with the numbers beside it."""
    total = hits + misses
    pct = hits / total * 100 if total else 0.0
    ring = (f'<svg viewBox="0 0 42 42" class="ring" role="img"{_attrs(aria_label=f"cache hit ratio {pct:.0f} %")}'
            f'{_attrs(data_chart=chart, data_hits=hits, data_misses=misses, data_ratio=round(pct, 1))}>'
            '<circle class="ring-track" cx="21" cy="21" r="15.915" fill="none" stroke-width="6"></circle>'
            f'<circle class="ring-value" cx="21" cy="21" r="15.915" fill="none" stroke-width="6"'
            f'{_attrs(stroke_dasharray=f"{pct:.2f} {100 - pct:.2f}", stroke_dashoffset=25)}>'
            "</circle></svg>")  # fmt: skip
    text = (f'<p><b class="big">{pct:.0f} %</b><br>{hits} from the cache, {misses} asked the CRM</p>'
            if total else '<p class="hint">No CRM lookups in this period.</p>')  # fmt: skip
    return Markup(f'<div class="ring-chart">{ring}{text}</div>')
