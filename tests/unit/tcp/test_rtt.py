"""RFC 6298 retransmission timer: SRTT/RTTVAR/RTO arithmetic, bounds, back-off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.shards.tcp.rtt import (
    INITIAL_RTO_S,
    MAX_RTO_S,
    MIN_RTO_S,
    RttEstimator,
)


def test_before_any_sample_rto_is_the_initial_one() -> None:
    # RFC 6298 (2.1): RTO = 1 s until a measurement is made
    r = RttEstimator()
    assert (r.rto, r.srtt, r.rttvar, r.backoffs) == (INITIAL_RTO_S, None, None, 0)
    assert (MIN_RTO_S, MAX_RTO_S, INITIAL_RTO_S) == (0.2, 120.0, 1.0)


def test_first_sample() -> None:
    # (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, K*RTTVAR)
    r = RttEstimator()
    r.sample(0.5)
    assert r.srtt == 0.5
    assert r.rttvar == 0.25
    assert r.rto == pytest.approx(0.5 + 4 * 0.25)


def test_subsequent_sample_updates_rttvar_with_the_old_srtt() -> None:
    # (2.3): RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'| (old SRTT), then
    # SRTT <- 7/8 SRTT + 1/8 R'
    r = RttEstimator()
    r.sample(0.5)
    r.sample(0.3)
    assert r.rttvar == pytest.approx(0.75 * 0.25 + 0.25 * 0.2)  # 0.2375
    assert r.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.3)  # 0.475
    assert r.rto == pytest.approx(0.475 + 4 * 0.2375)  # 1.425


def test_clock_granularity_floors_the_variance_term() -> None:
    # A perfectly steady RTT drives RTTVAR to ~0; then RTO = SRTT + G.
    r = RttEstimator(min_rto=0.001, granularity=0.01)
    for _ in range(200):
        r.sample(0.1)
    assert r.rttvar is not None and 4 * r.rttvar < 0.01
    assert r.rto == pytest.approx(0.1 + 0.01)


def test_minimum_rto_rfc_value_and_linux_value() -> None:
    # (2.4): the RFC's 1 s minimum when asked for, Linux's 200 ms by default
    rfc = RttEstimator(min_rto=1.0)
    rfc.sample(0.01)
    assert rfc.rto == 1.0
    linux = RttEstimator()
    linux.sample(0.01)
    assert linux.rto == 0.2


def test_maximum_rto() -> None:
    # (2.5): a maximum may be placed on RTO provided it is at least 60 s
    r = RttEstimator(max_rto=60.0)
    r.sample(50.0)
    assert r.rto == 60.0


def test_backoff_doubles_and_is_capped() -> None:
    # (5.5): RTO <- RTO * 2, at most the maximum
    r = RttEstimator(max_rto=10.0)
    r.sample(0.5)  # RTO 1.5
    rtos = []
    for _ in range(5):
        r.backoff()
        rtos.append(r.rto)
    assert rtos == [3.0, 6.0, 10.0, 10.0, 10.0]
    assert r.backoffs == 5
    r.reset_backoff()
    assert (r.rto, r.backoffs) == (1.5, 0)


def test_backoff_before_any_sample_starts_from_the_initial_rto() -> None:
    r = RttEstimator()
    r.backoff()
    r.backoff()
    assert r.rto == 4.0
    r.reset_backoff()
    assert r.rto == 1.0


def test_a_new_sample_ends_the_backoff() -> None:
    r = RttEstimator()
    r.sample(0.1)
    r.backoff()
    r.sample(0.1)
    assert r.backoffs == 0
    assert r.rto == pytest.approx(max(0.2, r.srtt + 4 * r.rttvar))


def test_reinitialize_after_syn_timeout() -> None:
    # (5.7): SYN timed out, no sample: RTO 3 s when data transmission begins
    r = RttEstimator()
    r.backoff()
    r.reinitialize()
    assert (r.rto, r.backoffs, r.srtt) == (3.0, 0, None)
    # with a (timestamp) sample the RTO is the computed one
    s = RttEstimator()
    s.sample(0.05)
    s.reinitialize()
    assert s.rto == 0.2


def test_negative_sample_counts_as_zero() -> None:
    r = RttEstimator()
    r.sample(-1.0)
    assert (r.srtt, r.rttvar, r.rto) == (0.0, 0.0, 0.2)


@pytest.mark.parametrize(
    "kw",
    [
        {"min_rto": 0.0},
        {"min_rto": 2.0, "max_rto": 1.0},
        {"initial_rto": 0.0},
        {"granularity": -1.0},
    ],
)
def test_bad_configuration(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RttEstimator(**kw)


def _reference(samples: list[float], g: float, lo: float, hi: float) -> float:
    """RFC 6298 §2 written out with no shortcuts."""
    srtt = rttvar = 0.0
    for i, r in enumerate(samples):
        if i == 0:
            srtt, rttvar = r, r / 2
        else:
            rttvar = (1 - 1 / 4) * rttvar + 1 / 4 * abs(srtt - r)
            srtt = (1 - 1 / 8) * srtt + 1 / 8 * r
    return min(hi, max(lo, srtt + max(g, 4 * rttvar)))


@given(
    st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=50),
    st.integers(min_value=0, max_value=12),
)
def test_matches_the_rfc_and_stays_in_bounds(samples: list[float], backoffs: int) -> None:
    r = RttEstimator(min_rto=0.2, max_rto=120.0)
    for s in samples:
        r.sample(s)
    assert r.rto == pytest.approx(_reference(samples, 0.001, 0.2, 120.0))
    for _ in range(backoffs):
        r.backoff()
        assert 0.2 <= r.rto <= 120.0
