"""Switching the workspace the dashboard shows."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from executions import selectors
from executions.middleware import SESSION_KEY
from executions.pages.base import safe_next
from executions.pages.forms import WorkspaceSwitchForm


@login_required
@require_POST
def workspace_switch(request: HttpRequest) -> HttpResponse:
    form = WorkspaceSwitchForm(request.POST)
    membership = (
        selectors.membership_get(user=request.user, workspace=form.cleaned_data["workspace"])
        if form.is_valid()
        else None
    )
    if membership is None:
        raise PermissionDenied("you are not a member of that workspace")
    request.session[SESSION_KEY] = str(membership.workspace_id)
    messages.success(request, f"Switched to {membership.workspace.name}.")
    # Object pages of the old workspace would be a 404 in the new one: go to its list instead.
    nxt = safe_next(request, reverse("overview"))
    for prefix in ("/executions/", "/approvals/", "/agents/"):
        if nxt.startswith(prefix) and nxt.rstrip("/") != prefix.rstrip("/"):
            nxt = prefix
    return redirect(nxt)
