"""Healthchecks: `/healthz` says the process is alive, `/readyz` that its dependencies answer."""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report any failure as "not ready"
        checks["database"] = f"error: {exc}"
    try:
        layer = get_channel_layer()
        group = f"readyz.{uuid.uuid4().hex}"
        async_to_sync(layer.group_send)(group, {"type": "readyz.ping"})
        checks["channel_layer"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["channel_layer"] = f"error: {exc}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
