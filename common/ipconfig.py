"""The IP layers' stack-wide settings, where Linux has the knob: the
config file's ``[ip]`` table, ``--ip NAME=VALUE``, ``shardnet ctl ip --set``.

The shards send with the default TTL / hop limit and rate-limit their ICMP
errors; the dispatcher, which reassembles fragments before it hashes a
flow, holds the reassembly limits. Both read the same record, so it lives
here (``common`` holds no protocol state, only this description of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .settings import apply_settings

DEFAULT_TTL = 64  # RFC 1700 / Linux net.ipv4.ip_default_ttl
DEFAULT_HOP_LIMIT = 64  # RFC 4861 §6.3.2 until an RA says otherwise; Linux hop_limit
ICMP_RATE_PER_S = 1000.0  # error messages per second: Linux icmp_msgs_per_sec, gVisor
ICMP_BURST = 50  # Linux icmp_msgs_burst, gVisor
FRAG_TIME_V4_S = 30.0  # seconds: Linux net.ipv4.ipfrag_time
FRAG_TIME_V6_S = 60.0  # seconds: RFC 8200 §4.5 (Linux ip6frag_time)
FRAG_HIGH_THRESH = 4 * 1024 * 1024  # bytes held in all: Linux ipfrag_high_thresh (4 MiB)
FRAG_MAX_DATAGRAMS = 1024  # datagrams in progress at once, local limit
FRAG_MAX_FRAGMENTS = 64  # fragments per datagram, local limit (FreeBSD: 16, Linux: none)


@dataclass(frozen=True, slots=True)
class IpConfig:
    # --- sending (RFC 1122 §3.2.1.7, RFC 8200 §3)
    default_ttl: int = DEFAULT_TTL
    # An RA's Cur Hop Limit (RFC 4861 §6.3.4) wins over it on that NIC.
    default_hop_limit: int = DEFAULT_HOP_LIMIT
    # --- ICMP errors (RFC 1812 §4.3.2.8, RFC 4443 §2.4 (f)): a token bucket per shard
    icmp_rate_per_s: float = ICMP_RATE_PER_S
    icmp_burst: int = ICMP_BURST
    # --- reassembly (RFC 791 §3.2, RFC 8200 §4.5), in the dispatcher
    frag_time_v4_s: float = FRAG_TIME_V4_S
    frag_time_v6_s: float = FRAG_TIME_V6_S
    frag_high_thresh: int = FRAG_HIGH_THRESH
    frag_max_datagrams: int = FRAG_MAX_DATAGRAMS
    frag_max_fragments: int = FRAG_MAX_FRAGMENTS

    def __post_init__(self) -> None:
        if not 1 <= self.default_ttl <= 255 or not 1 <= self.default_hop_limit <= 255:
            raise ValueError("default_ttl and default_hop_limit must be 1..255")
        if self.icmp_rate_per_s < 0 or self.icmp_burst < 1:
            raise ValueError("need icmp_rate_per_s >= 0 and icmp_burst >= 1")
        if self.frag_time_v4_s <= 0 or self.frag_time_v6_s <= 0:
            raise ValueError("reassembly times must be positive")
        if min(self.frag_high_thresh, self.frag_max_datagrams, self.frag_max_fragments) < 1:
            raise ValueError("reassembly limits must be at least 1")

    @classmethod
    def from_settings(cls, settings: dict[str, Any], base: IpConfig | None = None) -> IpConfig:
        """``base`` (default: the defaults) with text-ish ``settings``
        applied; ValueError with a one-line message."""
        return apply_settings(base or cls(), settings, "IP")
