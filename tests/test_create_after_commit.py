"""The after-commit work of starts committed on the event loop (services/loopstarts.py,
`_after_commit`): one drain on the loop's executor takes every start committed while it runs
(no hand-over per start, docs/performance-history.md "Create tail"), wakes the workers once for
them, then publishes the batch's starts in order in one hand-over; a start after a quiet spell
begins a new drain. No database: the hooks are recorded."""

from __future__ import annotations

import asyncio

from executions import lifecycle, tasks
from executions.models import Execution, Transition
from executions.services import loopstarts as starts


def test_starts_committed_while_a_drain_runs_are_taken_by_it(monkeypatch):
    published, woken, handed = [], [], []
    monkeypatch.setattr(lifecycle, "starts_committed", published.extend)
    monkeypatch.setattr(tasks, "enqueue_run", lambda pk, **_: woken.append(pk))
    runs = [(Execution(), Transition(seq=1)) for _ in range(6)]

    async def run():
        loop = asyncio.get_running_loop()
        hand_over = loop.run_in_executor

        def counted(executor, fn, *args):
            handed.append(fn)
            return hand_over(executor, fn, *args)

        loop.run_in_executor = counted
        for execution, step in runs[:5]:  # a burst: one hand-over
            starts._after_commit(execution, step, wake=execution is not runs[4][0])
        await asyncio.sleep(0.3)  # the drain has lingered and stopped
        starts._after_commit(*runs[5], wake=False)  # a quiet spell: a new drain

    asyncio.run(run())
    assert len(handed) == 2
    assert published == runs  # every start, in order
    # One wake-up per batch the drain took (the burst's first start may go alone, before the
    # loop appends the rest), after all of its runs committed: fewer than one per run.
    assert woken[-1] == runs[3][0].pk and len(woken) <= 2


def test_a_failing_batch_does_not_stop_the_drain(monkeypatch):
    published = []

    def starts_committed(pairs):
        if not published:
            published.append(None)
            raise RuntimeError("a listener failed")
        published.extend(execution for execution, _ in pairs)

    monkeypatch.setattr(lifecycle, "starts_committed", starts_committed)
    runs = [(Execution(), Transition(seq=1)) for _ in range(3)]

    async def run():
        starts._after_commit(*runs[0], wake=False)
        await asyncio.sleep(0.05)  # its batch failed
        for execution, step in runs[1:]:
            starts._after_commit(execution, step, wake=False)

    asyncio.run(run())
    assert published == [None, runs[1][0], runs[2][0]]
