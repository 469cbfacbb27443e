"""The overview's two charts are drawn in Python (executions/pages/overview.py): the markup
is the template's that drew them before, byte for byte, for known datasets (issue 12)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.template import engines

from executions.pages.overview import cost_chart, hourly_chart

# The templates that drew the charts until issue 12, verbatim.
HOURLY_TEMPLATE = """{% load steward %}<svg class="chart" viewBox="0 0 {{ hourly.width }} {{ hourly.height }}" role="img" aria-label="Executions per hour over the last 24 hours">
        {% for g in hourly.grid %}<line class="grid-line" x1="32" x2="{{ hourly.width }}" y1="{{ g.y }}" y2="{{ g.y }}"/><text x="0" y="{{ g.y|add:0 }}" dy="4">{{ g.label }}</text>{% endfor %}
        <line class="grid-line" x1="32" x2="{{ hourly.width }}" y1="{{ hourly.base }}" y2="{{ hourly.base }}"/>
        {% for b in hourly.bars %}
          <g><title>{{ b.label }}: {{ b.total }} run{{ b.total|pluralize }} ({{ b.ok }} completed, {{ b.bad }} failed/cancelled/rejected, {{ b.other }} other)</title>
          {% for p in b.parts %}<rect class="{{ p.cls }}" x="{{ b.x }}" y="{{ p.y }}" width="{{ b.w }}" height="{{ p.h }}" rx="2"/>{% endfor %}
          {% if not b.parts %}<rect x="{{ b.x }}" y="{{ hourly.base|add:-1 }}" width="{{ b.w }}" height="1" style="fill:var(--border)"/>{% endif %}
          </g>
          {% if b.now %}<text x="{{ b.right }}" y="{{ hourly.height|add:-6 }}" text-anchor="end" class="now"><title>the current hour</title>{{ b.label }}</text>{% elif b.show_label %}<text x="{{ b.tx }}" y="{{ hourly.height|add:-6 }}" text-anchor="middle">{{ b.label }}</text>{% endif %}
        {% endfor %}
      </svg>"""  # noqa: E501
COST_TEMPLATE = """{% load steward %}<svg class="chart" viewBox="0 0 {{ cost_chart.width }} {{ cost_chart.height }}" role="img" aria-label="Cost per day per agent over the last 7 days">
        {% for g in cost_chart.grid %}<line class="grid-line" x1="48" x2="{{ cost_chart.width }}" y1="{{ g.y }}" y2="{{ g.y }}"/><text x="0" y="{{ g.y }}" dy="4">{{ g.value|money }}</text>{% endfor %}
        <line class="grid-line" x1="48" x2="{{ cost_chart.width }}" y1="{{ cost_chart.base }}" y2="{{ cost_chart.base }}"/>
        {% for b in cost_chart.bars %}
          <g><title>{{ b.label }}: {{ b.total|money }}</title>
          {% for p in b.parts %}<rect class="series-{{ p.series }}" x="{{ b.x }}" y="{{ p.y }}" width="{{ b.w }}" height="{{ p.h }}" rx="2"><title>{{ b.label }} · {{ p.agent }}: {{ p.cost|money }}</title></rect>{% endfor %}
          </g>
          <text x="{{ b.tx }}" y="{{ cost_chart.height|add:-6 }}" text-anchor="middle">{{ b.label }}</text>
        {% endfor %}
      </svg>"""  # noqa: E501

NOW = datetime(2026, 11, 29, 21, 37, 12, tzinfo=UTC)
STATUSES = ["completed", "failed", "rejected", "cancelled", "running", "pending",
            "awaiting_approval"]  # fmt: skip
NAMES = ["a", "b<&>\"'", "zé", "x" * 40] + [f"agent-{i:02d}" for i in range(20)]


def _old(template: str, **context: object) -> str:
    return engines["django"].from_string(template).render(context)


def test_hourly_chart_known_dataset() -> None:
    rows = [
        {"hour": NOW.replace(minute=0, second=0, microsecond=0), "status": "completed", "n": 7},
        {"hour": datetime(2026, 11, 29, 3, tzinfo=UTC), "status": "failed", "n": 1},
        {"hour": datetime(2026, 11, 29, 3, tzinfo=UTC), "status": "running", "n": 2},
    ]
    chart = hourly_chart(rows, now=NOW)
    svg = str(chart["svg"])
    assert svg == _old(HOURLY_TEMPLATE, hourly=chart)
    assert "<title>21:00: 7 runs (7 completed, 0 failed/cancelled/rejected, 0 other)</title>" in svg
    assert "<title>03:00: 3 runs (0 completed, 1 failed/cancelled/rejected, 2 other)</title>" in svg
    assert svg.count('style="fill:var(--border)"') == 22  # the 22 empty hours


def test_cost_chart_known_dataset_escapes_names() -> None:
    rows = [
        {"day": NOW.date(), "agent__name": "<b>", "cost": Decimal("1.5")},
        {"day": (NOW - timedelta(days=2)).date(), "agent__name": "ok", "cost": Decimal("0.0004")},
    ]
    chart = cost_chart(rows, now=NOW)
    svg = str(chart["svg"])
    assert svg == _old(COST_TEMPLATE, cost_chart=chart)
    assert "Sun 29 · &lt;b&gt;: $1.50" in svg and "<b>" not in svg


def test_charts_match_the_old_templates_on_random_datasets() -> None:
    rnd = random.Random(12)
    for _ in range(200):
        now = NOW.replace(hour=rnd.randrange(24), minute=rnd.randrange(60))
        hours = [
            {"hour": (now - timedelta(hours=rnd.randrange(26))).replace(minute=0, second=0,
             microsecond=0), "status": rnd.choice(STATUSES), "n": rnd.randrange(1, 5000)}
            for _ in range(rnd.choice([0, 1, 30, 150]))
        ]  # fmt: skip
        chart = hourly_chart(hours, now=now)
        assert str(chart["svg"]) == _old(HOURLY_TEMPLATE, hourly=chart)
        days = [
            {"day": (now - timedelta(days=rnd.randrange(8))).date(),
             "agent__name": rnd.choice(NAMES), "cost": rnd.choice(
                 [None, Decimal(0), Decimal(rnd.randrange(1, 10**8)) / 10 ** rnd.randrange(9)])}
            for _ in range(rnd.choice([0, 1, 40, 140]))
        ]  # fmt: skip
        chart = cost_chart(days, now=now)
        if chart["legend"]:
            assert str(chart["svg"]) == _old(COST_TEMPLATE, cost_chart=chart)
