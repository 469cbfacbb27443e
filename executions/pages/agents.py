"""Agents: the list with last-24-hours figures, and one agent with its definition and Run form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from executions import selectors, services
from executions.engine import python_agents
from executions.errors import ValidationFailed
from executions.forms import SchemaForm
from executions.models import Role
from executions.pages.base import actor, base_context, htmx_redirect, page, require_role
from executions.pages.forms import RunOptionsForm
from executions.pages.timing import attach_times


@page
@require_GET
def agent_list(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    agents = list(selectors.agent_list(workspace=workspace))
    since = timezone.now() - timedelta(hours=24)
    runs = selectors.agent_run_stats(workspace=workspace, since=since)
    context = base_context(request, "agents")
    context.update({"agents": agents, "runs": runs})
    return render(request, "agents/list.html", context)


def _definition_text(version: Any) -> str:
    return yaml.safe_dump(version.config or {}, sort_keys=False, allow_unicode=True, width=100)


@page
def agent_detail(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    versions = list(agent.versions.select_related("created_by").order_by("-number"))
    chosen = agent.current_version
    if request.GET.get("version"):
        chosen = selectors.agent_version_get(agent=agent, version_id=request.GET["version"])
    schema = chosen.input_schema if chosen else _python_schema(agent)
    form = SchemaForm(schema=schema, prefix="run")
    status = 200
    if request.method == "POST":
        require_role(request, Role.REVIEWER)
        form = SchemaForm(request.POST, schema=schema, prefix="run")
        options = RunOptionsForm(request.POST)
        if form.is_valid() and options.is_valid():
            try:
                execution, _ = services.execution_start(
                    workspace=request.workspace,
                    agent=agent,
                    input=form.value(),
                    version=chosen,
                    session_id=options.cleaned_data["session_id"] or None,
                    metadata={"source": "dashboard"},
                    actor=actor(request),
                )
            except ValidationFailed as exc:
                for problem in exc.details or []:
                    form.add_schema_error(problem["field"], problem["message"])
            else:
                return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
        status = 422
    recent = selectors.execution_list(
        workspace=request.workspace,
        filters=selectors.ExecutionFilters(agent_id=str(agent.pk)),
    ).order_by("-id")[:10]
    context = base_context(request, "agents")
    context.update(
        {
            "agent": agent,
            "versions": versions,
            "chosen": chosen,
            "definition": _definition_text(chosen) if chosen else "",
            "form": form,
            "recent": attach_times(list(recent)),
        }
    )
    if request.htmx and request.method == "POST":
        return render(request, "agents/detail.html#run_form", context, status=status)
    return render(request, "agents/detail.html", context, status=status)


def _python_schema(agent: Any) -> dict | None:
    registered = python_agents.get(agent.name)
    return registered.input_schema if registered else None
