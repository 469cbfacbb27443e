"""`natural_time`: humanize's `naturaltime` ("3 minutes ago", "2 weeks, 1 day ago") without
its lazy translations.

naturaltime formats through lazy `ngettext`/`npgettext` strings: every call resolves two to four
of them against the active catalog, which made it the dearest part of a list row (~40 µs of
~110, more for runs older than a day, cProfile at 1M runs). The dashboard ships English only, so
in English the same strings are built directly — the calendar arithmetic is still Django's
`timesince` — and any other active language, a naive or a future value goes to naturaltime
itself. tests/executions/test_pages_natural_time.py holds the two equal over minutes to years.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils.timesince import timesince
from django.utils.translation import get_language

register = template.Library()

ENGLISH = frozenset({"en", "en-us"})


class _Plural:
    """An English `ngettext` of "%(num)d unit": what timesince formats each part with."""

    __slots__ = ("many", "one")

    def __init__(self, unit: str) -> None:
        self.one, self.many = f"%(num)d {unit}", f"%(num)d {unit}s"

    def __mod__(self, values: dict[str, int]) -> str:
        return (self.one if values["num"] == 1 else self.many) % values


_PAST = {unit: _Plural(unit) for unit in ("year", "month", "week", "day", "hour", "minute")}
_NBSP = "\xa0"


def natural_time(value: Any, now: datetime | None = None) -> Any:
    """naturaltime(value), the same text; `now` for tests (naturaltime reads the clock)."""
    if not isinstance(value, datetime) or value.tzinfo is None or get_language() not in ENGLISH:
        return naturaltime(value)
    now = now or datetime.now(UTC)
    if value >= now:
        return naturaltime(value)  # "now" or the future: rare, left to Django
    delta = now - value
    if delta.days:
        return f"{timesince(value, now, time_strings=_PAST)} ago"
    seconds = delta.seconds
    if seconds == 0:
        return "now"
    if seconds < 60:
        return "a second ago" if seconds == 1 else f"{seconds}{_NBSP}seconds ago"
    if seconds < 3600:
        count = seconds // 60
        return "a minute ago" if count == 1 else f"{count}{_NBSP}minutes ago"
    count = seconds // 3600
    return "an hour ago" if count == 1 else f"{count}{_NBSP}hours ago"


register.filter("natural_time", natural_time)
