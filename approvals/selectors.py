"""Reads of approvals and webhooks, scoped by workspace here."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, Prefetch, Q, QuerySet
from django.utils import timezone

from approvals.models import Approval, ApprovalComment, ApprovalStatus, Webhook
from approvals.policies import Decider
from executions.errors import NotFound, ValidationFailed, field_error
from executions.lifecycle import Status
from executions.models import Execution, Role, Workspace, role_at_least
from executions.selectors import parse_dt, parse_uuid

TRUE = {"1", "true", "yes", "on"}


@dataclass
class ApprovalFilters:
    status: list[str] | None = None
    assigned_to_me: bool = False
    agent_id: str | None = None
    execution_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    overdue: bool | None = None

    @classmethod
    def from_params(cls, params: Any) -> ApprovalFilters:
        errors: list[dict[str, str]] = []
        statuses = [s.strip() for s in str(params.get("status") or "").split(",") if s.strip()]
        for s in statuses:
            if s not in ApprovalStatus.values:
                errors.append(
                    field_error(
                        "status", f"unknown status {s!r}; one of {', '.join(ApprovalStatus.values)}"
                    )
                )
        assigned = (params.get("assigned") or params.get("assignee") or "").strip().lower()
        if assigned not in {"", "me"}:
            errors.append(field_error("assigned", "only assigned=me is supported"))
        ids = {}
        for key in ("agent_id", "execution_id"):
            value = params.get(key) or None
            if value:
                try:
                    uuid.UUID(str(value))
                except ValueError:
                    errors.append(field_error(key, "must be a UUID"))
            ids[key] = value
        overdue_raw = params.get("overdue")
        overdue = None if overdue_raw in (None, "") else str(overdue_raw).lower() in TRUE
        created_after = parse_dt(params.get("created_after"), "created_after", errors)
        created_before = parse_dt(params.get("created_before"), "created_before", errors)
        if errors:
            raise ValidationFailed("invalid filter", details=errors)
        return cls(
            status=statuses or None,
            assigned_to_me=assigned == "me",
            created_after=created_after,
            created_before=created_before,
            overdue=overdue,
            **ids,
        )


def _with_relations(approvals: QuerySet) -> QuerySet:
    return approvals.select_related("execution__agent").prefetch_related(
        "assignee_users", "decisions__actor_user"
    )


def approval_list(
    *,
    workspace: Workspace,
    filters: ApprovalFilters | None = None,
    decider: Decider | None = None,
    status: str | None = None,
) -> QuerySet:
    """Approvals of the workspace, soonest due first (no deadline last), then oldest first."""
    filters = filters or ApprovalFilters.from_params({"status": status} if status else {})
    approvals = Approval.objects.for_workspace(workspace)
    if filters.status:
        approvals = approvals.filter(status__in=filters.status)
    if filters.agent_id:
        approvals = approvals.filter(execution__agent_id=filters.agent_id)
    if filters.execution_id:
        approvals = approvals.filter(execution_id=filters.execution_id)
    if filters.created_after:
        approvals = approvals.filter(created_at__gte=filters.created_after)
    if filters.created_before:
        approvals = approvals.filter(created_at__lt=filters.created_before)
    if filters.overdue is not None:
        overdue = Q(status=ApprovalStatus.PENDING, expires_at__lte=timezone.now())
        approvals = approvals.filter(overdue) if filters.overdue else approvals.exclude(overdue)
    if filters.assigned_to_me:
        approvals = approvals.filter(assigned_to(decider)).distinct()
    return _with_relations(approvals).order_by(
        F("expires_at").asc(nulls_last=True), "created_at", "id"
    )


@dataclass
class ApprovalPage:
    """One page of approvals read by keyset: `before` / `after` are the cursors of the pages
    around it (None at either end)."""

    items: list[Approval]
    before: str | None
    after: str | None


def approval_keyset_page(
    approvals: QuerySet, *, after: str | None = None, before: str | None = None, limit: int = 50
) -> ApprovalPage:
    """A page of `approvals` in the list's order (soonest due, no deadline last, then oldest),
    after or before a cursor. No OFFSET: a page deep in a long inbox costs what the first does
    (an index range on (workspace, status, expires_at, created_at, id))."""
    order = (F("expires_at").asc(nulls_last=True), "created_at", "id")
    backwards = bool(before) and not after
    if after:
        approvals = approvals.filter(_beyond(_decode(after), later=True))
    elif before:
        approvals = approvals.filter(_beyond(_decode(before), later=False))
    if backwards:
        order = (F("expires_at").desc(nulls_first=True), "-created_at", "-id")
    return _keyset_page(approvals, order, limit=limit, backwards=backwards, after=after)


def approval_decided_page(
    approvals: QuerySet, *, after: str | None = None, before: str | None = None, limit: int = 50
) -> ApprovalPage:
    """A page of decided approvals, the latest change first: keyset on (updated_at, id), an
    index range on (workspace, updated_at, id)."""
    backwards = bool(before) and not after
    cursor = after or before
    if cursor:
        _, moved, pk = _decode(cursor)
        op = "lt" if not backwards else "gt"
        approvals = approvals.filter(
            Q(**{f"updated_at__{op}": moved}) | Q(updated_at=moved, **{f"id__{op}": pk})
        )
    order = ("updated_at", "id") if backwards else ("-updated_at", "-id")
    return _keyset_page(approvals, order, limit=limit, backwards=backwards, after=after, moved=True)


def _keyset_page(
    approvals: QuerySet,
    order: tuple,
    *,
    limit: int,
    backwards: bool,
    after: str | None,
    moved: bool = False,
) -> ApprovalPage:
    """One more row than the page tells whether there is a next one; a backwards page is read
    in reverse order and turned round, so both directions show the same order."""
    rows = list(approvals.order_by(*order)[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    if not rows:
        return ApprovalPage(items=[], before=None, after=None)
    first, last = _encode(rows[0], moved=moved), _encode(rows[-1], moved=moved)
    if backwards:
        return ApprovalPage(items=rows, before=first if more else None, after=last)
    return ApprovalPage(items=rows, before=first if after else None, after=last if more else None)


def _encode(approval: Approval, *, moved: bool = False) -> str:
    """(deadline, created, id), or (None, last change, id) for the decided list."""
    if moved:
        return _pack(None, approval.updated_at, approval.pk)
    return _pack(approval.expires_at, approval.created_at, approval.pk)


def _pack(due: datetime | None, at: datetime, pk: Any) -> str:
    raw = json.dumps([due.isoformat() if due else None, at.isoformat(), str(pk)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime | None, datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        due, created, pk = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        return (
            datetime.fromisoformat(due) if due else None,
            datetime.fromisoformat(created),
            uuid.UUID(pk),
        )
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValidationFailed(
            "cursor is not valid", details=[field_error("cursor", "not a page of this list")]
        ) from None


def _beyond(anchor: tuple[datetime | None, datetime, uuid.UUID], *, later: bool) -> Q:
    """Rows after (later) or before the anchor in the list's order, NULL deadlines last."""
    due, created, pk = anchor
    op = "gt" if later else "lt"
    same_due = Q(**{f"created_at__{op}": created}) | Q(created_at=created, **{f"id__{op}": pk})
    if due is None:
        no_due = Q(expires_at__isnull=True) & same_due
        return no_due if later else no_due | Q(expires_at__isnull=False)
    dated = Q(**{f"expires_at__{op}": due}) | (Q(expires_at=due) & same_due)
    return dated | Q(expires_at__isnull=True) if later else dated


def assigned_to(decider: Decider | None) -> Q:
    """Approvals that name this person: as a user, or through a role they hold (or exceed)."""
    if decider is None:
        return Q(pk__in=[])
    condition = Q(pk__in=[])
    if decider.user is not None:
        condition |= Q(assignee_users=decider.user)
    for role in Role.values:
        if role_at_least(decider.role, role):
            condition |= Q(assignee_roles__icontains=f'"{role}"')
    return condition


def approval_get(*, workspace: Workspace, approval_id: Any, votes: bool = True) -> Approval:
    """`votes=False` for a decision: it reads the votes under its lock and replies with them."""
    pk = parse_uuid(approval_id, field="approval_id", what="approval")
    approvals = Approval.objects.for_workspace(workspace).filter(pk=pk)
    if votes:
        approvals = _with_relations(approvals)
    else:
        approvals = approvals.select_related("execution__agent").prefetch_related("assignee_users")
    approval = approvals.first()
    if approval is None:
        raise NotFound(f"approval {approval_id} not found")
    return approval


def approvals_by_ids(*, workspace: Workspace, ids: list[Any]) -> tuple[list[Approval], list[str]]:
    """The approvals among `ids` in this workspace, and the ids that are not (malformed, absent
    or another workspace's: all reported the same way)."""
    wanted: dict[uuid.UUID, str] = {}
    missing: list[str] = []
    for raw in ids:
        try:
            wanted[uuid.UUID(str(raw))] = str(raw)
        except ValueError:
            missing.append(str(raw))
    found = {
        a.pk: a
        for a in _with_relations(Approval.objects.for_workspace(workspace).filter(pk__in=wanted))
    }
    missing += [ref for pk, ref in wanted.items() if pk not in found]
    return [found[pk] for pk in wanted if pk in found], missing


def approval_status(*, approval_id: Any) -> str | None:
    """One indexed read for long polls."""
    return Approval.objects.filter(pk=approval_id).values_list("status", flat=True).first()


def comment_list(*, approval: Approval) -> QuerySet:
    return ApprovalComment.objects.filter(approval=approval).order_by("created_at", "id")


def approval_inbox(*, workspace: Workspace, decider: Decider | None = None, mine: bool = False):
    """Executions parked on a pending approval, longest-waiting first (PromptRails'
    approval inbox), each with its pending approvals prefetched as `pending_approvals`."""
    pending = Approval.objects.filter(status=ApprovalStatus.PENDING).order_by("created_at")
    if mine:
        pending = pending.filter(assigned_to(decider))
    executions = Execution.objects.for_workspace(workspace).filter(status=Status.AWAITING_APPROVAL)
    if mine:
        executions = executions.filter(pk__in=pending.values("execution_id"))
    return (
        executions.select_related("agent", "agent_version")
        .prefetch_related(
            Prefetch(
                "approvals",
                # Decisions and assignees too: the inbox item shows both (no query per row).
                queryset=pending.prefetch_related("decisions", "assignee_users"),
                to_attr="pending_approvals",
            )
        )
        .order_by("updated_at", "id")
    )


# --- webhooks --------------------------------------------------------------------------------


def webhook_list(*, workspace: Workspace) -> QuerySet:
    return Webhook.objects.filter(workspace=workspace).order_by("created_at")


def webhook_get(*, workspace: Workspace, webhook_id: Any) -> Webhook:
    pk = parse_uuid(webhook_id, field="webhook_id", what="webhook")
    webhook = Webhook.objects.filter(workspace=workspace, pk=pk).first()
    if webhook is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return webhook


def delivery_list(*, webhook: Webhook, status: str | None = None) -> QuerySet:
    deliveries = webhook.deliveries.prefetch_related("log").order_by("-created_at")
    if status:
        deliveries = deliveries.filter(status=status)
    return deliveries
