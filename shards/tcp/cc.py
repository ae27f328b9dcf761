"""Congestion control: NewReno (RFC 5681 + RFC 3465) and CUBIC (RFC 9438).

Sans-I/O and pure arithmetic: the endpoint calls one method per event with
``now`` (seconds, the shard clock; nothing here reads a clock) and reads
``cwnd``/``ssthresh`` (bytes) back. The split of work:

* here: slow start and congestion avoidance (the window's growth on new
  ACKs), the multiplicative decrease when a loss is detected, the loss
  window on an RTO, the restart window after idle, the initial window;
* ``recovery.py``, driven by the endpoint: loss detection (dupthresh /
  RFC 6675 ``IsLost``), fast retransmit and the recovery episode itself
  (RFC 6582 NewReno or RFC 6675 SACK recovery). During an episode (``on_loss`` .. ``on_recovery_exit``)
  ``on_ack`` does not grow the window; the endpoint may write ``cwnd``
  itself there (RFC 5681 §3.2 step 4 inflation by 3*SMSS and per dup ACK,
  RFC 6582 partial-ACK deflation) and ``on_recovery_exit`` sets ``cwnd`` to
  ``ssthresh`` (RFC 6582 §3.2 step 3 option 2; RFC 6675 §5 step (C)).

Units: ``cwnd``, ``ssthresh``, ``acked_bytes``, ``in_flight`` and ``mss`` in
bytes; ``now`` and ``rtt`` in seconds. ``in_flight`` in ``on_ack`` is the
FlightSize (or RFC 6675 pipe) after the ACK was processed, before new data
is sent; it is used for RFC 7661-style validation: the window grows only
while the sender is using it (``app_limited_check``). In ``on_loss`` and
``on_rto`` it is the FlightSize when the loss is detected (RFC 5681 eq. 4).

Implemented: RFC 5681 §3.1 (slow start, congestion avoidance, eq. 4 for
ssthresh, the loss window on an RTO, ssthresh held on repeated RTOs of the
same episode), §4.1 (restart window after idle, with RFC 2861 §3's
``ssthresh = max(ssthresh, 3/4 cwnd)``), RFC 3465 (ABC with L = 2 in slow
start, byte counting in CA), RFC 6928 (IW10), RFC 9438 §4 (W_cubic, K, the
target clamp [cwnd, 1.5 cwnd], the Reno-friendly W_est with alpha_cubic and
alpha = 1 once W_est >= cwnd_prior, concave/convex regions, multiplicative
decrease with beta_cubic = 0.7 on FlightSize, fast convergence, §4.8 timeout
(K = 0, W_max = cwnd_epoch), §5.8 the epoch excludes idle periods).
Left out: HyStart++ (RFC 9406; RFC 9438 §4.10 allows Reno slow start),
RFC 9438 §4.9 spurious-loss undo, ECN (RFC 3168), PRR (RFC 6937).
"""

from __future__ import annotations

from typing import Protocol

INFINITE_SSTHRESH = (
    0x7FFFFFFF  # bytes; RFC 5681 §3.1 "arbitrarily high" (Linux TCP_INFINITE_SSTHRESH)
)
MAX_CWND = 1 << 30  # bytes; no window can use more (RFC 7323 §2.3 max window 2**30)
ABC_L = 2  # RFC 3465 §2.2: slow-start increase per ACK at most L*SMSS
IW_SEGMENTS = 10  # RFC 6928 §2
IW_BYTES = 14600  # RFC 6928 §2
NEWRENO_BETA = 0.5  # RFC 5681 eq. 4: FlightSize / 2
CUBIC_C = 0.4  # RFC 9438 §5.1: segments / s**3
CUBIC_BETA = 0.7  # RFC 9438 §4.6
CUBIC_ALPHA = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)  # RFC 9438 §4.3
IDLE_SSTHRESH_FACTOR = 0.75  # RFC 2861 §3 (Linux tcp_cwnd_restart)


def initial_window(mss: int) -> int:
    """RFC 6928 §2: min(10*MSS, max(2*MSS, 14600)) bytes."""
    return min(IW_SEGMENTS * mss, max(2 * mss, IW_BYTES))


_iw = initial_window  # the constructors' keyword argument shadows the name


class CongestionControl(Protocol):
    """What the endpoint drives (see the module docstring for the split)."""

    name: str
    mss: int
    cwnd: int  # bytes
    ssthresh: int  # bytes
    in_recovery: bool

    def on_ack(self, now: float, acked_bytes: int, rtt: float | None, in_flight: int) -> None: ...

    def on_loss(self, now: float, in_flight: int) -> None: ...

    def on_recovery_exit(self, now: float) -> None: ...

    def on_rto(self, now: float, in_flight: int) -> None: ...

    def on_mss_change(self, mss: int) -> None: ...

    def on_idle(self, now: float) -> None: ...


class _Base:
    """Shared state and the RFC 5681 parts both algorithms use."""

    __slots__ = (
        "mss",
        "cwnd",
        "ssthresh",
        "in_recovery",
        "iw",
        "_iw_auto",
        "max_cwnd",
        "app_limited_check",
        "_bytes_acked",
        "_rto_episode",
        "loss_events",
        "rto_events",
    )

    name = "base"

    def __init__(
        self,
        mss: int,
        *,
        initial_window: int | None = None,
        max_cwnd: int = MAX_CWND,
        app_limited_check: bool = True,
    ) -> None:
        if mss < 1:
            raise ValueError(f"mss must be >= 1, got {mss}")
        self.mss = mss
        iw = _iw(mss) if initial_window is None else initial_window
        if iw < 1:
            raise ValueError(f"initial_window must be >= 1, got {iw}")
        self.iw = iw  # bytes, also the restart window's bound (RFC 5681 §4.1)
        self._iw_auto = initial_window is None
        self.cwnd = iw
        self.ssthresh = INFINITE_SSTHRESH
        self.in_recovery = False
        self.max_cwnd = max_cwnd
        self.app_limited_check = app_limited_check
        self._bytes_acked = 0  # RFC 3465 §2.1 CA byte counter
        self._rto_episode = False  # an RTO happened and no new data was ACKed since
        self.loss_events = 0
        self.rto_events = 0

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def _cwnd_limited(self, acked_bytes: int, in_flight: int) -> bool:
        """RFC 7661 §4.3 in spirit (Linux tcp_is_cwnd_limited): grow only
        when the window was in use. In slow start, half used is enough."""
        if not self.app_limited_check:
            return True
        used = in_flight + acked_bytes
        if self.cwnd < self.ssthresh:
            return 2 * used > self.cwnd
        return used + self.mss > self.cwnd

    def _slow_start(self, acked_bytes: int) -> int:
        """RFC 5681 §3.1 eq. 2 with RFC 3465 L=2: returns the part of
        ``acked_bytes`` left over once cwnd reached ssthresh (for CA)."""
        inc = acked_bytes
        lim = ABC_L * self.mss
        if inc > lim:
            inc = lim
        new = self.cwnd + inc
        if new <= self.ssthresh:
            self.cwnd = new
            return 0
        left = new - self.ssthresh
        self.cwnd = max(self.cwnd, self.ssthresh)
        return left

    def on_recovery_exit(self, now: float) -> None:
        # RFC 6582 §3.2 step 3 (full ACK), option (2); RFC 6675 §5 (C) leaves
        # cwnd at ssthresh. No episode (none began, or an RTO ended it): no-op.
        if not self.in_recovery:
            return
        self.in_recovery = False
        self.cwnd = self.ssthresh
        self._bytes_acked = 0

    def on_mss_change(self, mss: int) -> None:
        """The path's MSS changed (PMTUD, RFC 1191/8201): windows stay in bytes,
        but never below the minimums of RFC 5681 (1 MSS loss window)."""
        if mss < 1:
            raise ValueError(f"mss must be >= 1, got {mss}")
        self.mss = mss
        if self._iw_auto:
            self.iw = _iw(mss)
        if self.cwnd < mss:
            self.cwnd = mss
        if self.ssthresh < 2 * mss:
            self.ssthresh = 2 * mss

    def on_idle(self, now: float) -> None:
        """RFC 5681 §4.1: before sending after an idle period longer than the
        RTO, cwnd = RW = min(IW, cwnd); RFC 2861 §3: remember 3/4 of the old
        cwnd in ssthresh so slow start goes back there quickly."""
        rw = min(self.iw, self.cwnd)
        if self.cwnd > rw:
            keep = int(self.cwnd * IDLE_SSTHRESH_FACTOR)
            if keep > self.ssthresh:
                self.ssthresh = keep
            self.cwnd = rw
        self._bytes_acked = 0

    def _rto_ssthresh(self, in_flight: int, beta: float) -> None:
        # RFC 5681 §3.1: on the first RTO of a segment ssthresh = eq. 4; on
        # later RTOs (nothing new ACKed since) ssthresh is held.
        if not self._rto_episode:
            self.ssthresh = max(int(in_flight * beta), 2 * self.mss)
        self._rto_episode = True
        self.cwnd = self.mss  # RFC 5681 §3.1: loss window LW = 1 SMSS
        self.in_recovery = False
        self._bytes_acked = 0
        self.rto_events += 1

    def stats(self) -> dict[str, object]:
        """For ``ctl conns`` (like ``ss -ti``)."""
        return {
            "cc": self.name,
            "cwnd": self.cwnd,
            "ssthresh": self.ssthresh,
            "mss": self.mss,
            "loss_events": self.loss_events,
            "rto_events": self.rto_events,
        }


class NewReno(_Base):
    """RFC 5681 Reno window with RFC 3465 byte counting; the endpoint runs the
    RFC 6582 recovery."""

    __slots__ = ()

    name = "newreno"

    def on_ack(self, now: float, acked_bytes: int, rtt: float | None, in_flight: int) -> None:
        if acked_bytes <= 0:
            return
        self._rto_episode = False
        if self.in_recovery or not self._cwnd_limited(acked_bytes, in_flight):
            return
        if self.cwnd < self.ssthresh:
            acked_bytes = self._slow_start(acked_bytes)
            if not acked_bytes:
                return
        # RFC 3465 §2.1 / RFC 5681 §3.1: +SMSS once a full cwnd was ACKed
        ba = self._bytes_acked + acked_bytes
        cwnd = self.cwnd
        if ba >= cwnd:
            ba -= cwnd
            cwnd += self.mss
            self.cwnd = cwnd if cwnd < self.max_cwnd else self.max_cwnd
        self._bytes_acked = ba

    def on_loss(self, now: float, in_flight: int) -> None:
        # RFC 5681 eq. 4; cwnd = ssthresh (the endpoint adds 3*SMSS if it
        # does RFC 5681/6582 inflation)
        mss = self.mss
        ss = in_flight // 2
        self.ssthresh = ss if ss > 2 * mss else 2 * mss
        self.cwnd = self.ssthresh
        self.in_recovery = True
        self._bytes_acked = 0
        self.loss_events += 1

    def on_rto(self, now: float, in_flight: int) -> None:
        self._rto_ssthresh(in_flight, NEWRENO_BETA)


class Cubic(_Base):
    """RFC 9438 CUBIC. Windows are kept in bytes: W_cubic(t) = C*MSS*(t-K)**3
    + W_max, K = cbrt((W_max - cwnd_epoch) / (C*MSS)), which is the RFC's
    segment formula times MSS."""

    __slots__ = (
        "c",
        "beta",
        "fast_convergence",
        "w_max",
        "cwnd_prior",
        "k",
        "w_est",
        "_epoch",
        "_cwnd_epoch",
        "_frac",
        "_srtt",
        "_alpha",
    )

    name = "cubic"

    def __init__(
        self,
        mss: int,
        *,
        initial_window: int | None = None,
        max_cwnd: int = MAX_CWND,
        app_limited_check: bool = True,
        fast_convergence: bool = True,
        c: float = CUBIC_C,
        beta: float = CUBIC_BETA,
    ) -> None:
        super().__init__(
            mss,
            initial_window=initial_window,
            max_cwnd=max_cwnd,
            app_limited_check=app_limited_check,
        )
        if not 0.0 < beta < 1.0 or c <= 0.0:
            raise ValueError("need 0 < beta < 1 and c > 0")
        self.c = c
        self.beta = beta
        self.fast_convergence = fast_convergence
        self.w_max: float | None = None  # bytes; None: no congestion event yet (or after an RTO)
        self.cwnd_prior: float = 0.0  # bytes
        self.k = 0.0  # seconds
        self.w_est = 0.0  # bytes
        self._epoch: float | None = None  # t_epoch; None = the next CA ACK starts an epoch
        self._cwnd_epoch = 0.0
        self._frac = 0.0  # fractional bytes of growth not yet in cwnd
        self._srtt: float | None = None
        self._alpha = 3.0 * (1.0 - beta) / (1.0 + beta)

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1 in bytes, ``t`` seconds since the epoch began."""
        d = t - self.k
        return self.c * self.mss * d * d * d + (self.w_max or 0.0)

    def _start_epoch(self, now: float) -> None:
        cw = float(self.cwnd)
        self._epoch = now
        self._cwnd_epoch = cw
        w_max = self.w_max
        if w_max is None or w_max <= cw:
            # §4.8 (after an RTO), §4.10 (no loss yet), or already above
            # W_max: the plateau is here (K = 0, W_max = cwnd_epoch)
            self.w_max = cw
            self.k = 0.0
        else:
            # RFC 9438 eq. 2
            self.k = ((w_max - cw) / (self.c * self.mss)) ** (1.0 / 3.0)
        self.w_est = cw  # §4.3
        self._frac = 0.0

    def on_ack(self, now: float, acked_bytes: int, rtt: float | None, in_flight: int) -> None:
        if acked_bytes <= 0:
            return
        self._rto_episode = False
        if rtt is not None and rtt >= 0.0:
            s = self._srtt
            self._srtt = rtt if s is None else s + (rtt - s) * 0.125  # RFC 6298 §2.3 alpha
        if self.in_recovery or not self._cwnd_limited(acked_bytes, in_flight):
            return
        if self.cwnd < self.ssthresh:
            acked_bytes = self._slow_start(acked_bytes)
            if not acked_bytes:
                return
        if self._epoch is None:
            self._start_epoch(now)
        cwnd = self.cwnd + self._frac
        t = now - self._epoch  # type: ignore[operator]
        mss = self.mss
        # §4.3 Reno-friendly estimate, byte-counted (segments_acked / cwnd
        # in segments = acked_bytes / cwnd in bytes; times MSS for bytes)
        alpha = 1.0 if self.w_est >= self.cwnd_prior else self._alpha
        self.w_est += alpha * mss * acked_bytes / cwnd
        if self.w_cubic(t) < self.w_est:
            new = self.w_est if self.w_est > cwnd else cwnd
        else:
            # §4.2 target = W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd];
            # §4.4/§4.5: cwnd += (target - cwnd) / cwnd per ACKed segment
            srtt = self._srtt or 0.0
            target = self.w_cubic(t + srtt)
            if target < cwnd:
                target = cwnd
            elif target > 1.5 * cwnd:
                target = 1.5 * cwnd
            new = cwnd + (target - cwnd) * acked_bytes / cwnd
        if new > self.max_cwnd:
            new = float(self.max_cwnd)
        n = int(new)
        self.cwnd = n
        self._frac = new - n

    def on_loss(self, now: float, in_flight: int) -> None:
        cwnd = float(self.cwnd)
        # §4.7 fast convergence, then §4.6 multiplicative decrease
        if self.fast_convergence and self.w_max is not None and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + self.beta) / 2.0
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        mss = self.mss
        ss = int(in_flight * self.beta)
        self.ssthresh = ss if ss > 2 * mss else 2 * mss
        self.cwnd = self.ssthresh
        self._epoch = None
        self._frac = 0.0
        self.in_recovery = True
        self._bytes_acked = 0
        self.loss_events += 1

    def on_rto(self, now: float, in_flight: int) -> None:
        # §4.8: cwnd as Reno (loss window), ssthresh with beta_cubic; the
        # next CA epoch has K = 0 and W_max = cwnd_epoch.
        if not self._rto_episode:
            self.cwnd_prior = float(self.cwnd)
        self._rto_ssthresh(in_flight, self.beta)
        self.w_max = None
        self._epoch = None
        self._frac = 0.0

    def on_idle(self, now: float) -> None:
        # §5.8: t must not include the idle period: a new epoch starts when
        # congestion avoidance resumes (W_max is kept).
        super().on_idle(now)
        self._epoch = None
        self._frac = 0.0

    def stats(self) -> dict[str, object]:
        d = super().stats()
        d["w_max"] = self.w_max
        d["k"] = self.k
        return d


_ALGORITHMS = {"newreno": NewReno, "cubic": Cubic}
CC_NAMES = tuple(sorted(_ALGORITHMS))


def make_cc(
    name: str,
    mss: int,
    *,
    initial_window: int | None = None,
    max_cwnd: int = MAX_CWND,
    app_limited_check: bool = True,
    fast_convergence: bool = True,
) -> CongestionControl:
    """A congestion controller by name ("cubic" or "newreno"); the initial
    window defaults to RFC 6928's. ``fast_convergence`` applies to CUBIC."""
    cls = _ALGORITHMS.get(name)
    if cls is None:
        raise ValueError(f"unknown congestion control {name!r}; valid: {', '.join(CC_NAMES)}")
    if cls is Cubic:
        return Cubic(
            mss,
            initial_window=initial_window,
            max_cwnd=max_cwnd,
            app_limited_check=app_limited_check,
            fast_convergence=fast_convergence,
        )
    return cls(
        mss,
        initial_window=initial_window,
        max_cwnd=max_cwnd,
        app_limited_check=app_limited_check,
    )
