"""The inbox page's cards are the live fan-out's cards, byte for byte, and the page reads a
fixed number of queries whatever the number of cards (issue 12: the page reads the approvals'
card columns only, and each card's votes from one prefetch)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.template.defaultfilters import date
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.timezone import template_localtime

from approvals.models import Approval, ApprovalDecision, ApprovalStatus
from executions.live import fragments
from executions.models import Membership
from executions.pages.approval_contexts import item_context
from executions.templatetags.steward_inbox import due_text
from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


def cards(html: str) -> dict[str, str]:
    return {
        m.group(1): m.group(0)
        for m in re.finditer(
            r'<li class="inbox-item[^"]*" id="approval-item-([0-9a-f-]{36})".*?</li>', html, re.S
        )
    }


def fanout_card(member, approval_id) -> str:
    viewer = fragments.Viewer(
        membership=Membership.objects.select_related("workspace").get(user=member.user),
        user=member.user,
    )
    approval = fragments._approval(viewer, approval_id)
    context = item_context(approval, viewer.membership, viewer.user)
    return render_to_string("approvals/inbox.html#item", {**context, "oob": False})


def vote(approval, who, decision, reason="", minutes=0):
    ApprovalDecision.objects.create(
        approval=approval,
        decision=decision,
        reason=reason,
        actor_user=who.user,
        actor_label=who.user.username,
        created_at=timezone.now() - timedelta(minutes=minutes),
    )


@pytest.fixture
def mixed(agent, owner, teammate):
    """Pending (one with half its quorum, one with a deadline), approved and rejected ones with
    their votes' reasons, asked two hours ago (a stable "asked … ago" on both sides)."""
    asked = timezone.now() - timedelta(hours=2, minutes=10)
    made = [park(start(agent)) for _ in range(5)]
    quorum, due, plain, approved, rejected = made
    Approval.objects.filter(pk__in=[a.pk for a in made]).update(created_at=asked)
    Approval.objects.filter(pk=quorum.pk).update(required_approvals=2)
    vote(quorum, owner, "approve")
    Approval.objects.filter(pk=due.pk).update(expires_at=timezone.now() + timedelta(hours=5))
    Approval.objects.filter(pk=approved.pk).update(
        status=ApprovalStatus.APPROVED, decided_by_label="olivia", decided_at=timezone.now()
    )
    vote(approved, owner, "approve", reason="fine <b>by</b> me")
    Approval.objects.filter(pk=rejected.pk).update(
        status=ApprovalStatus.REJECTED, decided_by_label="rory", decided_at=timezone.now()
    )
    vote(rejected, owner, "approve", reason="an earlier vote", minutes=5)
    vote(rejected, teammate, "reject", reason="the latest vote's reason")
    plain.assignee_users.add(teammate.user)
    return made


@pytest.mark.parametrize("tab", ["all", "decided", "mine", "roles"])
def test_page_cards_are_the_fanout_cards(teammate, mixed, tab):
    html = browser(teammate).get(f"/approvals/?tab={tab}").content.decode()
    shown = cards(html)
    assert shown
    for pk, card in shown.items():
        assert card == fanout_card(teammate, pk).strip()
    if tab == "decided":
        assert "the latest vote&#x27;s reason" in html and "an earlier vote" not in html
        assert "fine &lt;b&gt;by&lt;/b&gt; me" in html
    if tab == "all":
        assert '<span class="quorum">' in html and "1/2</span>" in html


@pytest.mark.parametrize("tab", ["all", "decided"])
def test_page_queries_do_not_grow_with_the_cards(agent, owner, teammate, tab):
    def queries() -> int:
        page = browser(teammate)
        page.get(f"/approvals/?tab={tab}")
        with CaptureQueriesContext(connection) as captured:
            assert page.get(f"/approvals/?tab={tab}").status_code == 200
        return len(captured.captured_queries)

    def add(n: int) -> None:
        for _ in range(n):
            approval = park(start(agent))
            vote(approval, owner, "approve", reason="ok")
            if tab == "decided":
                Approval.objects.filter(pk=approval.pk).update(status=ApprovalStatus.APPROVED)

    add(2)
    few = queries()
    add(5)
    assert queries() == few


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_due_text_is_the_date_filter(zone):
    """The card's "due Nov 3, 09:05" is `date:'M j, H:i'` in the current time zone."""
    start = datetime(2026, 1, 1, 0, 7, 3, tzinfo=UTC)
    with timezone.override(ZoneInfo(zone)):
        for hours in range(0, 24 * 366, 37):
            value = start + timedelta(hours=hours, minutes=hours % 60)
            assert due_text(value) == date(template_localtime(value), "M j, H:i")
