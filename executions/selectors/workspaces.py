"""Reads for workspaces: whose member a user is (the one place that answers it, for the
dashboard, its sockets and the approval rules), members, API keys, saved views."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from executions.models import ApiKey, Membership, SavedView, Workspace


def membership_get(*, user: Any, workspace: Any = None) -> Membership | None:
    """The user's membership of `workspace` (a Workspace or its id), or of their first workspace
    when none is named; None when they are not a member (a malformed id is no membership)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    memberships = Membership.objects.filter(user=user).select_related("workspace")
    if workspace in (None, ""):
        return memberships.order_by("created_at").first()
    workspace_id = getattr(workspace, "pk", workspace)
    try:
        workspace_id = uuid.UUID(str(workspace_id))
    except ValueError:
        return None
    return memberships.filter(workspace_id=workspace_id).first()


def membership_list_for_user(*, user: Any) -> list[Membership]:
    """Every workspace the user belongs to, oldest membership first (the first is the one a
    session that chose none shows): the dashboard reads it once per request, for the current
    workspace and the header's switcher."""
    return list(
        Membership.objects.filter(user=user)
        .select_related("workspace")
        .order_by("created_at", "id")
    )


def membership_list(*, workspace: Workspace) -> QuerySet:
    return (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("user__username")
    )


def apikey_list(*, workspace: Workspace | None = None) -> QuerySet:
    keys = ApiKey.objects.select_related("workspace").order_by("created_at")
    if workspace is not None:
        keys = keys.filter(workspace=workspace)
    return keys


def savedview_list(*, workspace: Workspace) -> QuerySet:
    """The workspace's saved views, by name; who made one is `created_by_id` (the list page
    compares it with the user's id), so the users are not joined."""
    return SavedView.objects.filter(workspace=workspace)
