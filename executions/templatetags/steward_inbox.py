"""One approvals inbox card (`approvals/inbox.html#item`), built in Python.

The inbox renders 50 cards and the live fan-out one card per change, both through that
partial. Written as template markup, a card cost ~1.2 ms of CPU (three `{% url %}`, three
`date` filters, naturaltime, ~60 variable lookups and a dozen `{% if %}`): about 60 of the
~110 ms an inbox page spent at 1M runs (docs/performance-history.md, "Scale"). Here it is one call,
with the same markup; the `<li>` stays in the partial's place, so both paths still agree.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.defaultfilters import truncatechars
from django.utils.dates import MONTHS_3
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import template_localtime

from executions.templatetags.steward import iso, short_id, status_label
from executions.templatetags.steward_rows import _url, escape
from executions.templatetags.steward_time import natural_time

register = template.Library()


def _truncate(text: str, length: int) -> str:
    """`truncatechars`, whose Truncator normalizes and walks every character: an ASCII text
    that fits is returned as it is, which is what it would return."""
    if text.isascii() and len(text) <= length:
        return text
    return truncatechars(text, length)


def _stamp(value: Any) -> str:
    """`date:'U.u'` (the sort keys): seconds since the epoch, a dot, the microseconds, without
    parsing the format string for every card."""
    return f"{int(value.timestamp())}.{value.microsecond:06d}"


def due_text(value: Any) -> str:
    """`date:'M j, H:i'` in the current time zone ("Nov 3, 09:05"), without parsing the format
    for every card: dateformat's M is the month's translated short name, title-cased."""
    local = template_localtime(value)
    return f"{MONTHS_3[local.month].title()} {local.day}, {local.hour:02d}:{local.minute:02d}"


def _proposal(proposal: dict[str, Any]) -> str:
    tool = proposal.get("tool")
    if not tool:
        return ""
    rows = proposal.get("rows") or []
    args = ", ".join(f"{escape(r['key'])}={escape(_truncate(r['value'], 24))}" for r in rows[:3])
    return f'<span class="mono">⚙ {escape(tool)}({args})</span>'


def _resolved(a: Any, status: str, last: Any) -> str:
    by = a.decided_by_label
    text = escape(status_label(status))
    if by:
        text += f" by {escape(by)}"
    reason = getattr(last, "reason", "") if last is not None else ""
    if reason:
        text += f": “{escape(_truncate(reason, 80))}”"
    return (
        f'<div class="resolved-note st-{escape(status)}" style="margin:.4rem 0 0;'
        f'padding:.3rem .6rem;display:inline-block" data-decided-by="{escape(by)}">{text}</div>'
    )


@register.simple_tag
def inbox_card(
    a: Any, progress: Any, can_decide: Any, proposal: Any, last: Any, oob: Any = ""
) -> SafeString:
    """The card's `<li>`; `a` has its execution and that execution's agent loaded."""
    pk = a.pk
    status = str(a.status)
    pending = status == "pending"
    detail = _url("approval_detail", pk)
    title = escape(a.title)
    due = _stamp(a.expires_at) if a.expires_at else ""
    if can_decide:
        select = (
            f'<input type="checkbox" name="ids" value="{pk}" form="bulk-form" '
            f'aria-label="Select {title}">'
        )
    else:
        select = '<span style="display:inline-block;width:15px"></span>'
    run = ""
    execution = a.execution
    if execution:
        run = (
            f"<span>{escape(execution.agent.name)}</span>"
            f'<a class="mono" href="{_url("execution_detail", a.execution_id)}">'
            f"{escape(short_id(a.execution_id))}</a>"
        )
    if pending:
        badge = '<span class="badge st-awaiting_approval">Pending</span>'
    else:
        badge = f'<span class="badge st-{escape(status)}">{escape(status_label(status))}</span>'
    due_note = ""
    if pending and a.expires_at:
        due_note = (
            f'<span class="due" data-due="{escape(iso(a.expires_at))}">'
            f"due {escape(due_text(a.expires_at))}</span>"
        )
    quorum = ""
    if progress and progress["required"] > 1:
        quorum = (
            f'<span class="quorum"><span class="bar"><i style="width:{progress["percent"]}%">'
            f"</i></span>{progress['approvals']}/{progress['required']}</span>"
        )
    swap = 'hx-swap-oob="true"' if oob else ""
    card = (
        f'<li class="inbox-item{"" if pending else " resolved"}" id="approval-item-{pk}" '
        f'data-id="{pk}" data-href="{detail}" '
        f'data-decide-url="{_url("approval_decide", pk)}" '
        f'data-can-decide="{"1" if can_decide else "0"}" data-sort-due="{due}" '
        f'data-sort-created="{_stamp(a.created_at)}" tabindex="-1" role="option" '
        f"{swap}>\n"
        f"      <div>{select}</div>\n"
        "      <div>\n"
        f'        <a class="title" href="{detail}">{title}</a>\n'
        '        <div class="meta">\n'
        f"          {run}\n"
        f"          {_proposal(proposal or {})}\n"
        f'          <span>asked <time datetime="{escape(iso(a.created_at))}" data-rel>'
        f"{escape(natural_time(a.created_at))}</time></span>\n"
        "        </div>\n"
        f"        {'' if pending else _resolved(a, status, last)}\n"
        "      </div>\n"
        '      <div class="side">\n'
        f"        {badge}\n"
        f"        {due_note}\n"
        f"        {quorum}\n"
        "      </div>\n"
        "    </li>"
    )
    return mark_safe(card)  # every value above is escaped
