"""Writes for agents and their immutable versions."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from executions.engine import definition
from executions.errors import Conflict, NotFound, ValidationFailed, field_error
from executions.lifecycle import ACTIVE
from executions.models import Agent, AgentType, AgentVersion, Workspace
from executions.schemas import check_schema


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


def agent_create_with_version(
    *,
    workspace: Workspace,
    name: str,
    type: str = AgentType.AGENT,
    description: str = "",
    metadata: dict | None = None,
    config: dict[str, Any] | None = None,
    message: str = "",
) -> Agent:
    """An agent and its first (current) version, both or neither (faces that create an agent
    with its model and instructions in one call: Julep)."""
    with transaction.atomic():
        agent = agent_create(
            workspace=workspace, name=name, type=type, description=description, metadata=metadata
        )
        agent_version_create(agent=agent, config=config, set_current=True, message=message)
    return agent


# A workflow agent may belong to an agent (what Julep calls a task): the owner's id is kept in the
# workflow's metadata under this key, so every face finds an agent's workflows the same way.
WORKFLOW_OWNER_KEY = "julep_agent_id"
# Keys of a workflow definition that are not step lists (never read as named sub-workflows).
WORKFLOW_SETTINGS = {"name", "canonical_name", "inherit_tools", "tools", "model", "system_prompt"}


def agent_workflow_create(
    *,
    owner: Agent,
    name: str,
    definition: dict[str, Any],
    description: str = "",
    metadata: dict | None = None,
    tools: list | None = None,
    tool_names: list[str] | None = None,
    inherit_tools: bool | None = None,
    input_schema: dict | None = None,
    message: str = "",
) -> Agent:
    """Create a workflow agent that belongs to `owner`, with its first (current) version.

    The name is `<owner>/<name>`, numbered `#2`, `#3`… when taken; two creates racing for one
    name each take a free one. See `_workflow_config` for what comes from the owner.
    """
    config = _workflow_config(owner, name, definition, tools, tool_names, inherit_tools)
    with transaction.atomic():
        workflow = None
        for _ in range(5):
            try:
                workflow = agent_create(
                    workspace=owner.workspace,
                    name=_free_name(owner.workspace, f"{owner.name}/{name}"[:190]),
                    type=AgentType.WORKFLOW,
                    description=description or "",
                    metadata={**(metadata or {}), WORKFLOW_OWNER_KEY: str(owner.pk)},
                )
                break
            except Conflict:  # another create took the name between the read and the insert
                continue
        if workflow is None:
            raise Conflict(f"could not find a free name for workflow {name!r}")
        agent_version_create(
            agent=workflow,
            config=config,
            input_schema=input_schema,
            set_current=True,
            message=message,
        )
    return workflow


def agent_workflow_update(
    *,
    owner: Agent,
    workflow: Agent,
    name: str,
    definition: dict[str, Any],
    description: str = "",
    metadata: dict | None = None,
    tools: list | None = None,
    tool_names: list[str] | None = None,
    inherit_tools: bool | None = None,
    input_schema: dict | None = None,
    message: str = "",
) -> Agent:
    """Replace an owned workflow's definition: the new one becomes its current version."""
    if (workflow.metadata or {}).get(WORKFLOW_OWNER_KEY) != str(owner.pk):
        raise NotFound(f"workflow {workflow.pk} not found for agent {owner.pk}")
    config = _workflow_config(owner, name, definition, tools, tool_names, inherit_tools)
    with transaction.atomic():
        agent_update(
            agent=workflow,
            data={
                "description": description or "",
                "metadata": {**(metadata or {}), WORKFLOW_OWNER_KEY: str(owner.pk)},
            },
        )
        agent_version_create(
            agent=workflow,
            config=config,
            input_schema=input_schema,
            set_current=True,
            message=message,
        )
    return workflow


def _workflow_config(
    owner: Agent,
    name: str,
    definition: dict[str, Any],
    tools: list | None,
    tool_names: list[str] | None,
    inherit_tools: bool | None,
) -> dict[str, Any]:
    """A workflow's definition with what it takes from its owner.

    - `tool_names` (Julep 0.x `tools_available`) pick tools by name: the owner's entry of that
      name when it has one (with its overrides, e.g. requires_approval), else the registry's.
    - `inherit_tools` adds the owner's tools; the workflow's own win on a name clash.
    - The owner's model and system prompt always come along: prompt steps speak as the owner.
    """
    owner_config = (owner.current_version.config if owner.current_version else None) or {}
    owner_tools = [t for t in owner_config.get("tools") or [] if _tool_name(t)]
    chosen = list(tools or [])
    for wanted in tool_names or []:
        chosen.append(next((t for t in owner_tools if _tool_name(t) == wanted), wanted))
    if inherit_tools:
        known = {_tool_name(t) for t in chosen}
        chosen += [t for t in owner_tools if _tool_name(t) not in known]
    config: dict[str, Any] = {**definition, "name": name}
    if chosen:
        config["tools"] = chosen
    if inherit_tools is not None:
        config["inherit_tools"] = inherit_tools
    for key in ("model", "system_prompt"):
        if owner_config.get(key) is not None:
            config[key] = owner_config[key]
    return config


def _tool_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        function = entry.get("function") if isinstance(entry.get("function"), dict) else {}
        return entry.get("name") or function.get("name")
    return None


def _free_name(workspace: Workspace, base: str) -> str:
    taken = set(
        Agent.objects.for_workspace(workspace)
        .filter(name__startswith=base)
        .values_list("name", flat=True)
    )
    if base not in taken:
        return base
    n = 2
    while f"{base} #{n}" in taken:
        n += 1
    return f"{base} #{n}"
