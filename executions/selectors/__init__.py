"""Reads, one module per entity. Every query on tenant data is scoped by workspace here, not by
each caller. The package re-exports the public functions (docs/decisions.md, "Data")."""

from __future__ import annotations

from executions.selectors.agents import (
    agent_get,
    agent_get_by_id_or_name,
    agent_list,
    agent_metadata_match,
    agent_version_get,
    agent_workflow_list,
)
from executions.selectors.common import (
    parse_dt,
    parse_uuid,
)
from executions.selectors.executions import (
    execution_event_list,
    execution_get,
    execution_tree,
    transition_before,
    transition_list,
    transition_recent,
)
from executions.selectors.filters import (
    ExecutionFilters,
    execution_list,
    execution_matches,
    execution_matches_in_memory,
    metadata_value,
)
from executions.selectors.pagination import (
    MAX_LIMIT,
    ORDERABLE,
    Page,
    count_capped,
    decode_cursor,
    encode_cursor,
    execution_first_page_counted,
    execution_page_ordered,
    keyset_page,
    order_executions,
    page_params,
    paginate,
)
from executions.selectors.stats import (
    agent_run_stats,
    execution_daily_cost,
    execution_duration_percentiles,
    execution_hourly,
    execution_stats,
    execution_stats_hourly,
    overview_counts,
)
from executions.selectors.workspaces import (
    apikey_list,
    membership_get,
    membership_list,
    membership_list_for_user,
    savedview_list,
)

__all__ = [
    "ExecutionFilters",
    "MAX_LIMIT",
    "ORDERABLE",
    "Page",
    "agent_get",
    "agent_get_by_id_or_name",
    "agent_list",
    "agent_metadata_match",
    "agent_run_stats",
    "agent_version_get",
    "agent_workflow_list",
    "apikey_list",
    "decode_cursor",
    "encode_cursor",
    "execution_daily_cost",
    "execution_duration_percentiles",
    "execution_event_list",
    "execution_get",
    "execution_hourly",
    "execution_list",
    "execution_matches",
    "execution_matches_in_memory",
    "execution_first_page_counted",
    "execution_page_ordered",
    "execution_stats",
    "execution_stats_hourly",
    "execution_tree",
    "keyset_page",
    "membership_get",
    "membership_list",
    "membership_list_for_user",
    "metadata_value",
    "order_executions",
    "overview_counts",
    "page_params",
    "count_capped",
    "paginate",
    "parse_dt",
    "parse_uuid",
    "savedview_list",
    "transition_before",
    "transition_list",
    "transition_recent",
]
