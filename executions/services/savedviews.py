"""Writes for saved views: named list filters shared with the workspace."""

from __future__ import annotations

from typing import Any

from executions.errors import NotFound, ValidationFailed, field_error
from executions.models import SavedView, Workspace


def savedview_create(*, workspace: Workspace, name: str, query: str, created_by: Any = None):
    """A named list filter shared with the workspace (the query string of the list page)."""
    name = (name or "").strip()
    errors = []
    if not name:
        errors.append(field_error("name", "is required"))
    elif len(name) > 120:
        errors.append(field_error("name", "must be at most 120 characters"))
    if len(query) > 2000:
        errors.append(field_error("query", "must be at most 2000 characters"))
    if errors:
        raise ValidationFailed("invalid saved view", details=errors)
    view, _ = SavedView.objects.update_or_create(
        workspace=workspace, name=name, defaults={"query": query, "created_by": created_by}
    )
    return view


def savedview_delete(*, workspace: Workspace, view_id: Any) -> None:
    deleted, _ = SavedView.objects.filter(workspace=workspace, pk=view_id).delete()
    if not deleted:
        raise NotFound(f"saved view {view_id} not found")
