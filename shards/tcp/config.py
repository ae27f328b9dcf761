"""Per-connection TCP configuration: every timer and constant a test needs.

A frozen dataclass (STYLE.md §3): the stack builds one from its config file
and the socket options, the tests build one with short timers. Units are in
the names (``_s`` seconds, bytes otherwise); each default cites its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shardnet.common.settings import apply_settings

from .cc import CC_NAMES

TCP_MIN_MSS = 88  # bytes, Linux TCP_MIN_MSS; gVisor TCPMinimumMSS
TCP_MAX_MSS = 65535  # bytes, gVisor TCPMaximumMSS
DEFAULT_MSS_V4 = 536  # bytes, RFC 9293 §3.7.1 / RFC 1122 §4.2.2.6: no MSS option received
DEFAULT_MSS_V6 = 1220  # bytes, RFC 9293 §3.7.1 (IPv6 minimum MTU 1280 - 60)
IPV4_TCP_OVERHEAD = 40  # bytes, IPv4 + TCP headers without options (RFC 6691 §2)
IPV6_TCP_OVERHEAD = 60  # bytes, IPv6 + TCP headers without options

MSL_S = 30.0  # RFC 9293 §3.4.2 says 2 minutes; Linux's TIME-WAIT is 60 s = 2 * 30 s
TIME_WAIT_S = 2 * MSL_S  # RFC 9293 §3.6.1 2 MSL; gVisor DefaultTCPTimeWaitTimeout 60 s
FIN_TIMEOUT_S = 60.0  # Linux tcp_fin_timeout; gVisor DefaultTCPLingerTimeout

SND_BUF = 1 << 20  # bytes, gVisor's default send buffer
SND_BUF_MAX = 4 << 20  # bytes, SO_SNDBUF is clamped to it (Linux tcp_wmem[2] 4 MiB)
RCV_BUF = 1 << 17  # bytes, initial receive buffer (Linux tcp_rmem[1] = 128 KiB)
RCV_BUF_MAX = 4 << 20  # bytes, auto-tuning bound (gVisor max 4 MiB; Linux tcp_rmem[2] 6 MiB)

INITIAL_RTO_S = 1.0  # RFC 6298 §2.1
MIN_RTO_S = 0.2  # Linux TCP_RTO_MIN (RFC 6298 §2.4 says 1 s; Linux and most stacks use 200 ms)
MAX_RTO_S = 120.0  # Linux TCP_RTO_MAX; RFC 6298 §2.5 allows a maximum of at least 60 s
SYN_RETRIES = 6  # Linux tcp_syn_retries
SYNACK_RETRIES = 5  # Linux tcp_synack_retries
SYN_BACKLOG = 256  # SYN queue per listener (Linux tcp_max_syn_backlog is 128..1024 by memory)
RETRIES2 = 15  # Linux tcp_retries2: RTO expiries before giving up (RFC 1122 §4.2.3.5 R2)

DELAYED_ACK_S = 0.04  # Linux TCP_DELACK_MIN; RFC 1122 §4.2.3.2 and RFC 5681 §4.2: < 0.5 s
DUPTHRESH = 3  # RFC 5681 §3.2, RFC 6675 §2

KEEPALIVE_IDLE_S = 7200.0  # RFC 1122 §4.2.3.6 (no less than two hours), Linux tcp_keepalive_time
KEEPALIVE_INTVL_S = 75.0  # Linux tcp_keepalive_intvl
KEEPALIVE_CNT = 9  # Linux tcp_keepalive_probes

CHALLENGE_ACK_PER_S = 1000.0  # RFC 5961 §7; Linux tcp_challenge_ack_limit (before 6.0)
CHALLENGE_ACK_BURST = 1000  # the whole second's budget may go at once, as in Linux

INVALID_RATELIMIT_S = 0.5  # Linux tcp_invalid_ratelimit: one ACK per 500 ms for invalid segments
CORK_S = 0.2  # tcp(7) TCP_CORK: "a 200 millisecond ceiling on the time for which output is corked"

PERSIST_MIN_S = 0.2  # first zero-window probe after one (minimum) RTO
PERSIST_MAX_S = 60.0  # RFC 1122 §4.2.2.17 lets the interval grow; Linux caps at TCP_RTO_MAX


@dataclass(frozen=True, slots=True)
class TcpConfig:
    # --- segment size (RFC 6691; user TCP_MAXSEG, RFC 9293 §3.7.1)
    user_mss: int | None = None  # TCP_MAXSEG; None = from the route MTU
    # --- options (RFC 7323, RFC 2018)
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    # --- buffers (bytes)
    snd_buf: int = SND_BUF
    snd_buf_max: int = SND_BUF_MAX  # SO_SNDBUF never goes above
    rcv_buf: int = RCV_BUF
    rcv_buf_max: int = RCV_BUF_MAX  # auto-tuning never goes above (and sets the wscale)
    rcv_autotune: bool = True
    # --- listeners: children in SYN-RECEIVED per listener before SYN
    # cookies answer (RFC 4987 §3.6; Linux tcp_max_syn_backlog)
    syn_backlog: int = SYN_BACKLOG
    # --- retransmission (RFC 6298, RFC 1122 §4.2.3.5)
    initial_rto_s: float = INITIAL_RTO_S
    min_rto_s: float = MIN_RTO_S
    max_rto_s: float = MAX_RTO_S
    syn_retries: int = SYN_RETRIES
    synack_retries: int = SYNACK_RETRIES
    retries2: int = RETRIES2
    # TCP_USER_TIMEOUT (RFC 5482), ms: data unacknowledged this long, or a
    # zero window probed this long, aborts the connection with ETIMEDOUT
    # instead of counting retries2 (Linux); 0 = off.
    user_timeout_ms: int = 0
    # SO_LINGER (socket(7)): None off; 0 on with no time: close() resets the
    # connection at once (RST, nothing more sent); a time: close() is a normal
    # close (Linux goes on closing in the background after the wait, which a
    # non-blocking transport never does).
    linger_s: float | None = None
    dupthresh: int = DUPTHRESH
    # RFC 8985 RACK-TLP loss detection with SACK (Linux tcp_recovery bit 0,
    # on by default); off: RFC 6675 DupThresh.
    rack: bool = True
    # RFC 6937 PRR-SSRB paces what is sent during recovery (Linux always
    # does); off: RFC 6675 / RFC 6582 send what cwnd - pipe allows.
    prr: bool = True
    # RFC 3168 ECN, as Linux tcp_ecn: 0 off, 1 asked for on active opens
    # and accepted on passive ones, 2 (Linux's default) only accepted.
    ecn: int = 2
    # RFC 7413 TCP Fast Open, as Linux tcp_fastopen: bit 1 client (cookies
    # asked for and data sent in the SYN), bit 2 server (cookies issued,
    # data on a SYN taken); a listener also needs TCP_FASTOPEN (its queue
    # of pending Fast Open connections, ``fastopen_qlen`` > 0).
    fastopen: int = 1
    fastopen_qlen: int = 0  # TCP_FASTOPEN: Fast Open children in SYN-RECEIVED, at most
    cc: str = "cubic"  # congestion control, "cubic" or "newreno" (shards/tcp/cc.py)
    # --- ACKs, Nagle (RFC 1122 §4.2.3.2, RFC 9293 §3.7.4)
    # RFC 5681 §4.1 restart after idle (Linux tcp_slow_start_after_idle):
    # after more than an RTO without sending, cwnd falls back to the
    # initial window before new data goes out.
    slow_start_after_idle: bool = True
    delayed_ack: bool = True
    delayed_ack_s: float = DELAYED_ACK_S
    nodelay: bool = False  # TCP_NODELAY: no Nagle
    # --- keepalive (RFC 1122 §4.2.3.6)
    keepalive: bool = False  # SO_KEEPALIVE
    keepalive_idle_s: float = KEEPALIVE_IDLE_S
    keepalive_intvl_s: float = KEEPALIVE_INTVL_S
    keepalive_cnt: int = KEEPALIVE_CNT
    # --- closing (RFC 9293 §3.6; TIME-WAIT, TCP_LINGER2)
    time_wait_s: float = TIME_WAIT_S
    fin_timeout_s: float = FIN_TIMEOUT_S  # the stack-wide tcp_fin_timeout
    linger2_s: float | None = None  # TCP_LINGER2: None/0 = fin_timeout_s, < 0 = RST, else min
    # RFC 1337 fix 1 (Linux tcp_rfc1337=1): an RST in TIME-WAIT is ignored.
    # Off by default as in Linux, where the RST ends TIME-WAIT.
    rfc1337: bool = False
    # --- answers to invalid segments: out-of-window, PAWS-rejected, and
    # challenge ACKs, at most one per this interval per connection (Linux
    # tcp_invalid_ratelimit; RFC 5961 §7 asks for a throttle); 0: no limit
    invalid_ratelimit_s: float = INVALID_RATELIMIT_S
    cork_s: float = CORK_S  # TCP_CORK: a held partial segment leaves after this
    # --- RFC 5961 §7 challenge ACK throttle (when the endpoint makes its own bucket)
    challenge_ack_per_s: float = CHALLENGE_ACK_PER_S
    challenge_ack_burst: int = CHALLENGE_ACK_BURST
    # --- persist timer (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17)
    persist_max_s: float = PERSIST_MAX_S

    def __post_init__(self) -> None:
        m = self.user_mss
        if m is not None and not TCP_MIN_MSS <= m <= TCP_MAX_MSS:
            raise ValueError(f"TCP_MAXSEG {m} outside [{TCP_MIN_MSS}, {TCP_MAX_MSS}]")
        if self.snd_buf < 1 or self.rcv_buf < 1 or self.rcv_buf_max < self.rcv_buf:
            raise ValueError("need snd_buf >= 1 and 1 <= rcv_buf <= rcv_buf_max")
        if self.snd_buf_max < self.snd_buf:
            raise ValueError("need snd_buf <= snd_buf_max")
        if self.ecn not in (0, 1, 2):
            raise ValueError(f"ecn {self.ecn} is not 0 (off), 1 (on) or 2 (accept only)")
        if self.fastopen not in (0, 1, 2, 3):
            raise ValueError(f"fastopen {self.fastopen} is not a mask of 1 (client), 2 (server)")
        if self.fastopen_qlen < 0:
            raise ValueError("fastopen_qlen must not be negative")
        if self.cc not in CC_NAMES:
            raise ValueError(
                f"congestion control {self.cc!r} unknown (known: {', '.join(CC_NAMES)})"
            )
        # Linux's bounds: tcp_syn_retries 1..127, TCP_KEEPCNT 1..127,
        # TCP_KEEPIDLE/TCP_KEEPINTVL at least 1 s.
        if not 1 <= self.syn_retries <= 127 or not 1 <= self.synack_retries <= 127:
            raise ValueError("syn_retries and synack_retries must be 1..127")
        if not 1 <= self.keepalive_cnt <= 127:
            raise ValueError("keepalive_cnt must be 1..127")
        if self.keepalive_idle_s < 1 or self.keepalive_intvl_s < 1:
            raise ValueError("keepalive_idle_s and keepalive_intvl_s must be at least 1")
        if self.retries2 < 1 or self.syn_backlog < 1 or self.dupthresh < 1:
            raise ValueError("retries2, syn_backlog and dupthresh must be at least 1")
        if min(self.time_wait_s, self.fin_timeout_s, self.delayed_ack_s, self.cork_s,
               self.invalid_ratelimit_s, self.user_timeout_ms) < 0:  # fmt: skip
            raise ValueError("times must not be negative")
        if not 0 < self.min_rto_s <= self.initial_rto_s <= self.max_rto_s:
            raise ValueError("need 0 < min_rto_s <= initial_rto_s <= max_rto_s")

    @classmethod
    def from_settings(cls, settings: dict[str, Any], base: TcpConfig | None = None) -> TcpConfig:
        """The stack-wide configuration from text-ish settings (the config
        file's [tcp] table, ``--tcp NAME=VALUE``, ``ctl tcp --set``): field
        names, values converted by the field's type, applied over ``base``;
        ValueError with a one-line message."""
        return apply_settings(base or cls(), settings, "TCP")

    def fin_wait_2_timeout(self) -> float | None:
        """TCP_LINGER2 with Linux semantics (tcp(7)): None
        means "send a RST instead of waiting" (a negative value); 0 or
        anything above ``fin_timeout_s`` means ``fin_timeout_s``."""
        v = self.linger2_s
        if v is None or v == 0 or v > self.fin_timeout_s:
            return self.fin_timeout_s
        if v < 0:
            return None
        return v


def max_mss_for_route(mtu: int, ipv6: bool) -> int:
    """RFC 6691 §2 / RFC 9293 §3.7.1: the MSS a route of ``mtu`` bytes allows
    (MTU minus the fixed IP and TCP headers)."""
    return max(TCP_MIN_MSS, mtu - (IPV6_TCP_OVERHEAD if ipv6 else IPV4_TCP_OVERHEAD))


def advertised_mss(user_mss: int | None, mtu: int, ipv6: bool) -> int:
    """RFC 9293 §3.7.1: the user's TCP_MAXSEG if below the route's, else the
    route's (gVisor calculateAdvertisedMSS, Linux tcp_advertise_mss)."""
    route = max_mss_for_route(mtu, ipv6)
    if user_mss is not None and 0 < user_mss < route:
        return user_mss
    return route
