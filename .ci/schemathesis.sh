#!/usr/bin/env bash
# Fuzz the OpenAPI documents with schemathesis: every check, a bounded number of examples per
# operation. Starts its own server on a fresh database and exits non-zero on any failure (a
# server error, a reply that breaks its schema, an undocumented status code, …).
#
#   .ci/schemathesis.sh sqlite   [PORT]   # embedded default (SQLite file, in-memory layer)
#   .ci/schemathesis.sh postgres [PORT]   # PostgreSQL (+ Redis if REDIS_URL is set)
#
# Environment: EXAMPLES (per operation, default 30), SCHEMATHESIS_DB (the PostgreSQL database
# to recreate, default steward_schemathesis), DATABASE_URL's host/user if not the local default.
set -euo pipefail
cd "$(dirname "$0")/.."

db="${1:-sqlite}"
port="${2:-8290}"
examples="${EXAMPLES:-15}"
base="http://127.0.0.1:${port}"
workdir="$(mktemp -d /tmp/steward-schemathesis.XXXXXX)"

export DEBUG=false EMBEDDED_WORKER=false RATE_LIMIT=off LOGIN_LOCKOUT=false PYTHONUNBUFFERED=1
export SECRET_KEY="schemathesis-${port}" ALLOWED_HOSTS="127.0.0.1,localhost"
# No worker runs here: `sync: true` and the long polls give up quickly instead of outlasting
# the client (the seeded pass's approval stays pending).
export SYNC_EXECUTE_TIMEOUT_SECONDS=2 APPROVAL_WAIT_MAX_SECONDS=2
unset DATABASE_URL_FOR_TESTS || true
case "$db" in
  sqlite)
    export SQLITE_PATH="$workdir/steward.sqlite3"
    unset DATABASE_URL || true
    ;;
  postgres)
    name="${SCHEMATHESIS_DB:-steward_schemathesis}"
    dropdb -h 127.0.0.1 -U postgres --if-exists --force "$name"
    createdb -h 127.0.0.1 -U postgres "$name"
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${name}"
    ;;
  *) echo "usage: $0 sqlite|postgres [PORT]" >&2; exit 2 ;;
esac

.venv/bin/python manage.py migrate -v0
key="$(.venv/bin/python manage.py apikey create --name schemathesis --workspace schemathesis 2>/dev/null)"

.venv/bin/uvicorn config.asgi:application --host 127.0.0.1 --port "$port" \
  --log-level warning --no-access-log >"$workdir/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
up=""
for _ in $(seq 1 360); do
  if curl -fsS "$base/healthz" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$up" ]; then
  echo "--- the server did not start:"; tail -40 "$workdir/server.log"; exit 1
fi

# Resources for a second pass over the operations that take an id, which with random ids only
# ever meet the 404 (.ci/schemathesis-seeded.toml sets their ids). The native API's: an
# external agent's execution (pending: no worker runs here) with an approval request on it,
# and a webhook. Created through the API, as a client would.
# created AUTH CURL-ARGS…: the id of what the call created (or listed first): the native API
# wraps it in `data`, the Julep face answers it bare or as a list's `items`.
created() {
  local auth="$1"
  shift
  curl -fsS -H "$auth" -H "Content-Type: application/json" "$@" |
    .venv/bin/python -c 'import json, sys; d = json.load(sys.stdin); d = d.get("data", d)
print((d.get("items") or [d])[0]["id"])'
}
call() { created "X-API-Key: $key" "$@"; }
SCHEMATHESIS_AGENT_ID="$(call -X POST "$base/api/v1/agents" \
  -d '{"name": "schemathesis-external", "type": "external"}')"
SCHEMATHESIS_EXECUTION_ID="$(call -X POST "$base/api/v1/agents/$SCHEMATHESIS_AGENT_ID/execute" \
  -d '{"input": {"order": "A-1"}}')"
SCHEMATHESIS_APPROVAL_ID="$(call -X POST \
  "$base/api/v1/executions/$SCHEMATHESIS_EXECUTION_ID/approvals" -d '{"title": "Refund?"}')"
SCHEMATHESIS_WEBHOOK_ID="$(call -X POST "$base/api/v1/webhooks" \
  -d '{"url": "https://example.com/steward-hook"}')"
export SCHEMATHESIS_AGENT_ID SCHEMATHESIS_EXECUTION_ID SCHEMATHESIS_APPROVAL_ID \
  SCHEMATHESIS_WEBHOOK_ID
# The same for the Julep face, through the face: an agent, its task, an execution of the task
# (pending) and its first transition.
jcall() { created "Authorization: Bearer $key" "$@"; }
julep_agent="$(jcall -X POST "$base/julep/agents" -d '{"name": "schemathesis-julep"}')"
julep_task="$(jcall -X POST "$base/julep/agents/$julep_agent/tasks" \
  -d '{"name": "schemathesis-task", "main": [{"evaluate": {"x": "1"}}]}')"
julep_execution="$(jcall -X POST "$base/julep/tasks/$julep_task/executions" -d '{"input": {}}')"
julep_transition="$(jcall "$base/julep/executions/$julep_execution/transitions")"
export SCHEMATHESIS_TASK_ID="$julep_task" SCHEMATHESIS_TRANSITION_ID="$julep_transition"

status=0
run() {
  local schema="$1" auth="$2" required="${3:-}"
  shift 3 || shift $#
  if ! curl -fsS -o /dev/null "$base$schema"; then
    echo "--- $schema: no OpenAPI document${required:+ (required: failing)}"
    [ -n "$required" ] && status=1
    return
  fi
  echo "--- schemathesis: $schema ($db)"
  # Phases: the schema's examples, the boundary values of every parameter (coverage) and random
  # inputs (fuzzing). (Stateful chains found no resource to follow: see the seeded pass.)
  # Every check but positive_data_acceptance: that one expects every request the schema allows
  # to succeed, while the API refuses some schema-valid requests by design with a documented
  # 400/422 (an agent with no version to run, a cursor it did not issue, a blank name).
  # Strings are generated as valid UTF-8 without NUL: the schema cannot say "no lone
  # surrogates", and the 422 for them is tested in tests/executions/test_api_bad_input.py.
  .venv/bin/schemathesis "$@" run "$base$schema" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" \
    --generation-deterministic \
    --generation-allow-x00 false \
    --generation-codec utf-8 \
    --request-timeout 20 \
    --workers 2 \
    --header "$auth" \
    --no-color || status=1
}
run /api/v1/openapi.json "X-API-Key: $key" required
echo "--- the seeded pass: the operations that take an id, on real resources"
run /api/v1/openapi.json "X-API-Key: $key" required --config-file .ci/schemathesis-seeded.toml
run /julep/openapi.json "Authorization: Bearer $key"
echo "--- the seeded pass: the Julep face's operations that take an id, on real resources"
SCHEMATHESIS_AGENT_ID="$julep_agent" SCHEMATHESIS_EXECUTION_ID="$julep_execution" \
  run /julep/openapi.json "Authorization: Bearer $key" "" --config-file .ci/schemathesis-seeded.toml
run /julep/v0/openapi.json "Authorization: Bearer $key"
run /moderately/openapi.json "Authorization: Bearer $key"

if grep -q "Internal Server Error\|Traceback" "$workdir/server.log"; then
  echo "--- server log shows errors:"
  grep -B2 -A20 "Traceback" "$workdir/server.log" | head -80
  status=1
fi
exit "$status"
