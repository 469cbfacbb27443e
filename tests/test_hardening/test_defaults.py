"""Production-safe defaults: DEBUG off unless asked, the product's own 404/403/500 pages, a
Content-Security-Policy on every page that the pages satisfy, static files served by the app,
and TLS settings from the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import AsyncClient, Client, RequestFactory
from django.views.defaults import server_error

from tests.conftest import WORKFLOW_CONFIG

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def settings_in_a_fresh_process(**env: str) -> dict:
    """The settings module as a new process would read it from this environment."""
    # The module alone (no django.setup()): fast, and exactly what the environment gives.
    code = (
        "import json, config.settings as s; print(json.dumps({k: getattr(s, k, None) for k in ("
        "'DEBUG', 'ALLOWED_HOSTS', 'CSRF_TRUSTED_ORIGINS', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SECURE_SSL_REDIRECT', 'RATE_LIMIT', "
        "'RATE_LIMIT_STORAGE', 'WEBHOOK_ALLOW_PRIVATE_TARGETS', 'AXES_FAILURE_LIMIT', "
        "'SECURE_PROXY_SSL_HEADER')}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "REDIS_URL", "PUBLIC_URL"}}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_debug_is_off_unless_asked_for():
    assert settings_in_a_fresh_process()["DEBUG"] is False
    assert settings_in_a_fresh_process(DEBUG="true")["DEBUG"] is True


def test_tls_settings_come_from_the_environment():
    plain = settings_in_a_fresh_process()
    assert plain["SESSION_COOKIE_SECURE"] is False and plain["SECURE_HSTS_SECONDS"] == 0
    assert plain["SECURE_PROXY_SSL_HEADER"] is None
    assert plain["RATE_LIMIT_STORAGE"] == "memory://"
    assert plain["WEBHOOK_ALLOW_PRIVATE_TARGETS"] is False

    behind_tls = settings_in_a_fresh_process(
        PUBLIC_URL="https://steward.example.com",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https",
        REDIS_URL="redis://127.0.0.1:6379/7",
    )
    assert behind_tls["SESSION_COOKIE_SECURE"] is True
    assert behind_tls["CSRF_COOKIE_SECURE"] is True
    assert behind_tls["SECURE_HSTS_SECONDS"] == 31_536_000
    assert behind_tls["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert "steward.example.com" in behind_tls["ALLOWED_HOSTS"]
    assert "https://steward.example.com" in behind_tls["CSRF_TRUSTED_ORIGINS"]
    assert behind_tls["RATE_LIMIT_STORAGE"] == "redis://127.0.0.1:6379/7"

    one_off = settings_in_a_fresh_process(HTTPS="true", SECURE_HSTS_SECONDS="60")
    assert one_off["SECURE_HSTS_SECONDS"] == 60 and one_off["SESSION_COOKIE_SECURE"] is True


def test_hsts_is_sent_over_https(settings, owner):
    settings.SECURE_HSTS_SECONDS = 3600
    reply = Client().get("/login/", secure=True)
    assert reply["Strict-Transport-Security"] == "max-age=3600"


def signed_in(member) -> Client:
    client = Client()
    client.force_login(member.user)
    return client


def test_an_unknown_execution_is_the_styled_404_not_the_debug_page(owner):
    reply = signed_in(owner).get("/executions/nope/")
    assert reply.status_code == 404
    page = reply.content.decode()
    assert 'class="error-page"' in page and "Sign out" in page
    assert "URLconf" not in page and "Traceback" not in page


def test_a_stranger_gets_the_404_without_the_dashboard_around_it(db):
    reply = Client().get("/no/such/page")
    assert reply.status_code == 404
    page = reply.content.decode()
    assert 'class="error-page"' in page and "Sign out" not in page
    assert "/static/css/steward-1.0.0.css" in page


def test_the_500_page_is_the_products_own():
    reply = server_error(RequestFactory().get("/boom"))
    assert reply.status_code == 500
    assert b"Something went wrong on our side" in reply.content
    assert b"/static/css/steward-1.0.0.css" in reply.content


def test_static_files_are_served_by_the_app_with_caching(db):
    reply = Client().get("/static/css/steward-1.0.0.css")
    assert reply.status_code == 200
    assert "max-age" in reply["Cache-Control"]
    assert Client().get("/static/ninja/swagger-ui-bundle.js").status_code == 200


async def test_static_files_are_streamed_asynchronously_under_asgi():
    # The product runs under ASGI: a file handed over as a synchronous iterator (WhiteNoise's)
    # made Django warn on every static file ("StreamingHttpResponse must consume synchronous
    # iterators") and read it in a thread; ServeStatic's is asynchronous.
    reply = await AsyncClient().get("/static/css/steward-1.0.0.css")
    assert reply.status_code == 200 and reply.is_async
    assert reply["Content-Type"].startswith("text/css")
    assert "max-age" in reply["Cache-Control"]
    body = b"".join([part async for part in reply.streaming_content])
    assert body == (ROOT / "static/css/steward-1.0.0.css").read_bytes()


SCRIPT = re.compile(r"<script\b([^>]*)>", re.I)
HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def assert_csp_clean(reply) -> None:
    """Every <script> is a same-origin file or carries this response's nonce; no on*= handler."""
    policy = reply["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    # Django adds the nonce to the header only when the page used it.
    used = re.search(r"'nonce-([^']+)'", policy)
    nonce = used.group(1) if used else "(no nonce)"
    page = reply.content.decode()
    for attrs in SCRIPT.findall(page):
        src = re.search(r'src="([^"]+)"', attrs)
        if 'type="application/json"' in attrs:
            continue  # data, not code
        assert (src and src.group(1).startswith("/")) or f'nonce="{nonce}"' in attrs, attrs
    assert not HANDLER.search(page), HANDLER.search(page).group(0)
    assert "cdn." not in page and "unpkg.com" not in page


def test_every_page_sends_a_csp_it_satisfies(owner, teammate):
    from executions import services

    agent = services.agent_create(workspace=owner.workspace, name="doubler", type="workflow")
    services.agent_version_create(agent=agent, config=WORKFLOW_CONFIG)
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    client = signed_in(owner)
    assert_csp_clean(Client().get("/login/"))
    for path in (
        "/",
        "/executions/",
        f"/executions/{execution.pk}/",
        "/approvals/",
        "/agents/",
        f"/agents/{agent.pk}/",
        "/settings/",
        "/settings/members/",
        "/settings/retention/",
        "/settings/webhooks/",
        "/executions/nope/",
    ):
        reply = client.get(path)
        assert reply.status_code in (200, 404), (path, reply.status_code)
        assert_csp_clean(reply)


def test_the_api_docs_load_nothing_from_elsewhere(db):
    reply = Client().get("/api/v1/docs")
    assert reply.status_code == 200
    assert_csp_clean(reply)
    assert not re.search(r'(src|href)="https?://', reply.content.decode())
