"""Who may decide an approval, and how a checkpoint's options are read and checked.

The rules (DESIGN.md §9, docs/approvals.md):
- viewers never decide; reviewers and admins may;
- when an approval names assignees (users and/or roles), only they may decide; a role covers
  members of that role or a higher one (an `admin` covers admins, a `reviewer` covers
  reviewers and admins);
- with `forbid_self_approval`, the user or API key that started the execution may not decide;
- an API key acts as the user who created it (personal keys); a key without a user is only an
  assignee through its role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model

from executions.errors import Forbidden, ValidationFailed, field_error
from executions.lifecycle import Actor
from executions.models import ActorType, Membership, Role, role_at_least
from executions.schemas import check_schema
from executions.selectors import membership_get

ACTIONS = ("approve", "reject", "edit", "respond")
DEFAULT_ACTIONS = ["approve", "reject"]
ON_TIMEOUT = ("approve", "reject", "fail")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Decider:
    """The person (or key) deciding: who they are for assignee, quorum and self-approval."""

    actor: Actor
    user: Any
    role: str

    @property
    def identity(self) -> str:
        """One person counts once toward a quorum, whichever of their keys they use."""
        if self.user is not None:
            return f"user:{self.user.pk}"
        if self.actor.api_key is not None:
            return f"key:{self.actor.api_key.pk}"
        return "system"


def decider_for(actor: Actor, *, workspace: Any, role: str | None = None) -> Decider:
    """Resolve the user behind an actor (a session user, or the creator of an API key) and the
    role they hold in the workspace."""
    user = actor.user
    if user is None and actor.api_key is not None:
        user = actor.api_key.created_by
    if role is None:
        if actor.api_key is not None:
            role = actor.api_key.role
        elif user is not None:
            membership = membership_get(user=user, workspace=workspace)
            role = membership.role if membership else ""
        else:
            role = Role.ADMIN if actor.type == ActorType.SYSTEM else ""
    return Decider(actor=actor, user=user, role=role or "")


def parse_duration(value: Any, *, field: str) -> float | None:
    """Seconds from 30, 2.5, "2s", "500ms", "5m", "1h", "1d" (None when absent)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationFailed(
            f"{field} must be a duration", details=[field_error(field, "must be a duration")]
        )
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValidationFailed(
                f"{field}: {value!r} is not a duration (use 30, '30s', '5m', '2h' or '1d')",
                details=[field_error(field, "not a duration: use 30, '30s', '5m', '2h' or '1d'")],
            )
        unit = (match.group(2) or "").lower() or None
        seconds = float(match.group(1)) * _UNITS[unit]
    if seconds <= 0:
        raise ValidationFailed(
            f"{field} must be positive", details=[field_error(field, "must be positive")]
        )
    return seconds


def _user_names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def fields_from_spec(spec: dict[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """Read a checkpoint spec (a workflow `approval` step, a tool's approval options, or the
    body of `POST /executions/{id}/approvals`) into Approval fields, naming every bad field.

    Returns the model fields plus `assignee_usernames`, `expires_in` and `escalate_after`
    (seconds) for the caller to apply.
    """
    errors: list[dict[str, str]] = []
    p = f"{prefix}." if prefix else ""

    def bad(key: str, message: str) -> None:
        errors.append(field_error(f"{p}{key}", message))

    if not isinstance(spec, dict):
        raise ValidationFailed("an approval must be an object", details=[bad("", "object")])
    title = spec.get("title")
    if not isinstance(title, str) or not title.strip():
        bad("title", "is required")
    elif len(title) > 300:
        bad("title", "must be at most 300 characters")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        bad("description", "must be a string (Markdown)")

    actions = spec.get("allowed_actions", spec.get("actions")) or list(DEFAULT_ACTIONS)
    if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
        bad("allowed_actions", f"must be a list of {', '.join(ACTIONS)}")
        actions = list(DEFAULT_ACTIONS)

    options = spec.get("options")
    if options is not None:
        options = _options(options, bad)
    multiple = bool(spec.get("multiple", False))

    for key in ("payload_schema", "response_schema"):
        try:
            check_schema(spec.get(key), field=f"{p}{key}")
        except ValidationFailed as exc:
            errors.extend(exc.details or [])

    assignees = spec.get("assignees") or {}
    users: list[str] = []
    roles: list[str] = []
    if isinstance(assignees, dict):
        users = _user_names(assignees.get("users"))
        roles = _user_names(assignees.get("roles"))
    elif isinstance(assignees, list | str):
        users = _user_names(assignees)
    else:
        bad("assignees", "must be a list of usernames or {users: [...], roles: [...]}")
    users += _user_names(spec.get("assignee_users"))
    roles += _user_names(spec.get("assignee_roles"))
    for role in roles:
        if role not in Role.values:
            bad("assignees.roles", f"unknown role {role!r}; one of {', '.join(Role.values)}")

    required = _positive_int(spec.get("required_approvals", 1), "required_approvals", bad)
    rejections = _positive_int(spec.get("required_rejections", 1), "required_rejections", bad)

    expires_in = escalate_after = None
    try:
        expires_in = parse_duration(
            spec.get("timeout", spec.get("timeout_seconds", spec.get("expires_in"))),
            field=f"{p}timeout",
        )
    except ValidationFailed as exc:
        errors.extend(exc.details or [])
    on_timeout = spec.get("on_timeout") or "reject"
    if on_timeout not in ON_TIMEOUT:
        bad("on_timeout", f"must be one of {', '.join(ON_TIMEOUT)}")
    escalation = spec.get("escalation") if isinstance(spec.get("escalation"), dict) else {}
    try:
        escalate_after = parse_duration(
            escalation.get("after", spec.get("escalate_after", spec.get("escalate_after_seconds"))),
            field=f"{p}escalate_after",
        )
    except ValidationFailed as exc:
        errors.extend(exc.details or [])
    escalate_users = _user_names(escalation.get("users", spec.get("escalate_to_users")))
    escalate_roles = _user_names(escalation.get("roles", spec.get("escalate_to_roles")))
    for role in escalate_roles:
        if role not in Role.values:
            bad("escalate_to_roles", f"unknown role {role!r}")
    if escalate_after and not (escalate_users or escalate_roles):
        bad("escalate_to_users", "escalate_after needs users or roles to escalate to")

    known = set(
        get_user_model()
        .objects.filter(username__in=users + escalate_users)
        .values_list("username", flat=True)
    )
    for name in users:
        if name not in known:
            bad("assignees.users", f"no user named {name!r}")
    for name in escalate_users:
        if name not in known:
            bad("escalate_to_users", f"no user named {name!r}")

    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(f"invalid approval: {summary}", details=errors)

    reject_ends = spec.get("reject_ends")
    if reject_ends is None:
        reject_ends = "on_reject" not in spec
    return {
        "title": title.strip(),
        "description": description,
        "allowed_actions": list(actions),
        "options": options,
        "multiple": multiple,
        "payload_schema": spec.get("payload_schema"),
        "response_schema": spec.get("response_schema"),
        "assignee_roles": sorted(set(roles)),
        "forbid_self_approval": bool(spec.get("forbid_self_approval", False)),
        "required_approvals": required,
        "required_rejections": rejections,
        "reject_ends": bool(reject_ends),
        "on_timeout": on_timeout,
        "escalate_to_users": escalate_users,
        "escalate_to_roles": escalate_roles,
        "assignee_usernames": sorted(set(users)),
        "expires_in": expires_in,
        "escalate_after": escalate_after,
    }


def expiry_from(now: Any, seconds: float | None) -> Any:
    return now + timedelta(seconds=seconds) if seconds else None


def _positive_int(value: Any, key: str, bad) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        bad(key, "must be a whole number of at least 1")
        return 1
    return value


def _options(options: Any, bad) -> list[dict[str, Any]] | None:
    """Options as [{"value", "label"}]; plain strings are accepted as both."""
    if not isinstance(options, list) or not options:
        bad("options", "must be a non-empty list")
        return None
    normalised = []
    for i, option in enumerate(options):
        if isinstance(option, str | int | float) and not isinstance(option, bool):
            normalised.append({"value": option, "label": str(option)})
        elif isinstance(option, dict) and "value" in option:
            normalised.append({"label": str(option["value"]), **option})
        else:
            bad(f"options[{i}]", "must be a string or {value, label}")
    values = [o["value"] for o in normalised]
    if len(values) != len({str(v) for v in values}):
        bad("options", "values must be unique")
    return normalised


def option_values(options: Any) -> list[Any]:
    """The values of stored options, whether written as strings or as {value, label}."""
    values = []
    for option in options or []:
        values.append(option.get("value") if isinstance(option, dict) else option)
    return values


# --- who may decide --------------------------------------------------------------------------


def assigned(approval: Any) -> bool:
    return bool(approval.assignee_roles) or bool(list(approval.assignee_users.all()))


def is_assignee(approval: Any, decider: Decider) -> bool:
    """Whether the decider is among the assignees (True for everyone when none are named)."""
    roles = approval.assignee_roles or []
    # .all() so a list page's prefetched assignees are used (no query per row).
    users = {user.pk for user in approval.assignee_users.all()}
    if not roles and not users:
        return True
    if decider.user is not None and decider.user.pk in users:
        return True
    return any(role_at_least(decider.role, role) for role in roles if role in Role.values)


def is_starter(approval: Any, decider: Decider) -> bool:
    execution = approval.execution
    if execution is None:
        return False
    if decider.user is not None and execution.created_by_user_id == decider.user.pk:
        return True
    if decider.actor.api_key is not None and execution.created_by_key_id == decider.actor.key_id:
        return True
    # A key's creator started it with another of their keys: still the same person.
    if decider.user is not None and execution.created_by_key_id is not None:
        key = execution.created_by_key
        return key is not None and key.created_by_id == decider.user.pk
    return False


def check_can_decide(approval: Any, decider: Decider) -> None:
    """Raise Forbidden (403) naming the rule when the decider may not decide this approval."""
    if decider.actor.type == ActorType.SYSTEM:
        return
    if not role_at_least(decider.role, Role.REVIEWER):
        raise Forbidden(
            f"role {decider.role or 'none'} cannot decide approvals; it needs reviewer or admin",
            code="forbidden_role",
        )
    if not is_assignee(approval, decider):
        names = [u.get_username() for u in approval.assignee_users.all()]
        raise Forbidden(
            f"{decider.actor.label} is not an assignee of this approval",
            code="not_assignee",
            details={"assignees": {"users": names, "roles": approval.assignee_roles}},
        )
    if approval.forbid_self_approval and is_starter(approval, decider):
        raise Forbidden(
            "the policy forbids self-approval: whoever started the execution cannot decide it",
            code="self_approval_forbidden",
        )


def can_decide(approval: Any, decider: Decider) -> bool:
    try:
        check_can_decide(approval, decider)
    except Forbidden:
        return False
    return True


def notify_users(approval: Any, *, roles: list[str] | None = None, users: Any = None) -> list:
    """The users to tell about an approval: named users plus members of the assigned roles."""
    User = get_user_model()
    names = users if users is not None else None
    roles = approval.assignee_roles if roles is None else roles
    picked = {}
    explicit = approval.assignee_users.all() if names is None else User.objects.filter(pk__in=names)
    for user in explicit:
        picked[user.pk] = user
    if roles:
        memberships = Membership.objects.filter(workspace_id=approval.workspace_id).select_related(
            "user"
        )
        for membership in memberships:
            if any(role_at_least(membership.role, r) for r in roles if r in Role.values):
                picked[membership.user.pk] = membership.user
    return list(picked.values())
