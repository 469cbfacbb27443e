"""Browser tests: a real server (uvicorn, HTTP + websockets) with the embedded worker, and
Debian's Chromium driven by Playwright. Each test saves a screenshot under test-artifacts/."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AsgiServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture
def server(transactional_db, settings):
    # The embedded topology, as `make up` runs it: the worker on the server's loop, started and
    # stopped with the server (on PostgreSQL too, where it is off by default).
    settings.EMBEDDED_WORKER = True
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    running = AsgiServer().start()
    yield running
    running.stop()


@pytest.fixture
def demo(owner):
    from executions.demo import demo_seed

    return demo_seed(workspace=owner.workspace, user=owner.user)


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on the main thread, which Django's async-safety
    # check mistakes for async code; the tests' own ORM calls are plain synchronous ones
    # (the documented workaround for Django with Playwright).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium, server, request):
    """open_page(member, path, width=390, color_scheme="dark") -> a logged-in page in its own
    browser context."""
    contexts = []

    def make(
        member: Any, path: str = "/", *, width: int = 1360, color_scheme: str = "light"
    ) -> Any:
        context = chromium.new_context(
            viewport={"width": width, "height": 900}, color_scheme=color_scheme
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{server.url}/login/")
        page.fill("#id_username", member.user.get_username())
        page.fill("#id_password", f"pw-{member.user.get_username()}")
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/")
        if path != "/":
            page.goto(f"{server.url}{path}")
        return page

    yield make
    ARTIFACTS.mkdir(exist_ok=True)
    for i, context in enumerate(contexts):
        for j, page in enumerate(context.pages):
            name = f"{request.node.name}-{i}-{j}.png"
            # A failing screenshot must not hide the test's own result.
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        context.close()
