"""`natural_time` (executions/templatetags/steward_time.py) writes what humanize's naturaltime
writes, from a second to years, across month ends and leap days; other languages, naive and
future values are handed to naturaltime itself."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.contrib.humanize.templatetags import humanize
from django.template import Context, Template
from django.utils import translation

from executions.templatetags.steward_time import natural_time


def _django(value: datetime, now: datetime) -> str:
    """naturaltime with its clock set to `now`."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206 - datetime.now's signature
            return now if tz is not None else now.replace(tzinfo=None)

    with mock.patch.object(humanize, "datetime", Frozen):
        return humanize.naturaltime(value)


NOWS = [
    datetime(2026, 11, 30, 3, 45, 12, 345678, tzinfo=UTC),
    datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC),  # after a short February
    datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC),  # a leap day
    datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC),  # a month end
]
SECONDS = [1, 2, 59, 60, 61, 119, 120, 3599, 3600, 3601, 7199, 7200, 86399, 86400, 86401,
           90061, 6 * 86400, 7 * 86400, 8 * 86400 + 3600, 13 * 86400, 14 * 86400, 29 * 86400,
           30 * 86400, 31 * 86400, 59 * 86400, 60 * 86400, 364 * 86400, 365 * 86400,
           366 * 86400, 400 * 86400, 800 * 86400]  # fmt: skip


@pytest.mark.parametrize("now", NOWS)
def test_same_text_as_naturaltime(now):
    rng = random.Random(12)
    deltas = [timedelta(seconds=s) for s in SECONDS]
    deltas += [timedelta(seconds=s + 0.25) for s in SECONDS]
    deltas += [timedelta(seconds=rng.uniform(0, 900 * 86400)) for _ in range(400)]
    for delta in deltas:
        value = now - delta
        assert natural_time(value, now) == _django(value, now), delta


def test_now_future_naive_and_other_languages_are_naturaltime():
    now = datetime.now(UTC)
    assert natural_time(now + timedelta(days=3)) == humanize.naturaltime(now + timedelta(days=3))
    assert natural_time(None) is None
    naive = datetime(2020, 1, 1, 12, 0)
    assert natural_time(naive) == humanize.naturaltime(naive)
    with translation.override("de"):
        value = now - timedelta(days=9)
        assert natural_time(value) == humanize.naturaltime(value)


def test_filter_in_a_template():
    value = datetime.now(UTC) - timedelta(minutes=5, seconds=3)
    rendered = Template("{% load steward_time %}{{ when|natural_time }}").render(
        Context({"when": value})
    )
    assert rendered == "5\xa0minutes ago"
