"""Settings (admins): API keys, members, retention. Webhooks are in `approvals.pages`."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from executions import selectors, services
from executions.errors import Conflict, NotFound, ValidationFailed
from executions.models import Role
from executions.pages.base import error_text, page, settings_context


@page
def settings_keys(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "keys", roles=Role.choices)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "create":
                key, raw = services.apikey_create(
                    workspace=request.workspace,
                    name=request.POST.get("name", ""),
                    role=request.POST.get("role", Role.VIEWER),
                    created_by=request.user,
                )
                context["created_key"] = key
                context["created_secret"] = raw
            elif action == "revoke":
                key = services.apikey_revoke(
                    workspace=request.workspace, prefix=request.POST.get("prefix", "")
                )
                messages.success(request, f"Revoked {key.name} ({key.prefix}…).")
                return redirect("settings_keys")
        except (ValidationFailed, NotFound) as exc:
            context["form_error"] = error_text(exc)
            status = 422
    context["keys"] = selectors.apikey_list(workspace=request.workspace).select_related(
        "created_by"
    )
    return render(request, "settings/keys.html", context, status=status)


@page
def settings_members(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "members", roles=Role.choices)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        User = get_user_model()
        try:
            if action == "add":
                membership = services.member_add(
                    workspace=request.workspace,
                    username=request.POST.get("username", ""),
                    role=request.POST.get("role", Role.VIEWER),
                    password=request.POST.get("password", ""),
                    email=request.POST.get("email", ""),
                )
                messages.success(request, f"Added {membership.user.get_username()}.")
                return redirect("settings_members")
            user = User.objects.filter(pk=request.POST.get("user_id")).first()
            if user is None:
                raise NotFound("no such member")
            if action == "role":
                services.membership_change_role(
                    workspace=request.workspace, user=user, role=request.POST.get("role", "")
                )
                messages.success(request, f"{user.get_username()} is now {request.POST['role']}.")
            elif action == "remove":
                services.membership_remove(workspace=request.workspace, user=user)
                messages.success(request, f"Removed {user.get_username()} from the workspace.")
            return redirect("settings_members")
        except (ValidationFailed, NotFound, Conflict) as exc:
            context["form_error"] = error_text(exc)
            context["form_data"] = request.POST
            status = 422
    context["members"] = selectors.membership_list(workspace=request.workspace)
    return render(request, "settings/members.html", context, status=status)


@page
def settings_retention(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "retention")
    status = 200
    if request.method == "POST":
        try:
            services.workspace_set_retention(
                workspace=request.workspace, days=request.POST.get("retention_days")
            )
            messages.success(
                request, f"Executions are now kept {request.workspace.retention_days} days."
            )
            return redirect("settings_retention")
        except ValidationFailed as exc:
            context["form_error"] = error_text(exc)
            status = 422
    context["workspace"] = request.workspace
    return render(request, "settings/retention.html", context, status=status)
