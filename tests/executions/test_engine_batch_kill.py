"""A worker process killed (SIGKILL) while it writes batches of pure runs (group commit,
engine/batch.py): another worker finishes them, and every run ends exactly once — its steps
recorded once, its history without a gap, one start and one end event, counted once in the
rollups. A batch is one transaction: a kill during its commit leaves all of it or none."""

from __future__ import annotations

import random
import signal
import textwrap
import time

import pytest

from .test_worker_crash import _wait_for_line, env, python, worker  # noqa: F401 - env: fixture

SEED = textwrap.dedent(
    """
    import django, json, sys
    django.setup()
    from executions import services
    from executions.models import Execution
    ws, _ = services.workspace_get_or_create(slug="batch-kill")
    agent = services.agent_create(workspace=ws, name=f"three-{sys.argv[1]}", type="workflow")
    services.agent_version_create(agent=agent, config={"main": [
        {"evaluate": {"x": "$ inputs['n'] * 2"}},
        {"evaluate": {"y": "$ _['x'] + 1"}},
        {"return": {"result": "$ _['y']"}},
    ]})
    agent.refresh_from_db()
    for n in range(int(sys.argv[2])):
        services.execution_start(workspace=ws, agent=agent, input={"n": n})
    print(json.dumps({"agent": str(agent.pk)}))
    """
)

CHECK = textwrap.dedent(
    """
    import django, json, sys, time
    django.setup()
    from django.db.models import Sum
    from executions.models import Execution, ExecutionEvent, ExecutionRollup, Transition
    agent, total, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    runs = Execution.objects.filter(agent_id=agent)
    deadline = time.monotonic() + wait
    while runs.filter(status="completed").count() < total and time.monotonic() < deadline:
        time.sleep(0.2)
    bad = []
    for e in runs:
        seqs = list(Transition.objects.filter(execution=e).order_by("seq")
                    .values_list("seq", flat=True))
        paths = list(Transition.objects.filter(execution=e, type="step").order_by("seq")
                     .values_list("step_path", flat=True))
        kinds = sorted(ExecutionEvent.objects.filter(execution=e).values_list("type", flat=True))
        if (e.status != "completed" or e.output != {"result": e.input["n"] * 2 + 1}
                or seqs != list(range(1, e.transition_count + 1))
                or paths != ["main[0]", "main[1]", "main[2]"]
                or kinds != ["done", "execution"]):
            bad.append([str(e.pk), e.status, seqs, paths, kinds])
    counted = ExecutionRollup.objects.filter(agent_id=agent, status="completed").aggregate(
        n=Sum("count"))["n"]
    print(json.dumps({"completed": runs.filter(status="completed").count(),
                      "bad": bad[:5], "counted": counted}))
    """
)


@pytest.mark.timeout(900)
def test_a_worker_killed_while_writing_batches_loses_nothing_and_repeats_nothing(env, tmp_path):  # noqa: F811
    rng = random.Random()
    total = 1500
    for trial in range(2):
        agent = python(env, SEED, f"{trial}-{rng.randrange(10**6)}", str(total))["agent"]
        log = tmp_path / f"first-{trial}.log"
        first = worker(env, log)
        try:
            # Its first batch is written (it logs each run's end after the commit): kill it
            # a moment later, somewhere among its next batches.
            _wait_for_line(log, "-> completed", 300)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        ended_first = log.read_text().count("-> completed")
        assert 0 < ended_first < total, ended_first  # killed in the middle of the work
        second = worker(env, tmp_path / f"second-{trial}.log")
        try:
            result = python(env, CHECK, agent, str(total), "240", timeout=300)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        assert result["bad"] == [], result
        assert result["completed"] == total
        assert result["counted"] == total  # each run counted once in the rollups
