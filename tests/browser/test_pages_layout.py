"""Layout in a real browser: every page fits a 390 px phone, the waterfall stays in its card,
the chart's axis is readable, anchors clear the sticky bar, disabled looks disabled."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from executions import services
from executions.live.follow import wait_settled_sync

pytestmark = pytest.mark.browser

NO_SIDEWAYS = "document.documentElement.scrollWidth <= innerWidth"


def refund(demo, owner, amount: float, order: str = "A-1003"):
    execution, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["refund-desk"],
        input={"order_id": order, "amount": amount},
    )  # fmt: skip
    return wait_settled_sync(execution.pk, timeout=15)


def research(demo, owner):
    execution, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["research-assistant"],
        input={"question": "How much is 12.5% of 480?"},
    )  # fmt: skip
    return wait_settled_sync(execution.pk, timeout=20)


@pytest.mark.timeout(300)  # twelve pages on a shared CI machine
def test_every_page_fits_a_390_px_phone(open_page, demo, owner, server):
    parked = refund(demo, owner, 250)
    done = research(demo, owner)
    approval = parked.approvals.get()
    page = open_page(owner, "/", width=390)
    paths = ["/", "/executions/", f"/executions/{parked.pk}/", f"/executions/{done.pk}/",
             "/approvals/", f"/approvals/{approval.pk}/", "/agents/",
             f"/agents/{demo['refund-desk'].pk}/", "/settings/", "/settings/members/",
             "/settings/webhooks/", "/settings/retention/"]  # fmt: skip
    for path in paths:
        page.goto(f"{server.url}{path}")
        assert page.evaluate(NO_SIDEWAYS), (
            path,
            page.evaluate("document.documentElement.scrollWidth"),
        )
        # Every nav entry is on screen (none cut off or scrolled away).
        rights = page.evaluate(
            "[...document.querySelectorAll('nav.nav a')].map(a => a.getBoundingClientRect().right)"
        )
        assert rights and max(rights) <= 390, (path, rights)
    page.goto(f"{server.url}/settings/")
    retention = page.get_by_role("link", name="Retention")
    assert retention.evaluate("e => e.getBoundingClientRect().right") <= 390
    page.goto(f"{server.url}/approvals/")
    expect(page.locator(".kbd-hints")).to_be_hidden()


def test_the_waterfall_stays_in_its_card_and_shows_the_wait_as_a_bar(
    open_page, demo, owner, teammate, server
):
    parked = refund(demo, owner, 250)
    approval = parked.approvals.get()
    page = open_page(teammate, f"/approvals/{approval.pk}/", width=1440)
    page.wait_for_timeout(1200)  # a visible wait before the decision
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator(".resolved-note")).to_contain_text("Approved")
    wait_settled_sync(parked.pk, timeout=15)
    for width in (1440, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{server.url}/executions/{parked.pk}/")
        card = page.locator("#exec-waterfall")
        fits = card.evaluate("c => c.scrollWidth <= c.clientWidth")
        assert fits, width
        assert page.evaluate(NO_SIDEWAYS), width
        wait = page.locator(".wf-row.wf-wait")
        expect(wait).to_have_count(1)
        bar_width = wait.locator(".wf-bar").evaluate("b => b.getBoundingClientRect().width")
        assert bar_width > 20, bar_width  # ~1.2 s of a ~1.5 s run, not a 0 ms sliver
        labels = page.locator(".wf-axis .ticks span")
        assert labels.count() >= 2
        for label in labels.all():
            assert label.evaluate("e => e.scrollHeight <= e.clientHeight + 1")  # one line


def test_the_chart_axis_is_readable_and_labels_the_current_hour(open_page, demo, owner):
    research(demo, owner)
    page = open_page(owner, "/")
    now = page.locator("svg.chart text.now")
    expect(now).to_have_count(1)
    assert now.evaluate(RENDERED_FONT_PX) >= 11
    page.set_viewport_size({"width": 390, "height": 900})
    page.reload()
    assert page.locator("svg.chart text.now").evaluate(RENDERED_FONT_PX) >= 10


# An SVG label's font size as drawn: its size in viewBox units times the chart's scale.
RENDERED_FONT_PX = """t => {
  const svg = t.ownerSVGElement;
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  return parseFloat(getComputedStyle(t).fontSize) * scale;
}"""


def test_the_run_anchor_clears_the_sticky_bar(open_page, demo, owner, server):
    page = open_page(owner, "/agents/", width=1440)
    page.set_viewport_size({"width": 1440, "height": 500})
    page.locator(f"a[href='/agents/{demo['refund-desk'].pk}/#run']").click()
    page.wait_for_url("**#run")
    page.wait_for_timeout(300)
    bar = page.locator(".topbar").evaluate("e => e.getBoundingClientRect().bottom")
    top = page.locator("#run .card-head").evaluate("e => e.getBoundingClientRect().top")
    assert top >= bar, (top, bar)


def test_the_status_filter_stays_on_one_line_without_a_trailing_comma(open_page, owner, server):
    query = "status=completed&status=failed&status=rejected&status=cancelled"
    page = open_page(owner, f"/executions/?{query}", width=1440)
    summary = page.locator("details.multi > summary")
    text = summary.inner_text().strip()
    assert not text.endswith(","), text
    assert text == "Completed +3"
    height = summary.evaluate("s => s.getBoundingClientRect().height")
    line = summary.evaluate("s => parseFloat(getComputedStyle(s).lineHeight) || 20")
    assert height < 2 * line + 16, (height, line)


def test_a_disabled_button_looks_disabled_in_dark_mode(open_page, demo, owner):
    refund(demo, owner, 250)
    page = open_page(owner, "/approvals/?tab=all", color_scheme="dark")
    disabled = page.locator("[data-bulk=approve]")
    expect(disabled).to_be_disabled()
    looks = disabled.evaluate(
        """b => {
          const probe = document.createElement("button");
          probe.className = "btn approve small";
          document.body.appendChild(probe);
          const live = getComputedStyle(probe).backgroundColor;
          probe.remove();
          return {disabled: getComputedStyle(b).backgroundColor, enabled: live};
        }"""
    )
    assert looks["disabled"] != looks["enabled"], looks
