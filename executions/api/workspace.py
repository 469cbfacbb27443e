"""`/api/v1/me` and `/api/v1/stats`: the key's workspace and the workspace's figures."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from executions import selectors
from executions.api import schemas as s
from executions.api.common import data, replies
from executions.validation import SafeStr

router = Router(tags=["workspace"])


@router.get("/me", summary="The key's workspace and role", response=replies({200: s.MeReply}))
def me(request: HttpRequest):
    workspace, key = request.workspace, request.api_key
    return data(
        {
            "workspace": {"id": str(workspace.pk), "slug": workspace.slug, "name": workspace.name},
            "role": request.role,
            "api_key": {"prefix": key.prefix, "name": key.name},
        }
    )


@router.get(
    "/stats", summary="Counts per status and total cost", response=replies({200: s.StatsReply})
)
def stats(request: HttpRequest, created_after: SafeStr(64) | None = None):
    filters = selectors.ExecutionFilters.from_params(request.GET)
    result = selectors.execution_stats(workspace=request.workspace, since=filters.created_after)
    result["cost"] = float(result["cost"])
    return data(result)
