"""Refresh the screenshots in this folder from a running `make up` (demo traffic on).

    .venv/bin/python docs/screenshots/take.py --url http://127.0.0.1:8000 --password=PW

(`--password=`: the password `make up` prints may begin with a dash.)

It signs in as the admin, finds a completed, a failed and a parked execution and a pending
approval among the demo runs, and saves each page at 1440 px (light and dark) and 390 px.
It also walks every page at 1440 and 390 px in both color schemes and stops on what a newcomer
would hit: a page that scrolls sideways at 390 px, an error in the console (an htmx error
event included), or a live connection that does not open.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WIDE = 1440
# htmx reports what it could not do as events, not always in the console.
HTMX_ERRORS = ["htmx:oobErrorNoTarget", "htmx:swapError", "htmx:targetError",
               "htmx:responseError", "htmx:sendError", "htmx:wsError"]  # fmt: skip


def first_link(page: Page, url: str, selector: str, attr: str = "href", last: bool = False) -> str:
    page.goto(url)
    found = page.locator(selector)
    href = (found.last if last else found.first).get_attribute(attr)
    if not href:
        raise SystemExit(f"nothing matches {selector} on {url}: let the demo traffic run a minute")
    return href


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--walk", default="/tmp/steward-walk", help="where the walk's shots go")
    args = parser.parse_args()
    base = args.url.rstrip("/")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)

        problems: list[str] = []

        def session(width: int, scheme: str = "light") -> Page:
            context = browser.new_context(
                viewport={"width": width, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            where = f"{width} px {scheme}"
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"{where} {page.url}: {msg.text}")
                    if msg.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"{where} {page.url}: {exc}"))
            context.add_init_script(
                "document.addEventListener('DOMContentLoaded', () => { for (const name of "
                + repr(HTMX_ERRORS).replace("'", '"')
                + ") document.body.addEventListener(name, () => console.error(name)); });"
            )
            page.goto(f"{base}/login/")
            if width == WIDE and scheme == "light":
                page.screenshot(path=HERE / "login.png")
            page.fill("#id_username", args.user)
            page.fill("#id_password", args.password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            return page

        page = session(WIDE)
        runs = f"{base}/executions/?agent_id=&status="
        completed = first_link(page, runs + "completed&q=research", "#exec-rows td.id a")
        failed = first_link(page, runs + "failed", "#exec-rows td.id a")
        parked = first_link(page, runs + "awaiting_approval", "#exec-rows td.id a")
        approval = first_link(  # the newest, so that it is still pending
            page, f"{base}/approvals/?tab=all", ".inbox-item", "data-href", last=True
        )
        agent = first_link(page, f"{base}/agents/", "td a:has(strong:text-is('refund-desk'))")
        shots = {
            "overview": "/",
            "executions": "/executions/",
            "execution-completed": completed,
            "execution-failed": failed,
            "execution-parked": parked,
            "approvals": "/approvals/?tab=all",
            "approval": approval,
            "agents": "/agents/",
            "agent": agent,
            "settings-keys": "/settings/",
            "settings-members": "/settings/members/",
            "settings-webhooks": "/settings/webhooks/",
            "settings-retention": "/settings/retention/",
            "error-404": "/executions/00000000-0000-0000-0000-000000000000/",
        }
        for name, path in shots.items():
            page.goto(base + path)
            page.wait_for_timeout(600)
            page.screenshot(path=HERE / f"{name}.png", full_page=True)

        dark = session(WIDE, "dark")
        for name in ("approval", "execution-completed"):
            dark.goto(base + shots[name])
            dark.wait_for_timeout(600)
            short = "execution" if name == "execution-completed" else name
            dark.screenshot(path=HERE / f"dark-{short}.png", full_page=True)

        phone = session(390)
        for name in ("overview", "executions", "approval", "execution-parked"):
            phone.goto(base + shots[name])
            phone.wait_for_timeout(600)
            wide = phone.evaluate("document.documentElement.scrollWidth")
            if wide > 390:
                raise SystemExit(f"{name} scrolls sideways at 390 px ({wide} px)")
            short = "execution" if name == "execution-parked" else name
            phone.screenshot(path=HERE / f"mobile-{short}.png", full_page=True)

        # The walk: every page, both widths, both schemes (saved outside the repository).
        walk = Path(args.walk)
        walk.mkdir(parents=True, exist_ok=True)
        for width in (WIDE, 390):
            for scheme in ("light", "dark"):
                visitor = session(width, scheme)
                for name, path in shots.items():
                    visitor.goto(base + path)
                    visitor.wait_for_timeout(800)
                    wide = visitor.evaluate("document.documentElement.scrollWidth")
                    if wide > width:
                        problems.append(f"{width} px {scheme} {name}: {wide} px wide")
                    live = visitor.locator("#live-state")
                    if name != "error-404" and live.count():
                        state = live.get_attribute("data-state")
                        if state not in ("open", "off"):  # "off": a page without live parts
                            problems.append(f"{width} px {scheme} {name}: live is {state}")
                    visitor.screenshot(path=walk / f"{width}-{scheme}-{name}.png", full_page=True)
        browser.close()
        # A 404 page logs its own status as a console error: that one is expected.
        problems = [p for p in problems if "404 (Not Found)" not in p]
        if problems:
            raise SystemExit("\n".join(["problems:", *problems]))


if __name__ == "__main__":
    main()
