"""Writes on approvals: request, decide (with quorum and idempotency), comment, expire, escalate.

Every write here is one transaction holding the approval row lock, so two people deciding at
once cannot both win: the first valid decision resolves it, the second sees it decided and gets
a 409 that says who decided what and when. Every decision, comment, escalation and expiry is
also a Transition on the execution, so its audit trail reads top to bottom. Events, webhooks,
e-mails and the engine's next run are all scheduled on commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import policies
from approvals.models import Approval, ApprovalComment, ApprovalDecision, ApprovalStatus
from executions import lifecycle
from executions.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from executions.lifecycle import SYSTEM, Actor, IllegalTransition, Status
from executions.models import AgentType, Execution
from executions.schemas import violations
from executions.serializers import iso

logger = logging.getLogger("steward.approvals")

APPROVING = frozenset({"approve", "edit", "respond"})
DECISION_ALIASES = {
    "approve": "approve",
    "approved": "approve",
    "accept": "approve",
    "reject": "reject",
    "rejected": "reject",
    "deny": "reject",
    "denied": "reject",
    "edit": "edit",
    "respond": "respond",
}
BULK_LIMIT = 200


# --- requesting (external programs) ---------------------------------------------------------


def approval_request(
    *, execution: Execution, spec: dict[str, Any], payload: Any = None, actor: Actor = SYSTEM
) -> Approval:
    """An external program asks for a decision: park its execution on a new Approval.

    Only executions of `external` agents are parked this way; the engine parks its own runs
    through `executions.engine.checkpoints.create_approval`.
    """
    if execution.agent.type != AgentType.EXTERNAL:
        raise Conflict(
            f"execution {execution.pk} is run by Steward's engine (agent type "
            f"{execution.agent.type}); only executions of external agents request approvals "
            "through the API",
            code="not_external",
        )
    values = policies.fields_from_spec(spec)
    schema = values.get("payload_schema")
    if schema and payload is not None and (found := violations(schema, payload, prefix="payload")):
        raise ValidationFailed("payload does not match payload_schema", details=found)
    with transaction.atomic():
        if execution.status == Status.PENDING:
            lifecycle.transition(execution, Status.RUNNING, type="start", actor=actor)
        if execution.status == Status.AWAITING_APPROVAL:
            waiting = execution.approvals.filter(status=ApprovalStatus.PENDING).first()
            raise Conflict(
                "the execution is already waiting on an approval; decide it first",
                code="already_awaiting_approval",
                details={"approval_id": str(waiting.pk) if waiting else None},
            )
        count = execution.approvals.count()
        step_path = str(spec.get("step_path") or spec.get("step") or f"approval-{count + 1}")[:200]
        lifecycle.transition(
            execution,
            Status.AWAITING_APPROVAL,
            type="wait",
            actor=actor,
            step_path=step_path,
            step_kind="approval",
            input=payload,
            message=values["title"],
        )
        approval = _create(
            execution=execution,
            values=values,
            payload=payload,
            step_path=step_path,
            source="external",
        )
    return approval


def approval_create(
    *,
    execution: Execution,
    step_path: str,
    spec: dict[str, Any],
    payload: Any,
    source: str = "step",
    reject_ends: bool | None = None,
) -> Approval:
    """Create the pending Approval for a step from its spec, reading every option the docs list
    (durations like "2s", assignees as users and roles, quorum, escalation…); a bad spec is a
    ValidationFailed naming the field. For the engine's `checkpoints.create_approval`: call it
    inside the transaction that parks the execution. Returns the existing pending approval of
    the same step when there is one."""
    existing = Approval.objects.filter(
        execution=execution, step_path=step_path, status=ApprovalStatus.PENDING
    ).first()
    if existing is not None:
        return existing
    values = policies.fields_from_spec({"title": "Approval needed", **spec})
    if reject_ends is not None:
        values["reject_ends"] = bool(reject_ends)
    return _create(
        execution=execution, values=values, payload=payload, step_path=step_path, source=source
    )


def _create(
    *, execution: Execution, values: dict[str, Any], payload: Any, step_path: str, source: str
) -> Approval:
    now = timezone.now()
    usernames = values.pop("assignee_usernames")
    expires_in = values.pop("expires_in")
    escalate_after = values.pop("escalate_after")
    approval = Approval.objects.create(
        workspace_id=execution.workspace_id,
        execution=execution,
        step_path=step_path,
        source=source,
        payload=payload,
        expires_at=policies.expiry_from(now, expires_in),
        escalate_at=policies.expiry_from(now, escalate_after),
        created_at=now,
        updated_at=now,
        **values,
    )
    if usernames:
        approval.assignee_users.set(get_user_model().objects.filter(username__in=usernames))
    _publish(approval)
    return approval


# --- deciding -------------------------------------------------------------------------------


@dataclass
class Decided:
    approval: Approval
    decision: ApprovalDecision
    replayed: bool = False
    resolved: bool = False


def approval_decide(
    *,
    approval: Approval,
    actor: Actor,
    decision: str,
    reason: str = "",
    payload: Any = None,
    response: Any = None,
    option: Any = None,
    options: list[Any] | None = None,
    idempotency_key: str | None = None,
    role: str | None = None,
) -> Decided:
    """Record one person's decision; resolve the approval when its quorum is met.

    Raises Forbidden (not an assignee, self-approval, viewer), ValidationFailed (edited payload
    or response against their schemas, unknown option, action not allowed) and Conflict (already
    decided, or this person already voted). A repeat with the same idempotency key returns the
    first answer without deciding again.
    """
    kind = DECISION_ALIASES.get(str(decision or "").strip().lower())
    if kind is None:
        raise ValidationFailed(
            f"unknown decision {decision!r}",
            details=[field_error("decision", "one of approve, reject, edit, respond")],
        )
    if idempotency_key and (replay := _replay(approval, idempotency_key)):
        return replay
    decider = policies.decider_for(actor, workspace=approval.workspace, role=role)
    try:
        with transaction.atomic():
            return _decide(
                approval_id=approval.pk,
                decider=decider,
                kind=kind,
                reason=str(reason or "")[:5000],
                payload=payload,
                response=response,
                chosen=_chosen(option, options),
                idempotency_key=idempotency_key or None,
                into=approval,
            )
    except IntegrityError:
        # The same Idempotency-Key raced in twice: the first one committed; answer with it.
        if idempotency_key and (replay := _replay(approval, idempotency_key)):
            return replay
        raise


def _replay(approval: Approval, key: str) -> Decided | None:
    first = approval.decisions.filter(idempotency_key=key).first()
    if first is None:
        return None
    approval.refresh_from_db()
    return Decided(approval=approval, decision=first, replayed=True)


def _chosen(option: Any, options: list[Any] | None) -> list[Any] | None:
    if options is not None:
        return options if isinstance(options, list) else [options]
    if option is not None:
        return option if isinstance(option, list) else [option]
    return None


def _decide(
    *,
    approval_id: Any,
    decider: policies.Decider,
    kind: str,
    reason: str,
    payload: Any,
    response: Any,
    chosen: list[Any] | None,
    idempotency_key: str | None,
    into: Approval,
) -> Decided:
    # The row lock serialises deciders (SQLite's IMMEDIATE transactions do the same).
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution", "execution__agent", "workspace")
        .get(pk=approval_id)
    )
    if approval.status != ApprovalStatus.PENDING:
        raise _already_decided(approval)
    policies.check_can_decide(approval, decider)
    kind = _validate(approval, kind=kind, payload=payload, response=response, chosen=chosen)

    earlier = list(approval.decisions.all())
    identity = decider.identity
    for previous in earlier:
        if _identity(previous) == identity and previous.decision in APPROVING | {"reject"}:
            raise Conflict(
                f"{decider.actor.label} already decided this approval "
                f"({previous.decision} at {iso(previous.created_at)}); "
                f"{_progress_text(approval, earlier)}",
                code="already_voted",
                details=_progress(approval, earlier),
            )
    now = timezone.now()
    record = ApprovalDecision.objects.create(
        approval=approval,
        decision=kind,
        reason=reason,
        payload=payload if kind == "edit" else None,
        response=response,
        options=chosen,
        actor_type=decider.actor.type,
        actor_user=decider.user,
        actor_key=decider.actor.api_key,
        actor_label=decider.actor.label,
        idempotency_key=idempotency_key,
        created_at=now,
    )
    votes = [*earlier, record]
    progress = _progress(approval, votes)
    execution = approval.execution
    if execution is not None:
        lifecycle.record(
            execution,
            type="decision",
            actor=decider.actor,
            step_path=approval.step_path,
            step_kind="approval",
            message=_decision_message(decider.actor.label, kind, reason, approval, progress),
            output={
                "approval_id": str(approval.pk),
                "decision": kind,
                **({"payload": payload} if kind == "edit" else {}),
                **({"response": response} if response is not None else {}),
                **({"options": chosen} if chosen is not None else {}),
                "progress": progress,
            },
        )
    resolved = None
    if progress["approvals"] >= approval.required_approvals:
        resolved = ApprovalStatus.APPROVED
    elif progress["rejections"] >= approval.required_rejections:
        resolved = ApprovalStatus.REJECTED
    if resolved is None:
        approval.updated_at = now
        approval.save(update_fields=["updated_at"])
        _publish(approval)
    else:
        _resolve(approval, status=resolved, votes=votes, actor=decider.actor, reason=reason)
    _copy(approval, into)
    return Decided(approval=into, decision=record, resolved=resolved is not None)


def _validate(
    approval: Approval, *, kind: str, payload: Any, response: Any, chosen: list[Any] | None
) -> str:
    allowed = approval.allowed_actions or list(policies.DEFAULT_ACTIONS)
    if kind == "approve" and payload is not None:
        kind = "edit"
    if kind == "approve" and response is not None and "respond" in allowed:
        kind = "respond"
    if kind not in allowed:
        raise ValidationFailed(
            f"this approval does not allow {kind}; allowed: {', '.join(allowed)}",
            details=[field_error("decision", f"one of {', '.join(allowed)}")],
        )
    errors: list[dict[str, str]] = []
    if kind == "edit":
        if payload is None:
            errors.append(field_error("payload", "an edit needs the edited payload"))
        else:
            errors += violations(approval.payload_schema, payload, prefix="payload")
    if kind == "respond":
        if response is None or response == "":
            errors.append(field_error("response", "a response is required"))
        elif approval.response_schema:
            errors += violations(approval.response_schema, response, prefix="response")
    elif response is not None and kind != "reject":
        errors += violations(approval.response_schema, response, prefix="response")
    if kind in APPROVING and approval.options:
        values = {str(v): v for v in policies.option_values(approval.options)}
        if not chosen:
            errors.append(field_error("option", f"choose one of {', '.join(values)}"))
        else:
            unknown = [c for c in chosen if str(c) not in values]
            if unknown:
                errors.append(
                    field_error("option", f"unknown option(s) {unknown}; one of {list(values)}")
                )
            if not approval.multiple and len(chosen) > 1:
                errors.append(field_error("options", "this approval takes a single option"))
    elif chosen and not approval.options:
        errors.append(field_error("option", "this approval has no options"))
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(f"invalid decision: {summary}", details=errors)
    return kind


def _identity(decision: ApprovalDecision) -> str:
    if decision.actor_user_id is not None:
        return f"user:{decision.actor_user_id}"
    if decision.actor_key_id is not None:
        return f"key:{decision.actor_key_id}"
    return f"{decision.actor_type}:{decision.actor_label}"


def _progress(approval: Approval, votes: list[ApprovalDecision]) -> dict[str, Any]:
    approvers = {_identity(v) for v in votes if v.decision in APPROVING}
    rejecters = {_identity(v) for v in votes if v.decision == "reject"}
    return {
        "approvals": len(approvers),
        "required": approval.required_approvals,
        "rejections": len(rejecters),
        "required_rejections": approval.required_rejections,
    }


def _progress_text(approval: Approval, votes: list[ApprovalDecision]) -> str:
    progress = _progress(approval, votes)
    return f"{progress['approvals']} of {progress['required']} approvals"


def _decision_message(label: str, kind: str, reason: str, approval: Approval, progress) -> str:
    verb = {"approve": "approved", "edit": "edited and approved", "respond": "responded to"}.get(
        kind, "rejected"
    )
    text = f"{label} {verb} “{approval.title}”"
    if approval.required_approvals > 1 and kind in APPROVING:
        text += f" ({progress['approvals']} of {progress['required']})"
    if approval.required_rejections > 1 and kind == "reject":
        text += f" ({progress['rejections']} of {progress['required_rejections']} rejections)"
    return f"{text}: {reason}" if reason else text


def _already_decided(approval: Approval) -> Conflict:
    last = approval.decisions.order_by("-created_at", "-id").first()
    who = approval.decided_by_label or (last.actor_label if last else "someone")
    when = iso(approval.decided_at)
    what = approval.status
    message = f"approval was already {what} by {who} at {when}"
    if approval.status == ApprovalStatus.CANCELLED:
        message = f"approval was cancelled at {iso(approval.updated_at)} (its execution ended)"
    return Conflict(
        message,
        code="already_decided",
        details={
            "status": approval.status,
            "decided_by": who,
            "decided_at": when,
            "decision": last.decision if last else None,
            "reason": last.reason if last else "",
        },
    )


def _resolve(
    approval: Approval,
    *,
    status: str,
    votes: list[ApprovalDecision],
    actor: Actor,
    reason: str,
    expired_by_timeout: bool = False,
) -> None:
    """Set the outcome on the approval and move its execution on (lock held by the caller)."""
    now = timezone.now()
    edited = [v.payload for v in votes if v.decision == "edit" and v.payload is not None]
    responses = [v.response for v in votes if v.response is not None and v.decision in APPROVING]
    chosen = [v.options for v in votes if v.options is not None and v.decision in APPROVING]
    approval.status = status
    approval.decided_at = now
    approval.decided_by_label = actor.label
    approval.updated_at = now
    if status == ApprovalStatus.APPROVED:
        approval.result_payload = edited[-1] if edited else approval.payload
        approval.response = responses[-1] if responses else None
        approval.chosen_options = chosen[-1] if chosen else None
    approval.save(
        update_fields=[
            "status",
            "decided_at",
            "decided_by_label",
            "updated_at",
            "result_payload",
            "response",
            "chosen_options",
        ]
    )
    execution = approval.execution
    if execution is not None:
        _move_execution(approval, execution, actor=actor, reason=reason)
    _publish(approval)
    approval_id = approval.pk
    event = "approval.expired" if expired_by_timeout else "approval.decided"
    transaction.on_commit(lambda: _notify_decided(approval_id, event))


def _move_execution(approval: Approval, execution: Execution, *, actor: Actor, reason: str):
    run_again = False
    if approval.status == ApprovalStatus.APPROVED:
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="approved",
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            output=approval.response if approval.response is not None else approval.result_payload,
            message=f"approved by {actor.label}" + (f": {reason}" if reason else ""),
        )
        run_again = True
    elif approval.reject_ends or (
        approval.on_timeout == "fail" and approval.status == ApprovalStatus.EXPIRED
    ):
        # The run ends here: failed when an expiry says so, otherwise rejected.
        if approval.on_timeout == "fail" and approval.status == ApprovalStatus.EXPIRED:
            to, kind = Status.FAILED, "error"
            message = f"approval “{approval.title}” expired without a decision"
        else:
            to, kind = Status.REJECTED, "rejected"
            verb = "expired" if approval.status == ApprovalStatus.EXPIRED else "rejected"
            message = f"approval “{approval.title}” {verb} by {actor.label}" + (
                f": {reason}" if reason else ""
            )
        lifecycle.transition(
            execution,
            to,
            type=kind,
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            message=message,
            fields={"error": message},
        )
    else:
        # The step has an on_reject branch (or the external program carries on): run again.
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="rejected",
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"rejected by {actor.label}" + (f": {reason}" if reason else ""),
        )
        run_again = True
    if run_again and execution.agent.type != AgentType.EXTERNAL:
        from executions import tasks

        execution_id = execution.pk
        transaction.on_commit(lambda: tasks.enqueue_run(execution_id))


def _copy(source: Approval, target: Approval) -> None:
    if source is target:
        return
    for f in source._meta.concrete_fields:
        setattr(target, f.attname, getattr(source, f.attname))
    # Drop caches (decisions, assignees) the caller may hold from before the decision.
    target._prefetched_objects_cache = {}


def _publish(approval: Approval) -> None:
    from executions.live import events

    approval_id, workspace_id = approval.pk, approval.workspace_id
    execution_id, status = approval.execution_id, approval.status
    transaction.on_commit(
        lambda: events.approval_changed(
            approval_id=approval_id,
            workspace_id=workspace_id,
            execution_id=execution_id,
            status=status,
        )
    )


def _notify_decided(approval_id: Any, event: str) -> None:
    from approvals import notifications

    notifications.approval_event(approval_id=approval_id, event=event)


# --- bulk -----------------------------------------------------------------------------------


def approval_bulk_decide(
    *,
    approvals: list[Approval],
    missing: list[str],
    actor: Actor,
    decision: str,
    reason: str = "",
    role: str | None = None,
) -> list[dict[str, Any]]:
    """Decide many approvals with one decision; each item succeeds or fails on its own (its
    own transaction), and the reply says which: ok, conflict, forbidden, invalid, not_found."""
    if len(approvals) + len(missing) > BULK_LIMIT:
        raise ValidationFailed(
            f"at most {BULK_LIMIT} approvals per bulk decision",
            details=[field_error("ids", f"at most {BULK_LIMIT}")],
        )
    results: list[dict[str, Any]] = []
    for approval in approvals:
        item: dict[str, Any] = {"id": str(approval.pk)}
        try:
            decided = approval_decide(
                approval=approval, actor=actor, decision=decision, reason=reason, role=role
            )
            item.update(result="ok", status=decided.approval.status)
        except Conflict as exc:
            item.update(result="conflict", error=exc.message, details=exc.details)
        except IllegalTransition as exc:
            item.update(result="conflict", error=str(exc))
        except Forbidden as exc:
            item.update(result="forbidden", error=exc.message)
        except ValidationFailed as exc:
            item.update(result="invalid", error=exc.message, details=exc.details)
        results.append(item)
    for ref in missing:
        results.append({"id": ref, "result": "not_found", "error": f"approval {ref} not found"})
    return results


# --- comments -------------------------------------------------------------------------------


def approval_comment_add(*, approval: Approval, actor: Actor, body: str) -> ApprovalComment:
    body = (body or "").strip()
    if not body:
        raise ValidationFailed("a comment needs a body", details=[field_error("body", "empty")])
    if len(body) > 10_000:
        raise ValidationFailed(
            "a comment is at most 10000 characters",
            details=[field_error("body", "at most 10000 characters")],
        )
    decider = policies.decider_for(actor, workspace=approval.workspace)
    with transaction.atomic():
        comment = ApprovalComment.objects.create(
            approval=approval,
            body=body,
            actor_type=actor.type,
            actor_user=decider.user,
            actor_key=actor.api_key,
            actor_label=actor.label,
        )
        if approval.execution_id:
            lifecycle.record(
                approval.execution,
                type="comment",
                actor=actor,
                step_path=approval.step_path,
                step_kind="approval",
                message=body,
                output={"approval_id": str(approval.pk), "comment_id": comment.pk},
                allow_terminal=True,
            )
        Approval.objects.filter(pk=approval.pk).update(updated_at=timezone.now())
        _publish(approval)
    return comment


# --- timers: expiry and escalation (called by the worker loop every few seconds) ------------


def approvals_expire_due(*, now: Any = None, limit: int = 100) -> int:
    """Resolve every pending approval whose time ran out, per its `on_timeout`. Returns how many.

    Safe to call from any number of workers at once: each approval is re-read under its lock
    and skipped if someone (a person or another worker) resolved it first.
    """
    now = now or timezone.now()
    due = list(
        Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    done = 0
    for approval_id in due:
        try:
            with transaction.atomic():
                done += _expire(approval_id, now=now)
        except IllegalTransition:
            # The execution moved meanwhile (cancelled): close the approval on its own.
            Approval.objects.filter(pk=approval_id, status=ApprovalStatus.PENDING).update(
                status=ApprovalStatus.CANCELLED, updated_at=timezone.now()
            )
        except Exception:  # noqa: BLE001 - one bad row must not stop the timer for the rest
            logger.exception("could not expire approval %s", approval_id)
    return done


def _expire(approval_id: Any, *, now: Any) -> int:
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution", "execution__agent")
        .filter(pk=approval_id, status=ApprovalStatus.PENDING)
        .first()
    )
    if approval is None or approval.expires_at is None or approval.expires_at > now:
        return 0
    waited = (now - approval.created_at).total_seconds()
    reason = f"no decision within {_human(waited)}; on_timeout: {approval.on_timeout}"
    decision = ApprovalDecision.objects.create(
        approval=approval,
        decision="expire",
        reason=reason,
        actor_type="system",
        actor_label="system",
    )
    if approval.execution_id:
        lifecycle.record(
            approval.execution,
            type="expired",
            actor=SYSTEM,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"“{approval.title}” expired: {reason}",
            output={"approval_id": str(approval.pk), "on_timeout": approval.on_timeout},
        )
    status = ApprovalStatus.APPROVED if approval.on_timeout == "approve" else ApprovalStatus.EXPIRED
    votes = [*approval.decisions.exclude(pk=decision.pk), decision]
    _resolve(
        approval, status=status, votes=votes, actor=SYSTEM, reason=reason, expired_by_timeout=True
    )
    return 1


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def approvals_escalate_due(*, now: Any = None, limit: int = 100) -> int:
    """Add the escalation assignees to pending approvals past `escalate_after`, and tell them."""
    now = now or timezone.now()
    due = list(
        Approval.objects.filter(
            status=ApprovalStatus.PENDING, escalate_at__lte=now, escalated_at__isnull=True
        ).values_list("pk", flat=True)[:limit]
    )
    done = 0
    for approval_id in due:
        try:
            with transaction.atomic():
                done += _escalate(approval_id, now=now)
        except Exception:  # noqa: BLE001
            logger.exception("could not escalate approval %s", approval_id)
    return done


def _escalate(approval_id: Any, *, now: Any) -> int:
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution")
        .filter(pk=approval_id, status=ApprovalStatus.PENDING, escalated_at__isnull=True)
        .first()
    )
    if approval is None:
        return 0
    users = list(get_user_model().objects.filter(username__in=approval.escalate_to_users or []))
    approval.assignee_users.add(*users)
    roles = sorted(set(approval.assignee_roles or []) | set(approval.escalate_to_roles or []))
    approval.assignee_roles = roles
    approval.escalated_at = now
    approval.updated_at = now
    approval.save(update_fields=["assignee_roles", "escalated_at", "updated_at"])
    added = [u.get_username() for u in users] + [f"role:{r}" for r in approval.escalate_to_roles]
    if approval.execution_id:
        lifecycle.record(
            approval.execution,
            type="escalation",
            actor=SYSTEM,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"“{approval.title}” escalated to {', '.join(added) or 'nobody new'}",
            output={"approval_id": str(approval.pk), "added": added},
        )
    _publish(approval)
    user_ids = [u.pk for u in users]
    roles_added = list(approval.escalate_to_roles or [])

    def notify() -> None:
        from approvals import notifications

        notifications.approval_escalated(
            approval_id=approval_id, user_ids=user_ids, roles=roles_added
        )

    transaction.on_commit(notify)
    return 1


# --- PromptRails shortcuts: decide an execution's pending approval -------------------------


def pending_approval_for(execution: Execution) -> Approval:
    approval = (
        Approval.objects.filter(execution=execution, status=ApprovalStatus.PENDING)
        .order_by("created_at")
        .first()
    )
    if approval is not None:
        return approval
    last = Approval.objects.filter(execution=execution).order_by("-created_at").first()
    if last is not None:
        raise _already_decided(last)
    raise NotFound(
        f"execution {execution.pk} has no approval to decide (it is {execution.status})",
        code="no_pending_approval",
    )
