"""The SQL that builds the scale dataset (bench/scale.py): one statement per table, every row
computed from its row number so a rebuild is identical."""

# One row per execution, all of it computed from the row number `i` so a rerun is identical.
EXECUTIONS = """
WITH params AS (
  SELECT %(size)s::bigint AS n, extract(epoch FROM now()) * 1000 AS now_ms,
         60 * 86400 * 1000.0 AS span_ms
), rows AS (
  SELECT i, abs(hashtext(i::text)) AS h,
         (p.now_ms - p.span_ms + p.span_ms * i / p.n)::bigint AS ms
  FROM params p, generate_series(1, (SELECT n FROM params)) AS i
), agents AS (
  SELECT array_agg(id ORDER BY id) AS ids, array_agg(workspace_id ORDER BY id) AS ws,
         array_agg(current_version_id ORDER BY id) AS vs, count(*) AS n
  FROM executions_agent
), shaped AS (
  SELECT i, h, ms, 1 + h %% (SELECT n FROM agents) AS a,
    CASE WHEN i = 1 THEN 'completed'
         WHEN h %% 1000 < 2 THEN 'awaiting_approval'
         WHEN h %% 1000 < 4 THEN 'running'
         WHEN h %% 1000 < 5 THEN 'pending'
         WHEN h %% 1000 < 85 THEN 'failed'
         WHEN h %% 1000 < 115 THEN 'cancelled'
         WHEN h %% 1000 < 135 THEN 'rejected'
         ELSE 'completed' END AS status
  FROM rows
)
INSERT INTO executions_execution (
  id, workspace_id, agent_id, agent_version_id, parent_id, retry_of_id, session_id, status,
  input, output, error, metadata, token_usage, cost, duration_ms, trace_id, transition_count,
  created_at, started_at, completed_at, updated_at, idempotency_key, request_hash,
  created_by_user_id, created_by_key_id, state, lease_owner, lease_expires_at, runnable_at,
  cancel_requested_at)
SELECT u.id, ag.ws[s.a], ag.ids[s.a], ag.vs[s.a], NULL, NULL,
  'session-' || (s.h %% 50000), s.status,
  jsonb_build_object('order_id', 'A-' || s.i, 'amount', s.h %% 500),
  CASE WHEN s.status = 'completed' THEN jsonb_build_object('ok', true) END,
  CASE WHEN s.status = 'failed' THEN 'tool refused' ELSE '' END,
  jsonb_build_object('tenant', 'tenant-' || (s.h %% 200), 'region',
                     (ARRAY['eu','us','apac'])[1 + s.h %% 3], 'priority', s.h %% 5),
  jsonb_build_object('prompt_tokens', s.h %% 900, 'completion_tokens', s.h %% 300,
                     'total_tokens', s.h %% 900 + s.h %% 300),
  CASE WHEN s.h %% 10 = 0 THEN NULL ELSE (s.h %% 10000) / 100000.0 END,
  CASE WHEN s.status IN ('completed','failed','cancelled','rejected')
       THEN 200 + s.h %% 30000 END,
  replace(u.id::text, '-', ''),
  CASE WHEN s.i = 1 THEN 10000 ELSE 10 END,
  to_timestamp(s.ms / 1000.0), to_timestamp(s.ms / 1000.0 + 0.05),
  CASE WHEN s.status IN ('completed','failed','cancelled','rejected')
       THEN to_timestamp(s.ms / 1000.0 + (200 + s.h %% 30000) / 1000.0) END,
  to_timestamp(s.ms / 1000.0 + (200 + s.h %% 30000) / 1000.0),
  NULL, '', NULL, NULL, '{}'::jsonb, '', NULL,
  CASE WHEN s.status IN ('pending','running') THEN now() END, NULL
FROM shaped s CROSS JOIN agents ag
CROSS JOIN LATERAL (
  SELECT (lpad(to_hex(s.ms), 12, '0') || '7' || substr(md5(s.i::text), 1, 3) || '8'
          || substr(md5(s.i::text || 'v7'), 1, 15))::uuid AS id
) u
"""

TRANSITIONS = """
INSERT INTO executions_transition (
  execution_id, seq, type, from_status, to_status, step_path, step_kind, input, output, usage,
  cost, message, started_at, ended_at, actor_type, actor_user_id, actor_key_id, actor_label,
  created_at)
SELECT e.id, g.seq,
  CASE WHEN g.seq = 1 THEN 'init' WHEN g.seq = e.transition_count THEN 'finish' ELSE 'step' END,
  '', '', 'main[' || g.seq || ']', 'evaluate', NULL,
  jsonb_build_object('n', g.seq), NULL, NULL, '', NULL, NULL, 'system', NULL, NULL, 'system',
  e.created_at + g.seq * interval '10 milliseconds'
FROM executions_execution e, generate_series(1, e.transition_count) AS g(seq)
"""

APPROVALS = """
INSERT INTO approvals_approval (
  id, workspace_id, execution_id, step_path, source, title, description, payload,
  payload_schema, allowed_actions, options, multiple, response_schema, assignee_roles,
  forbid_self_approval, required_approvals, required_rejections, reject_ends, expires_at,
  on_timeout, escalate_at, escalate_to_users, escalate_to_roles, escalated_at, status,
  decided_at, decided_by_label, result_payload, response, chosen_options, notified_at,
  created_at, updated_at)
SELECT e.id, e.workspace_id, e.id, 'main[1]', 'step', 'Refund ' || (e.input->>'amount') || '?',
  'A refund above the limit', e.input, NULL, '["approve","reject"]'::jsonb, NULL, false, NULL,
  '["reviewer"]'::jsonb, false, 1, 1, true, e.created_at + interval '30 days', 'reject', NULL,
  '[]'::jsonb, '[]'::jsonb, NULL, 'pending', NULL, '', NULL, NULL, NULL, NULL,
  e.created_at, e.created_at
FROM executions_execution e WHERE e.status = 'awaiting_approval'
"""

# As retention leaves them: hours for the last days, one row per day before (rollups.FOLD_AFTER),
# inserted in time order as runs ending over time (and the fold) lay them out.
ROLLUP = """
INSERT INTO executions_executionrollup
  (workspace_id, agent_id, status, hour, shard, count, costed, cost, duration_ms)
SELECT workspace_id, agent_id, status,
  CASE WHEN created_at < date_trunc('day', now() - interval '3 days')
       THEN date_trunc('day', created_at) ELSE date_trunc('hour', created_at) END, 0, count(*),
  count(*) FILTER (WHERE cost > 0), coalesce(sum(cost) FILTER (WHERE cost > 0), 0),
  coalesce(sum(duration_ms), 0)
FROM executions_execution WHERE status IN ('completed','failed','cancelled','rejected')
GROUP BY 1, 2, 3, 4
ORDER BY 4, 1, 2, 3
"""

# The duration histograms (DurationRollup) of the same runs: rollups.duration_bucket in SQL
# (the value below 16 ms, then 8 buckets per doubling: the top four bits of the duration; the
# bit length read from the bigint's 64-bit string), keyed by the UTC day the run was created,
# inserted day by day (the workspaces' rows interleaved) as runs ending over time lay them out.
DURATIONS = """
INSERT INTO executions_durationrollup (workspace_id, day, agent_id, bucket, shard, count)
SELECT workspace_id, (created_at AT TIME ZONE 'UTC')::date, agent_id,
  CASE WHEN d < 16 THEN d ELSE 8 * (b - 4) + (d >> (b - 4)) END, 0, count(*)
FROM (
  SELECT workspace_id, agent_id, created_at, greatest(duration_ms, 0)::bigint AS d,
         length(ltrim(greatest(duration_ms, 0)::bigint::bit(64)::text, '0')) AS b
  FROM executions_execution
  WHERE status IN ('completed','failed','cancelled','rejected') AND duration_ms IS NOT NULL
) timed
GROUP BY 1, 2, 3, 4
ORDER BY 2, 1, 3, 4
"""
