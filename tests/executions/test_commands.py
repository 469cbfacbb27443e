"""Management commands (`apikey`, `up`) and the health endpoints."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from executions import services
from executions.models import ApiKey, Membership, Workspace


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_apikey_create_prints_the_key_alone_and_creates_the_workspace(db):
    out, err = run("apikey", "create", "--name", "ci", "--role", "reviewer", "--workspace", "ops")
    raw = out.strip()
    assert "\n" not in raw and raw.startswith("stw_")
    assert "created workspace ops" in err
    key = services.apikey_authenticate(raw=raw)
    assert key is not None and key.role == "reviewer" and key.workspace.slug == "ops"
    assert key.secret_hash != raw and raw not in key.secret_hash, "only the hash is stored"


def test_apikey_list_and_revoke(db):
    out, _ = run("apikey", "create", "--name", "ci")
    key = ApiKey.objects.get(name="ci")
    listing, _ = run("apikey", "list")
    assert key.prefix in listing and "active" in listing
    out, _ = run("apikey", "revoke", key.prefix)
    assert "revoked" in out
    assert "revoked" in run("apikey", "list")[0]
    with pytest.raises(CommandError, match="no API key"):
        run("apikey", "revoke", "stw_missing")


def test_apikey_create_refuses_a_bad_role(db):
    with pytest.raises(CommandError):
        run("apikey", "create", "--name", "x", "--role", "owner")


def test_up_creates_once_and_prints_the_same_login(db, monkeypatch, tmp_path):
    from executions.management.commands import up

    monkeypatch.setattr(up, "CREDENTIALS_FILE", tmp_path / "admin")
    monkeypatch.delenv("ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    first, _ = run("up", "--no-serve", "--no-demo")
    assert "Login:    admin / " in first and "API key:  stw_" in first
    second, _ = run("up", "--no-serve", "--no-demo")
    login = [line for line in first.splitlines() if "Login:" in line]
    assert login == [line for line in second.splitlines() if "Login:" in line]
    assert "API key:  stw_" not in second, "the key is shown only when created"
    assert Workspace.objects.count() == 1 and ApiKey.objects.count() == 1
    assert Membership.objects.get().role == "admin"


def test_up_uses_admin_username_and_password_from_the_environment(db, monkeypatch, tmp_path):
    from django.contrib.auth import get_user_model

    from executions.management.commands import up

    monkeypatch.setattr(up, "CREDENTIALS_FILE", tmp_path / "admin")
    monkeypatch.setenv("ADMIN_USERNAME", "ada")
    monkeypatch.setenv("ADMIN_PASSWORD", "correct horse battery")
    out, _ = run("up", "--no-serve", "--no-demo", "--port", "9001")
    assert "Login:    ada / correct horse battery" in out
    assert "http://127.0.0.1:9001/" in out
    assert get_user_model().objects.get(username="ada").check_password("correct horse battery")


def test_healthz_and_readyz(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "channel_layer": "ok"}


def test_unknown_api_paths_answer_json(client, db):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
