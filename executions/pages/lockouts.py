"""Settings → Members: an admin unlocks a member locked out by failed sign-ins (django-axes)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from executions import lockout, selectors
from executions.errors import NotFound
from executions.models import Role
from executions.pages.base import page, require_role


@require_POST
@page
def settings_member_unlock(request: HttpRequest, user_id: int) -> HttpResponse:
    require_role(request, Role.ADMIN)
    # Only members of this workspace: an admin here cannot unlock other workspaces' people.
    membership = (
        selectors.membership_list(workspace=request.workspace).filter(user_id=user_id).first()
    )
    if membership is None:
        raise NotFound("no such member")
    username = membership.user.get_username()
    lockout.login_unlock(username=username)
    messages.success(request, f"Unlocked {username}: they can sign in again.")
    return redirect("settings_members")
