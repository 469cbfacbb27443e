"""The contract between the engine and the approvals app.

Creating (engine):
    `create_approval(execution, step_path=…, spec=…, payload=…, source=…)` is called by the
    runner inside the same transaction that moves the execution running → awaiting_approval
    (type "wait") and releases its lease, so an Approval is never visible before its execution
    is parked on it. The engine parks on one approval at a time. Calling it again for the same
    (execution, step_path) returns the existing approval.

Deciding (approvals app):
    - approve (or edit / respond): set status "approved", `result_payload` (the possibly edited
      payload) and/or `response`; move the execution awaiting_approval → running (type
      "approved") and enqueue a run (`executions.tasks.enqueue_run`) on commit.
    - reject: set status "rejected". When `approval.reject_ends` is true (the step has no
      on_reject branch) move the execution awaiting_approval → rejected (type "rejected"); the
      engine never runs again. Otherwise move it → running and enqueue a run: the engine takes
      the on_reject branch (workflows), tells the model the call was refused (agent tools), or
      returns from `ctx.approval()` with the refusal (Python agents).
    - expiry: resolve per `on_timeout` the same way (approve → as approved with the payload,
      reject → as rejected, fail → move the execution to failed).

Reading (engine): on the next run `approval_outcome(execution, step_path)` returns the decided
Approval (status approved / rejected / expired) for the step, or None while it is pending.

This is the ONE module of the engine that imports the approvals app. `Checkpoints` below is
the part of RunContext that parks a run on an approval or on input and reads the answer.
"""

from __future__ import annotations

from typing import Any

from approvals import policies
from approvals import services as approval_services
from approvals.models import Approval
from executions.engine.records import jsonable
from executions.engine.stop import Park
from executions.errors import ValidationFailed
from executions.lifecycle import Status
from executions.models import Execution

DECIDED = ("approved", "rejected", "expired")
DEFAULT_ACTIONS = ["approve", "reject"]


def spec_errors(spec: dict[str, Any], *, prefix: str) -> list[dict[str, str]]:
    """The approvals app's own reading of an `approval` step's spec (timeout, assignees, form
    schema…), as field errors: the definition check calls this when a version is created."""
    try:
        policies.fields_from_spec(spec, prefix=prefix)
    except ValidationFailed as exc:
        return list(exc.details or [])
    return []


def approval_outcome(execution: Execution, step_path: str) -> Any:
    """The decided Approval for this step, or None if there is none yet (or it is pending)."""
    return (
        Approval.objects.filter(execution=execution, step_path=step_path, status__in=DECIDED)
        .order_by("-created_at")
        .first()
    )


def pending_approval(execution: Execution, step_path: str) -> Any:
    return Approval.objects.filter(
        execution=execution, step_path=step_path, status="pending"
    ).first()


def create_approval(
    execution: Execution,
    *,
    step_path: str,
    spec: dict[str, Any],
    payload: Any,
    source: str = "step",
    reject_ends: bool | None = None,
) -> Any:
    """Create (or return the existing) pending Approval for a step from a definition's spec.

    The approvals app owns what a spec may say (title, description, allowed_actions, options,
    response/payload schemas, assignees as users and roles, quorum, timeout like "2s" with
    on_timeout, escalation, on_reject…): see `approvals.policies.fields_from_spec`.
    """
    return approval_services.approval_create(
        execution=execution,
        step_path=step_path,
        spec=spec,
        payload=payload,
        source=source,
        reject_ends=reject_ends if reject_ends is not None else ("on_reject" not in spec),
    )


def expire_due() -> int:
    """Checkpoints run out on time: expiries resolve per on_timeout, escalations notify again
    (run by every worker's maintenance tick; each approval is resolved once)."""
    return int(approval_services.approvals_expire_due() or 0) + int(
        approval_services.approvals_escalate_due() or 0
    )


def approved_value(approval: Any) -> Any:
    """What an approved step yields: the response when one was asked for, otherwise the
    (possibly edited) payload."""
    if approval.response is not None:
        if approval.result_payload is not None and approval.result_payload != approval.payload:
            return {"payload": approval.result_payload, "response": approval.response}
        return approval.response
    if approval.chosen_options is not None:
        return {
            "payload": approval.result_payload or approval.payload,
            "options": approval.chosen_options,
        }
    return approval.result_payload if approval.result_payload is not None else approval.payload


def is_approved(approval: Any) -> bool:
    """Only "approved" continues: the approvals app records an expiry resolved as "approve"
    as approved; an "expired" row means the timeout rejected it."""
    return approval.status == "approved"


def refusal(approval: Any) -> dict[str, Any]:
    reason = ""
    decision = approval.decisions.order_by("-created_at", "-id").first() if approval.pk else None
    if decision is not None:
        reason = decision.reason
    return {
        "rejected": True,
        "status": approval.status,
        "reason": reason,
        "decided_by": approval.decided_by_label,
    }


class Checkpoints:
    """Parking on an approval or on input, and reading the answer on the next run. Uses:
    execution, state, recorded, record(), parked_state(), park_transition()."""

    def approval(
        self,
        path: str,
        spec: dict[str, Any],
        payload: Any,
        *,
        source: str = "step",
        reject_ends: bool | None = None,
    ) -> tuple[bool, Any]:
        """(approved, value): the recorded decision, the decided Approval, or park on a new one."""
        done = self.recorded.get(path)
        if done is not None:
            return bool(done.output.get("approved")), done.output.get("value")
        decided = approval_outcome(self.execution, path)
        if decided is not None:
            approved = is_approved(decided)
            value = approved_value(decided) if approved else refusal(decided)
            self.record(
                path,
                "approval",
                input=payload,
                output={"approved": approved, "value": value, "approval_id": str(decided.pk)},
                message=f"{decided.status} by {decided.decided_by_label or 'policy'}",
            )
            return approved, jsonable(value)
        payload = jsonable(payload)

        def park() -> None:
            approval = create_approval(
                self.execution,
                step_path=path,
                spec=spec,
                payload=payload,
                source=source,
                reject_ends=reject_ends,
            )
            state = self.parked_state()
            state["approval"] = {"path": path, "approval_id": str(approval.pk)}
            # Its next claim is a resume, not a run whose worker died (runner's warning).
            state["parked"] = {"kind": "approval", "path": path}
            self.park_transition(
                Status.AWAITING_APPROVAL,
                path=path,
                kind="approval",
                input=payload,
                message=approval.title,
                state=state,
            )

        raise Park("approval", park)

    def wait_for_input(self, path: str, info: Any, schema: Any) -> Any:
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        waiting = self.state.get("waiting") or {}
        if waiting.get("path") == path and "resume_input" in self.state:
            state = {k: v for k, v in self.state.items() if k not in {"waiting", "resume_input"}}
            value = self.state["resume_input"]
            output = self.record(
                path,
                "wait_for_input",
                input=info,
                output=value,
                extra_fields={"state": state},
            )
            self.state = state
            return output
        info = jsonable(info)

        def park() -> None:
            state = self.parked_state()
            state.pop("resume_input", None)
            state["waiting"] = {"path": path, "schema": schema, "info": info}
            state["parked"] = {"kind": "input", "path": path}
            self.park_transition(
                Status.AWAITING_INPUT,
                path=path,
                kind="wait_for_input",
                input=info,
                message="waiting for input",
                state=state,
            )

        raise Park("input", park)
