"""A token bucket, sans-I/O: the ICMP error rate limit (RFC 1812 §4.3.2.8,
RFC 4443 §2.4 (f)).

Defaults: 1000 tokens per second, burst 50 (gVisor stack/icmp_rate_limit.go;
Linux icmp_msgs_per_sec / icmp_msgs_burst have
the same values). Left out: per-destination buckets (Linux icmp_ratelimit).
"""

from __future__ import annotations

from shardnet.common.ipconfig import ICMP_BURST, ICMP_RATE_PER_S


class TokenBucket:
    """``allow(now)`` takes one token if there is one. The bucket starts full;
    ``now`` going backwards refills nothing."""

    __slots__ = ("rate_per_s", "burst", "_tokens", "_last")

    def __init__(self, rate_per_s: float = ICMP_RATE_PER_S, burst: int = ICMP_BURST) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("need rate_per_s >= 0 and burst >= 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float, cost: float = 1.0) -> bool:
        tokens = self._tokens
        last = self._last
        if last is None:
            self._last = now
        elif now > last:
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            self._last = now
        if tokens >= cost:
            self._tokens = tokens - cost
            return True
        self._tokens = tokens
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (no side effect)."""
        last = self._last
        if last is None or now <= last:
            return self._tokens
        return min(self.burst, self._tokens + (now - last) * self.rate_per_s)
