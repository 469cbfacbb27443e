"""Webhooks may not reach loopback, private, link-local or metadata addresses: refused when the
URL is created (if it resolves), and checked again on the resolved address at every delivery."""

from __future__ import annotations

import ipaddress

import pytest

from approvals import notifications
from approvals.models import WebhookDelivery
from approvals.notifications import targets
from tests.approvals.test_webhooks import Receiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def public_only(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("fd00:ec2::254", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not public"),
    ],
)
def test_non_public_addresses_are_named_for_what_they_are(address, kind):
    assert targets.why_blocked(ipaddress.ip_address(address)).startswith(kind)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address):
    assert targets.why_blocked(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ],
)
def test_creating_a_webhook_to_a_private_address_is_refused(public_only, owner, url):
    reply = owner.post("/api/v1/webhooks", {"url": url, "events": ["*"]})
    assert reply.status_code == 422, reply.content
    body = reply.json()
    assert body["code"] == "validation_error"
    assert [d["field"] for d in body["details"]] == ["url"]
    assert "public addresses" in body["details"][0]["message"]
    assert not owner.workspace.webhooks.exists()


def test_a_public_ip_literal_is_accepted_and_pinned(public_only, owner):
    reply = owner.post("/api/v1/webhooks", {"url": "https://93.184.216.34/hook", "events": ["*"]})
    assert reply.status_code == 201, reply.content
    target = targets.pin("https://93.184.216.34:8443/hook?x=1")
    assert str(target.url) == "https://93.184.216.34:8443/hook?x=1"


def test_a_host_resolving_to_loopback_is_refused_when_pinned(public_only):
    with pytest.raises(targets.BlockedTarget, match="localhost resolves to .* loopback"):
        targets.pin("http://localhost:9/hook")


def test_delivery_checks_the_address_again_and_sends_nothing(settings, owner):
    # Created while private targets were allowed (or the name resolved elsewhere then): the
    # check at delivery time is the one that holds.
    with Receiver() as receiver:
        hook = notifications.webhook_create(
            workspace=owner.workspace, url=receiver.url, events=["*"]
        )
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
        settings.WEBHOOK_MAX_ATTEMPTS = 1
        delivery = notifications.webhook_ping(webhook=hook)
        notifications.webhook_deliver(delivery_id=delivery.pk)
        assert receiver.received == []
    delivery = WebhookDelivery.objects.get(pk=delivery.pk)
    assert delivery.status == "failed"
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
    assert delivery.log.count() == 1


def test_allowed_private_targets_are_delivered(owner):
    with Receiver() as receiver:
        hook = notifications.webhook_create(
            workspace=owner.workspace, url=receiver.url, events=["*"]
        )
        delivery = notifications.webhook_ping(webhook=hook)
        notifications.webhook_deliver(delivery_id=delivery.pk)
        assert receiver.events() == ["webhook.ping"]
