"""An idle run's path (#10, IDLE): what makes a lone run's claim and end cheap on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import bulk
from executions.engine import batch, queue
from executions.models import ExecutionEvent, Transition

from .engine_helpers import THREE_STEPS, make_agent, start

pytestmark = [pytest.mark.django_db(transaction=True)]

OWNER = "idle-test"


def prepared(fragment: str, since: object = None) -> int:
    """How many statements like `fragment` this session has prepared (since `since`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s"
            " AND (%s::timestamptz IS NULL OR prepare_time >= %s::timestamptz)",
            [f"%{fragment}%", since, since],
        )
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="server-side prepare")
def test_the_start_the_claim_and_the_end_are_prepared_and_planned_once(workspace):
    """Django turns psycopg's preparing off for the connection; the engine's statements of
    every run (the start, the claim, a lone run's end) are prepared anyway from their first
    run, and planned once (a generic plan), so PostgreSQL stops parsing and planning them per
    run — it kept a custom plan, planned at each run, for the claim and the end."""
    # The pooled session outlives tests: an earlier test may have prepared these statements
    # already (or the start with other parameter types: a parent, an idempotency key). So:
    # each is prepared, and this test's eight runs prepared each at most once — a text that
    # changed per run (values inlined) would be prepared eight times.
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        [began] = cursor.fetchone()
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    for n in range(8):
        start(agent, {"n": n})
        claimed = queue.claim(owner=OWNER, limit=1)
        assert len(claimed) == 1
        assert batch.run_batch(claimed, owner=OWNER) == []
    for statement in ("lease_owner = $1, lease_expires_at = $2", "WITH _first AS (INSERT"):
        assert prepared(statement) >= 1
        assert prepared(statement, since=began) <= 1
    assert prepared("won AS (UPDATE") >= 1  # one per shape of parameter types
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(custom_plans), sum(generic_plans) FROM pg_prepared_statements")
        custom, generic = cursor.fetchone()
    assert custom == 0 and generic >= 8 * 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement end")
def test_a_lone_runs_end_binds_few_parameters_whatever_its_rows(workspace):
    """The end's rows travel as one jsonb parameter per table: the statement stays under
    psycopg's 50-parameter cache limit (its parsing cached) and its text is the same for every
    run, instead of one parameter per value (136 for a three-step run)."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    start(agent, {"n": 1})
    claimed = queue.claim(owner=OWNER, limit=1)
    with CaptureQueriesContext(connection) as captured:
        assert batch.run_batch(claimed, owner=OWNER) == []
    [end] = [q["sql"] for q in captured.captured_queries if "won AS" in q["sql"]]
    assert "jsonb_populate_recordset" in end


@pytest.mark.skipif(connection.vendor != "postgresql", reason="jsonb_populate_recordset")
def test_rows_inserted_as_jsonb_read_back_exactly(workspace):
    """Every kind of value a transition carries comes back as the ORM would have stored it:
    microseconds and offsets, decimals, JSON strings, nulls and nested JSON, text that needs
    escaping, foreign keys, and the rows' order (their ids)."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    at = datetime(2026, 11, 30, 6, 1, 2, 345678, tzinfo=UTC)
    rows = [
        Transition(
            execution=execution, seq=10, type="step", step_path='main["a"]\n\\', input="just text",
            output={"x": [1, 2.5, None, True], "é": "ü ✓"}, usage=None, cost=Decimal("0.12345678"),
            message="quote \" and 'single'", started_at=at, ended_at=at + timedelta(seconds=1),
        ),
        Transition(execution=execution, seq=11, type="finish", output=None, cost=None),
    ]  # fmt: skip
    sql, params, auto = bulk.insert_where_sql(rows, where="TRUE")
    assert params and len(params) == 1
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    assert ids == sorted(ids)
    first, second = Transition.objects.filter(pk__in=ids).order_by("pk")
    assert (first.seq, second.seq) == (10, 11)
    assert first.step_path == 'main["a"]\n\\' and first.input == "just text"
    assert first.output == {"x": [1, 2.5, None, True], "é": "ü ✓"}
    assert first.usage is None and second.output is None and second.cost is None
    assert first.cost == Decimal("0.12345678")
    assert first.message == "quote \" and 'single'"
    assert first.started_at == at and first.ended_at == at + timedelta(seconds=1)
    assert first.execution_id == execution.pk and first.created_at is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement for every group")
def test_a_batchs_rows_are_inserted_in_one_statement_ids_in_order(workspace):
    """A busy worker's batch (64 runs: hundreds of transitions and events) inserts its groups
    as one statement of one jsonb parameter per model, not bulk_create's arrays per column;
    each object gets its own row's id, in the rows' order."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    rows = [
        Transition(execution=execution, seq=100 + i, type="step", step_path=f"main[{i}]",
                   output={"i": i}, cost=Decimal(i) / 8 if i % 2 else None)
        for i in range(40)
    ]  # fmt: skip
    events = [ExecutionEvent(execution=execution, type="log", data={"i": i}) for i in range(30)]
    with CaptureQueriesContext(connection) as captured:
        bulk.insert_groups([rows, events])
    assert len(captured.captured_queries) == 1
    assert "jsonb_populate_recordset" in captured.captured_queries[0]["sql"]
    for group in (rows, events):
        ids = [obj.pk for obj in group]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    read = {t.pk: t for t in Transition.objects.filter(pk__in=[r.pk for r in rows])}
    for i, row in enumerate(rows):
        assert (read[row.pk].seq, read[row.pk].output) == (100 + i, {"i": i})
        assert read[row.pk].cost == (Decimal(i) / 8 if i % 2 else None)
    stored = ExecutionEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("pk")
    assert [e.data for e in stored] == [{"i": i} for i in range(30)]
