"""The faces' polled reads on the API handler's fast path (executions/api/fastpath.py, which
explains it): the same lookups and shapes as the ninja views in julep.py and moderately.py,
for the successful case only (None sends the request to the ninja view), and Discuro's
retrieve as it is."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from executions.auth import CachedKeyAuth, authorised_execution, read_authorised
from executions.compat import discuro, moderately
from executions.compat.common import reply
from executions.compat.julep_shapes import execution_out as julep_execution_out
from executions.lifecycle import TERMINAL, Status
from executions.validation import text_problem


def julep_execution_get(request: HttpRequest, execution_id: str) -> HttpResponse | None:
    """`GET /julep/executions/{execution_id}` (julep.execution_get; `Id` is Text(64))."""
    execution = authorised_execution(request, execution_id, max_length=64)
    if execution is None:
        return None
    return reply(julep_execution_out(execution))


def moderately_execution_retrieve(request: HttpRequest, execution_id: str) -> HttpResponse | None:
    """`GET /moderately/agent-executions/{execution_id}` (moderately.execution_retrieve: `ID`
    is Text(64), each `teamIds` Text(200), and a team that is not the key's is a 404)."""
    if request.method != "GET":
        return None
    if any(text_problem(t, max_length=200) for t in request.GET.getlist("teamIds")):
        return None
    execution = authorised_execution(request, execution_id, max_length=64)
    if execution is None or not moderately.team_matches(request):
        return None
    return reply(moderately.execution_out(execution))


def discuro_retrieve(request: HttpRequest) -> HttpResponse:
    """`POST /discuro/v1/executions/retrieve?id=…`: a plain Django view already (no ninja to
    skip), answering its own errors; on the fast path it gains the matched URL and the direct
    hop onto a lane (executions/api/handler.py)."""
    return discuro.retrieve(request)


# The same reads on the event loop (executions/api/loopread.py): checks with the cached key
# only, then the shape; anything else goes to the thread path above.


def julep_check(request: HttpRequest, execution_id: str) -> bool:
    return read_authorised(request, execution_id, max_length=64, cached_only=True)


def julep_render(request: HttpRequest, execution) -> HttpResponse:
    return reply(julep_execution_out(execution))


def moderately_check(request: HttpRequest, execution_id: str) -> bool:
    if any(text_problem(t, max_length=200) for t in request.GET.getlist("teamIds")):
        return False
    return read_authorised(request, execution_id, max_length=64, cached_only=True)


def moderately_render(request: HttpRequest, execution) -> HttpResponse | None:
    if not moderately.team_matches(request):
        return None
    return reply(moderately.execution_out(execution))


# Discuro's retrieve (a POST without a body, its id in the query) on the loop: the cached key,
# then the shape of a run that needs no more than its row; a failed run's per-step `results`
# read its entries, so it goes to the thread path (discuro.retrieve), as does every error.
_cached_auth = CachedKeyAuth()


def discuro_id(request: HttpRequest, kwargs: dict) -> str | None:
    return request.GET.get("id") or request.GET.get("ID") or None


def discuro_check(request: HttpRequest, execution_id: str) -> bool:
    return bool(_cached_auth(request))


def discuro_render(request: HttpRequest, execution) -> HttpResponse | None:
    if execution.status in TERMINAL and execution.status != Status.COMPLETED:
        return None
    return JsonResponse(discuro.execution_out(execution))
