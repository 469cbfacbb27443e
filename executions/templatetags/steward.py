"""Formatting for dashboard templates: durations, money, tokens, JSON trees, status labels."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import markdown as markdown_lib
import nh3
from django import template
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from approvals.models import Approval

register = template.Library()

STATUS_LABELS = {
    "pending": "Pending",
    "running": "Running",
    "awaiting_approval": "Awaiting approval",
    "awaiting_input": "Awaiting input",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "rejected": "Rejected",
    "approved": "Approved",
    "expired": "Expired",
}


@register.filter
def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, str(status).replace("_", " ").capitalize())


@register.simple_tag
def status_badge(status: str) -> SafeString:
    return format_html(
        '<span class="badge st-{}" data-status="{}">{}</span>',
        status,
        status,
        status_label(status),
    )


@register.filter
def status_summary(statuses: Any, selected: Any) -> dict[str, str]:
    """The Status filter's one-line label: "Any status", "Completed, Failed", or
    "Completed +2" when more are ticked (the full list goes in the tooltip)."""
    labels = [status_label(s) for s in statuses if s in (selected or ())]
    if not labels:
        return {"short": "Any status", "full": "Any status"}
    short = ", ".join(labels) if len(labels) <= 2 else f"{labels[0]} +{len(labels) - 1}"
    return {"short": short, "full": ", ".join(labels)}


@register.filter
def duration(ms: Any) -> str:
    """Milliseconds as a short human duration: 340 ms, 2.4 s, 3 m 05 s, 1 h 02 m."""
    if ms in (None, ""):
        return "—"
    ms = int(ms)
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    return f"{hours // 24} d {hours % 24} h"


@register.filter
def seconds_since(value: datetime | None) -> str:
    if not value:
        return "—"
    return duration(int((timezone.now() - value).total_seconds() * 1000))


@register.filter
def money(value: Any) -> str:
    """USD with enough precision for per-call costs: $0.0012, $1.24; unknown is a dash."""
    if value is None or value == "":
        return "—"
    amount = Decimal(str(value))
    if amount == 0:
        return "$0.00"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    if abs(amount) >= Decimal("0.01"):
        return f"${amount:.3f}"
    # Per-call costs: keep two significant digits (0.00042), never a bare "$0.".
    digits = f"{amount:.8f}".rstrip("0")
    return f"${digits}" if not digits.endswith(".") else f"${digits}00"


@register.filter
def tokens(usage: Any) -> str:
    if not usage:
        return "—"
    total = usage.get("total_tokens")
    if total is None:
        total = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    return f"{int(total):,}" if total else "—"


@register.filter
def intcomma0(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def short_id(value: Any) -> str:
    return str(value).split("-")[-1][-8:] if value else ""


@register.filter
def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def markdown(text: str) -> SafeString:
    """Markdown rendered and then sanitised (descriptions are written by agents and programs)."""
    html = markdown_lib.markdown(text or "", extensions=["fenced_code", "tables"])
    return mark_safe(nh3.clean(html))  # noqa: S308 - nh3 sanitised it


# --- JSON tree -------------------------------------------------------------------------------

_OPEN_DEPTH = 2
_MAX_ITEMS = 200


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="z">null</span>'
    if isinstance(value, bool):
        return f'<span class="b">{"true" if value else "false"}</span>'
    if isinstance(value, (int, float, Decimal)):
        return f'<span class="n">{escape(str(value))}</span>'
    # The string as text (real line breaks, no backslash escapes), quoted to read as a string.
    return f'<span class="s">"{escape(str(value))}"</span>'


def _tree(value: Any, depth: int, suffix: str = "") -> str:
    """Objects and arrays as <details>; `suffix` (a trailing comma) goes inside, after the
    closing bracket and after the collapsed preview, so it never lands on a line of its own."""
    if isinstance(value, dict | list) and not value:
        return ("{}" if isinstance(value, dict) else "[]") + suffix
    if isinstance(value, dict):
        items = list(value.items())
        last = min(len(items), _MAX_ITEMS) - 1
        inner = "".join(
            f'<span class="node"><span class="k">{escape(json.dumps(str(k), ensure_ascii=False))}'
            f"</span>: {_tree(v, depth + 1, ',' if i < len(items) - 1 else '')}</span>"
            for i, (k, v) in enumerate(items[: last + 1])
        )
        if len(items) > _MAX_ITEMS:
            inner += f'<span class="node z">… {len(items) - _MAX_ITEMS} more keys</span>'
        count = f"{len(items)} key{'s' if len(items) != 1 else ''}"
        preview = f'<span class="preview">{count} }}{suffix}</span>'
        opened = " open" if depth < _OPEN_DEPTH else ""
        return f"<details{opened}><summary>{{{preview}</summary>{inner}}}{suffix}</details>"
    if isinstance(value, list):
        last = min(len(value), _MAX_ITEMS) - 1
        inner = "".join(
            f'<span class="node">{_tree(v, depth + 1, "," if i < len(value) - 1 else "")}</span>'
            for i, v in enumerate(value[: last + 1])
        )
        if len(value) > _MAX_ITEMS:
            inner += f'<span class="node z">… {len(value) - _MAX_ITEMS} more items</span>'
        count = f"{len(value)} item{'s' if len(value) != 1 else ''}"
        preview = f'<span class="preview">{count} ]{suffix}</span>'
        opened = " open" if depth < _OPEN_DEPTH else ""
        return f"<details{opened}><summary>[{preview}</summary>{inner}]{suffix}</details>"
    return _scalar(value) + suffix


@register.filter
def is_text(value: Any) -> bool:
    return isinstance(value, str)


@register.filter
def json_tree(value: Any) -> SafeString:
    """A collapsible, highlighted JSON rendering (every string is escaped)."""
    return mark_safe(f'<pre class="json">{_tree(value, 0)}</pre>')  # noqa: S308 - escaped above


@register.simple_tag(takes_context=True)
def query_with(context: Any, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes them)."""
    request = context["request"]
    params = request.GET.copy()
    for key, value in changes.items():
        params.pop(key, None)
        if value not in (None, ""):
            params[key] = value
    params.pop("cursor", None) if "cursor" not in changes else None
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def nav_pending_count(context: Any) -> int:
    """Pending approvals of the current workspace, for the header badge."""
    request = context.get("request")
    workspace = getattr(request, "workspace", None) if request is not None else None
    if workspace is None:
        return 0
    return Approval.objects.for_workspace(workspace).pending().count()


def _brief(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def event_text(ev: Any) -> dict[str, Any]:
    """A streamed event as (css class, text) for the stream panel."""
    data = ev.data if isinstance(ev.data, dict) else {"value": ev.data}
    kind = ev.type
    text = data.get("content") or data.get("text") or data.get("delta") or ""
    name = data.get("name") or data.get("tool") or ""
    if kind == "content":
        return {"cls": "content", "text": str(text)}
    if kind == "thinking":
        # An SVG icon in the partial, not an emoji: no emoji font is needed to see it.
        return {"cls": "ev thinking", "text": str(text), "icon": "thinking"}
    if kind == "tool_start":
        args = data.get("arguments", data.get("args"))
        shown = _brief(args) if args is not None else ""
        return {"cls": "ev", "text": f"▶ {name}({shown})" if shown else f"▶ {name} …"}
    if kind == "tool_end":
        result = data.get("summary", data.get("output", data.get("result", data.get("error"))))
        shown = _brief(result) if result else ""
        # The engine streams a summary cut at ~120 characters; the full result is one click away
        # (the tool step's recorded output, fetched when the line is opened).
        more = bool(data.get("id")) and shown.endswith("…")
        return {"cls": "ev", "text": f"✓ {name} → {shown}" if shown else f"✓ {name}",
                "more": more, "call": str(data.get("id") or "")}  # fmt: skip
    if kind == "error":
        return {"cls": "ev error", "text": f"✕ {data.get('error') or data.get('message') or ''}"}
    if kind == "done":
        return {"cls": "ev", "text": "■ done"}
    if kind == "execution":
        return {"cls": "", "text": ""}
    return {"cls": "ev", "text": f"{kind} {_brief(data)}"}
