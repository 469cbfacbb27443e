"""Deciding: one person's vote, quorum, idempotent replays, and bulk decisions.

Every decision is one transaction holding the approval row lock, so two people deciding at once
cannot both win: the first valid decision resolves it, the second sees it decided and gets a 409
that says who decided what and when. Each vote is also a Transition on the execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import lifecycle as approval_lifecycle
from approvals import policies
from approvals.models import Approval, ApprovalDecision, ApprovalStatus
from approvals.services.outcomes import APPROVING, already_decided, resolve
from executions import lifecycle
from executions.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from executions.lifecycle import Actor, IllegalTransition
from executions.models import Execution
from executions.schemas import violations
from executions.serializers import iso

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
    # The workspace's id, not the row: a role given by the caller needs no membership read.
    decider = policies.decider_for(actor, workspace=approval.workspace_id, role=role)
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
    # The row lock serialises deciders (SQLite's IMMEDIATE transactions do the same); the
    # execution's first, as an ending transition takes them.
    approval_lifecycle.lock_execution(into.execution_id)
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution", "execution__agent")
        .get(pk=approval_id)
    )
    if approval.status != ApprovalStatus.PENDING:
        raise already_decided(approval)
    _reuse_assignees(approval, into)
    policies.check_can_decide(approval, decider)
    kind = _validate(approval, kind=kind, payload=payload, response=response, chosen=chosen)

    earlier = _earlier_votes(approval)
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
        approval_lifecycle.publish(approval)
    else:
        resolve(approval, status=resolved, votes=votes, actor=decider.actor, reason=reason)
    _copy(approval, into, votes)
    return Decided(approval=into, decision=record, resolved=resolved is not None)


def _reuse_assignees(locked: Approval, read: Approval) -> None:
    """Hand the locked row the assignees the caller read moments before, when they cannot have
    changed since: after creation only an escalation adds assignees, and it stamps
    `escalated_at` in the same transaction, so an equal stamp under the lock means the same
    set (one query fewer per decision)."""
    cached = getattr(read, "_prefetched_objects_cache", {}).get("assignee_users")
    if cached is not None and locked.escalated_at == read.escalated_at:
        locked._prefetched_objects_cache = {"assignee_users": cached}


def _earlier_votes(approval: Approval) -> list[ApprovalDecision]:
    """The votes already cast, read under the lock. With a quorum of one each way every vote
    resolves the approval, so a row still pending under the lock has none: no query."""
    if approval.required_approvals <= 1 and approval.required_rejections <= 1:
        return []
    # With their users: the API reply names each voter from these (no query per vote).
    return list(approval.decisions.select_related("actor_user"))


def _copy(source: Approval, target: Approval, votes: list[ApprovalDecision]) -> None:
    """The decided row's fields, its execution as moved, its votes and assignees into the
    caller's instance, so the reply renders from what this transaction wrote and read (no
    re-read of the row just written)."""
    if source is not target:
        for f in source._meta.concrete_fields:
            setattr(target, f.attname, getattr(source, f.attname))
        if "execution" in source._state.fields_cache:
            target._state.fields_cache["execution"] = source.execution
    cache = {"decisions": votes}
    assignees = getattr(source, "_prefetched_objects_cache", {}).get("assignee_users")
    if assignees is not None:
        cache["assignee_users"] = assignees
    # Anything else the caller held from before the decision is dropped.
    target._prefetched_objects_cache = cache


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
        raise already_decided(last)
    raise NotFound(
        f"execution {execution.pk} has no approval to decide (it is {execution.status})",
        code="no_pending_approval",
    )
