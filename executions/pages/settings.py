"""Settings (admins): API keys, members, retention. Webhooks are in `approvals.pages`.

Every POST redirects (post/redirect/get), so a reload never repeats it. A new key's secret is
kept in the server-side session just long enough for the page the redirect lands on to show it
once; the message framework is not used for it because its storage may be a cookie.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from executions import lockout, selectors, services
from executions.errors import Conflict, NotFound, ValidationFailed
from executions.models import Role
from executions.pages.base import page, settings_context
from executions.pages.forms import (
    ApiKeyCreateForm,
    ApiKeyRevokeForm,
    MemberAddForm,
    MemberChangeForm,
    RetentionForm,
    add_service_errors,
    first_error,
)

NEW_KEY = "steward.new_key"


@page
def settings_keys(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "keys", roles=Role.choices)
    create_form = ApiKeyCreateForm()
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "revoke":
            form = ApiKeyRevokeForm(request.POST)
            if form.is_valid():
                try:
                    key = services.apikey_revoke(
                        workspace=request.workspace, prefix=form.cleaned_data["prefix"]
                    )
                except NotFound as exc:
                    add_service_errors(form, exc)
                else:
                    messages.success(request, f"Revoked {key.name} ({key.prefix}…).")
                    return redirect("settings_keys")
        else:
            form = create_form = ApiKeyCreateForm(request.POST)
            if form.is_valid():
                try:
                    key, raw = services.apikey_create(
                        workspace=request.workspace,
                        name=form.cleaned_data["name"],
                        role=form.cleaned_data["role"],
                        created_by=request.user,
                    )
                except ValidationFailed as exc:
                    add_service_errors(form, exc)
                else:
                    request.session[NEW_KEY] = {"pk": str(key.pk), "secret": raw}
                    return redirect("settings_keys")
        context["form_error"] = first_error(form)
        status = 422
    created = request.session.pop(NEW_KEY, None)
    keys = selectors.apikey_list(workspace=request.workspace).select_related("created_by")
    if created:
        context["created_key"] = keys.filter(pk=created["pk"]).first()
        context["created_secret"] = created["secret"]
    context.update({"keys": keys, "form": create_form})
    return render(request, "settings/keys.html", context, status=status)


@page
def settings_members(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "members", roles=Role.choices)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "add":
            form = MemberAddForm(request.POST)
            if form.is_valid():
                try:
                    membership = services.member_add(
                        workspace=request.workspace, **form.cleaned_data
                    )
                except (ValidationFailed, Conflict) as exc:
                    add_service_errors(form, exc)
                else:
                    messages.success(request, f"Added {membership.user.get_username()}.")
                    return redirect("settings_members")
        else:
            form = MemberChangeForm(request.POST)
            if form.is_valid():
                try:
                    _change_member(request, action, **form.cleaned_data)
                except (ValidationFailed, NotFound, Conflict) as exc:
                    add_service_errors(form, exc)
                else:
                    return redirect("settings_members")
        context["form_error"] = first_error(form)
        context["form_data"] = request.POST
        status = 422
    context["members"] = selectors.membership_list(workspace=request.workspace)
    context["locked_out"] = lockout.locked_usernames(
        m.user.get_username() for m in context["members"]
    )
    return render(request, "settings/members.html", context, status=status)


def _change_member(request: HttpRequest, action: str | None, *, user_id: int, role: str) -> None:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound("no such member")
    if action == "role":
        services.membership_change_role(workspace=request.workspace, user=user, role=role)
        messages.success(request, f"{user.get_username()} is now {role}.")
    elif action == "remove":
        services.membership_remove(workspace=request.workspace, user=user)
        messages.success(request, f"Removed {user.get_username()} from the workspace.")
    else:
        raise ValidationFailed("choose role or remove")


@page
def settings_retention(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "retention")
    status = 200
    if request.method == "POST":
        form = RetentionForm(request.POST)
        if form.is_valid():
            try:
                services.workspace_set_retention(
                    workspace=request.workspace, days=form.cleaned_data["retention_days"]
                )
            except ValidationFailed as exc:
                add_service_errors(form, exc)
            else:
                messages.success(
                    request, f"Executions are now kept {request.workspace.retention_days} days."
                )
                return redirect("settings_retention")
        context["form_error"] = first_error(form)
        status = 422
    context["workspace"] = request.workspace
    return render(request, "settings/retention.html", context, status=status)
