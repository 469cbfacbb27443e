"""Plumbing shared by every dashboard page (executions and approvals): login + workspace
required, domain errors turned into 404 / 403 pages, roles checked on the server."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from executions.errors import Forbidden, NotFound, StewardError
from executions.lifecycle import Actor
from executions.models import Membership, Role, role_at_least


def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required, a workspace required, and domain errors turned into 404 / 403 pages."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if getattr(request, "membership", None) is None:
            return render(request, "no_workspace.html", status=403)
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None

    return wrapper


def require_role(request: HttpRequest, role: str) -> None:
    """Roles are enforced here, on the server; templates only hide what would be refused."""
    if not role_at_least(request.membership.role, role):
        raise PermissionDenied(
            f"your role ({request.membership.role}) cannot do this; it needs {role}"
        )


def actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


def caps(membership: Membership | None) -> dict[str, bool]:
    role = membership.role if membership else ""
    return {
        "can_operate": role_at_least(role, Role.REVIEWER) if role else False,
        "can_admin": role == Role.ADMIN,
    }


def base_context(request: HttpRequest, nav: str, live: dict[str, Any] | None = None) -> dict:
    context: dict[str, Any] = {"nav": nav, **caps(request.membership)}
    if live is not None:
        params = {"ws": str(request.workspace.pk), **live}
        context["live_url"] = "/ws/live/?" + urlencode(params, doseq=True)
    return context


def settings_context(request: HttpRequest, tab: str, **extra: Any) -> dict[str, Any]:
    """A Settings tab (admins only)."""
    require_role(request, Role.ADMIN)
    context = base_context(request, "settings")
    context.update({"tab": tab, **extra})
    return context


def htmx_redirect(request: HttpRequest, url: str) -> HttpResponse:
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return fallback


def error_text(exc: Exception) -> str:
    if isinstance(exc, StewardError):
        return exc.message
    return str(exc)
