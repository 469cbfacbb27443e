"""Writes for workspaces and their members (users, roles, retention)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.text import slugify

from executions.errors import Conflict, NotFound, ValidationFailed, field_error
from executions.models import Membership, Role, Workspace


def workspace_get_or_create(*, slug: str, name: str | None = None) -> tuple[Workspace, bool]:
    slug = slugify(slug) or "default"
    return Workspace.objects.get_or_create(slug=slug, defaults={"name": name or slug.title()})


def workspace_set_retention(*, workspace: Workspace, days: Any) -> Workspace:
    try:
        value = int(days)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= 3650:
        raise ValidationFailed(
            "retention must be between 1 and 3650 days",
            details=[field_error("retention_days", "a whole number of days from 1 to 3650")],
        )
    Workspace.objects.filter(pk=workspace.pk).update(retention_days=value)
    workspace.retention_days = value
    return workspace


def user_create(*, username: str, password: str, email: str = "", is_staff: bool = False) -> Any:
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise Conflict(f"a user named {username!r} already exists")
    return User.objects.create_user(
        username=username,
        password=password,
        email=email,
        is_staff=is_staff,
        is_superuser=is_staff,
    )


def membership_set(*, workspace: Workspace, user: Any, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationFailed(f"unknown role {role!r}", details=[field_error("role", "unknown")])
    membership, _ = Membership.objects.update_or_create(
        workspace=workspace, user=user, defaults={"role": role}
    )
    return membership


def member_add(
    *, workspace: Workspace, username: str, role: str, password: str = "", email: str = ""
) -> Membership:
    """Add an existing user to the workspace, or create the user when a password is given."""
    username = (username or "").strip()
    if not username:
        raise ValidationFailed(
            "username is required", details=[field_error("username", "required")]
        )
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is None:
        if not password:
            raise ValidationFailed(
                f"no user named {username!r}; give a password to create one",
                details=[field_error("password", "required to create a new user")],
            )
        if len(password) < 8:
            raise ValidationFailed(
                "password is too short",
                details=[field_error("password", "must be at least 8 characters")],
            )
        user = user_create(username=username, password=password, email=email)
    elif Membership.objects.filter(workspace=workspace, user=user).exists():
        raise Conflict(f"{username} is already a member of this workspace")
    return membership_set(workspace=workspace, user=user, role=role)


def membership_remove(*, workspace: Workspace, user: Any) -> None:
    """Remove a member; the last admin of a workspace cannot be removed or demoted away."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        raise NotFound(f"{user} is not a member of this workspace")
    _keep_an_admin(workspace=workspace, membership=membership, new_role=None)
    membership.delete()


def membership_change_role(*, workspace: Workspace, user: Any, role: str) -> Membership:
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        raise NotFound(f"{user} is not a member of this workspace")
    _keep_an_admin(workspace=workspace, membership=membership, new_role=role)
    return membership_set(workspace=workspace, user=user, role=role)


def _keep_an_admin(*, workspace: Workspace, membership: Membership, new_role: str | None) -> None:
    if membership.role != Role.ADMIN or new_role == Role.ADMIN:
        return
    admins = Membership.objects.filter(workspace=workspace, role=Role.ADMIN).count()
    if admins <= 1:
        raise Conflict("a workspace needs at least one admin; make someone else admin first")
