"""Fixtures of the hardening tests: a live server whose middleware is built under the test's
settings (config.asgi's application is built once, at import, with the default settings)."""

from __future__ import annotations

import threading

import pytest
import uvicorn
from django.core.handlers.asgi import ASGIHandler

from tests.conftest import AsgiServer, _free_port


class FreshAsgiServer(AsgiServer):
    """AsgiServer serving a Django ASGI handler built now, so settings overrides apply."""

    def __init__(self) -> None:  # not super(): that one serves config.asgi's application
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            ASGIHandler(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)


@pytest.fixture
def fresh_server(transactional_db, settings):
    """Call it after changing `settings`: the server's middleware reads them as it starts."""
    servers: list[FreshAsgiServer] = []

    def start() -> FreshAsgiServer:
        server = FreshAsgiServer().start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
