from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def workspace(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    from executions.models import Membership

    return {
        "workspace": membership.workspace,
        "membership": membership,
        "role": membership.role,
        "memberships": Membership.objects.filter(user=request.user).select_related("workspace"),
    }
