"""Writes. Every function is keyword-only and named <entity>_<action> (DESIGN.md §10)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from executions import lifecycle
from executions.engine import definition
from executions.errors import Conflict, NotFound, ValidationFailed, field_error
from executions.lifecycle import ACTIVE, PARKED, TERMINAL, Actor, Status
from executions.models import (
    Agent,
    AgentType,
    AgentVersion,
    ApiKey,
    Execution,
    Membership,
    Role,
    Workspace,
    new_id,
)
from executions.schemas import check_schema, validate

logger = logging.getLogger("steward.services")


# --- workspaces, members, keys -------------------------------------------------------------


def workspace_get_or_create(*, slug: str, name: str | None = None) -> tuple[Workspace, bool]:
    slug = slugify(slug) or "default"
    return Workspace.objects.get_or_create(slug=slug, defaults={"name": name or slug.title()})


def membership_set(*, workspace: Workspace, user: Any, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationFailed(f"unknown role {role!r}", details=[field_error("role", "unknown")])
    membership, _ = Membership.objects.update_or_create(
        workspace=workspace, user=user, defaults={"role": role}
    )
    return membership


def user_create(*, username: str, password: str, email: str = "", is_staff: bool = False) -> Any:
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise Conflict(f"a user named {username!r} already exists")
    return User.objects.create_user(
        username=username,
        password=password,
        email=email,
        is_staff=is_staff,
        is_superuser=is_staff,
    )


def apikey_create(
    *, workspace: Workspace, name: str, role: str = Role.ADMIN, created_by: Any = None
) -> tuple[ApiKey, str]:
    """Create a key; the full secret is returned once and never stored."""
    if role not in Role.values:
        raise ValidationFailed(
            f"role must be one of {', '.join(Role.values)}",
            details=[field_error("role", "unknown role")],
        )
    if not name.strip():
        raise ValidationFailed("name is required", details=[field_error("name", "required")])
    prefix, raw = ApiKey.generate()
    key = ApiKey.objects.create(
        workspace=workspace,
        name=name.strip(),
        prefix=prefix,
        secret_hash=ApiKey.hash_secret(raw),
        role=role,
        created_by=created_by,
    )
    return key, raw


def apikey_revoke(*, workspace: Workspace | None, prefix: str) -> ApiKey:
    keys = ApiKey.objects.filter(prefix=prefix)
    if workspace is not None:
        keys = keys.filter(workspace=workspace)
    key = keys.first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def apikey_authenticate(*, raw: str) -> ApiKey | None:
    """The active key for a secret, or None. Touches last_used_at at most once a minute."""
    parts = raw.strip().split("_", 2)  # stw_<prefix>_<secret>; the secret may contain "_"
    if len(parts) != 3:
        return None
    prefix = f"{parts[0]}_{parts[1]}"
    key = ApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if key is None or not key.matches(raw.strip()):
        return None
    if key.revoked_at is not None:
        return key  # the caller reports "revoked" rather than "invalid"
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > ApiKey.TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- agents ----------------------------------------------------------------------------------


def agent_create(
    *,
    workspace: Workspace,
    name: str,
    type: str = AgentType.AGENT,
    description: str = "",
    metadata: dict | None = None,
) -> Agent:
    errors = []
    if not (name or "").strip():
        errors.append(field_error("name", "is required"))
    elif len(name) > 200:
        errors.append(field_error("name", "must be at most 200 characters"))
    if type not in AgentType.values:
        errors.append(field_error("type", f"must be one of {', '.join(AgentType.values)}"))
    if errors:
        raise ValidationFailed("invalid agent", details=errors)
    try:
        with transaction.atomic():
            return Agent.objects.create(
                workspace=workspace,
                name=name.strip(),
                type=type,
                description=description or "",
                metadata=metadata or {},
            )
    except IntegrityError:
        raise Conflict(f"an agent named {name!r} already exists in this workspace") from None


def agent_update(*, agent: Agent, data: dict[str, Any]) -> Agent:
    editable = {"name", "description", "metadata"}
    unknown = set(data) - editable - {"type"}
    if unknown:
        raise ValidationFailed(
            "unknown field(s)",
            details=[field_error(f, "cannot be changed") for f in sorted(unknown)],
        )
    if "type" in data and data["type"] != agent.type:
        raise ValidationFailed(
            "an agent's type cannot change", details=[field_error("type", "cannot be changed")]
        )
    if "name" in data and not (data["name"] or "").strip():
        raise ValidationFailed("name is required", details=[field_error("name", "is required")])
    for field in editable & set(data):
        setattr(agent, field, data[field] if field != "name" else data[field].strip())
    try:
        with transaction.atomic():
            agent.save()
    except IntegrityError:
        raise Conflict(f"an agent named {data.get('name')!r} already exists") from None
    return agent


def agent_delete(*, agent: Agent) -> None:
    """Soft-delete, refused while any of its executions is unfinished (their history needs it)."""
    unfinished = agent.executions.filter(status__in=ACTIVE).count()
    if unfinished:
        raise Conflict(
            f"agent {agent.name!r} has {unfinished} unfinished execution(s); cancel them first",
            details={"unfinished_executions": unfinished},
        )
    agent.deleted_at = timezone.now()
    agent.name = f"{agent.name}~deleted~{agent.pk}"[:200]
    agent.save(update_fields=["deleted_at", "name", "updated_at"])


def agent_version_create(
    *,
    agent: Agent,
    version: str | None = None,
    config: dict[str, Any] | None = None,
    input_schema: dict | None = None,
    output_schema: dict | None = None,
    message: str = "",
    set_current: bool = False,
    extras: dict[str, Any] | None = None,
    created_by: Any = None,
) -> AgentVersion:
    """Validate a definition and store it as a new immutable version."""
    config = dict(config or {})
    # PromptRails sends model_config / tools / run_budget / approval_policy beside `config`;
    # they belong to the same definition.
    for key, value in (extras or {}).items():
        if value is not None and key not in config:
            config[key] = value
    check_schema(input_schema, field="input_schema")
    check_schema(output_schema, field="output_schema")
    config = definition.validate(agent.type, config)
    with transaction.atomic():
        # Lock the agent row so two concurrent creates cannot take the same number.
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        last = agent.versions.order_by("-number").first()
        number = (last.number if last else 0) + 1
        label = (version or "").strip() or str(number)
        if agent.versions.filter(version=label).exists():
            raise Conflict(f"version {label!r} already exists for agent {agent.name!r}")
        created = AgentVersion.objects.create(
            agent=agent,
            number=number,
            version=label,
            config=config,
            input_schema=input_schema,
            output_schema=output_schema,
            message=message or "",
            created_by=created_by,
        )
        if set_current or agent.current_version_id is None:
            Agent.objects.filter(pk=agent.pk).update(
                current_version=created, updated_at=timezone.now()
            )
            agent.current_version = created
    return created


def agent_version_promote(*, agent: Agent, version: AgentVersion) -> Agent:
    if version.agent_id != agent.pk:
        raise NotFound("version not found for this agent")
    Agent.objects.filter(pk=agent.pk).update(current_version=version, updated_at=timezone.now())
    agent.current_version = version
    return agent


# --- executions ------------------------------------------------------------------------------


def _request_hash(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def execution_start(
    *,
    workspace: Workspace,
    agent: Agent,
    input: Any = None,
    metadata: dict | None = None,
    session_id: str | None = None,
    version: AgentVersion | None = None,
    idempotency_key: str | None = None,
    actor: Actor = lifecycle.SYSTEM,
    parent: Execution | None = None,
    retry_of: Execution | None = None,
) -> tuple[Execution, bool]:
    """Create an execution (validated against the version's input schema) and enqueue it.

    Returns (execution, created). A repeat with the same idempotency key and body returns the
    first execution; the same key with another body is a Conflict.
    """
    input = {} if input is None else input
    metadata = metadata or {}
    if not isinstance(metadata, dict):
        raise ValidationFailed(
            "metadata must be an object", details=[field_error("metadata", "must be an object")]
        )
    if version is None:
        version = agent.current_version
    if version is None and agent.type not in {AgentType.EXTERNAL, AgentType.PYTHON}:
        raise ValidationFailed(
            f"agent {agent.name!r} has no version to run; create one first",
            details=[field_error("version_id", "the agent has no current version")],
        )
    if version is not None and version.agent_id != agent.pk:
        raise ValidationFailed(
            "version_id does not belong to this agent",
            details=[field_error("version_id", "does not belong to this agent")],
        )
    schema = version.input_schema if version else None
    validate(schema, input, prefix="input", what="input")

    request_hash = _request_hash(
        agent=str(agent.pk),
        version=str(version.pk) if version else None,
        input=input,
        metadata=metadata,
        session_id=session_id or "",
    )
    if idempotency_key:
        existing = Execution.objects.filter(
            workspace=workspace, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return _idempotent_replay(existing, request_hash), False
    try:
        with transaction.atomic():
            execution_id = new_id()
            execution = Execution.objects.create(
                id=execution_id,
                trace_id=execution_id.hex,
                workspace=workspace,
                agent=agent,
                agent_version=version,
                parent=parent,
                retry_of=retry_of,
                session_id=session_id or "",
                input=input,
                metadata=metadata,
                idempotency_key=idempotency_key or None,
                request_hash=request_hash,
                created_by_user_id=actor.user_id,
                created_by_key_id=actor.key_id,
            )
            lifecycle.record(execution, type="init", actor=actor, input=input)
            if agent.type != AgentType.EXTERNAL:
                from executions import tasks

                transaction.on_commit(lambda: tasks.enqueue_run(execution_id))
    except IntegrityError:
        # Lost a race with an identical idempotent request: answer with the winner.
        existing = Execution.objects.filter(
            workspace=workspace, idempotency_key=idempotency_key
        ).first()
        if existing is None:
            raise
        return _idempotent_replay(existing, request_hash), False
    return execution, True


def _idempotent_replay(existing: Execution, request_hash: str) -> Execution:
    if existing.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_conflict",
            details={"execution_id": str(existing.pk)},
        )
    return existing


def execution_cancel(*, execution: Execution, actor: Actor, reason: str = "") -> Execution:
    """Cancel now. A running execution stops at its next checkpoint (between steps or chunks):
    the worker sees the terminal status and closes its provider call."""
    if execution.status in TERMINAL:
        raise lifecycle.IllegalTransition(
            execution.pk,
            execution.status,
            Status.CANCELLED,
            f"execution is already {execution.status}; only unfinished executions can be cancelled",
        )
    with transaction.atomic():
        lifecycle.transition(
            execution,
            Status.CANCELLED,
            type="cancelled",
            actor=actor,
            message=reason or f"cancelled by {actor.label}",
            fields={"cancel_requested_at": timezone.now()},
        )
        _close_open_approvals(execution)
    for child in execution.children.filter(status__in=ACTIVE):
        with contextlib.suppress(lifecycle.IllegalTransition):  # it finished meanwhile
            execution_cancel(execution=child, actor=actor, reason="parent cancelled")
    return execution


def _close_open_approvals(execution: Execution) -> None:
    from approvals.models import Approval, ApprovalStatus

    Approval.objects.filter(execution=execution, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.CANCELLED, updated_at=timezone.now()
    )


def execution_resume(*, execution: Execution, input: Any, actor: Actor) -> Execution:
    """Answer a `wait_for_input` step: the input becomes the step's output and the run goes on."""
    if execution.status != Status.AWAITING_INPUT:
        raise lifecycle.IllegalTransition(
            execution.pk,
            execution.status,
            Status.RUNNING,
            f"execution is {execution.status}; only an execution awaiting input can be resumed",
        )
    waiting = (execution.state or {}).get("waiting") or {}
    validate(waiting.get("schema"), input, prefix="input", what="input")
    state = dict(execution.state or {})
    state["resume_input"] = input
    with transaction.atomic():
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="resume",
            actor=actor,
            input=input,
            step_path=waiting.get("path", ""),
            fields={"state": state},
        )
        from executions import tasks

        execution_id = execution.pk
        transaction.on_commit(lambda: tasks.enqueue_run(execution_id))
    return execution


def execution_retry(*, execution: Execution, actor: Actor) -> Execution:
    """A new execution with the same input and version, linked to the original."""
    if execution.status not in TERMINAL:
        raise Conflict(
            f"execution is {execution.status}; only finished executions can be retried",
            details={"status": execution.status},
        )
    retried, _ = execution_start(
        workspace=execution.workspace,
        agent=execution.agent,
        input=execution.input,
        metadata={**(execution.metadata or {}), "retry_of": str(execution.pk)},
        session_id=execution.session_id,
        version=execution.agent_version,
        actor=actor,
        retry_of=execution,
    )
    return retried


def execution_is_parked(execution: Execution) -> bool:
    return execution.status in PARKED


# --- dashboard: saved views, members, retention ----------------------------------------------


def savedview_create(*, workspace: Workspace, name: str, query: str, created_by: Any = None):
    """A named list filter shared with the workspace (the query string of the list page)."""
    from executions.models import SavedView

    name = (name or "").strip()
    errors = []
    if not name:
        errors.append(field_error("name", "is required"))
    elif len(name) > 120:
        errors.append(field_error("name", "must be at most 120 characters"))
    if len(query) > 2000:
        errors.append(field_error("query", "must be at most 2000 characters"))
    if errors:
        raise ValidationFailed("invalid saved view", details=errors)
    view, _ = SavedView.objects.update_or_create(
        workspace=workspace, name=name, defaults={"query": query, "created_by": created_by}
    )
    return view


def savedview_delete(*, workspace: Workspace, view_id: Any) -> None:
    from executions.models import SavedView

    deleted, _ = SavedView.objects.filter(workspace=workspace, pk=view_id).delete()
    if not deleted:
        raise NotFound(f"saved view {view_id} not found")


def membership_remove(*, workspace: Workspace, user: Any) -> None:
    """Remove a member; the last admin of a workspace cannot be removed or demoted away."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        raise NotFound(f"{user} is not a member of this workspace")
    _keep_an_admin(workspace=workspace, membership=membership, new_role=None)
    membership.delete()


def membership_change_role(*, workspace: Workspace, user: Any, role: str) -> Membership:
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        raise NotFound(f"{user} is not a member of this workspace")
    _keep_an_admin(workspace=workspace, membership=membership, new_role=role)
    return membership_set(workspace=workspace, user=user, role=role)


def _keep_an_admin(*, workspace: Workspace, membership: Membership, new_role: str | None) -> None:
    if membership.role != Role.ADMIN or new_role == Role.ADMIN:
        return
    admins = Membership.objects.filter(workspace=workspace, role=Role.ADMIN).count()
    if admins <= 1:
        raise Conflict("a workspace needs at least one admin; make someone else admin first")


def member_add(
    *, workspace: Workspace, username: str, role: str, password: str = "", email: str = ""
) -> Membership:
    """Add an existing user to the workspace, or create the user when a password is given."""
    username = (username or "").strip()
    if not username:
        raise ValidationFailed(
            "username is required", details=[field_error("username", "required")]
        )
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is None:
        if not password:
            raise ValidationFailed(
                f"no user named {username!r}; give a password to create one",
                details=[field_error("password", "required to create a new user")],
            )
        if len(password) < 8:
            raise ValidationFailed(
                "password is too short",
                details=[field_error("password", "must be at least 8 characters")],
            )
        user = user_create(username=username, password=password, email=email)
    elif Membership.objects.filter(workspace=workspace, user=user).exists():
        raise Conflict(f"{username} is already a member of this workspace")
    return membership_set(workspace=workspace, user=user, role=role)


def workspace_set_retention(*, workspace: Workspace, days: Any) -> Workspace:
    try:
        value = int(days)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= 3650:
        raise ValidationFailed(
            "retention must be between 1 and 3650 days",
            details=[field_error("retention_days", "a whole number of days from 1 to 3650")],
        )
    Workspace.objects.filter(pk=workspace.pk).update(retention_days=value)
    workspace.retention_days = value
    return workspace
