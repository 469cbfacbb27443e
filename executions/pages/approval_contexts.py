"""Contexts of the approval panels (inbox item, decision panel, approval page), shared by the
approval pages, the execution detail page and the live consumer (via `contexts`)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef, Prefetch, Q

from approvals import policies
from approvals import selectors as approval_selectors
from approvals import services as approval_services
from approvals.models import Approval, ApprovalDecision, ApprovalStatus
from executions import selectors
from executions.errors import Forbidden
from executions.forms import SchemaForm
from executions.lifecycle import Actor
from executions.models import Execution, Membership, Role, role_at_least

User = get_user_model()

INBOX_LIMIT = 50  # cards rendered per inbox page (issue 12)
# What a card and the decide rules read of the approval's run: not its input and output.
CARD_RUN = ("id", "workspace_id", "agent_id", "status", "created_by_user_id", "created_by_key_id")
# What a card (steward_inbox.inbox_card), the decide rules (policies.check_can_decide) and the
# inbox's keyset cursors read of an approval: not its schemas, options, escalation targets or
# results (JSON documents decoded for every card otherwise).
CARD_FIELDS = (
    "id", "workspace_id", "execution_id", "title", "payload", "status", "assignee_roles",
    "forbid_self_approval", "required_approvals", "expires_at", "decided_by_label",
    "created_at", "updated_at",
)  # fmt: skip


def _decider(membership: Membership, user: Any) -> policies.Decider:
    return policies.Decider(actor=Actor.for_user(user), user=user, role=membership.role)


def can_decide(approval: Approval, membership: Membership, user: Any) -> bool:
    if approval.status != ApprovalStatus.PENDING:
        return False
    return policies.can_decide(approval, _decider(membership, user))


def why_not(approval: Approval, membership: Membership, user: Any) -> str:
    try:
        policies.check_can_decide(approval, _decider(membership, user))
    except Forbidden as exc:
        return exc.message
    return ""


def in_tab(approval: Approval, tab: str, membership: Membership, user: Any) -> bool:
    if tab == "decided":
        return approval.status != ApprovalStatus.PENDING
    if approval.status != ApprovalStatus.PENDING:
        return False
    if tab == "mine":
        return any(u.pk == user.pk for u in approval.assignee_users.all())
    if tab == "roles":
        return any(
            role_at_least(membership.role, r) for r in approval.assignee_roles or [] if r in Role
        )
    return True


def progress(approval: Approval, votes: list | None = None) -> dict[str, Any]:
    """Votes so far against the quorum; `votes`: the approval's decisions when the caller has
    them already (the panel reads them anyway: one query fewer per decision POST)."""
    votes = list(approval.decisions.all()) if votes is None else votes
    approvers = {_who(d) for d in votes if d.decision in approval_services.APPROVING}
    rejecters = {_who(d) for d in votes if d.decision == "reject"}
    required = approval.required_approvals or 1
    return {
        "approvals": len(approvers),
        "rejections": len(rejecters),
        "required": required,
        "percent": min(100, round(100 * len(approvers) / required)),
    }


def _who(decision: Any) -> str:
    return str(decision.actor_user_id or decision.actor_key_id or decision.actor_label)


def proposal(payload: Any) -> dict[str, Any]:
    """What is proposed, readably: a tool call's name and arguments, or the payload's fields."""
    if isinstance(payload, dict):
        tool = payload.get("tool") or payload.get("name") or payload.get("function")
        args = payload.get("arguments", payload.get("args", payload.get("input")))
        if isinstance(tool, str) and isinstance(args, dict):
            return {"tool": tool, "rows": _rows(args)}
        return {"tool": None, "rows": _rows(payload)}
    return {"tool": None, "rows": [], "scalar": payload}


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append({"key": key, "value": text})
    return rows


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix or "(root)": {}}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        flat = {}
        for i, inner in enumerate(value):
            flat.update(_flatten(inner, f"{prefix}[{i}]"))
        return flat
    return {prefix or "(root)": value}


def payload_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """Field-by-field changes between the proposed and the edited payload."""
    old, new = _flatten(before), _flatten(after)
    rows = []
    for key in list(old) + [k for k in new if k not in old]:
        if old.get(key, _MISSING) != new.get(key, _MISSING):
            rows.append(
                {
                    "path": key,
                    "before": _show(old.get(key, _MISSING)),
                    "after": _show(new.get(key, _MISSING)),
                }
            )
    return rows


_MISSING = object()


def _show(value: Any) -> str | None:
    if value is _MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def panel_context(
    approval: Approval, membership: Membership, user: Any, **extra: Any
) -> dict[str, Any]:
    """What the decision panel shows for this person (the same partial everywhere)."""
    # .all(): the votes a page read (or a decision just wrote) are used as they are; the panel
    # shows each voter's label, not their user row.
    decisions = list(approval.decisions.all())
    edits = [d for d in decisions if d.decision == "edit" and d.payload is not None]
    edited = edits[-1].payload if edits else approval.result_payload
    last = decisions[-1] if decisions else None
    allowed = approval.allowed_actions or ["approve", "reject"]
    respond_form = extra.pop("respond_form", None)
    if respond_form is None and "respond" in allowed and approval.response_schema:
        respond_form = SchemaForm(schema=approval.response_schema, prefix="respond")
    if respond_form is not None:
        respond_form.error_prefix = "response"
    edit_form = extra.pop("edit_form", None)
    if edit_form is None and "edit" in allowed and _has_fields(approval.payload_schema):
        # The payload's schema as form fields; the JSON editor stays as the advanced option.
        edit_form = SchemaForm(
            schema=approval.payload_schema, prefix="edit", value=approval.payload
        )
    return {
        "approval": approval,
        "decisions": decisions,
        "last_decision": last,
        "progress": progress(approval, decisions),
        "proposal": proposal(approval.payload),
        "diff": payload_diff(approval.payload, edited)
        if edited is not None and edited != approval.payload
        else [],
        "allowed": allowed,
        "can_decide": can_decide(approval, membership, user),
        "why_not": why_not(approval, membership, user)
        if approval.status == ApprovalStatus.PENDING
        else "",
        "payload_text": extra.pop("payload_text", None)
        or json.dumps(approval.payload, indent=2, ensure_ascii=False),
        "respond_form": respond_form,
        "edit_form": edit_form,
        "edit_mode": extra.pop("edit_mode", "fields" if edit_form is not None else "json"),
        "assignee_names": [u.get_username() for u in approval.assignee_users.all()],
        "decided_by": approval.decided_by_label or (last.actor_label if last else ""),
        "decided_by_other": bool(
            approval.status != ApprovalStatus.PENDING
            and last is not None
            and last.actor_user_id != getattr(user, "pk", None)
        ),
        "membership": membership,
        **extra,
    }


def _has_fields(schema: Any) -> bool:
    return isinstance(schema, dict) and bool(schema.get("properties"))


def item_context(approval: Approval, membership: Membership, user: Any) -> dict[str, Any]:
    # The votes once, from the page's (or the fan-out's) prefetch: the quorum bar and, on a
    # decided card, the latest vote's reason (not a query per decided card).
    votes = getattr(approval, "card_votes", None)
    if votes is None:
        votes = list(approval.decisions.all())
    last = None
    if approval.status != ApprovalStatus.PENDING and votes:
        last = max(votes, key=lambda d: (d.created_at, d.id))
    return {
        "a": approval,
        "item_progress": progress(approval, votes),
        "item_can_decide": can_decide(approval, membership, user),
        "item_proposal": proposal(approval.payload),
        "item_last": last,
    }


def tab_filter(tab: str, membership: Membership, user: Any) -> Q:
    """`in_tab` for pending approvals, in SQL: the inbox pages and counts read it."""
    if tab == "mine":
        return Q(assignee_users=user)
    if tab == "roles":
        held = Q(pk__in=[])
        for role in Role.values:
            if role_at_least(membership.role, role):
                held |= Q(assignee_roles__icontains=f'"{role}"')
        return held
    return Q()


def inbox_counts(workspace: Any, membership: Membership, user: Any) -> dict[str, tuple[int, str]]:
    """The pending count of each tab, and how it reads ("1,234"): one pass over the
    workspace's pending approvals (a range of the (workspace, status, …) index), each tab a
    filtered count."""
    assigned = Approval.assignee_users.through.objects.filter(
        approval_id=OuterRef("pk"), user_id=user.pk
    )
    totals = (
        Approval.objects.for_workspace(workspace)
        .filter(status=ApprovalStatus.PENDING)
        .aggregate(
            mine=Count("pk", filter=Q(Exists(assigned))),
            roles=Count("pk", filter=tab_filter("roles", membership, user)),
            all=Count("pk"),
        )
    )
    return {tab: (totals[tab], f"{totals[tab]:,}") for tab in ("mine", "roles", "all")}


def inbox_page(
    workspace: Any,
    membership: Membership,
    user: Any,
    tab: str,
    *,
    after: str | None = None,
    before: str | None = None,
) -> approval_selectors.ApprovalPage:
    """One page of an inbox tab: pending approvals soonest due first, or (decided) the latest
    decided first; keyset pages of INBOX_LIMIT, so the thousandth card costs what the first
    does."""
    # Executions and agents fetched for the page's rows only (a prefetch, not a join): with a
    # tab filter the planner cannot estimate, a join ran for every pending row before the sort.
    approvals = (
        approval_selectors.approval_list(workspace=workspace)
        .select_related(None)
        .prefetch_related(None)
        .only(*CARD_FIELDS)
        .prefetch_related(
            # The run and its agent's name in one query (a join on two primary keys).
            Prefetch(
                "execution",
                queryset=Execution.objects.select_related("agent").only(
                    *CARD_RUN, "agent__id", "agent__name"
                ),
            ),
            Prefetch("assignee_users", queryset=User.objects.only("id", "username")),
        )
    )
    if tab == "decided":
        shown = approval_selectors.approval_decided_page(
            approvals.exclude(status=ApprovalStatus.PENDING),
            after=after,
            before=before,
            limit=INBOX_LIMIT,
        )
    else:
        shown = approval_selectors.approval_keyset_page(
            approvals.filter(status=ApprovalStatus.PENDING).filter(
                tab_filter(tab, membership, user)
            ),
            after=after,
            before=before,
            limit=INBOX_LIMIT,
        )
    _attach_votes(shown.items)
    return shown


def _attach_votes(approvals: list[Approval]) -> None:
    """`card_votes` on each approval, read only where a card shows them: a quorum bar (a
    pending approval needing more than one approval) or a decided card's reason. A pending
    approval decided by one vote has none to show: the usual inbox page reads no votes."""
    wanted = [
        a.pk
        for a in approvals
        if a.status != ApprovalStatus.PENDING or (a.required_approvals or 1) > 1
    ]
    votes: dict[Any, list] = {pk: [] for pk in wanted}
    if wanted:
        for vote in ApprovalDecision.objects.filter(approval_id__in=wanted):
            votes[vote.approval_id].append(vote)
    for approval in approvals:
        approval.card_votes = votes.get(approval.pk, [])


def approval_detail_context(
    approval: Approval, membership: Membership, user: Any, **extra: Any
) -> dict:
    execution = approval.execution
    recent = []
    if execution is not None:
        recent, _ = selectors.transition_recent(execution=execution, limit=8)
    return {
        **panel_context(approval, membership, user, **extra),
        "execution": execution,
        "recent_steps": recent,
        "comments": list(approval.comments.all()),
    }
