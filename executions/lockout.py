"""Login lockout (django-axes): the page a locked-out sign-in sees, and unlocking by an admin.

django-axes counts failed sign-ins per username and per client address (AXES_LOCKOUT_PARAMETERS)
in its AccessAttempt table; past AXES_FAILURE_LIMIT within AXES_COOLOFF_TIME, its backend refuses
even the right password and its middleware answers with `lockout_response` below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.utils import reset
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def lockout_minutes(request: HttpRequest | None = None) -> int:
    cool_off = get_cool_off(request)
    return max(1, math.ceil(cool_off.total_seconds() / 60)) if cool_off else 0


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the sign-in page again, saying why and for how long (429)."""
    username = get_client_username(request, credentials) or ""
    form = AuthenticationForm(request, initial={"username": username})
    context = {
        "form": form,
        "locked_out": True,
        "lockout_minutes": lockout_minutes(request),
        "next": request.POST.get("next") or request.GET.get("next", ""),
    }
    return render(request, "login.html", context, status=429)


def locked_usernames(usernames: Iterable[str]) -> set[str]:
    """Which of these usernames are locked out now (failures within the cool-off period)."""
    names = [n for n in usernames if n]
    if not names or not settings.AXES_ENABLED:
        return set()
    cool_off = get_cool_off()
    attempts = AccessAttempt.objects.filter(username__in=names)
    if cool_off:
        attempts = attempts.filter(attempt_time__gte=timezone.now() - cool_off)
    totals = attempts.values("username").annotate(failures=Sum("failures_since_start"))
    return {t["username"] for t in totals if t["failures"] >= settings.AXES_FAILURE_LIMIT}


def login_unlock(*, username: str) -> int:
    """Forget the failed sign-ins of `username` (from every address), so it may sign in again.
    Returns how many attempt records were removed."""
    return reset(username=username)
