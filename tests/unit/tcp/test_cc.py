"""Congestion control: NewReno (RFC 5681, RFC 3465) and CUBIC (RFC 9438) with a
fake clock (``now`` is just a float the test advances)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.shards.tcp.cc import (
    CC_NAMES,
    CUBIC_ALPHA,
    CUBIC_BETA,
    CUBIC_C,
    INFINITE_SSTHRESH,
    CongestionControl,
    Cubic,
    NewReno,
    initial_window,
    make_cc,
)

MSS = 1000
BOTH = ("newreno", "cubic")


def one_rtt(
    cc: CongestionControl, now: float, rtt: float, per_ack: int = MSS, window: int | None = None
) -> float:
    """One round of an ACK-clocked bulk sender: the ACKs for the window sent at
    the start come back spread over one RTT, each for ``per_ack`` bytes, and
    the sender keeps the window full (FlightSize before each ACK = cwnd).
    Returns the time after the round."""
    w = cc.cwnd if window is None else window
    n = -(-w // per_ack)
    for i in range(n):
        acked = min(per_ack, w - i * per_ack)
        cc.on_ack(now + rtt * i / n, acked, rtt, max(0, cc.cwnd - acked))
    return now + rtt


# ------------------------------------------------------------ construction


@pytest.mark.parametrize(
    ("mss", "iw"),
    [(1460, 14600), (536, 5360), (1220, 12200), (9000, 18000), (4000, 14600)],
)
def test_initial_window_rfc6928(mss: int, iw: int) -> None:
    # RFC 6928 §2: min(10*MSS, max(2*MSS, 14600))
    assert initial_window(mss) == iw
    for name in BOTH:
        cc = make_cc(name, mss)
        assert (cc.cwnd, cc.ssthresh, cc.mss) == (iw, INFINITE_SSTHRESH, mss)


def test_initial_window_override_and_names() -> None:
    assert make_cc("newreno", MSS, initial_window=3000).cwnd == 3000
    assert isinstance(make_cc("newreno", MSS), NewReno)
    assert isinstance(make_cc("cubic", MSS), Cubic)
    assert make_cc("cubic", MSS).name == "cubic"
    assert CC_NAMES == ("cubic", "newreno")


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as exc:
        make_cc("bbr", MSS)
    assert "cubic" in str(exc.value) and "newreno" in str(exc.value)


@pytest.mark.parametrize("kw", [{"mss": 0}, {"mss": MSS, "initial_window": 0}])
def test_bad_arguments(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        NewReno(**kw)  # type: ignore[arg-type]


# -------------------------------------------------------------- slow start


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("per_ack", [MSS, 2 * MSS])  # every segment / delayed ACKs
def test_slow_start_doubles_per_rtt(name: str, per_ack: int) -> None:
    # RFC 5681 §3.1 with RFC 3465 L = 2: delayed ACKs double cwnd too
    cc = make_cc(name, MSS, initial_window=10 * MSS)
    now = 0.0
    windows = [cc.cwnd]
    for _ in range(4):
        now = one_rtt(cc, now, 0.1, per_ack)
        windows.append(cc.cwnd)
    assert windows == [10 * MSS, 20 * MSS, 40 * MSS, 80 * MSS, 160 * MSS]


@pytest.mark.parametrize("name", BOTH)
def test_abc_limits_slow_start_increase_to_two_mss(name: str) -> None:
    # RFC 3465 §2.2: one stretch ACK of 10 segments grows cwnd by 2*SMSS only
    cc = make_cc(name, MSS)
    cc.on_ack(0.0, 10 * MSS, 0.1, 0)
    assert cc.cwnd == 12 * MSS


@pytest.mark.parametrize("name", BOTH)
def test_slow_start_stops_at_ssthresh(name: str) -> None:
    cc = make_cc(name, MSS)
    cc.ssthresh = 11 * MSS
    cc.on_ack(0.0, 2 * MSS, 0.1, 9 * MSS)
    assert cc.cwnd >= 11 * MSS
    assert cc.cwnd < 12 * MSS  # the leftover went to congestion avoidance


@pytest.mark.parametrize("name", BOTH)
def test_no_growth_when_application_limited(name: str) -> None:
    # RFC 7661 in spirit: one small request/response at a time never uses cwnd
    cc = make_cc(name, MSS)
    for i in range(100):
        cc.on_ack(i * 0.1, MSS, 0.1, 0)
    assert cc.cwnd == 10 * MSS
    free = make_cc(name, MSS, app_limited_check=False)
    free.on_ack(0.0, MSS, 0.1, 0)
    assert free.cwnd == 11 * MSS


@pytest.mark.parametrize("name", BOTH)
def test_zero_or_negative_ack_changes_nothing(name: str) -> None:
    cc = make_cc(name, MSS)
    cc.on_ack(0.0, 0, None, 5000)
    cc.on_ack(0.0, -5, None, 5000)
    assert cc.cwnd == 10 * MSS


# ---------------------------------------------------- NewReno: CA and loss


def test_newreno_congestion_avoidance_grows_one_mss_per_rtt() -> None:
    # RFC 5681 §3.1 eq. 3 / RFC 3465 §2.1: +1 SMSS per window ACKed
    cc = make_cc("newreno", MSS, initial_window=20 * MSS)
    cc.ssthresh = 20 * MSS
    now = 0.0
    seen = []
    for _ in range(10):
        now = one_rtt(cc, now, 0.1, 2 * MSS)
        seen.append(cc.cwnd // MSS)
    assert seen == list(range(21, 31))


def test_newreno_loss_halves_flight_size() -> None:
    # RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS), cwnd = ssthresh
    cc = make_cc("newreno", MSS, initial_window=40 * MSS)
    cc.on_loss(1.0, 30 * MSS)
    assert (cc.ssthresh, cc.cwnd, cc.in_recovery) == (15 * MSS, 15 * MSS, True)
    small = make_cc("newreno", MSS)
    small.on_loss(1.0, 3 * MSS)
    assert small.ssthresh == small.cwnd == 2 * MSS


@pytest.mark.parametrize("name", BOTH)
def test_recovery_exit_without_an_episode_is_a_no_op(name: str) -> None:
    cc = make_cc(name, MSS)
    cc.on_recovery_exit(0.0)
    assert (cc.cwnd, cc.ssthresh) == (10 * MSS, INFINITE_SSTHRESH)
    cc.on_loss(1.0, 10 * MSS)
    cc.on_rto(2.0, 10 * MSS)  # the RTO ended the episode
    cc.on_recovery_exit(3.0)
    assert cc.cwnd == MSS


@pytest.mark.parametrize("name", BOTH)
def test_no_growth_during_recovery_then_cwnd_is_ssthresh(name: str) -> None:
    cc = make_cc(name, MSS, initial_window=40 * MSS)
    cc.on_loss(1.0, 40 * MSS)
    ss = cc.ssthresh
    cc.cwnd = ss + 3 * MSS  # the endpoint's RFC 5681 §3.2 step 4 inflation
    cc.on_ack(1.1, 5 * MSS, 0.1, 30 * MSS)  # partial ACK (RFC 6582)
    assert cc.cwnd == ss + 3 * MSS
    cc.on_recovery_exit(1.2)
    assert (cc.cwnd, cc.in_recovery) == (ss, False)


# --------------------------------------------------------------------- RTO


@pytest.mark.parametrize(("name", "beta"), [("newreno", 0.5), ("cubic", CUBIC_BETA)])
def test_rto_resets_to_the_loss_window(name: str, beta: float) -> None:
    # RFC 5681 §3.1: cwnd = LW = 1 SMSS; ssthresh from FlightSize (RFC 9438
    # §4.8: CUBIC uses beta_cubic there)
    cc = make_cc(name, MSS, initial_window=40 * MSS)
    cc.on_rto(1.0, 40 * MSS)
    assert cc.cwnd == MSS
    assert cc.ssthresh == int(40 * MSS * beta)
    # a second RTO of the same segment holds ssthresh (RFC 5681 §3.1)
    cc.on_rto(3.0, 40 * MSS - 1)
    assert cc.ssthresh == int(40 * MSS * beta)
    # new data ACKed, then a fresh RTO recomputes it
    cc.on_ack(4.0, MSS, None, 0)
    cc.on_rto(5.0, 2 * MSS)
    assert cc.ssthresh == 2 * MSS  # floor: max(FlightSize*beta, 2*SMSS)
    assert cc.cwnd == MSS


@pytest.mark.parametrize("name", BOTH)
def test_rto_ends_recovery_and_slow_start_follows(name: str) -> None:
    cc = make_cc(name, MSS, initial_window=40 * MSS)
    cc.on_loss(1.0, 40 * MSS)
    cc.on_rto(2.0, 40 * MSS)
    assert not cc.in_recovery
    cc.on_ack(2.5, MSS, 0.1, 0)  # the retransmission is ACKed: cwnd fully used
    assert cc.cwnd == 2 * MSS


# -------------------------------------------------------- MSS change, idle


@pytest.mark.parametrize("name", BOTH)
def test_mss_change_keeps_bytes_and_floors(name: str) -> None:
    cc = make_cc(name, 1460)
    cc.on_mss_change(1200)
    assert (cc.mss, cc.cwnd) == (1200, 14600)
    cc.on_idle(1.0)  # the restart window follows the new MSS (RFC 6928)
    assert cc.cwnd == 12000
    cc.on_rto(0.0, 0)
    cc.on_mss_change(9000)
    assert cc.cwnd == 9000 and cc.ssthresh >= 18000
    with pytest.raises(ValueError):
        cc.on_mss_change(0)


@pytest.mark.parametrize("name", BOTH)
def test_restart_window_after_idle(name: str) -> None:
    # RFC 5681 §4.1: cwnd = min(IW, cwnd); RFC 2861 §3: ssthresh keeps 3/4
    cc = make_cc(name, MSS, initial_window=10 * MSS)
    cc.on_loss(0.0, 80 * MSS)
    cc.on_recovery_exit(0.0)
    cc.cwnd = 80 * MSS
    cc.on_idle(100.0)
    assert cc.cwnd == 10 * MSS
    assert cc.ssthresh == 60 * MSS
    small = make_cc(name, MSS, initial_window=10 * MSS)
    small.cwnd = 4 * MSS
    small.on_idle(1.0)
    assert small.cwnd == 4 * MSS


def test_cubic_epoch_excludes_idle_time() -> None:
    # RFC 9438 §5.8: t must not include the idle period
    cc = Cubic(MSS, initial_window=100 * MSS, app_limited_check=False)
    cc.on_loss(0.0, 100 * MSS)
    cc.on_recovery_exit(0.0)
    now = one_rtt(cc, 0.0, 0.1)  # CA epoch starts at t = 0
    before = cc.cwnd
    cc.on_idle(1000.0)
    now = 1000.0
    while cc.cwnd < cc.ssthresh:  # slow start back
        now = one_rtt(cc, now, 0.1)
    epoch_cwnd = cc.cwnd
    now = one_rtt(cc, now, 0.1)
    # one RTT of CA: a small concave step, not W_cubic(1000 s)
    assert cc.cwnd < epoch_cwnd + 3 * MSS
    assert before <= 100 * MSS


# ------------------------------------------------------------------- CUBIC


def test_cubic_loss_is_beta_0_7_and_records_w_max() -> None:
    # RFC 9438 §4.6: ssthresh = flight_size * 0.7, cwnd = max(ssthresh, 2)
    cc = Cubic(MSS, initial_window=100 * MSS)
    cc.on_loss(0.0, 100 * MSS)
    assert cc.ssthresh == cc.cwnd == 70 * MSS
    assert cc.w_max == 100 * MSS
    assert cc.cwnd_prior == 100 * MSS
    assert CUBIC_ALPHA == pytest.approx(3 * 0.3 / 1.7)


def test_cubic_fast_convergence() -> None:
    # RFC 9438 §4.7: a loss below the previous W_max lowers W_max further
    for fc, expected in ((True, 80 * MSS * (1 + 0.7) / 2), (False, 80 * MSS)):
        cc = make_cc("cubic", MSS, initial_window=100 * MSS, fast_convergence=fc)
        assert isinstance(cc, Cubic)
        cc.on_loss(0.0, 100 * MSS)
        cc.on_recovery_exit(0.0)
        cc.cwnd = 80 * MSS
        cc.on_loss(5.0, 80 * MSS)
        assert cc.w_max == pytest.approx(expected)
        assert cc.ssthresh == 56 * MSS
    # a loss above W_max just records cwnd
    cc = Cubic(MSS, initial_window=100 * MSS)
    cc.on_loss(0.0, 100 * MSS)
    cc.cwnd = 120 * MSS
    cc.on_loss(9.0, 120 * MSS)
    assert cc.w_max == 120 * MSS


def rfc_w_cubic(t: float, w_max_seg: float, cwnd_epoch_seg: float) -> float:
    """RFC 9438 eq. 1 and 2, in segments."""
    k = ((w_max_seg - cwnd_epoch_seg) / CUBIC_C) ** (1 / 3)
    return CUBIC_C * (t - k) ** 3 + w_max_seg


def test_cubic_concave_then_convex_around_w_max() -> None:
    # A large window so the cubic function (not W_est) drives cwnd: W_max =
    # 1000 segments, cwnd_epoch = 700, K = cbrt(300 / 0.4) ~ 9.09 s.
    w_max = 1000
    cc = Cubic(MSS, initial_window=w_max * MSS)
    cc.on_loss(0.0, w_max * MSS)
    cc.on_recovery_exit(0.0)
    k = (300 / CUBIC_C) ** (1 / 3)
    rtt = 0.1
    now = 0.0
    trace: list[tuple[float, float]] = []
    while now < k + 5.0:
        now = one_rtt(cc, now, rtt, per_ack=4 * MSS)
        trace.append((now, cc.cwnd / MSS))
    assert cc.k == pytest.approx(k)
    for t, w in trace:
        # the RFC's formula, to 0.3 %
        assert w == pytest.approx(rfc_w_cubic(t, w_max, 700), rel=3e-3), t
        if t < k - 0.5:
            assert w < w_max  # concave: below the plateau until K
    assert cc.w_est < 800 * MSS  # the Reno estimate stayed out of the way

    def growth(a: float, b: float) -> float:
        ws = [w for t, w in trace if a <= t <= b]
        return ws[-1] - ws[0]

    # concave: growth slows approaching W_max; convex: speeds up after it
    assert growth(0.5, 2.5) > growth(3.5, 5.5) > growth(k - 1.0, k + 1.0)
    assert growth(k - 1.0, k + 1.0) < growth(k + 1.0, k + 3.0) < growth(k + 3.0, k + 5.0)
    # at t = K the window is at the plateau
    at_k = min(trace, key=lambda p: abs(p[0] - k))[1]
    assert at_k == pytest.approx(w_max, rel=2e-3)


def test_cubic_target_is_clamped_to_1_5_cwnd_per_rtt() -> None:
    # RFC 9438 §4.2: target <= 1.5 * cwnd, so growth is below slow start's
    cc = Cubic(MSS, initial_window=100 * MSS)
    cc.on_loss(0.0, 100 * MSS)
    cc.on_recovery_exit(0.0)
    one_rtt(cc, 0.0, 0.1)  # starts the epoch at t = 0
    start = cc.cwnd
    one_rtt(cc, 60.0, 0.1)  # W_cubic(60 s) is enormous
    assert cc.cwnd <= 1.5 * start + MSS


def test_cubic_reno_friendly_region() -> None:
    # RFC 9438 §4.3: small W_max and a short RTT: W_est (alpha_cubic per RTT,
    # then 1 per RTT once W_est >= cwnd_prior) is above W_cubic and wins.
    cc = Cubic(MSS, initial_window=10 * MSS)
    cc.on_loss(0.0, 10 * MSS)  # cwnd 7, W_max 10, K = cbrt(7.5) ~ 1.96 s
    cc.on_recovery_exit(0.0)
    now = 0.0
    rtt = 0.001
    for _ in range(3):
        now = one_rtt(cc, now, rtt)
    assert cc.cwnd == pytest.approx(cc.w_est, abs=1)
    assert cc.w_est == pytest.approx((7 + 3 * CUBIC_ALPHA) * MSS, rel=0.02)
    w_est0 = cc.w_est
    rounds = 0
    while cc.w_est < 10 * MSS:
        now = one_rtt(cc, now, rtt)
        rounds += 1
    # (10 - w_est0) / alpha_cubic RTTs, give or take the per-ACK discreteness
    assert rounds == pytest.approx((10 * MSS - w_est0) / MSS / CUBIC_ALPHA, abs=1.5)
    assert cc.cwnd == pytest.approx(cc.w_est, abs=1)
    assert cc.w_cubic(now) < cc.w_est
    before = cc.cwnd
    for _ in range(10):
        now = one_rtt(cc, now, rtt)
    # alpha = 1: one segment per RTT, like Reno
    assert (cc.cwnd - before) / MSS == pytest.approx(10, abs=0.6)


def test_cubic_after_rto_starts_at_k_zero() -> None:
    # RFC 9438 §4.8: first CA after a timeout: K = 0, W_max = cwnd_epoch
    cc = Cubic(MSS, initial_window=100 * MSS)
    cc.on_loss(0.0, 100 * MSS)
    cc.on_recovery_exit(0.0)
    cc.on_rto(1.0, 70 * MSS)
    assert (cc.cwnd, cc.ssthresh, cc.w_max) == (MSS, 49 * MSS, None)
    now = 2.0
    while cc.cwnd < cc.ssthresh:
        now = one_rtt(cc, now, 0.1)
    now = one_rtt(cc, now, 0.1)
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(49 * MSS, abs=2 * MSS)


def test_cwnd_never_exceeds_max_cwnd() -> None:
    for name in BOTH:
        cc = make_cc(name, MSS, max_cwnd=50 * MSS, app_limited_check=False)
        cc.ssthresh = 30 * MSS
        now = 0.0
        for _ in range(60):
            now = one_rtt(cc, now, 0.1, 2 * MSS)
        assert cc.cwnd == 50 * MSS


def test_stats() -> None:
    cc = make_cc("cubic", MSS)
    s = cc.stats()  # type: ignore[attr-defined]
    assert s["cc"] == "cubic" and s["cwnd"] == 10 * MSS and s["ssthresh"] == INFINITE_SSTHRESH


_events = st.lists(
    st.one_of(
        st.tuples(
            st.just("ack"),
            st.integers(0, 64 * MSS),
            st.none() | st.floats(0, 2),
            st.integers(0, 1 << 22),
        ),
        st.tuples(st.just("loss"), st.integers(0, 1 << 22)),
        st.tuples(st.just("exit")),
        st.tuples(st.just("rto"), st.integers(0, 1 << 22)),
        st.tuples(st.just("idle")),
        st.tuples(st.just("mss"), st.integers(88, 9000)),
    ),
    max_size=60,
)


@given(st.sampled_from(BOTH), _events, st.floats(0.0, 0.5))
def test_invariants_under_any_event_sequence(name: str, events: list[tuple], dt: float) -> None:
    cc = make_cc(name, MSS)
    now = 0.0
    for ev in events:
        now += dt
        kind = ev[0]
        if kind == "ack":
            cc.on_ack(now, ev[1], ev[2], ev[3])
        elif kind == "loss":
            cc.on_loss(now, ev[1])
        elif kind == "exit":
            cc.on_recovery_exit(now)
        elif kind == "rto":
            cc.on_rto(now, ev[1])
        elif kind == "idle":
            cc.on_idle(now)
        else:
            cc.on_mss_change(ev[1])
        assert isinstance(cc.cwnd, int) and isinstance(cc.ssthresh, int)
        assert cc.mss <= cc.cwnd <= max(1 << 30, cc.iw)  # type: ignore[attr-defined]
        assert cc.ssthresh >= 2 * cc.mss or cc.ssthresh == INFINITE_SSTHRESH
