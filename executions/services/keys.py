"""Writes for API keys: the full secret is returned once at creation and never stored."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from executions.errors import NotFound, ValidationFailed, field_error
from executions.models import ApiKey, Role, Workspace


def apikey_create(
    *, workspace: Workspace, name: str, role: str = Role.ADMIN, created_by: Any = None
) -> tuple[ApiKey, str]:
    """Create a key; the full secret is returned once and never stored."""
    if role not in Role.values:
        raise ValidationFailed(
            f"role must be one of {', '.join(Role.values)}",
            details=[field_error("role", "unknown role")],
        )
    if not name.strip():
        raise ValidationFailed("name is required", details=[field_error("name", "required")])
    prefix, raw = ApiKey.generate()
    key = ApiKey.objects.create(
        workspace=workspace,
        name=name.strip(),
        prefix=prefix,
        secret_hash=ApiKey.hash_secret(raw),
        role=role,
        created_by=created_by,
    )
    return key, raw


def apikey_revoke(*, workspace: Workspace | None, prefix: str) -> ApiKey:
    keys = ApiKey.objects.filter(prefix=prefix)
    if workspace is not None:
        keys = keys.filter(workspace=workspace)
    key = keys.first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def apikey_authenticate(*, raw: str) -> ApiKey | None:
    """The active key for a secret, or None. Touches last_used_at at most once a minute."""
    parts = raw.strip().split("_", 2)  # stw_<prefix>_<secret>; the secret may contain "_"
    if len(parts) != 3:
        return None
    prefix = f"{parts[0]}_{parts[1]}"
    key = ApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if key is None or not key.matches(raw.strip()):
        return None
    if key.revoked_at is not None:
        return key  # the caller reports "revoked" rather than "invalid"
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > ApiKey.TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
