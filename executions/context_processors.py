from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from executions import selectors


def workspace(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    return {
        "workspace": membership.workspace,
        "membership": membership,
        "role": membership.role,
        # Read by WorkspaceMiddleware with the current one (no second query).
        "memberships": getattr(request, "memberships", None)
        or selectors.membership_list_for_user(user=request.user),
    }
