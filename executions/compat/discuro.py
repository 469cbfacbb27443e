"""The Discuro dialect: `POST /discuro/v1/executions/retrieve?id=…` (seed 003).

An execution reads `{"id", "status": "started"}` until it ends, then `status: "ended"`,
`passed`, and `transformation` with the output (`data`), token `usage`, `start` / `end`, and on
failure `results` keyed by step path. An unknown, malformed, another workspace's or retention-
purged id answers the seed's 400 body, so a caller cannot tell them apart.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from executions import selectors
from executions.compat import common
from executions.errors import NotFound
from executions.lifecycle import TERMINAL, Status
from executions.models import Execution
from executions.serializers import iso

NOT_FOUND = "Operation failed - execution_log not found"
FAILED_STATUSES = {Status.FAILED, Status.REJECTED, Status.CANCELLED}


def error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message, "meta_data": None}, status=status)


def usage_out(execution: Execution) -> dict[str, int]:
    usage = execution.token_usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def results_out(execution: Execution) -> dict[str, Any]:
    """Per-step results of a failed run, keyed by step path (`main[2]`), the failure marked.

    Every recorded step passed, except an `error` step (a deliberate failure). When the run
    failed elsewhere (a step that raised before it was recorded, a rejection, a cancel), the
    failure gets an entry of its own, keyed by its step path or `execution`.
    """
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for step in selectors.transition_list(execution=execution):
        if step.type == "step" and step.step_path:
            entry = results.setdefault(
                step.step_path,
                {
                    "start": iso(step.started_at or step.created_at),
                    "end": None,
                    "passed": True,
                    "error": None,
                    "property": {"name": step.step_kind or step.step_path},
                    "layer_results": None,
                },
            )
            entry["end"] = iso(step.ended_at or step.created_at)
            if step.step_kind == "error":
                entry["passed"] = False
                entry["error"] = execution.error or _text(step.output) or "error step"
                failed = True
        elif step.to_status in FAILED_STATUSES and step.from_status not in TERMINAL and not failed:
            key = step.step_path or "execution"
            results[key] = {
                "start": iso(step.started_at or execution.started_at or execution.created_at),
                "end": iso(step.ended_at or step.created_at),
                "passed": False,
                "error": execution.error or step.message or f"execution {execution.status}",
                "property": {"name": step.step_kind or key},
                "layer_results": None,
            }
            failed = True
    return results


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def execution_out(execution: Execution) -> dict[str, Any]:
    if execution.status not in TERMINAL:
        return {"id": str(execution.pk), "status": "started"}
    passed = execution.status == Status.COMPLETED
    transformation: dict[str, Any] = {
        "data": execution.output if passed and execution.output is not None else {},
        "usage": usage_out(execution),
    }
    if passed:
        transformation["start"] = iso(execution.started_at or execution.created_at)
        transformation["end"] = iso(execution.completed_at)
    else:
        transformation["results"] = results_out(execution)
    return {
        "id": str(execution.pk),
        "status": "ended",
        "passed": passed,
        "transformation": (transformation),
    }


@csrf_exempt
def retrieve(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = error(f"method {request.method} not allowed; use POST", status=405)
        response["Allow"] = "POST"
        return response
    problem = common.authenticate(request)
    if problem is not None:
        return error(problem, status=401)
    execution_id = request.GET.get("id") or request.GET.get("ID")
    if not execution_id:
        return error("Operation failed - the id query parameter is required")
    try:
        execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    except NotFound:  # unknown, another workspace's, or purged (Expired is a NotFound)
        return error(NOT_FOUND)
    return JsonResponse(execution_out(execution))


@csrf_exempt  # an API path: a POST to an unknown one is a JSON 404, not the CSRF page
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return error(f"no Discuro endpoint at {request.path}", status=404)


# Seed 003 prints the path with a doubled slash (`//v1/executions/retrieve`): accept both.
urlpatterns = [
    re_path(r"^(?:/*)v1/+executions/+retrieve/?$", retrieve, name="discuro-retrieve"),
    re_path(r"^(?P<rest>.*)$", not_found),
]
