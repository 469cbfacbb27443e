"""Approval pages: the inbox, one approval, and the decide / bulk / comment posts; the
webhooks tab of Settings.

Decisions go through `approvals.services` (the rules — roles, assignees, self-approval,
quorum, first decision wins — live there); these views only read the form, call the service
and render the result, with the service's field errors put next to the fields they name.
The panels' contexts are in `executions.pages.approval_contexts` (the live consumer renders
them too).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals import notifications, services
from approvals import selectors as approval_selectors
from approvals.models import Approval, ApprovalStatus
from executions.errors import Conflict, Forbidden, NotFound, ValidationFailed
from executions.forms import SchemaForm
from executions.lifecycle import Actor, IllegalTransition
from executions.models import Role, role_at_least
from executions.pages.approval_contexts import (
    approval_detail_context,
    can_decide,
    inbox_lists,
    item_context,
    panel_context,
)
from executions.pages.base import base_context, page, settings_context

TABS = {
    "mine": "Assigned to me",
    "roles": "My roles",
    "all": "All pending",
    "decided": "Decided",
}


# --- pages -----------------------------------------------------------------------------------


@page
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    lists = inbox_lists(request.workspace, request.membership, request.user)
    tab = request.GET.get("tab")
    if tab not in TABS:
        tab = "mine" if lists["mine"] else ("roles" if lists["roles"] else "all")
    if tab == "decided":
        items = list(
            approval_selectors.approval_list(workspace=request.workspace)
            .exclude(status=ApprovalStatus.PENDING)
            .select_related("execution__agent")
            .prefetch_related("assignee_users", "decisions")
            .order_by("-decided_at", "-updated_at")[:100]
        )
    else:
        items = lists[tab]
    context = base_context(request, "approvals", live={"page": "approvals", "tab": tab})
    context.update(
        {
            "tab": tab,
            "tabs": TABS,
            "counts": {k: len(v) for k, v in lists.items()},
            "items": [item_context(a, request.membership, request.user) for a in items],
            "any_decidable": any(can_decide(a, request.membership, request.user) for a in items),
        }
    )
    return render(request, "approvals/inbox.html", context)


def _get(request: HttpRequest, approval_id: str) -> Approval:
    return approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)


@page
@require_GET
def approval_detail(request: HttpRequest, approval_id: str) -> HttpResponse:
    approval = _get(request, approval_id)
    context = approval_detail_context(approval, request.membership, request.user)
    if request.htmx and request.GET.get("fragment") == "panel":
        return render(request, "approvals/_panel.html#panel", {**context, "oob": True})
    context.update(
        base_context(request, "approvals", live={"page": "approval", "id": str(approval.pk)})
    )
    return render(request, "approvals/detail.html", context)


@page
@require_POST
def approval_decide(request: HttpRequest, approval_id: str) -> HttpResponse:
    """One person's decision. A forged POST from someone who may not decide is a 403."""
    approval = _get(request, approval_id)
    if not role_at_least(request.membership.role, Role.REVIEWER):
        raise PermissionDenied("viewers cannot decide approvals")
    decision = request.POST.get("decision", "")
    reason = request.POST.get("reason", "").strip()
    payload = None
    response = None
    extra: dict[str, Any] = {}
    field_errors: dict[str, list[str]] = {}
    if decision == "edit":
        text = request.POST.get("payload", "")
        extra["payload_text"] = text
        try:
            payload = json.loads(text)
        except ValueError as exc:
            field_errors["payload"] = [f"not valid JSON: {exc}"]
    respond_form = None
    if decision == "respond":
        respond_form = SchemaForm(request.POST, schema=approval.response_schema, prefix="respond")
        respond_form.error_prefix = "response"
        if not approval.response_schema:
            response = request.POST.get("response_text", "").strip() or None
        elif respond_form.is_valid():
            response = respond_form.value()
        else:
            field_errors["response"] = ["fix the fields below"]
        extra["respond_form"] = respond_form
    chosen = request.POST.getlist("option")
    options = [_option_value(approval, c) for c in chosen] if chosen else None
    status = 200
    if not field_errors:
        try:
            services.approval_decide(
                approval=approval,
                actor=Actor.for_user(request.user),
                decision=decision,
                reason=reason,
                payload=payload,
                response=response,
                options=options,
                idempotency_key=request.POST.get("idempotency_key") or None,
                role=request.membership.role,
            )
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except ValidationFailed as exc:
            for problem in exc.details or []:
                where = str(problem.get("field", ""))
                if where.startswith("response.") and respond_form is not None:
                    respond_form.add_schema_error(where, problem["message"])
                    field_errors.setdefault("response", ["fix the fields below"])
                else:
                    key = where.split(".")[0].split("[")[0] or "decision"
                    label = where if where != key else ""
                    message = f"{label}: {problem['message']}" if label else problem["message"]
                    field_errors.setdefault(key, []).append(message)
            status = 422
        except (Conflict, IllegalTransition) as exc:
            extra["conflict"] = getattr(exc, "message", str(exc))
            status = 409
        approval.refresh_from_db()
    else:
        status = 422
    if not request.htmx:
        if status == 200:
            messages.success(request, f"{_verb(decision)} “{approval.title}”.")
        elif status == 409:
            messages.error(request, extra["conflict"])
        else:
            messages.error(request, "; ".join(m for ms in field_errors.values() for m in ms))
        return redirect(request.POST.get("next") or reverse("approval_detail", args=[approval.pk]))
    context = panel_context(approval, request.membership, request.user, **extra)
    context.update(
        {
            "field_errors": field_errors,
            "reason_value": reason if status != 200 else "",
            "open_form": decision if status != 200 else "",
            "just_decided": status == 200,
            "oob": False,
            "context_page": request.POST.get("context_page", ""),
        }
    )
    return render(request, "approvals/_panel.html#panel", context, status=status)


def _option_value(approval: Approval, raw: str) -> Any:
    for option in approval.options or []:
        if str(option.get("value")) == raw:
            return option.get("value")
    return raw


def _verb(decision: str) -> str:
    return {"approve": "Approved", "edit": "Edited and approved", "respond": "Responded to"}.get(
        decision, "Rejected"
    )


@page
@require_POST
def approval_bulk(request: HttpRequest) -> HttpResponse:
    if not role_at_least(request.membership.role, Role.REVIEWER):
        raise PermissionDenied("viewers cannot decide approvals")
    ids = [i for i in request.POST.getlist("ids") if i]
    decision = request.POST.get("decision", "")
    if decision not in {"approve", "reject"}:
        messages.error(request, "Choose approve or reject.")
        return redirect(request.POST.get("next") or reverse("approval_inbox"))
    found, missing = [], []
    for ref in ids:
        try:
            found.append(_get(request, ref))
        except NotFound:
            missing.append(ref)
    try:
        results = services.approval_bulk_decide(
            approvals=found,
            missing=missing,
            actor=Actor.for_user(request.user),
            decision=decision,
            reason=request.POST.get("reason", ""),
            role=request.membership.role,
        )
    except ValidationFailed as exc:
        messages.error(request, exc.message)
        return redirect(reverse("approval_inbox"))
    ok = [r for r in results if r["result"] == "ok"]
    failed = [r for r in results if r["result"] != "ok"]
    if ok:
        messages.success(request, f"{_verb(decision)} {len(ok)} approval(s).")
    for item in failed[:5]:
        messages.error(request, f"{item['id'][:8]}…: {item.get('error', item['result'])}")
    tab = request.POST.get("tab") or ""
    return redirect(reverse("approval_inbox") + (f"?tab={tab}" if tab else ""))


@page
@require_POST
def approval_comment(request: HttpRequest, approval_id: str) -> HttpResponse:
    approval = _get(request, approval_id)
    error = ""
    try:
        services.approval_comment_add(
            approval=approval, actor=Actor.for_user(request.user), body=request.POST.get("body", "")
        )
    except ValidationFailed as exc:
        error = exc.message
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(reverse("approval_detail", args=[approval.pk]))
    context = {"approval": approval, "comments": list(approval.comments.all()),
               "comment_error": error}  # fmt: skip
    return render(request, "approvals/detail.html#comments", context, status=422 if error else 200)


# --- settings: webhooks (admins) -------------------------------------------------------------


@page
def settings_webhooks(request: HttpRequest) -> HttpResponse:
    context = settings_context(request, "webhooks", events=notifications.EVENTS)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "create":
                events = request.POST.getlist("events") or ["*"]
                hook = notifications.webhook_create(
                    workspace=request.workspace,
                    url=request.POST.get("url", "").strip(),
                    events=events,
                    description=request.POST.get("description", ""),
                )
                context["created_hook"] = hook
            else:
                hook = approval_selectors.webhook_get(
                    workspace=request.workspace, webhook_id=request.POST.get("webhook_id")
                )
                if action == "delete":
                    notifications.webhook_delete(webhook=hook)
                    messages.success(request, f"Deleted the webhook to {hook.url}.")
                elif action == "toggle":
                    notifications.webhook_update(webhook=hook, data={"active": not hook.active})
                    state = "enabled" if hook.active else "paused"
                    messages.success(request, f"Webhook to {hook.url} {state}.")
                elif action == "ping":
                    notifications.webhook_ping(webhook=hook)
                    messages.success(request, f"Sent a ping to {hook.url}; see the log below.")
                elif action == "redeliver":
                    delivery = notifications.delivery_get(
                        webhook=hook, delivery_id=request.POST.get("delivery_id")
                    )
                    notifications.webhook_redeliver(delivery=delivery)
                    messages.success(request, f"Queued {delivery.event} again.")
                return redirect(reverse("settings_webhooks") + f"?hook={hook.pk}")
        except (ValidationFailed, NotFound) as exc:
            context["form_error"] = exc.message
            context["form_data"] = request.POST
            status = 422
    hooks = list(approval_selectors.webhook_list(workspace=request.workspace))
    selected = None
    wanted = request.GET.get("hook")
    for hook in hooks:
        if str(hook.pk) == wanted:
            selected = hook
    selected = selected or (hooks[0] if hooks else None)
    context.update(
        {
            "hooks": hooks,
            "selected": selected,
            "deliveries": list(
                approval_selectors.delivery_list(webhook=selected).prefetch_related("log")[:50]
            )
            if selected
            else [],
        }
    )
    return render(request, "settings/webhooks.html", context, status=status)
