"""The execution page's "load older" in a browser: htmx puts the 50 entries before the oldest
shown on top of the timeline, each click, until the first entry (issue 12)."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, Transition

pytestmark = pytest.mark.browser

SHOWN = "#exec-timeline > li[data-seq]"


def test_load_older_puts_earlier_entries_on_top_until_the_first(open_page, owner, agent):
    now = timezone.now()
    execution = Execution.objects.create(
        workspace=owner.workspace,
        agent=agent,
        agent_version=agent.current_version,
        status="completed",
        runnable_at=None,
        started_at=now,
        completed_at=now,
        duration_ms=120,
        transition_count=120,
    )
    Transition.objects.bulk_create(
        Transition(execution=execution, seq=seq, type="step", step_path=f"main[{seq}]")
        for seq in range(1, 121)
    )
    page = open_page(owner, f"/executions/{execution.pk}/")

    def shown() -> list[int]:
        return page.evaluate(
            "() => [...document.querySelectorAll('#exec-timeline > li[data-seq]')]"
            ".map(li => Number(li.dataset.seq))"
        )

    assert shown() == list(range(71, 121))
    expect(page.locator("#timeline-older")).to_contain_text("70 earlier entries")
    page.locator("#timeline-older a").click()
    expect(page.locator(SHOWN)).to_have_count(100)
    assert shown() == list(range(21, 121))
    expect(page.locator("#timeline-older")).to_contain_text("20 earlier entries")
    page.locator("#timeline-older a").click()
    expect(page.locator(SHOWN)).to_have_count(120)
    assert shown() == list(range(1, 121))
    expect(page.locator("#timeline-older")).to_have_count(0)
    assert page.url.endswith(f"/executions/{execution.pk}/")  # htmx, not the ?all=1 fallback
