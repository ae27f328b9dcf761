"""The retransmission timer's value, RFC 6298: SRTT, RTTVAR, RTO and back-off.

Sans-I/O: the endpoint measures RTTs (Karn's algorithm, RFC 6298 §3: never
from a retransmitted segment unless timestamps disambiguate, RFC 7323 §4)
and feeds them to :meth:`RttEstimator.sample`; it arms the timer itself with
:attr:`RttEstimator.rto`. Implemented: §2 (2.1-2.5, with the minimum and
maximum configurable: Linux's 200 ms minimum by default, the RFC's 1 s on
request), §5.5 back-off (doubling, capped at the maximum), §5.7 re-initialisation
to 3 s after a SYN timeout (:meth:`RttEstimator.reinitialize`).
Left out: RFC 7323 Appendix G's per-ACK sample weighting (one sample per
ACK is fed as it comes), Linux's mdev/mdev_max variance tracking.
"""

from __future__ import annotations

INITIAL_RTO_S = 1.0  # RFC 6298 §2.1
MIN_RTO_S = 0.2  # Linux TCP_RTO_MIN (RFC 6298 §2.4 says 1 s)
MAX_RTO_S = 120.0  # Linux TCP_RTO_MAX (RFC 6298 §2.5: at least 60 s)
CLOCK_GRANULARITY_S = 0.001  # G of RFC 6298 §2: the shard loop's timers run in ms
SYN_TIMEOUT_RTO_S = 3.0  # RFC 6298 §5.7
ALPHA = 0.125  # RFC 6298 §2.3: 1/8
BETA = 0.25  # RFC 6298 §2.3: 1/4
K = 4  # RFC 6298 §2.2


class RttEstimator:
    """SRTT/RTTVAR/RTO of one connection (seconds, floats).

    ``rto`` is the value to arm the retransmission timer with: the computed
    RTO times 2**backoffs, capped at ``max_rto``. A new sample recomputes the
    RTO (RFC 6298 §2.3) and so ends any back-off, as the RFC's (5.5)-(2.3)
    sequence does; :meth:`reset_backoff` ends it without a sample (e.g. on an
    ACK of new data when no sample could be taken)."""

    __slots__ = (
        "min_rto",
        "max_rto",
        "granularity",
        "_srtt",
        "_rttvar",
        "_base",
        "_rto",
        "_backoffs",
        "samples",
    )

    def __init__(
        self,
        min_rto: float = MIN_RTO_S,
        max_rto: float = MAX_RTO_S,
        initial_rto: float = INITIAL_RTO_S,
        *,
        granularity: float = CLOCK_GRANULARITY_S,
    ) -> None:
        if not 0 < min_rto <= max_rto or initial_rto <= 0 or granularity < 0:
            raise ValueError("need 0 < min_rto <= max_rto, initial_rto > 0, granularity >= 0")
        self.min_rto = float(min_rto)
        self.max_rto = float(max_rto)
        self.granularity = float(granularity)
        self._srtt: float | None = None
        self._rttvar: float | None = None
        # (2.1): the initial RTO is used as is (only capped at max_rto), so a
        # test may ask for an initial RTO below min_rto.
        self._base = min(float(initial_rto), self.max_rto)
        self._rto = self._base
        self._backoffs = 0
        self.samples = 0  # number of samples taken (for stats)

    # ---------------------------------------------------------------- inputs

    def sample(self, rtt: float) -> None:
        """One RTT measurement R (seconds). Negative values (a clock that
        went backwards) count as 0."""
        if rtt < 0.0:
            rtt = 0.0
        srtt = self._srtt
        if srtt is None:
            # (2.2) first measurement
            srtt = rtt
            rttvar = rtt * 0.5
        else:
            # (2.3) RTTVAR first, with the old SRTT
            d = srtt - rtt
            if d < 0.0:
                d = -d
            rttvar = 0.75 * self._rttvar + 0.25 * d  # type: ignore[operator]
            srtt = 0.875 * srtt + 0.125 * rtt
        self._srtt = srtt
        self._rttvar = rttvar
        kv = K * rttvar
        g = self.granularity
        rto = srtt + (kv if kv > g else g)
        # (2.4) lower bound, (2.5) upper bound
        if rto < self.min_rto:
            rto = self.min_rto
        elif rto > self.max_rto:
            rto = self.max_rto
        self._base = rto
        self._rto = rto
        self._backoffs = 0
        self.samples += 1

    def backoff(self) -> None:
        """RFC 6298 (5.5): the retransmission timer expired: double the RTO
        (at most ``max_rto``)."""
        r = self._rto * 2.0
        self._rto = r if r < self.max_rto else self.max_rto
        self._backoffs += 1

    def reset_backoff(self) -> None:
        """Back to the computed RTO (an ACK of new data, RFC 6298 §5)."""
        self._rto = self._base
        self._backoffs = 0

    def reinitialize(self, rto: float = SYN_TIMEOUT_RTO_S) -> None:
        """RFC 6298 (5.7): the SYN (or SYN-ACK) was retransmitted and no
        sample was taken: forget SRTT/RTTVAR and start data transfer with an
        RTO of 3 s (only if the current computed RTO is below it)."""
        if self._srtt is not None:
            return
        rto = min(max(rto, self._base), self.max_rto)
        self._base = rto
        self._rto = rto
        self._backoffs = 0

    # --------------------------------------------------------------- outputs

    @property
    def rto(self) -> float:
        """Seconds to arm the retransmission timer with (back-off included)."""
        return self._rto

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT in seconds, None before the first sample."""
        return self._srtt

    @property
    def rttvar(self) -> float | None:
        """RTT variation in seconds, None before the first sample."""
        return self._rttvar

    @property
    def backoffs(self) -> int:
        """How many times the RTO was doubled since the last reset (``ss``'s
        "backoff")."""
        return self._backoffs
