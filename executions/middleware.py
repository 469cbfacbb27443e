"""Request plumbing: body size limit, and the current workspace of a logged-in user."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from executions import selectors

SESSION_KEY = "workspace_id"


class WorkspaceMiddleware:
    """Refuse oversized bodies with 413 before anything reads them, and for dashboard users
    resolve `request.workspace` / `request.membership` from their memberships."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_REQUEST_BODY_BYTES:
            return JsonResponse(
                {
                    "error": f"request body is larger than {settings.MAX_REQUEST_BODY_BYTES} bytes",
                    "code": "payload_too_large",
                },
                status=413,
            )
        request.membership = None
        if not request.path.startswith(("/api/", "/julep", "/moderately", "/discuro", "/static")):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                request.membership = current_membership(request)
                request.workspace = request.membership.workspace if request.membership else None
        return self.get_response(request)


def current_membership(request: HttpRequest):
    """The workspace chosen in the session, or the user's first one."""
    wanted = request.session.get(SESSION_KEY)
    chosen = selectors.membership_get(user=request.user, workspace=wanted) if wanted else None
    return chosen or selectors.membership_get(user=request.user)
