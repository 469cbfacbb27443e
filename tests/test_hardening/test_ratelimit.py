"""API rate limits: 429 + Retry-After in every face's own shape, per key, shared through Redis
across processes, failing open when Redis is down; and the SDKs' handling of it."""

from __future__ import annotations

import logging

import httpx
import julep
import pytest
import redis
from django.test import Client
from moderatelyai_sdk import ModeratelyAI
from promptrails import PromptRails
from promptrails.exceptions import RateLimitError

REDIS_DB7 = "redis://127.0.0.1:6379/7"


@pytest.fixture
def memory_limit(settings):
    settings.RATE_LIMIT = "3/minute"
    settings.RATE_LIMIT_STORAGE = "memory://"


@pytest.fixture
def redis_limit(settings):
    redis.Redis.from_url(REDIS_DB7).flushdb()
    settings.RATE_LIMIT = "3/minute"
    settings.RATE_LIMIT_STORAGE = REDIS_DB7
    yield
    redis.Redis.from_url(REDIS_DB7).flushdb()


def calls(client: Client, n: int, path: str = "/api/v1/agents", **headers: str) -> list:
    return [client.get(path, **headers) for _ in range(n)]


def test_the_call_over_the_limit_is_a_native_429_with_retry_after(memory_limit, owner):
    client = Client()  # a new Client builds the middleware under the test's settings
    replies = calls(client, 4, HTTP_X_API_KEY=owner.key)
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    refused = replies[-1]
    assert 1 <= int(refused["Retry-After"]) <= 60
    body = refused.json()
    assert body["code"] == "rate_limited"
    assert "rate limit exceeded" in body["error"]
    assert body["details"] == {
        "limit": "3 per 1 minute",
        "retry_after": int(refused["Retry-After"]),
    }


def test_each_key_has_its_own_limit(memory_limit, owner, teammate):
    client = Client()
    calls(client, 3, HTTP_X_API_KEY=owner.key)
    assert calls(client, 1, HTTP_X_API_KEY=owner.key)[0].status_code == 429
    # The same key as a Bearer token is the same caller; another key is not.
    bearer = calls(client, 1, HTTP_AUTHORIZATION=f"Bearer {owner.key}")[0]
    assert bearer.status_code == 429
    assert calls(client, 1, HTTP_X_API_KEY=teammate.key)[0].status_code == 200


def test_calls_without_a_key_are_limited_per_address(memory_limit, db):
    client = Client()
    assert [r.status_code for r in calls(client, 4)] == [401, 401, 401, 429]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/api/v1/agents").status_code == 401


def test_dashboard_pages_and_health_checks_are_not_limited(memory_limit, db):
    client = Client()
    assert all(r.status_code == 200 for r in calls(client, 6, "/healthz"))
    assert all(r.status_code == 200 for r in calls(client, 6, "/login/"))


def test_julep_gets_its_fastapi_shape_and_may_retry(memory_limit, owner):
    client = Client()
    replies = calls(client, 4, "/julep/agents", HTTP_AUTHORIZATION=f"Bearer {owner.key}")
    refused = replies[-1]
    assert refused.status_code == 429
    assert set(refused.json()) == {"detail"}
    assert "rate limit exceeded" in refused.json()["detail"]
    assert refused["x-should-retry"] == "true"
    assert int(refused["Retry-After"]) >= 1


def test_moderately_gets_its_api_error_shape(memory_limit, owner):
    client = Client()
    path = f"/moderately/agent-executions?teamIds={owner.workspace.pk}"
    refused = calls(client, 4, path, HTTP_AUTHORIZATION=f"Bearer {owner.key}")[-1]
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "RATE_LIMITED"
    assert "details" not in body  # its presence would make the SDK raise ValidationError
    assert {"message", "path", "timestamp", "request_id"} <= set(body)
    assert int(refused["Retry-After"]) >= 1


def test_discuro_gets_its_error_shape(memory_limit, owner):
    client = Client()
    replies = [
        client.post(
            "/discuro/v1/executions/retrieve?id=x", HTTP_AUTHORIZATION=f"Bearer {owner.key}"
        )
        for _ in range(4)
    ]
    refused = replies[-1]
    assert refused.status_code == 429
    assert refused.json()["meta_data"] is None
    assert "rate limit exceeded" in refused.json()["error"]
    assert int(refused["Retry-After"]) >= 1


def test_redis_holds_the_limit_across_processes(redis_limit, owner):
    # Two Clients build two middleware instances, each with its own Redis connection: the way
    # two web processes would count against the same key.
    first, second = Client(), Client()
    calls(first, 2, HTTP_X_API_KEY=owner.key)
    assert calls(second, 1, HTTP_X_API_KEY=owner.key)[0].status_code == 200
    assert calls(second, 1, HTTP_X_API_KEY=owner.key)[0].status_code == 429
    assert calls(first, 1, HTTP_X_API_KEY=owner.key)[0].status_code == 429
    keys = redis.Redis.from_url(REDIS_DB7).keys("*")
    assert keys and not any(owner.key.encode() in k for k in keys)  # never the key itself


def test_redis_outage_lets_calls_through_and_warns_once(settings, owner, caplog):
    settings.RATE_LIMIT = "1/minute"
    settings.RATE_LIMIT_STORAGE = "redis://127.0.0.1:1/7"  # nothing listens there
    client = Client()
    with caplog.at_level(logging.WARNING, logger="steward.ratelimit"):
        assert all(r.status_code == 200 for r in calls(client, 5, HTTP_X_API_KEY=owner.key))
    warnings = [r for r in caplog.records if r.name == "steward.ratelimit"]
    assert len(warnings) == 1
    assert "not enforcing" in warnings[0].getMessage()


def test_rate_limit_off_disables_the_middleware(settings, owner):
    settings.RATE_LIMIT = "off"
    client = Client()
    assert all(r.status_code == 200 for r in calls(client, 20, HTTP_X_API_KEY=owner.key))


# --- the SDKs against a live server -----------------------------------------------------------


def _server_limited_to(rate, settings, fresh_server):
    settings.RATE_LIMIT = rate
    settings.RATE_LIMIT_STORAGE = "memory://"
    return fresh_server()


@pytest.fixture
def limited_server(settings, fresh_server):
    return _server_limited_to("2/2 seconds", settings, fresh_server)


def test_the_julep_sdk_waits_for_retry_after_and_succeeds(limited_server, owner):
    seen: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda r: seen.append(r.status_code)]})
    client = julep.Julep(
        api_key=owner.key, base_url=f"{limited_server.url}/julep", max_retries=3, http_client=http
    )
    for _ in range(4):  # the third and fourth calls meet a 429 first, then get through
        assert client.agents.list().items is not None
    assert 429 in seen and seen[-1] == 200


def test_the_moderately_sdk_retries_a_429(limited_server, owner):
    client = ModeratelyAI(
        team_id=str(owner.workspace.pk),
        api_key=owner.key,
        base_url=f"{limited_server.url}/moderately",
    )
    for _ in range(4):
        assert "items" in client.agent_executions.list()


@pytest.fixture
def slow_server(settings, fresh_server):
    # A window long enough that no refill can happen between the refusal and the check after
    # it: with "2/2 seconds" the sliding window let the fourth request through on a slow run.
    return _server_limited_to("2/minute", settings, fresh_server)


def test_the_promptrails_sdk_raises_its_rate_limit_error(slow_server, owner):
    # PromptRails 0.9.2 does not retry 429s: it raises RateLimitError with our message.
    limited_server = slow_server
    client = PromptRails(api_key=owner.key, base_url=limited_server.url, max_retries=0)
    client.agents.list()
    client.agents.list()
    with pytest.raises(RateLimitError) as refused:
        client.agents.list()
    assert "rate limit exceeded" in str(refused.value)
    reply = httpx.get(f"{limited_server.url}/api/v1/agents", headers={"X-API-Key": owner.key})
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1


def test_the_client_address_trusts_forwarded_for_only_behind_configured_proxies(settings):
    from django.test import RequestFactory

    from executions.ratelimit import client_address

    factory = RequestFactory()
    forged = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4")
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(forged) == "10.0.0.2"  # the header is the client's own claim
    settings.TRUSTED_PROXY_COUNT = 1
    chain = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_address(chain) == "203.0.113.9"  # what our one proxy saw; 6.6.6.6 is forged
    garbled = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert client_address(garbled) is None
    settings.TRUSTED_PROXY_COUNT = 0
    no_address = factory.get("/")
    no_address.META.pop("REMOTE_ADDR")
    assert client_address(no_address) is None
