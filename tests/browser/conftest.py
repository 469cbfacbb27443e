"""Browser tests: a real server (uvicorn, HTTP + websockets) with a worker on its loop, and
Debian's Chromium driven by Playwright. Each test saves a screenshot under test-artifacts/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


class WorkerLifespan:
    """Runs one engine worker on the server's own loop for the server's lifetime, as the
    embedded topology does, and stops it when the server stops (so tests never share one)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.worker: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from asgiref.sync import sync_to_async

        from executions.engine.worker import Worker

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.worker = Worker(concurrency=4, name="browser-tests", poll_interval=0.2)
                self.task = asyncio.get_running_loop().create_task(
                    sync_to_async(self.worker.run, thread_sensitive=False)()
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.worker.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


class BrowserServer:
    def __init__(self) -> None:
        import uvicorn

        from config.asgi import application

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = WorkerLifespan(application)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> BrowserServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server(transactional_db, settings):
    # This fixture runs its own worker on the server loop; the embedded one stays off.
    settings.EMBEDDED_WORKER = False
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    running = BrowserServer().start()
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
    """open_page(member) -> a logged-in page in its own browser context."""
    contexts = []

    def make(member: Any, path: str = "/") -> Any:
        context = chromium.new_context(viewport={"width": 1360, "height": 900})
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
