"""The polled reads without django-ninja's dispatch: `GET /api/v1/executions/{id}` and the
compat faces' equivalents (Julep `executions.get`, Moderately `retrieve`).

Programs poll these (every 1–5 s per waiting agent), and ninja's work around the view — the
`is_async_callable` checks, pydantic validation of the path parameter, the temporal response —
was a sixth of a read's Python (docs/performance-history.md, "API"). ApiHandler (handler.py) swaps
the URL match's view for `FastRead(view, read)` on these routes only, so the request still
goes through the same handler, the same API middleware (security headers, rate limit, CSP,
X-Frame-Options…) and the same response close; only the view differs. `read` serves the
successful case — a GET, a valid key, a well-formed id of an execution in the key's
workspace — with the very functions the ninja view calls, and returns None for everything
else, which the ninja view then answers as before (401, 404, 410, 405, 422: the error bodies
stay ninja's). ninja keeps the routes, so the OpenAPI document is unchanged.
tests/executions/test_api_fastpath.py sends the same requests both ways and compares status,
headers and bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from executions import serializers
from executions.api.common import data
from executions.auth import authorised_execution, read_authorised
from executions.models import Execution

Read = Callable[..., HttpResponse | None]


class FastRead:
    """A view that tries `read` and falls back to `view` (the ninja route) when it declines."""

    def __init__(self, view: Callable[..., HttpResponse], read: Read) -> None:
        self.view = view
        self.read = read
        self.csrf_exempt = getattr(view, "csrf_exempt", False)

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = self.read(request, *args, **kwargs)
        except Exception:  # noqa: BLE001 - the full route answers (and reports) it
            response = None
        if response is not None:
            return response
        return self.view(request, *args, **kwargs)


def execution_get(request: HttpRequest, execution_id: str) -> HttpResponse | None:
    """`GET /api/v1/executions/{execution_id}` (executions/api/executions.py)."""
    execution = authorised_execution(request, execution_id, max_length=200)
    if execution is None:
        return None
    return data(serializers.execution_out(execution))


def execution_check(request: HttpRequest, execution_id: str) -> bool:
    """The native read's checks on the event loop (loopread.py)."""
    return read_authorised(request, execution_id, max_length=200, cached_only=True)


def execution_render(request: HttpRequest, execution: Execution) -> HttpResponse:
    return data(serializers.execution_out(execution))
