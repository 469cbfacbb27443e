"""The cells of one execution list row (`executions/list.html#row`), built in Python.

The list page renders 50 rows and the live fan-out one row per change through the same partial.
Written as template markup, a row cost ~0.7 ms of CPU (three `{% url %}`, an include for the
duration, a dozen filters and ~40 variable lookups): 35 of the ~47 ms a list page spent at 1M
runs (docs/performance-history.md, "Scale"). Here it is one call, with the same markup.
"""

from __future__ import annotations

from html import escape as html_escape
from typing import Any

from django import template
from django.template.defaultfilters import truncatechars, urlencode
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import template_localtime

from executions.templatetags.steward import (
    duration,
    iso,
    money,
    query_with,
    seconds_since,
    short_id,
    status_label,
    tokens,
)
from executions.templatetags.steward_time import natural_time

register = template.Library()


def escape(value: Any) -> str:
    """django.utils.html.escape without its lazy-string wrapper (a third of a row's escaping
    time went to the wrapper's argument checks): the same `html.escape(str(value))`."""
    return html_escape(str(value))


def _badge(status: str) -> str:
    """The `status_badge` tag's markup, escaped the same way, without format_html."""
    safe = escape(status)
    return (
        f'<span class="badge st-{safe}" data-status="{safe}">{escape(status_label(status))}</span>'
    )


# Reversed once per process: the row's links differ only by the id in them.
_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
_prefixes: dict[str, tuple[str, str]] = {}


def _url(name: str, pk: Any) -> str:
    parts = _prefixes.get(name)
    if parts is None:
        before, _, after = reverse(name, args=[_PLACEHOLDER]).partition(_PLACEHOLDER)
        parts = _prefixes[name] = (before, after)
    return f"{parts[0]}{pk}{parts[1]}"


def _list_url() -> str:
    found = _prefixes.get("execution_list")
    if found is None:
        found = _prefixes["execution_list"] = (reverse("execution_list"), "")
    return found[0]


def _short_session(session_id: str) -> str:
    """`truncatechars:18`, whose Truncator normalizes and walks every character: an ASCII id
    that fits (the usual session id) is returned as it is, which is what it would return."""
    if session_id.isascii() and len(session_id) <= 18:
        return session_id
    return truncatechars(session_id, 18)


def _stamp(moment: Any) -> str:
    """`date:'Y-m-d H:i:s'` in the current time zone (1.5 µs here against 2.3 for strftime)."""
    t = template_localtime(moment)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


# PLAIN: what the row computes — ids (hex), times (iso, "Y-m-d H:i:s"), durations, token
# counts and money — has no markup characters, so it goes in unescaped (escaping it was ~40%
# of a row's escape calls); text someone chose (names, version labels, sessions, statuses) and
# translated text (relative times) is escaped. test_pages_list_rows.py checks the alphabet.


def _duration_cell(e: Any) -> str:
    """executions/_duration.html, for the row (the other pages include the template)."""
    t = e.times
    if t["running_ms"] is None:
        return '<span class="faint">queued</span>'
    running = duration(t["running_ms"])
    if e.completed_at or t["waiting_since"]:
        waits = "; waits are counted apart" if t["waiting_ms"] else ""
        out = f'<span title="time running{waits}">{running}</span>'
    else:
        out = (
            f'<time datetime="{iso(t["running_from"])}" data-elapsed '
            f'title="time running so far">{running}</time>'
        )
    if t["waiting_since"]:
        out += (
            '<span class="sub" title="parked: time running resumes when it does">waiting '
            f'<time datetime="{iso(t["waiting_since"])}" data-elapsed>'
            f"{seconds_since(t['waiting_since'])}</time></span>"
        )
    elif t["waiting_ms"]:
        out += (
            '<span class="sub" title="time spent waiting (approval, input, sleep, child run)">'
            f"+ {duration(t['waiting_ms'])} waiting</span>"
        )
    return out


def _started_cell(e: Any) -> str:
    if e.started_at:
        return (
            f'<time datetime="{iso(e.started_at)}" data-rel title="{_stamp(e.started_at)} UTC">'
            f"{escape(natural_time(e.started_at))}</time>"
        )
    return (
        f'<span class="faint">queued <time datetime="{iso(e.created_at)}" data-rel>'
        f"{escape(natural_time(e.created_at))}</time></span>"
    )


@register.simple_tag
def execution_row_cells(e: Any) -> SafeString:
    """The row's nine cells; `e` has its agent, version and `times` (attach_times) loaded."""
    pk = e.pk
    parent = '<span class="sub">child run</span>' if e.parent_id else ""
    if e.agent_version:
        version = f'<span class="tag">{escape(e.agent_version.version)}</span>'
    else:
        version = '<span class="faint">—</span>'
    if e.session_id:
        listing = _list_url()
        session = (
            f'<a class="mono" href="{listing}?q={escape(urlencode(e.session_id))}">'
            f"{escape(_short_session(e.session_id))}</a>"
        )
    else:
        session = '<span class="faint">—</span>'
    cells = (
        f'<td class="id"><a href="{_url("execution_detail", pk)}" title="{pk}">'
        f"{short_id(pk)}</a>{parent}</td>\n"
        f'          <td><a href="{_url("agent_detail", e.agent_id)}" style="color:inherit">'
        f"{escape(e.agent.name)}</a></td>\n"
        f'          <td class="hide-sm">{version}</td>\n'
        f"          <td>{_badge(e.status)}</td>\n"
        f'          <td class="nowrap">{_started_cell(e)}</td>\n'
        f'          <td class="num">{_duration_cell(e)}\n</td>\n'
        f'          <td class="num hide-sm">{tokens(e.token_usage)}</td>\n'
        f'          <td class="num">{money(e.cost)}</td>\n'
        f'          <td class="hide-sm">{session}</td>'
    )
    return mark_safe(cells)  # text is escaped; the rest is PLAIN (see above)


@register.simple_tag
def duration_cell(e: Any) -> SafeString:
    """`{% include "executions/_duration.html" %}` for `e` (its file ends with a newline)."""
    return mark_safe(_duration_cell(e) + "\n")  # every value in it is escaped


@register.simple_tag
def pk_url(name: str, pk: Any) -> str:
    """`{% url name pk %}` for a route whose one argument is an id, reversed once a process."""
    return _url(name, pk)


@register.simple_tag
def execution_rows(items: Any) -> SafeString:
    """The page's rows: the `row` partial once per run, the same bytes the template's loop wrote
    around it (`{% for %}` and `{% partialdef row inline %}`), in one call instead of a loop
    pushing a context, a partial and three variable nodes per row. The `row` partial stays the
    live fan-out's (contexts.row_html); test_pages_list_rows.py holds the two equal."""
    return mark_safe(  # the cells are escaped; a uuid and an escaped status around them
        "".join(
            f'\n        \n        <tr id="exec-{e.pk}" data-status="{escape(e.status)}" >\n'
            f"          {execution_row_cells(e)}\n        </tr>\n        \n        "
            for e in items
        )
    )


@register.simple_tag(takes_context=True)
def sort_th(context: Any, field: str, label: str, num: bool = False) -> SafeString:
    """A sortable column's header (was the executions/_sort_th.html include, three a page):
    the link flips the order when the list is sorted by this column newest-first."""
    ordering = context.get("ordering")
    desc = f"-{field}"
    href = escape(query_with(context, ordering=field if ordering == desc else desc))
    if ordering == desc:
        sort = 'aria-sort="descending"'
    elif ordering == field:
        sort = 'aria-sort="ascending"'
    else:
        sort = ""
    return mark_safe(  # every value is escaped
        f'<th class="{"num " if num else ""}nowrap"><a href="{href}" {sort} '
        f'title="Sort by {escape(label.lower())}">{escape(label)}</a></th>\n'
    )  # the include's file ended with a newline: the same bytes
