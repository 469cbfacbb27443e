"""The overview page: counts, the last 24 hours by hour, cost by day, recent runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from executions import selectors
from executions.pages.base import base_context, page
from executions.pages.contexts import overview_approvals_context, overview_counts_context
from executions.pages.timing import attach_times
from executions.templatetags.steward import money

RECENT_FIELDS = ("id", "agent_id", "agent__id", "agent__name", "status", "cost", "duration_ms",
                 "created_at", "started_at", "completed_at")  # fmt: skip


@page
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    context = base_context(request, "overview", live={"page": "overview"})
    now = timezone.now()
    # The cards, the hourly chart and the cost chart from one set of reads (overview_counts):
    # 24 h from now, and the chart's seven whole days from midnight six days ago.
    week_since = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=6)
    counts = selectors.overview_counts(
        workspace=workspace, day_since=now - timedelta(hours=24), week_since=week_since
    )
    context.update(overview_counts_context(workspace, stats=counts["stats"], day=counts["day"]))
    context.update(overview_approvals_context(workspace))
    # The header badge counts the same rows: one read for both (base.html's _nav_count).
    context["nav_count"] = context["pending_approvals"]
    context["hourly"] = hourly_chart(counts["hourly"], now=now)
    context["cost_chart"] = cost_chart(counts["daily_cost"], now=now)
    # The same seven days (whole UTC days: the duration histograms are kept per day).
    context["percentiles"] = selectors.execution_duration_percentiles(
        workspace=workspace, since=week_since
    )
    recent = selectors.execution_list(workspace=workspace, filters=selectors.ExecutionFilters())
    # The table shows ids, agents, statuses, times and costs: the runs' documents stay unread,
    # and so do their versions (the list's filter joins them, configs and all) and their
    # agents' metadata.
    recent = recent.select_related(None).select_related("agent")
    recent = recent.only(*RECENT_FIELDS)
    context["recent"] = attach_times(list(recent.order_by("-id")[:8]))
    # Read only by the empty state (no runs yet): the template calls it, so a page with runs
    # does not ask.
    context["has_agents"] = selectors.agent_list(workspace=workspace).exists
    return render(request, "executions/overview.html", context)


def hourly_chart(rows: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """Bars for the last 24 hours: stacked completed / failed-ish / other, as SVG geometry."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    buckets = {start + timedelta(hours=i): {"ok": 0, "bad": 0, "other": 0} for i in range(24)}
    for row in rows:
        hour = row["hour"]
        if hour is None:
            continue
        if timezone.is_naive(hour):
            hour = timezone.make_aware(hour, timezone.UTC)
        bucket = buckets.get(hour.replace(minute=0, second=0, microsecond=0))
        if bucket is None:
            continue
        group = (
            "ok"
            if row["status"] == "completed"
            else "bad"
            if row["status"] in {"failed", "rejected", "cancelled"}
            else "other"
        )
        bucket[group] += row["n"]
    peak = max([sum(b.values()) for b in buckets.values()] + [1])
    width, height, pad_left, pad_bottom = 720, 190, 32, 30
    slot = (width - pad_left) / 24
    bars = []
    for i, (hour, b) in enumerate(buckets.items()):
        x = pad_left + i * slot + 2
        y = height - pad_bottom
        parts = []
        for group in ("ok", "bad", "other"):
            h = (height - pad_bottom - 10) * b[group] / peak
            if h > 0:
                y -= h
                parts.append({"cls": f"bar-{group}", "y": round(y, 1), "h": round(h, 1)})
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot - 4, 1),
                "parts": parts,
                "total": sum(b.values()),
                "ok": b["ok"],
                "bad": b["bad"],
                "other": b["other"],
                "label": hour.strftime("%H:00"),
                # Every third hour, counted back from the current one so that it is labelled.
                "show_label": i % 3 == 2,
                "now": i == 23,
                "tx": round(x + (slot - 4) / 2, 1),
                "right": round(x + slot - 4, 1),
            }
        )
    chart = {
        "bars": bars,
        "peak": peak,
        "width": width,
        "height": height,
        "base": height - pad_bottom,
        "total": sum(bar["total"] for bar in bars),
        "grid": [
            {
                "y": round(height - pad_bottom - (height - pad_bottom - 10) * f, 1),
                "label": _tick(peak * f),
            }
            for f in (0.5, 1.0)
        ],  # fmt: skip
    }
    chart["svg"] = hourly_svg(chart)
    return chart


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def cost_chart(rows: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """Stacked bars of cost per day for the last 7 days, one colour per agent."""
    days = [(now - timedelta(days=6 - i)).date() for i in range(7)]
    agents = sorted({row["agent__name"] for row in rows})
    series = {name: i % 7 for i, name in enumerate(agents)}
    per_day: dict[Any, dict[str, Decimal]] = {d: {} for d in days}
    for row in rows:
        day = row["day"]
        if isinstance(day, datetime):
            day = day.date()
        if day in per_day:
            per_day[day][row["agent__name"]] = row["cost"] or Decimal(0)
    peak = max([sum(v.values(), Decimal(0)) for v in per_day.values()] + [Decimal("0.000001")])
    width, height, pad_left, pad_bottom = 720, 190, 56, 30
    slot = (width - pad_left) / 7
    bars = []
    for i, day in enumerate(days):
        x = pad_left + i * slot + 10
        y = float(height - pad_bottom)
        parts = []
        for name in agents:
            cost = per_day[day].get(name)
            if not cost:
                continue
            h = float((height - pad_bottom - 10) * cost / peak)
            y -= h
            parts.append({"series": series[name], "y": round(y, 1), "h": round(max(h, 1), 1),
                          "agent": name, "cost": cost})  # fmt: skip
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot - 20, 1),
                "tx": round(x + (slot - 20) / 2, 1),
                "parts": parts,
                "label": day.strftime("%a %d"),
                "total": sum(per_day[day].values(), Decimal(0)),
            }
        )
    chart = {
        "bars": bars,
        "legend": [{"name": n, "series": s} for n, s in series.items()],
        "width": width,
        "height": height,
        "base": height - pad_bottom,
        "total": sum((b["total"] for b in bars), Decimal(0)),
        "peak": peak,
        "grid": [
            {
                "y": round(height - pad_bottom - (height - pad_bottom - 10) * f, 1),
                "value": peak * Decimal(str(f)),
            }
            for f in (0.5, 1.0)
        ],  # fmt: skip
    }
    chart["svg"] = cost_svg(chart)
    return chart


# The two charts are drawn here rather than in the template: ~1,200 variable renders per page
# (24 bars + 7 bars of one rect per agent) cost about half of the page's CPU. The markup is the
# template's, byte for byte (whitespace included): `g.y|add:0` truncated to an int, floats as
# str(), text escaped as autoescape would.
_BAR_SEP = "\n          "


def hourly_svg(chart: dict[str, Any]) -> SafeString:
    width, height, base = chart["width"], chart["height"], chart["base"]
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="Executions'
        ' per hour over the last 24 hours">\n        '
    ]
    for g in chart["grid"]:
        out.append(
            f'<line class="grid-line" x1="32" x2="{width}" y1="{g["y"]}" y2="{g["y"]}"/>'
            f'<text x="0" y="{int(g["y"])}" dy="4">{conditional_escape(g["label"])}</text>'
        )
    out.append(
        f'\n        <line class="grid-line" x1="32" x2="{width}" y1="{base}" y2="{base}"/>'
        "\n        "
    )
    for b in chart["bars"]:
        x, w, total = b["x"], b["w"], b["total"]
        out.append(
            f"{_BAR_SEP}<g><title>{b['label']}: {total} run{'' if total == 1 else 's'}"
            f" ({b['ok']} completed, {b['bad']} failed/cancelled/rejected, {b['other']} other)"
            f"</title>{_BAR_SEP}"
        )
        for p in b["parts"]:
            out.append(
                f'<rect class="{p["cls"]}" x="{x}" y="{p["y"]}" width="{w}" height="{p["h"]}"'
                ' rx="2"/>'
            )
        out.append(_BAR_SEP)
        if not b["parts"]:
            out.append(
                f'<rect x="{x}" y="{base - 1}" width="{w}" height="1" style="fill:var(--border)"/>'
            )
        out.append(f"{_BAR_SEP}</g>{_BAR_SEP}")
        if b["now"]:
            out.append(
                f'<text x="{b["right"]}" y="{height - 6}" text-anchor="end" class="now">'
                f"<title>the current hour</title>{b['label']}</text>"
            )
        elif b["show_label"]:
            out.append(
                f'<text x="{b["tx"]}" y="{height - 6}" text-anchor="middle">{b["label"]}</text>'
            )
        out.append("\n        ")
    out.append("\n      </svg>")
    return mark_safe("".join(out))  # noqa: S308 - numbers, fixed labels and escaped text


def cost_svg(chart: dict[str, Any]) -> SafeString:
    width, height, base = chart["width"], chart["height"], chart["base"]
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="Cost per day'
        ' per agent over the last 7 days">\n        '
    ]
    for g in chart["grid"]:
        out.append(
            f'<line class="grid-line" x1="48" x2="{width}" y1="{g["y"]}" y2="{g["y"]}"/>'
            f'<text x="0" y="{g["y"]}" dy="4">{conditional_escape(money(g["value"]))}</text>'
        )
    out.append(
        f'\n        <line class="grid-line" x1="48" x2="{width}" y1="{base}" y2="{base}"/>'
        "\n        "
    )
    for b in chart["bars"]:
        x, w, label = b["x"], b["w"], conditional_escape(b["label"])
        out.append(
            f"{_BAR_SEP}<g><title>{label}: {conditional_escape(money(b['total']))}</title>"
            f"{_BAR_SEP}"
        )
        for p in b["parts"]:
            out.append(
                f'<rect class="series-{p["series"]}" x="{x}" y="{p["y"]}" width="{w}"'
                f' height="{p["h"]}" rx="2"><title>{label} · {conditional_escape(p["agent"])}:'
                f" {conditional_escape(money(p['cost']))}</title></rect>"
            )
        out.append(
            f'{_BAR_SEP}</g>{_BAR_SEP}<text x="{b["tx"]}" y="{height - 6}"'
            f' text-anchor="middle">{label}</text>\n        '
        )
    out.append("\n      </svg>")
    return mark_safe("".join(out))  # noqa: S308 - numbers and escaped text
