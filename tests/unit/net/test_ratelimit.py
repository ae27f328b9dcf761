"""Token bucket (ICMP error rate limit) with a fake clock."""

from __future__ import annotations

import pytest

from shardnet.shards.net.ratelimit import ICMP_BURST, ICMP_RATE_PER_S, TokenBucket


def test_defaults_are_the_checklist_constants() -> None:
    b = TokenBucket()
    assert (b.rate_per_s, b.burst) == (ICMP_RATE_PER_S, ICMP_BURST) == (1000.0, 50)


def test_burst_then_refused() -> None:
    b = TokenBucket(1000, 50)  # positional, as the stack builds it
    assert all(b.allow(10.0) for _ in range(50))
    assert not b.allow(10.0)


def test_refills_at_the_rate() -> None:
    b = TokenBucket(rate_per_s=1000, burst=50)
    for _ in range(50):
        b.allow(0.0)
    assert not b.allow(0.0)
    assert b.allow(0.001)  # one token per millisecond
    assert not b.allow(0.001)
    assert b.tokens(0.0105) == pytest.approx(9.5)


def test_refill_is_capped_at_the_burst() -> None:
    b = TokenBucket(1000, 50)
    b.allow(0.0)
    assert b.tokens(100.0) == 50
    assert sum(b.allow(100.0) for _ in range(100)) == 50


def test_sustained_rate() -> None:
    b = TokenBucket(1000, 50)
    # 10 000 attempts over one second (every 0.1 ms): the burst plus one per ms.
    allowed = sum(b.allow(i / 10_000) for i in range(10_000))
    assert 1040 <= allowed <= 1050


def test_time_going_backwards_refills_nothing() -> None:
    b = TokenBucket(1000, 2)
    assert b.allow(5.0) and b.allow(5.0)
    assert not b.allow(4.0)
    assert not b.allow(5.0)
    assert b.allow(5.001)


def test_zero_rate_is_a_fixed_allowance() -> None:
    b = TokenBucket(0, 3)
    assert [b.allow(float(t)) for t in range(5)] == [True, True, True, False, False]


@pytest.mark.parametrize(("rate", "burst"), [(-1, 5), (10, 0)])
def test_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
