"""Shared fixtures: an owner, a teammate and an outsider (Healthchecks style), API clients for
their keys, and a real ASGI server (uvicorn in a thread) for SDK, SSE and browser tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from executions import services
from executions.models import Role


@dataclass
class Member:
    user: Any
    key: str
    client: Client
    workspace: Any

    def get(self, path: str, **params: Any):
        return self.client.get(path, params, HTTP_X_API_KEY=self.key)

    def post(self, path: str, body: Any = None, **headers: Any):
        data = json.dumps(body) if body is not None else ""
        extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
        return self.client.post(
            path, data, content_type="application/json", HTTP_X_API_KEY=self.key, **extra
        )

    def patch(self, path: str, body: Any):
        return self.client.patch(
            path, json.dumps(body), content_type="application/json", HTTP_X_API_KEY=self.key
        )

    def delete(self, path: str):
        return self.client.delete(path, HTTP_X_API_KEY=self.key)


def make_member(workspace: Any, username: str, role: str) -> Member:
    User = get_user_model()
    user = User.objects.create_user(username=username, password="pw-" + username)
    services.membership_set(workspace=workspace, user=user, role=role)
    _, raw = services.apikey_create(workspace=workspace, name=username, role=role, created_by=user)
    return Member(user=user, key=raw, client=Client(), workspace=workspace)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """Test on an SQLite file (WAL, busy timeout), as the embedded product runs, not on the
    in-memory shared cache: there a thread that meets another's lock fails at once with
    "database table is locked" instead of waiting, which breaks every test where a live
    server, a worker thread and the test write at the same time."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    test = database.setdefault("TEST", {})
    if database["ENGINE"].endswith("sqlite3") and not test.get("NAME"):
        test["NAME"] = str(tmp_path_factory.mktemp("db") / "steward-test.sqlite3")


@pytest.fixture
def workspace(db):
    return services.workspace_get_or_create(slug="acme", name="Acme")[0]


@pytest.fixture
def owner(workspace) -> Member:
    return make_member(workspace, "olivia", Role.ADMIN)


@pytest.fixture
def teammate(workspace) -> Member:
    return make_member(workspace, "rory", Role.REVIEWER)


@pytest.fixture
def viewer(workspace) -> Member:
    return make_member(workspace, "vera", Role.VIEWER)


@pytest.fixture
def outsider(db) -> Member:
    other = services.workspace_get_or_create(slug="globex", name="Globex")[0]
    return make_member(other, "oscar", Role.ADMIN)


WORKFLOW_CONFIG = {
    "main": [{"evaluate": {"doubled": "$ inputs['n'] * 2"}}, {"return": {"n": "$ _['doubled']"}}]
}
NUMBER_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}


@pytest.fixture
def agent(owner):
    """A workflow agent with one current version taking {"n": int}."""
    created = services.agent_create(workspace=owner.workspace, name="doubler", type="workflow")
    services.agent_version_create(
        agent=created, version="1.0", config=WORKFLOW_CONFIG, input_schema=NUMBER_SCHEMA
    )
    created.refresh_from_db()
    return created


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AsgiServer:
    """uvicorn serving config.asgi in a thread of the test process (shares the test database)."""

    def __init__(self) -> None:
        import uvicorn

        from config.asgi import application

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> AsgiServer:
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
def asgi_server(transactional_db, settings):
    """A live ASGI server (HTTP + websockets); the embedded worker runs inside it when enabled."""
    server = AsgiServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _local_webhook_receivers(settings):
    # Tests receive webhooks on 127.0.0.1, which production refuses (tests/test_hardening
    # turns this off again to test that).
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Real hashing costs ~0.3 s per user; tests do not need its strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _close_database_pools(django_db_setup, django_db_blocker):
    """PostgreSQL: close the psycopg pool before the test database is dropped (its idle
    connections would otherwise keep the database "in use")."""
    yield
    import asyncio
    import gc

    from asgiref.sync import sync_to_async
    from django.db import connections

    with django_db_blocker.unblock():
        # Closing the pool closes its idle connections only: one still checked out stays
        # open, and DROP DATABASE then fails ("being accessed by other users"). The threads
        # that still hold one at the end are the tests' own, not the product's:
        # - asgiref's process-wide thread for `sync_to_async` called outside a request: an
        #   async test's own `await sync_to_async(...)`, and Django's test clients, which keep
        #   the connection open after a request where a server closes it. Close it there;
        asyncio.run(sync_to_async(connections.close_all)())
        # - threads that have ended (a test's helper thread, an event loop's executor): their
        #   connection closes when its wrapper, in a reference cycle, is collected.
        gc.collect()
        for connection in connections.all(initialized_only=True):
            if getattr(connection, "pool", None) is not None:
                connection.close_pool()
