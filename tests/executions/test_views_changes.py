"""The list's catch-up after a reconnect sends only what the page can place: rows it shows (in
place) and new rows its filters take (on top); nothing for any other row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


def test_the_catch_up_sends_only_rows_the_page_shows_or_takes_in(viewer, agent):
    shown = start(agent)
    park(shown)
    other = start(agent)  # pending: the page below lists only parked runs
    since = (timezone.now() - timedelta(minutes=1)).isoformat()
    page = browser(viewer)
    base = f"/executions/changes/?status=awaiting_approval&insert=1&since={since}"

    body = page.get(f"{base}&shown={shown.pk}").content.decode()
    assert f'id="exec-{shown.pk}"' in body and 'hx-swap-oob="true"' in body
    assert str(other.pk) not in body

    # A page that shows nothing gets the parked run as a new row on top, and still not the other.
    body = page.get(f"{base}&shown=").content.decode()
    assert 'hx-swap-oob="afterbegin:#exec-rows"' in body and str(shown.pk) in body
    assert str(other.pk) not in body

    # Without `shown` (an older page), every changed row comes in place, as before.
    body = page.get(f"/executions/changes/?since={since}").content.decode()
    assert str(shown.pk) in body and str(other.pk) in body
