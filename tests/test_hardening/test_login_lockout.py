"""Login lockout (django-axes): repeated failures for one username or from one address lock
further sign-ins, with a clear message; an admin unlocks from Settings → Members or the CLI."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def admin_client(member) -> Client:
    client = Client()
    client.force_login(member.user)
    return client


def test_sixty_wrong_passwords_lock_the_username_until_an_admin_unlocks_it(owner, teammate):
    attacker = Client()
    replies = [sign_in(attacker, "rory", f"guess-{i}") for i in range(60)]
    assert replies[0].status_code == 200
    assert b"Please enter a correct username and password" in replies[0].content
    assert replies[-1].status_code == 429
    assert b"Too many failed sign-ins" in replies[-1].content
    assert b"15 minutes" in replies[-1].content

    # The right password is refused too, even from another address: the username is locked.
    rory = Client(REMOTE_ADDR="10.9.9.9")
    refused = sign_in(rory, "rory", "pw-rory")
    assert refused.status_code == 429 and not signed_in(rory)

    admin = admin_client(owner)
    members = admin.get("/settings/members/").content.decode()
    assert "Locked out" in members and "Unlock sign-in" in members
    unlocked = admin.post(f"/settings/members/{teammate.user.pk}/unlock/", follow=True)
    assert "Unlocked rory" in unlocked.content.decode()
    assert "Locked out" not in unlocked.content.decode()

    assert sign_in(rory, "rory", "pw-rory").status_code == 302
    assert signed_in(rory)


def test_failures_from_one_address_lock_that_address(owner, settings):
    settings.AXES_FAILURE_LIMIT = 5
    spray = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(5):
        sign_in(spray, f"user{i}", "wrong")
    # Another username, right password, same address: refused.
    assert sign_in(spray, "olivia", "pw-olivia").status_code == 429
    # The same user from elsewhere is fine: only the address is locked.
    elsewhere = Client(REMOTE_ADDR="198.51.100.1")
    assert sign_in(elsewhere, "olivia", "pw-olivia").status_code == 302


def test_the_command_line_unlocks_a_username(owner, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):  # from three addresses: the username is what gets locked
        sign_in(Client(REMOTE_ADDR=f"198.51.100.{i + 10}"), "olivia", "wrong")
    assert sign_in(Client(), "olivia", "pw-olivia").status_code == 429
    call_command("axes_reset_username", "olivia")
    assert sign_in(Client(), "olivia", "pw-olivia").status_code == 302


def test_only_an_admin_of_the_members_workspace_can_unlock(teammate, viewer, outsider):
    assert (
        admin_client(viewer).post(f"/settings/members/{teammate.user.pk}/unlock/").status_code
        == 403
    )
    assert (
        admin_client(teammate).post(f"/settings/members/{teammate.user.pk}/unlock/").status_code
        == 403
    )
    # An admin of another workspace: not their member, so not found.
    assert (
        admin_client(outsider).post(f"/settings/members/{teammate.user.pk}/unlock/").status_code
        == 404
    )
    assert (
        admin_client(outsider).get(f"/settings/members/{teammate.user.pk}/unlock/").status_code
        == 405
    )
