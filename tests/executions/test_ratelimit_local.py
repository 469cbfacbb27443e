"""The rate limiter's local batch (executions/ratelimit.py): most calls of a busy key cost no
round trip to the shared counter, the limit still holds (within a batch per process), and
small limits stay exact."""

from __future__ import annotations

from executions.ratelimit import Limiter


class CountingLimiter(Limiter):
    def __init__(self, spec: str) -> None:
        super().__init__(spec, "memory://")
        self.trips = 0
        hit = self.strategy.hit

        def counted(*args, **kwargs):
            self.trips += 1
            return hit(*args, **kwargs)

        self.strategy.hit = counted


def test_a_busy_key_mostly_skips_the_shared_counter():
    limiter = CountingLimiter("5000/minute")  # a batch of 100
    admitted = sum(limiter.check("k:busy") is None for _ in range(1000))
    assert admitted == 1000
    assert limiter.trips <= 10  # one shared hit per 101 calls


def test_the_limit_holds_within_one_batch():
    limiter = CountingLimiter("500/minute")  # a batch of 10
    results = [limiter.check("k:greedy") for _ in range(700)]
    admitted = sum(r is None for r in results)
    assert 500 <= admitted <= 500 + limiter.batch
    refused = [r for r in results if r is not None]
    assert refused and all(r >= 1 for r in refused)


def test_small_limits_are_counted_exactly_and_keys_apart():
    limiter = CountingLimiter("3/minute")
    assert limiter.batch == 0
    assert [limiter.check("k:a") is None for _ in range(4)] == [True, True, True, False]
    assert limiter.check("k:b") is None
    assert limiter.trips == 5
