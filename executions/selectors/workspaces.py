"""Reads for workspace settings: members, API keys, saved views."""

from __future__ import annotations

from django.db.models import QuerySet

from executions.models import ApiKey, Membership, SavedView, Workspace


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
    return SavedView.objects.filter(workspace=workspace).select_related("created_by")
