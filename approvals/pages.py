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
from approvals.models import Approval
from executions.errors import Conflict, Forbidden, NotFound, ValidationFailed
from executions.forms import SchemaForm
from executions.lifecycle import Actor, IllegalTransition
from executions.models import Role, role_at_least
from executions.pages.approval_contexts import (
    approval_detail_context,
    inbox_counts,
    inbox_page,
    item_context,
    panel_context,
)
from executions.pages.base import base_context, page, require_role, safe_next, settings_context
from executions.pages.forms import (
    BulkDecisionForm,
    CommentForm,
    DecisionForm,
    WebhookActionForm,
    WebhookCreateForm,
    add_service_errors,
    first_error,
)

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
    counts = inbox_counts(request.workspace, request.membership, request.user)
    tab = request.GET.get("tab")
    if tab not in TABS:
        tab = "mine" if counts["mine"][0] else ("roles" if counts["roles"][0] else "all")
    where = {"after": request.GET.get("after") or None, "before": request.GET.get("before") or None}
    try:
        shown = inbox_page(request.workspace, request.membership, request.user, tab, **where)
    except ValidationFailed:
        # A cursor from a mangled or outdated link: the tab's first page rather than an error.
        where = {"after": None, "before": None}
        shown = inbox_page(request.workspace, request.membership, request.user, tab)
    items = shown.items
    cards = [item_context(a, request.membership, request.user) for a in items]
    # Live inserts only where the page shows the whole tab: with more pages, a new approval may
    # belong on another one (the tab counts still update).
    whole = "0" if shown.before or shown.after else "1"
    context = base_context(
        request, "approvals", live={"page": "approvals", "tab": tab, "whole": whole}
    )
    context.update(
        {
            "tab": tab,
            "tabs": TABS,
            "counts": {k: n for k, (n, _) in counts.items()},
            "count_labels": {k: label for k, (_, label) in counts.items()},
            # The header badge: the workspace's pending count, which the "all" tab counted.
            "nav_count": counts["all"][0],
            "items": cards,
            "any_decidable": any(card["item_can_decide"] for card in cards),
            "page_before": shown.before,
            "page_after": shown.after,
            "paged": bool(where["after"] or where["before"]),
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
    approval = approval_selectors.approval_get(
        workspace=request.workspace, approval_id=approval_id, votes=False
    )
    if not role_at_least(request.membership.role, Role.REVIEWER):
        raise PermissionDenied("viewers cannot decide approvals")
    form = DecisionForm(request.POST, options=approval.options)
    extra: dict[str, Any] = {}
    field_errors: dict[str, list[str]] = {}
    decision, reason, answers = "", "", {}
    if form.is_valid():
        decision, reason = form.cleaned_data["decision"], form.cleaned_data["reason"]
        answers = _answers(request, approval, form, extra, field_errors)
    else:
        for name, errors in form.errors.items():
            field_errors.setdefault("decision" if name == "__all__" else name, []).extend(errors)
    status = 200
    if not field_errors:
        try:
            services.approval_decide(
                approval=approval,
                actor=Actor.for_user(request.user),
                decision=decision,
                reason=reason,
                options=[_option_value(approval, c) for c in form.cleaned_data["option"]] or None,
                idempotency_key=form.cleaned_data["idempotency_key"] or None,
                role=request.membership.role,
                **answers,
            )
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except ValidationFailed as exc:
            _place_errors(exc, extra, field_errors)
            status = 422
        except (Conflict, IllegalTransition) as exc:
            extra["conflict"] = getattr(exc, "message", str(exc))
            status = 409
        if status != 200:
            # Someone else may have decided it meanwhile; a decision made here already left
            # the row as written (and its votes and assignees) on `approval`.
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
        target = safe_next(request, reverse("approval_detail", args=[approval.pk]))
        return redirect(target)
    context = panel_context(approval, request.membership, request.user, **extra)
    context.update(
        {
            "field_errors": field_errors,
            "reason_value": reason if status != 200 else "",
            "open_form": decision if status != 200 else "",
            "just_decided": status == 200,
            "oob": False,
            "context_page": form.cleaned_data.get("context_page", "") if form.is_bound else "",
        }
    )
    return render(request, "approvals/_panel.html#panel", context, status=status)


def _answers(
    request: HttpRequest,
    approval: Approval,
    form: DecisionForm,
    extra: dict[str, Any],
    field_errors: dict[str, list[str]],
) -> dict[str, Any]:
    """The edited payload or the response a decision carries, read from its own form."""
    decision = form.cleaned_data["decision"]
    if decision == "edit":
        if form.cleaned_data["edit_mode"] == "fields" and approval.payload_schema:
            edit_form = SchemaForm(request.POST, schema=approval.payload_schema, prefix="edit")
            edit_form.error_prefix = "payload"
            extra["edit_form"] = edit_form
            if edit_form.is_valid():
                return {"payload": edit_form.value()}
            field_errors["payload"] = ["fix the fields below"]
            return {}
        text = form.cleaned_data["payload"]
        extra["payload_text"] = text
        extra["edit_mode"] = "json"
        try:
            return {"payload": json.loads(text)}
        except ValueError as exc:
            field_errors["payload"] = [f"not valid JSON: {exc}"]
            return {}
    if decision == "respond":
        respond_form = SchemaForm(request.POST, schema=approval.response_schema, prefix="respond")
        respond_form.error_prefix = "response"
        extra["respond_form"] = respond_form
        if not approval.response_schema:
            return {"response": form.cleaned_data["response_text"] or None}
        if respond_form.is_valid():
            return {"response": respond_form.value()}
        field_errors["response"] = ["fix the fields below"]
    return {}


def _place_errors(
    exc: ValidationFailed, extra: dict[str, Any], field_errors: dict[str, list[str]]
) -> None:
    """The service's field errors next to the fields they name (`payload.arguments.amount`)."""
    for problem in exc.details or []:
        where = str(problem.get("field", ""))
        schema_form = extra.get("respond_form") if where.startswith("response.") else None
        if where.startswith("payload.") and extra.get("edit_form") is not None:
            schema_form = extra["edit_form"]
        if schema_form is not None:
            schema_form.add_schema_error(where, problem["message"])
            field_errors.setdefault(where.split(".")[0], ["fix the fields below"])
            continue
        key = where.split(".")[0].split("[")[0] or "decision"
        label = where if where != key else ""
        message = f"{label}: {problem['message']}" if label else problem["message"]
        field_errors.setdefault(key, []).append(message)


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
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form).removeprefix("Decision: "))
        return redirect(safe_next(request, reverse("approval_inbox")))
    decision = form.cleaned_data["decision"]
    found, missing = approval_selectors.approvals_by_ids(
        workspace=request.workspace, ids=[i for i in form.cleaned_data["ids"] if i]
    )
    try:
        results = services.approval_bulk_decide(
            approvals=found,
            missing=missing,
            actor=Actor.for_user(request.user),
            decision=decision,
            reason=form.cleaned_data["reason"],
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
    tab = form.cleaned_data["tab"]
    return redirect(reverse("approval_inbox") + (f"?tab={tab}" if tab in TABS else ""))


@page
@require_POST
def approval_comment(request: HttpRequest, approval_id: str) -> HttpResponse:
    approval = _get(request, approval_id)
    require_role(request, Role.REVIEWER)  # as the API: viewers read the discussion only
    form = CommentForm(request.POST)
    error = ""
    try:
        services.approval_comment_add(
            approval=approval,
            actor=Actor.for_user(request.user),
            body=form.cleaned_data["body"] if form.is_valid() else "",
        )
    except ValidationFailed as exc:
        error = exc.message
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    if form.errors:
        error = first_error(form)
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(reverse("approval_detail", args=[approval.pk]))
    context = {"approval": approval, "comments": list(approval.comments.all()),
               "comment_error": error, "can_operate": True}  # fmt: skip
    return render(request, "approvals/detail.html#comments", context, status=422 if error else 200)


# --- settings: webhooks (admins) -------------------------------------------------------------

NEW_HOOK = "steward.new_webhook"


@page
def settings_webhooks(request: HttpRequest) -> HttpResponse:
    """Post/redirect/get: a new webhook's signing secret is shown once, on the page the
    redirect lands on (the session remembers which webhook was just created)."""
    context = settings_context(request, "webhooks", events=notifications.EVENTS)
    status = 200
    if request.method == "POST":
        if request.POST.get("action") == "create":
            form = WebhookCreateForm(request.POST, events=notifications.EVENTS)
            if form.is_valid():
                try:
                    hook = notifications.webhook_create(
                        workspace=request.workspace, **form.cleaned_data
                    )
                except ValidationFailed as exc:
                    add_service_errors(form, exc)
                else:
                    request.session[NEW_HOOK] = str(hook.pk)
                    return redirect(reverse("settings_webhooks") + f"?hook={hook.pk}")
        else:
            form = WebhookActionForm(request.POST)
            if form.is_valid():
                try:
                    hook = _webhook_action(request, **form.cleaned_data)
                except (ValidationFailed, NotFound) as exc:
                    add_service_errors(form, exc)
                else:
                    return redirect(reverse("settings_webhooks") + f"?hook={hook.pk}")
        context["form_error"] = first_error(form)
        context["form_data"] = request.POST
        status = 422
    hooks = list(approval_selectors.webhook_list(workspace=request.workspace))
    created = request.session.pop(NEW_HOOK, None)
    wanted = request.GET.get("hook")
    selected = next((h for h in hooks if str(h.pk) == wanted), hooks[0] if hooks else None)
    context.update(
        {
            "hooks": hooks,
            "selected": selected,
            "created_hook": next((h for h in hooks if str(h.pk) == created), None),
            "deliveries": list(
                approval_selectors.delivery_list(webhook=selected).prefetch_related("log")[:50]
            )
            if selected
            else [],
        }
    )
    return render(request, "settings/webhooks.html", context, status=status)


def _webhook_action(request: HttpRequest, *, action: str, webhook_id: Any, delivery_id: Any) -> Any:
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
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
        delivery = notifications.delivery_get(webhook=hook, delivery_id=delivery_id)
        notifications.webhook_redeliver(delivery=delivery)
        messages.success(request, f"Queued {delivery.event} again.")
    return hook
