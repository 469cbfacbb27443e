"""Dashboard pages (thin: call selectors/services, render templates)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from executions import selectors


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    workspace = getattr(request, "workspace", None)
    stats = selectors.execution_stats(workspace=workspace) if workspace else None
    return render(request, "executions/overview.html", {"stats": stats})
