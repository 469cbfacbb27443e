"""One execution: its page, and the operator actions on it (cancel, retry, resume with input)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from executions import selectors, services
from executions.errors import Conflict, ValidationFailed
from executions.forms import SchemaForm
from executions.lifecycle import IllegalTransition
from executions.models import Execution, Role
from executions.pages.base import (
    actor,
    base_context,
    error_text,
    htmx_redirect,
    page,
    require_role,
)
from executions.pages.contexts import TIMELINE_LIMIT, detail_context, detail_fragments
from executions.pages.forms import ReasonForm


@page
@require_GET
def execution_detail(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    before = request.GET.get("before")
    if before is not None:
        return _timeline_older(request, execution, before)
    context = detail_context(execution, membership=request.membership, user=request.user)
    if request.GET.get("all") == "1":
        context["steps"] = list(selectors.transition_list(execution=execution))
        context["earlier"] = 0
    fragment = request.GET.get("fragment")
    if request.htmx and fragment == "live":
        # After a reconnect: every live part of the page, swapped out of band.
        return HttpResponse(detail_fragments(context, with_timeline=True))
    context.update(base_context(request, "executions",
                                live={"page": "execution", "id": str(execution.pk)}))  # fmt: skip
    return render(request, "executions/detail.html", context)


def _timeline_older(request: HttpRequest, execution: Execution, before: str) -> HttpResponse:
    """The timeline's "load older": the TIMELINE_LIMIT entries before `before` (a seq), put on
    top of the timeline, and the control for the ones before them. An index range on
    (execution, seq), so the 10,000th entry back costs what the 50th does. Without a script the
    control is a link to the whole timeline (`?all=1`)."""
    try:
        seq = int(before)
    except ValueError:
        seq = 0
    if seq < 1:
        return HttpResponse("before must be a positive timeline position", status=400)
    steps, earlier = selectors.transition_before(execution=execution, seq=seq, limit=TIMELINE_LIMIT)
    context = {"e": execution, "steps": steps, "earlier": earlier}
    return render(request, "executions/detail.html#timeline_older_chunk", context)


@page
@require_GET
def execution_tool_result(request: HttpRequest, execution_id: str, call_id: str) -> HttpResponse:
    """The full result of one tool call, for the streamed line that shows only its summary."""
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    step = (
        selectors.transition_list(execution=execution)
        .filter(Q(input__call_id=call_id) | Q(step_path=call_id), step_kind="tool")
        .first()
    )
    if step is None:
        raise Http404("no recorded result for that tool call")
    return render(request, "executions/detail.html#tool_result", {"t": step})


def _operate(request: HttpRequest, execution_id: str, action: Callable[[Execution], Any]):
    require_role(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    try:
        result = action(execution)
    except (IllegalTransition, Conflict) as exc:
        messages.error(request, error_text(exc))
        return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
    return result


@page
@require_POST
def execution_cancel(request: HttpRequest, execution_id: str) -> HttpResponse:
    def cancel(execution: Execution) -> HttpResponse:
        form = ReasonForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        services.execution_cancel(execution=execution, actor=actor(request), reason=reason)
        messages.success(request, "Execution cancelled.")
        return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))

    return _operate(request, execution_id, cancel)


@page
@require_POST
def execution_retry(request: HttpRequest, execution_id: str) -> HttpResponse:
    def retry(execution: Execution) -> HttpResponse:
        retried = services.execution_retry(execution=execution, actor=actor(request))
        messages.success(request, "Started a new run with the same input and version.")
        return htmx_redirect(request, reverse("execution_detail", args=[retried.pk]))

    return _operate(request, execution_id, retry)


@page
@require_POST
def execution_resume(request: HttpRequest, execution_id: str) -> HttpResponse:
    require_role(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    waiting = (execution.state or {}).get("waiting") or {}
    form = SchemaForm(request.POST, schema=waiting.get("schema"), prefix="resume")
    if form.is_valid():
        try:
            services.execution_resume(execution=execution, input=form.value(), actor=actor(request))
        except ValidationFailed as exc:
            for problem in exc.details or []:
                form.add_schema_error(problem["field"], problem["message"])
        except (IllegalTransition, Conflict) as exc:
            messages.error(request, error_text(exc))
            return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
        else:
            messages.success(request, "Input sent; the execution is running again.")
            return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
    context = detail_context(execution, membership=request.membership, user=request.user)
    context["resume_form"] = form
    return render(request, "executions/detail.html#resume", context, status=422)
