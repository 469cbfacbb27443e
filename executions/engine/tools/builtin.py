"""Built-in demo tools: a calculator, order lookup and refund on the demo table, and an HTTP GET
limited to the hosts in settings.HTTP_TOOL_ALLOWLIST."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from simpleeval import SimpleEval

from executions.engine.tools import ToolContext, tool
from executions.models import DemoOrder


@tool(
    "calculator",
    description="Evaluate an arithmetic expression, e.g. (12.5 * 4) / 3.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["expression"],
        "additionalProperties": False,
    },
)
def calculator(ctx: ToolContext, expression: str) -> dict[str, Any]:
    evaluator = SimpleEval(
        functions={"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max},
        names={"pi": math.pi, "e": math.e},
    )
    return {"expression": expression, "result": evaluator.eval(expression)}


def _order(ctx: ToolContext, order_id: str) -> DemoOrder | None:
    return DemoOrder.objects.filter(workspace_id=ctx.workspace_id, order_id=order_id).first()


def _order_out(order: DemoOrder) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "customer": order.customer,
        "item": order.item,
        "total": float(order.total),
        "refunded": float(order.refunded),
        "status": order.status,
    }


@tool(
    "order_lookup",
    description="Look up a shop order by its id (demo data).",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string", "minLength": 1}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
)
def order_lookup(ctx: ToolContext, order_id: str) -> dict[str, Any]:
    order = _order(ctx, order_id)
    if order is None:
        return {"error": f"no order {order_id!r}"}
    return _order_out(order)


@tool(
    "order_refund",
    description="Refund an amount on a shop order (demo data). Has a side effect.",
    parameters={
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "reason": {"type": "string"},
        },
        "required": ["order_id", "amount"],
        "additionalProperties": False,
    },
)
def order_refund(
    ctx: ToolContext, order_id: str, amount: float, reason: str = ""
) -> dict[str, Any]:
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return {"error": f"amount {amount!r} is not a number"}
    with transaction.atomic():
        order = (
            DemoOrder.objects.select_for_update()
            .filter(workspace_id=ctx.workspace_id, order_id=order_id)
            .first()
        )
        if order is None:
            return {"error": f"no order {order_id!r}"}
        if order.refunded + value > order.total:
            return {
                "error": f"refund of {value} exceeds what is left on order {order_id} "
                f"({order.total - order.refunded})"
            }
        DemoOrder.objects.filter(pk=order.pk).update(
            refunded=F("refunded") + value,
            refund_count=F("refund_count") + 1,
            status="refunded",
        )
        order.refresh_from_db()
    return {"refunded": float(value), "reason": reason, "order": _order_out(order)}


@tool(
    "http_get",
    description="Fetch a URL with GET (only hosts on the server's allow-list).",
    parameters={
        "type": "object",
        "properties": {"url": {"type": "string", "minLength": 1}},
        "required": ["url"],
        "additionalProperties": False,
    },
)
def http_get(ctx: ToolContext, url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"}:
        return {"error": "only http and https URLs are allowed"}
    host = (parsed.hostname or "").lower()
    if host not in {h.lower() for h in settings.HTTP_TOOL_ALLOWLIST}:
        return {"error": f"host {host!r} is not on the allow-list"}
    # No redirects: a redirect could lead off the allow-list.
    response = httpx.get(url, timeout=10.0, follow_redirects=False)
    body = response.text
    return {
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "body": body[:4000],
        "truncated": len(body) > 4000,
    }
