"""Writes, one module per entity; every function is keyword-only and named <entity>_<action>
(DESIGN.md §10). The package re-exports them so `services.execution_start(...)` reads the same
from every caller (docs/decisions.md, "Data")."""

from __future__ import annotations

from executions.services.agents import (
    agent_create,
    agent_create_with_version,
    agent_delete,
    agent_update,
    agent_version_create,
    agent_version_promote,
    agent_workflow_create,
    agent_workflow_update,
)
from executions.services.executions import (
    execution_cancel,
    execution_is_parked,
    execution_resume,
    execution_retry,
    execution_start,
    execution_start_child,
)
from executions.services.external import (
    external_events_record,
)
from executions.services.keys import (
    apikey_authenticate,
    apikey_create,
    apikey_revoke,
)
from executions.services.savedviews import (
    savedview_create,
    savedview_delete,
)
from executions.services.workspaces import (
    member_add,
    membership_change_role,
    membership_remove,
    membership_set,
    user_create,
    workspace_get_or_create,
    workspace_set_retention,
)

__all__ = [
    "agent_create",
    "agent_create_with_version",
    "agent_delete",
    "agent_update",
    "agent_version_create",
    "agent_version_promote",
    "agent_workflow_create",
    "agent_workflow_update",
    "apikey_authenticate",
    "apikey_create",
    "apikey_revoke",
    "execution_cancel",
    "execution_is_parked",
    "execution_resume",
    "execution_retry",
    "execution_start",
    "execution_start_child",
    "external_events_record",
    "member_add",
    "membership_change_role",
    "membership_remove",
    "membership_set",
    "savedview_create",
    "savedview_delete",
    "user_create",
    "workspace_get_or_create",
    "workspace_set_retention",
]
