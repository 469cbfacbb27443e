"""The approvals inbox pages by keyset: 50 cards a page, previous / next links, honest tab
counts, the same order as the approvals list (issue 12)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import selectors as approval_selectors
from approvals.models import Approval, ApprovalStatus
from executions.models import Membership
from executions.pages.approval_contexts import in_tab
from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def backlog(agent, teammate):
    """120 pending approvals: 80 with deadlines (some sharing one), 40 without, a few
    created in the same instant (the id breaks the tie), 10 assigned to the teammate."""
    first = park(start(agent))
    now = timezone.now()
    rows = []
    for i in range(119):
        due = None if i % 3 == 0 else now + timedelta(hours=(i % 7))
        created = now - timedelta(minutes=i // 4)
        rows.append(
            Approval(
                workspace=first.workspace,
                execution=first.execution,
                step_path="main[1]",
                title=f"Refund #{i}",
                assignee_roles=["admin"] if i % 2 else ["reviewer"],
                expires_at=due,
                created_at=created,
                updated_at=created,
            )
        )
    Approval.objects.bulk_create(rows)
    for approval in Approval.objects.order_by("id")[:10]:
        approval.assignee_users.add(teammate.user)
    return list(approval_selectors.approval_list(workspace=first.workspace, status="pending"))


def shown(html: str) -> list[str]:
    return re.findall(r'id="approval-item-([0-9a-f-]{36})"', html)


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="(\?[^"]+)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_pages_walk_the_whole_tab_in_the_lists_order_and_back(viewer, backlog):
    page = browser(viewer)
    html = page.get("/approvals/?tab=all").content.decode()
    walked, pages = shown(html), [shown(html)]
    assert len(walked) == 50 and link(html, "prev") is None
    while (after := link(html, "next")) is not None:
        html = page.get("/approvals/" + after).content.decode()
        pages.append(shown(html))
        walked += pages[-1]
    assert walked == [str(a.pk) for a in backlog]  # each once, in order
    assert [len(p) for p in pages] == [50, 50, 20]
    # and back: "previous" from the last page shows the middle page again, then the first
    html = page.get("/approvals/" + link(html, "prev")).content.decode()
    assert shown(html) == pages[1]
    html = page.get("/approvals/" + link(html, "prev")).content.decode()
    assert shown(html) == pages[0] and link(html, "prev") is None


def test_tab_counts_are_the_whole_backlog_not_the_page(viewer, teammate, backlog):
    html = browser(viewer).get("/approvals/?tab=all").content.decode()
    assert re.search(r'id="tab-count-all" data-count="120"[^>]*>120<', html)
    html = browser(teammate).get("/approvals/").content.decode()
    assert re.search(r'id="tab-count-mine" data-count="10"[^>]*>10<', html)
    assert len(shown(html)) == 10  # "mine" is the default tab when something is assigned


def test_the_roles_tab_pages_what_the_live_rule_counts(teammate, backlog):
    membership = Membership.objects.get(user=teammate.user, workspace=teammate.workspace)
    page = browser(teammate)
    html = page.get("/approvals/?tab=roles").content.decode()
    walked = shown(html)
    while (after := link(html, "next")) is not None:
        html = page.get("/approvals/" + after).content.decode()
        walked += shown(html)
    expected = [str(a.pk) for a in backlog if in_tab(a, "roles", membership, teammate.user)]
    assert walked == expected and 0 < len(expected) < len(backlog)


def test_a_mangled_cursor_shows_the_first_page(viewer, backlog):
    for cursor in ("not-a-cursor", "W10", "WzEsMiwzXQ"):
        response = browser(viewer).get("/approvals/", {"tab": "all", "after": cursor})
        assert response.status_code == 200
        assert shown(response.content.decode()) == [str(a.pk) for a in backlog[:50]]


def test_the_decided_tab_pages_the_latest_change_first(viewer, backlog):
    now = timezone.now()
    for i, approval in enumerate(backlog[:60]):
        Approval.objects.filter(pk=approval.pk).update(
            status=ApprovalStatus.APPROVED, decided_at=now, updated_at=now - timedelta(seconds=i)
        )
    page = browser(viewer)
    html = page.get("/approvals/?tab=decided").content.decode()
    first = shown(html)
    assert first == [str(a.pk) for a in backlog[:50]]
    html = page.get("/approvals/" + link(html, "next")).content.decode()
    assert shown(html) == [str(a.pk) for a in backlog[50:60]] and link(html, "next") is None
    html = page.get("/approvals/" + link(html, "prev")).content.decode()
    assert shown(html) == first
