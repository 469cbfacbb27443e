"""The limiter's admissions on the event loop (ratelimit.Limiter.admit_here): a busy key's
batch is topped up in the background before it runs out, so its calls stay off the thread
path, and the limit still holds."""

from __future__ import annotations

import time

from executions.ratelimit import Limiter


def drain(limiter: Limiter) -> None:
    if limiter._refills is not None:
        limiter._refills.submit(lambda: None).result(timeout=5)


def admitted_on_the_loop(limiter: Limiter, who: str, calls: int) -> int:
    admitted = 0
    for _ in range(calls):
        if limiter.admit_here(who):
            admitted += 1
        else:
            assert limiter.check(who) is None  # the thread path, as loopread.py falls back
        drain(limiter)
    return admitted


def test_a_busy_key_stays_on_the_loop():
    limiter = Limiter("5000/minute", "memory://")  # a batch of 100
    assert limiter.check("k:busy") is None  # the first call takes the thread path
    assert admitted_on_the_loop(limiter, "k:busy", 1000) == 1000


def test_the_limit_still_holds():
    limiter = Limiter("500/minute", "memory://")  # a batch of 10
    assert limiter.check("k:greedy") is None
    admitted = 1
    for _ in range(700):
        if limiter.admit_here("k:greedy") or limiter.check("k:greedy") is None:
            admitted += 1
        drain(limiter)
    assert 500 <= admitted <= 500 + limiter.batch + limiter.batch // 4
    assert limiter.check("k:greedy") is not None


def test_a_refill_refused_counts_the_key_exactly():
    limiter = Limiter("500/minute", "memory://")
    assert limiter.check("k:x") is None
    limiter.strategy.hit = lambda *a, **k: False  # the shared counter is full
    while limiter.admit_here("k:x"):
        drain(limiter)
    state = limiter._local["k:x"]
    assert state[1] == 0 and state[3] > time.monotonic()  # exact for a window
