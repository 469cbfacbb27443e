"""Request plumbing: body size limit, and the current workspace of a logged-in user."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from executions import selectors

SESSION_KEY = "workspace_id"
logger = logging.getLogger("steward.http")


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
            return too_large()
        request.membership = None
        if not request.path.startswith(("/api/", "/julep", "/moderately", "/discuro", "/static")):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                request.memberships = selectors.membership_list_for_user(user=user)
                request.membership = current_membership(request)
                request.workspace = request.membership.workspace if request.membership else None
        return self.get_response(request)


def too_large() -> JsonResponse:
    return JsonResponse(
        {
            "error": f"request body is larger than {settings.MAX_REQUEST_BODY_BYTES} bytes",
            "code": "payload_too_large",
        },
        status=413,
    )


def current_membership(request: HttpRequest):
    """The workspace chosen in the session, or the user's first one. Picked from
    `request.memberships`, the user's memberships read once (one query): the workspace
    switcher in every page's header lists the same rows (context_processors.workspace)."""
    memberships = request.memberships
    wanted = str(request.session.get(SESSION_KEY) or "")
    if wanted:
        for membership in memberships:
            if str(membership.workspace_id) == wanted:
                return membership
    return memberships[0] if memberships else None


class DepartedClientGuard:
    """ASGI wrapper: a client that goes away mid-request is not a server error.

    When a load generator (or a user closing a tab) disconnects with requests in flight,
    Django's ASGI handler cancels the view and its clean-up then fails on the torn-down
    executor or the closed body file ("CurrentThreadExecutor already quit",
    "I/O operation on closed file"), which the server logs as "Exception in ASGI application".
    Once the client has disconnected there is nobody to answer: such errors are logged at
    debug level and dropped; errors before a disconnect propagate as before.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        departed = False

        async def watched_receive():
            nonlocal departed
            message = await receive()
            if message["type"] == "http.disconnect":
                departed = True
            return message

        try:
            await self.app(scope, watched_receive, send)
        except (RuntimeError, OSError, ValueError) as exc:
            if not departed:
                raise
            logger.debug("client left %s before its reply: %s", scope.get("path"), exc)
