"""A sans-I/O TCP endpoint: one connection, driven by segments and a clock.

Implements (each rule's code cites its section):
  * RFC 9293: the state machine (all eleven states; LISTEN is
    ``listener.TcpListener``), simultaneous open and close, half-close,
    segment acceptability (§3.10.7.4), the processing order of §3.10.7,
    resets for segments that hit no endpoint (``rst_for``, §3.10.7.1),
    receiver SWS avoidance (§3.8.6.2.2), sender SWS avoidance and Nagle
    (§3.8.6.2.1, §3.7.4), zero-window probing with the persist timer
    (§3.8.6.1, RFC 1122 §4.2.2.17);
  * RFC 5961: challenge ACK for an in-window RST not at RCV.NXT (§3), for a
    SYN in a synchronized state (§4), ACK acceptance (§5), all challenge
    ACKs throttled by a token bucket (§7: default 1000 per second, Linux's
    old tcp_challenge_ack_limit; the stack may share one bucket per shard);
    as Linux, the ACKs answering invalid segments (challenge ACKs, and
    out-of-window or PAWS-rejected segments without data) go at most once
    per ``invalid_ratelimit_s`` per connection (tcp_invalid_ratelimit), and
    a segment with none of ACK, RST, SYN is dropped before any check;
  * RFC 6691: the user's TCP_MAXSEG (Linux's 88..65535 bytes) on active and
    passive opens, clamped to the route MTU;
  * RFC 7323: window scaling, timestamps (RTT samples, PAWS §5, TS.Recent
    §4.3); RFC 2018: SACK-permitted, SACK blocks for out-of-order data
    (most recent first) and received blocks fed to the RFC 6675 scoreboard;
  * RFC 6298 retransmission timer (Karn's rule, or timestamps), exponential
    back-off, a retry budget (Linux tcp_retries2/tcp_syn_retries as counts)
    ending in ``Reset(TimeoutError)``; go-back-N after an RTO (RFC 5681 §3.1
    loss window; SACK information is dropped, RFC 2018 §8);
  * RFC 5681 fast retransmit on ``dupthresh`` duplicate ACKs, RFC 6582
    NewReno partial ACKs without SACK, RFC 6675 SACK loss recovery (pipe,
    NextSeg) with it; with SACK and the ``rack`` setting (the default),
    RFC 8985 RACK-TLP decides what is lost instead of ``dupthresh``
    (time-based marks, the reorder timer, tail loss probes sharing the
    retransmission timer, the RTO as the last resort), and RFC 2883
    D-SACK blocks are sent for duplicates and recognised in ACKs; RFC 6937
    PRR-SSRB paces what recovery sends (``prr``), and the ledger of sent data with its transmit times
    (Karn's rule for RTT samples without timestamps): ``recovery.py``;
    congestion control itself is ``cc.py``;
  * RFC 3168 ECN (``ecn``: 0 off, 1 asked for and accepted, 2 accepted,
    Linux's tcp_ecn): ECN-setup SYN/SYN-ACK, ECT(0) on new data, CE echoed
    with ECE until CWR, the window halved once per window on ECE and CWR
    on the next new data;
  * RFC 1122 §4.2.3.2 delayed ACKs (every second full segment, a timer,
    immediate ACK for out-of-order data and for data filling a hole, RFC 5681
    §4.2), TCP_NODELAY, a TCP_CORK-like ``cork`` flag, keepalive
    (§4.2.3.6: idle, interval, count; probe is SEG.SEQ = SND.NXT - 1);
    a corked partial segment leaves after ``cork_s`` (tcp(7): 200 ms);
  * receive-buffer auto-tuning: the buffer doubles (up to ``rcv_buf_max``)
    when a round trip delivered more than half of it and the application
    keeps up (Linux's DRS, much simplified);
  * closing as gVisor and Linux do: TIME-WAIT (configurable; an RST at
    RCV.NXT ends it as in Linux, or is ignored as RFC 1337 fix 1 with
    ``rfc1337``; a retransmitted FIN restarts the timer and is
    ACKed, an out-of-order segment gets a duplicate ACK, a SYN above
    RCV.NXT ends TIME-WAIT and is handed back to the caller in
    ``SynInTimeWait`` to reuse the port pair); TCP_LINGER2 with Linux
    semantics (negative: RST instead of waiting in FIN-WAIT-2); an RST in
    CLOSE-WAIT reports ``BrokenPipeError`` (EPIPE), not ECONNRESET; close()
    with unread data sends an RST (RFC 2525 §2.17, Linux), as does data
    arriving after close() (Linux "TCPAbortOnData");
  * ICMP: ``handle_pmtu`` (Packet Too Big lowers the MSS) and
    ``handle_icmp_unreachable`` (in SYN-SENT any destination unreachable
    about our SYN fails the connect, as Linux; soft otherwise, reported when
    the retry budget runs out: RFC 1122 §4.2.3.9, RFC 5927);
  * RFC 5681 §4.1 restart after idle (``slow_start_after_idle``, as Linux);
  * speed: header prediction (``handle_fast``: the common in-order segment
    in a few steps, everything else through the full processing) and, when
    the link segments for us (TSO), super-segments of up to ``tso_max``
    bytes cut on whole MSS-sized segments (``Segment.gso_size``).

  * RFC 7413 TCP Fast Open, the connection's part: an active open with
    ``fastopen`` sends the option (an empty one asks for a cookie; with a
    cookie the SYN carries the first bytes queued, up to the cached MSS),
    records the cookie a SYN-ACK brings, sends again at once what the
    SYN-ACK did not acknowledge (§4.2.1), and remembers a data SYN that had
    to be retransmitted (sent again without data or option) for the
    caller's §4.1.3 fallback; a passive open made with ``fastopen_data``
    takes the SYN's data at once (§4.2.2) and its SYN-ACK acknowledges it;
    such a server sends data in SYN-RECEIVED, after its SYN-ACK; the cookies
    and the queue bound are the listener's.

Left out: urgent data (URG is ignored, data is delivered in line), accurate
ECN (RFC 9768), ECN with SYN cookies, timestamps-based SYN cookies
options encoding. Data carried on a SYN or SYN-ACK is dropped (the peer
retransmits it) unless Fast Open takes it. Segments without a timestamp once
timestamps are in use are accepted (Linux; RFC 7323 §3.2 allows either).

The caller (the shard): demultiplexes by 4-tuple, drops segments with a
non-unicast address (``addresses_acceptable``, RFC 1122 §4.2.3.10), answers
segments that hit no endpoint with ``rst_for``, adds IP headers, and after
any input calls ``poll_transmit(now)`` and re-arms ``next_deadline()``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Protocol

from shardnet.common.addr import is_unicast
from shardnet.common.seqnum import (
    SEQ_MASK,
    seq_add,
    seq_geq,
    seq_gt,
    seq_in_window,
    seq_leq,
    seq_lt,
    seq_sub,
)
from shardnet.common.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    MAX_WINDOW_SCALE,
    PSH,
    RST,
    SYN,
    TcpOptions,
    options_len,
)
from shardnet.shards.net.ratelimit import TokenBucket

from .buffers import RecvBuffer, SendBuffer
from .cc import CongestionControl, make_cc
from .config import DEFAULT_MSS_V4, DEFAULT_MSS_V6, TcpConfig, advertised_mss, max_mss_for_route
from .recovery import (
    TLP_MIN_PTO_S,
    TLP_WC_DELACK_S,
    LossRecovery,
    Prr,
    RackRecovery,
    SentLedger,
    make_recovery,
)
from .segment import Segment
from .state import RECEIVING, SYNCHRONIZED, State

TS_OPTION_LEN = 12  # bytes, NOP NOP TS (RFC 7323 Appendix A layout)
PAWS_IDLE_S = 24 * 86400.0  # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
MAX_SEND_PER_POLL = 1024  # segments per poll_transmit: a bound, not a pacing rule
ECT0 = 2  # RFC 3168 §5: ECN-Capable Transport (0) in the IP header's ECN field
CE = 3  # RFC 3168 §5: Congestion Experienced
# What the retransmission timer is armed for (one timer, as Linux's
# icsk_retransmit_timer with ICSK_TIME_RETRANS / LOSS_PROBE / REO_TIMEOUT).
_T_RTO = 0  # RFC 6298 retransmission timeout
_T_PTO = 1  # RFC 8985 §7.2 tail loss probe timeout
_T_REO = 2  # RFC 8985 §6.3 RACK reorder timer


# --------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake completed (ESTABLISHED)."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """``nbytes`` more bytes can be read with ``recv()``."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class PeerFin:
    """The peer sent FIN: ``recv()`` returns b"" once the buffer is drained."""


@dataclass(frozen=True, slots=True)
class Writable:
    """Send-buffer space was freed after ``send()`` accepted less than asked."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The connection died: ``error`` is the OSError subclass the socket API
    raises (ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
    TimeoutError)."""

    error: type[OSError]
    reason: str = ""
    errno: int = 0  # when set, the error is OSError(errno) (EHOSTUNREACH, ENETUNREACH)


@dataclass(frozen=True, slots=True)
class SynInTimeWait:
    """RFC 1122 §4.2.2.13: a SYN above RCV.NXT ended TIME-WAIT; the caller
    hands ``segment`` to the listener on the same local address and port
    (its payload may be a view of the receive buffer: use it at once)."""

    segment: Segment


@dataclass(frozen=True, slots=True)
class Closed:
    """The endpoint reached CLOSED; the caller forgets its 4-tuple. Comes
    last, after ``Reset`` when the end was abnormal."""


Event = Connected | DataReceived | PeerFin | Writable | Reset | SynInTimeWait | Closed


# ----------------------------------------------------------- collaborators


class RttEstimator(Protocol):
    @property
    def rto(self) -> float: ...
    @property
    def srtt(self) -> float | None: ...
    @property
    def rttvar(self) -> float | None: ...
    def sample(self, rtt: float) -> None: ...
    def backoff(self) -> None: ...
    def reset_backoff(self) -> None: ...


def _default_cc(name: str, mss: int) -> CongestionControl:
    return make_cc(name, mss)


def _default_rtt(config: TcpConfig) -> RttEstimator:
    from .rtt import RttEstimator as Rtt

    return Rtt(config.min_rto_s, config.max_rto_s, config.initial_rto_s)


# -------------------------------------------------------------- helpers


def addresses_acceptable(src: bytes, dst: bytes) -> bool:
    """RFC 1122 §4.2.3.10, RFC 9293 §3.10.7.2: a segment
    with a non-unicast source or destination is dropped silently, with
    neither RST nor SYN-ACK. The caller checks this before demultiplexing."""
    return is_unicast(src) and is_unicast(dst)


def rst_for(seg: Segment) -> Segment | None:
    """RFC 9293 §3.10.7.1: the reset answering ``seg`` when it hit no
    endpoint (CLOSED). None for an incoming RST (never answered)."""
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    return Segment(seg.dst_port, seg.src_port, 0, seq_add(seg.seq, seg.seg_len), RST | ACK, 0)


def window_scale_for(buf_max: int) -> int:
    """RFC 7323 §2.3: the smallest shift that lets ``buf_max`` be advertised."""
    s = 0
    while s < MAX_WINDOW_SCALE and (0xFFFF << s) < buf_max:
        s += 1
    return s


@dataclass(slots=True)
class TcpStats:
    """Like ``ss -ti``: one connection's figures (bytes, seconds)."""

    state: str
    cwnd: int
    ssthresh: int
    srtt: float | None
    rttvar: float | None
    rto: float
    mss: int
    advmss: int
    snd_wnd: int
    rcv_wnd: int
    rcv_buf: int
    snd_wscale: int
    rcv_wscale: int
    timestamps: bool
    sack: bool
    retransmits: int
    rto_expiries: int
    fast_retransmits: int
    tlp_probes: int  # RFC 8985 §7 tail loss probes sent
    dsacks_in: int  # RFC 2883 D-SACK blocks received
    reordering_seen: bool  # RFC 8985 §6.2 step 3 (RACK only)
    reo_wnd_mult: int  # RFC 8985 §6.2 step 4 (RACK only)
    ecn: bool  # RFC 3168 negotiated
    ecn_ce_in: int  # segments received with CE
    ecn_reductions: int  # congestion window reductions for ECE
    bytes_sent: int
    bytes_retrans: int
    bytes_acked: int
    bytes_received: int
    segs_in: int
    segs_out: int
    dup_acks_in: int
    challenge_acks: int
    challenge_acks_suppressed: int
    unacked: int
    unsent: int
    unread: int


# -------------------------------------------------------------- endpoint


class TcpEndpoint:
    """One TCP connection. Build it with ``connect()`` (active open) or
    ``passive()`` (from a SYN; usually through ``TcpListener``)."""

    __slots__ = (
        "config", "state", "local_port", "remote_port", "ipv6", "mtu", "tso_max",
        "cc", "rtt", "recovery", "ledger", "_rack", "_prr", "_limiter", "ts_offset",
        "passive_open",
        # RFC 7413 Fast Open
        "tfo_cookie", "tfo_syn_mss", "tfo_sent", "tfo_got", "tfo_acked", "tfo_syn_lost",
        "tfo_data_in",
        # send sequence space (RFC 9293 §3.3.1); snd_max = highest sent
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "snd_wscale",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "rcv_wscale", "rcv_buf", "last_ack_sent",
        # negotiated options
        "ts_on", "sack_on", "ts_recent", "ts_recent_at", "peer_mss", "adv_mss", "mss",
        # RFC 3168 ECN
        "ecn_on", "_ecn_syn", "_ecn_ece", "_cwr_pending", "_ecn_high",
        # buffers
        "_sbuf", "_sbuf_seq", "_rbuf", "_ooo", "_ooo_fin", "_sack_last",
        "_fin_seq", "_fin_pending", "app_closed", "cork", "nodelay", "_snd_blocked", "_dsack",
        "_rd_shut", "_peer_fin",
        # timers (absolute times or None)
        "_rto_at", "_rto_kind", "_probe", "_ack_at", "_persist_at", "_ka_at", "_tw_at", "_fw2_at",
        "_retries", "_stall_since", "_persist_backoff", "_persist_force", "_ka_probes", "_soft_error", "_syn_at",
        "_cork_at", "_uncork", "_oow_at",
        # output flags
        "_need_syn", "_ack_now", "_acks_owed", "_win_update", "_queued",
        # auto-tuning
        "_drs_at", "_drs_bytes", "_sent_data_at",
        "_events", "_error",
        # stats
        "retransmits", "rto_expiries", "fast_retransmits", "tlp_probes", "bytes_sent",
        "bytes_retrans",
        "bytes_acked", "bytes_received", "segs_in", "segs_out", "dup_acks_in",
        "challenge_acks", "challenge_acks_suppressed", "ecn_ce_in", "ecn_reductions",
    )  # fmt: skip

    def __init__(
        self,
        config: TcpConfig,
        local_port: int,
        remote_port: int,
        *,
        iss: int,
        mtu: int = 1500,
        ipv6: bool = False,
        cc: CongestionControl | None = None,
        rtt: RttEstimator | None = None,
        challenge_limiter: TokenBucket | None = None,
        ts_offset: int = 0,
    ) -> None:
        self.config = config
        self.state = State.CLOSED
        self.local_port = local_port
        self.remote_port = remote_port
        self.ipv6 = ipv6
        self.mtu = mtu
        # Payload bytes one outgoing segment may carry when the link cuts
        # super-segments into MSS-sized ones (TSO); 0: one MSS per segment.
        self.tso_max = 0
        self.adv_mss = advertised_mss(config.user_mss, mtu, ipv6)
        self.peer_mss = DEFAULT_MSS_V6 if ipv6 else DEFAULT_MSS_V4
        self.mss = self.adv_mss  # payload bytes per full segment (options excluded)
        self.cc = cc if cc is not None else _default_cc(config.cc, self.adv_mss)
        self.rtt = rtt if rtt is not None else _default_rtt(config)
        # Loss recovery: NewReno until the handshake agrees to SACK.
        self.recovery: LossRecovery = make_recovery(False, iss & SEQ_MASK)
        self.ledger = SentLedger()
        self._rack: RackRecovery | None = None  # the recovery when RACK-TLP is in use
        self._prr: Prr | None = None  # RFC 6937 state during a recovery episode
        self._limiter = challenge_limiter or TokenBucket(
            config.challenge_ack_per_s, config.challenge_ack_burst
        )
        self.ts_offset = ts_offset & SEQ_MASK
        self.passive_open = False
        # Active: the option our SYN carries (None none, b"" a cookie
        # request); passive: the cookie the SYN-ACK gives (RFC 7413 §4.1.2).
        self.tfo_cookie: bytes | None = None
        self.tfo_syn_mss = 0  # bytes of data our SYN may carry
        self.tfo_sent = 0  # bytes of data our first SYN carried
        self.tfo_got: bytes | None = None  # the cookie the SYN-ACK brought
        self.tfo_acked = 0  # of tfo_sent, bytes the SYN-ACK acknowledged
        self.tfo_syn_lost = False  # our SYN with data had to be sent again
        self.tfo_data_in = 0  # passive: bytes taken from the peer's SYN
        iss &= SEQ_MASK
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = window_scale_for(config.rcv_buf_max) if config.window_scaling else 0
        self.rcv_buf = config.rcv_buf
        self.last_ack_sent = 0
        self.ts_on = False
        self.sack_on = False
        self.ecn_on = False
        self._ecn_syn = False  # our SYN asked for ECN (RFC 3168 §6.1.1)
        self._ecn_ece = False  # CE seen: ECE on every ACK until CWR (§6.1.3)
        self._cwr_pending = False  # the window was reduced: CWR on the next new data
        self._ecn_high: int | None = None  # SND.MAX at the last reduction (once per window)
        self.ts_recent = 0
        self.ts_recent_at = 0.0
        self._sbuf = SendBuffer()
        self._sbuf_seq = seq_add(iss, 1)
        self._rbuf = RecvBuffer()
        self._ooo: list[list] = []  # [start seq, bytearray], sorted, disjoint, non-adjacent
        self._ooo_fin: int | None = None  # sequence number of an out-of-order FIN
        self._sack_last: int | None = None
        self._dsack: tuple[int, int] | None = None  # RFC 2883: a duplicate to report once
        self._fin_seq: int | None = None  # set when the application shut writing down
        self._fin_pending = False
        self.app_closed = False
        self.cork = False
        self.nodelay = config.nodelay
        self._snd_blocked = False
        self._rd_shut = False
        self._peer_fin = False
        self._rto_at: float | None = None
        self._rto_kind = _T_RTO
        self._probe = False  # a tail loss probe is due (RFC 8985 §7.3)
        self._ack_at: float | None = None
        self._persist_at: float | None = None
        self._ka_at: float | None = None
        self._tw_at: float | None = None
        self._fw2_at: float | None = None
        self._retries = 0
        self._persist_backoff = 0
        # When the data now unacknowledged (or the zero window now probed)
        # first stalled: TCP_USER_TIMEOUT counts from here.
        self._stall_since: float | None = None
        self._persist_force = False
        self._ka_probes = 0
        self._soft_error: str | None = None
        self._syn_at = 0.0
        self._cork_at: float | None = None  # when a corked partial segment must leave
        self._uncork = False  # the cork timer fired: the partial segment goes now
        self._oow_at: float | None = None  # when an invalid segment was last answered
        self._need_syn = False
        self._ack_now = False
        self._acks_owed = 0
        self._win_update = False
        self._queued: list[Segment] = []
        self._sent_data_at: float | None = None  # when data last left (restart after idle)
        self._drs_at: float | None = None
        self._drs_bytes = 0
        self._events: list[Event] = []  # a list: a deque costs 600 bytes per connection
        self._error: type[OSError] | None = None
        self.retransmits = 0
        self.rto_expiries = 0
        self.fast_retransmits = 0
        self.tlp_probes = 0
        self.bytes_sent = 0
        self.bytes_retrans = 0
        self.bytes_acked = 0
        self.bytes_received = 0
        self.segs_in = 0
        self.segs_out = 0
        self.dup_acks_in = 0
        self.challenge_acks = 0
        self.challenge_acks_suppressed = 0
        self.ecn_ce_in = 0
        self.ecn_reductions = 0

    # ------------------------------------------------------------ opening

    @classmethod
    def connect(
        cls,
        now: float,
        config: TcpConfig,
        local_port: int,
        remote_port: int,
        *,
        iss: int,
        fastopen: bytes | None = None,
        fastopen_mss: int = 0,
        **kw: Any,
    ) -> TcpEndpoint:
        """Active open (RFC 9293 §3.10.1): SYN-SENT, the SYN goes out on the
        next ``poll_transmit``. ``fastopen``: RFC 7413, b"" asks for a
        cookie, a cookie sends up to ``fastopen_mss`` bytes (the server's
        MSS, options included) of what is queued by then in the SYN.
        ``kw``: mtu, ipv6, cc, rtt, challenge_limiter, ts_offset."""
        ep = cls(config, local_port, remote_port, iss=iss, **kw)
        ep.tfo_cookie = fastopen
        ep.tfo_syn_mss = fastopen_mss if fastopen else 0
        ep.state = State.SYN_SENT
        ep._need_syn = True
        return ep

    @classmethod
    def passive(
        cls,
        now: float,
        config: TcpConfig,
        syn: Segment,
        *,
        iss: int,
        fastopen: bytes | None = None,
        fastopen_data: bool = False,
        **kw: Any,
    ) -> TcpEndpoint:
        """Passive open from a SYN that reached a listener (RFC 9293
        §3.10.7.2): SYN-RECEIVED, the SYN-ACK goes out on the next poll.
        ``fastopen``: a cookie for the SYN-ACK; ``fastopen_data``: the SYN
        had a valid cookie, its data is taken now (RFC 7413 §4.2.2)."""
        ep = cls(config, syn.dst_port, syn.src_port, iss=iss, **kw)
        ep.passive_open = True
        ep.state = State.SYN_RECEIVED
        ep._take_syn(now, syn)
        ep.tfo_cookie = fastopen
        if fastopen_data and syn.payload:
            data = syn.payload[: seq_sub(ep.rcv_adv, ep.rcv_nxt)]
            ep.tfo_data_in = len(data)
            ep._deliver(now, data)
        ep._need_syn = True
        return ep

    @classmethod
    def from_cookie(
        cls, now: float, config: TcpConfig, ack: Segment, *, iss: int, mss: int, **kw: Any
    ) -> TcpEndpoint:
        """An ESTABLISHED endpoint rebuilt from a valid SYN cookie (RFC 4987
        §3.6): the ACK completing the handshake is processed as usual
        afterwards by the caller. No window scaling, SACK or timestamps."""
        ep = cls(config, ack.dst_port, ack.src_port, iss=iss, **kw)
        ep.passive_open = True
        ep.irs = seq_add(ack.seq, -1)
        ep.rcv_nxt = ack.seq
        ep.rcv_adv = seq_add(ack.seq, min(ep.rcv_buf, 0xFFFF))
        ep.last_ack_sent = ack.seq
        ep.rcv_wscale = 0
        ep.peer_mss = mss
        ep._set_mss()
        ep.snd_una = ep.snd_nxt = ep.snd_max = seq_add(iss, 1)
        ep.snd_wnd = ack.window
        ep.max_snd_wnd = ack.window
        ep.snd_wl1 = ack.seq
        ep.snd_wl2 = ack.ack
        ep._established(now)
        return ep

    def _take_syn(self, now: float, syn: Segment) -> None:
        """Record the peer's SYN: IRS and option negotiation (RFC 7323 §2.2,
        §3.2; RFC 2018 §2; RFC 6691)."""
        cfg, o = self.config, syn.options
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.last_ack_sent = self.rcv_nxt
        if o.mss is not None:
            self.peer_mss = max(o.mss, 1)
        if cfg.window_scaling and o.window_scale is not None:
            self.snd_wscale = o.window_scale
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.ts_on = cfg.timestamps and o.timestamp is not None
        if self.ts_on:
            self.ts_recent = o.timestamp[0]  # type: ignore[index]
            self.ts_recent_at = now
        self.sack_on = cfg.sack and o.sack_permitted
        # RFC 3168 §6.1.1: an ECN-setup SYN has ECE and CWR; an ECN-setup
        # SYN-ACK has ECE and not CWR, and answers our ECN-setup SYN.
        f = syn.flags & (ECE | CWR)
        if syn.flags & ACK:
            self.ecn_on = self._ecn_syn and f == ECE
        else:
            self.ecn_on = cfg.ecn != 0 and f == ECE | CWR and self.state is State.SYN_RECEIVED
        if self.sack_on:
            if cfg.rack:
                # RFC 8985: RACK-TLP detects losses, RFC 6675 recovers.
                self._rack = RackRecovery(self.iss, self.ledger)
                self.recovery = self._rack
            else:
                self.recovery = make_recovery(True, self.iss)
        self._set_mss()
        # RFC 7323 §2.2: the window of a SYN is never scaled.
        self.snd_wnd = syn.window
        self.max_snd_wnd = syn.window
        self.snd_wl1 = syn.seq
        self.snd_wl2 = self.snd_una
        self.rcv_adv = seq_add(self.rcv_nxt, min(self.rcv_buf, 0xFFFF))

    def _set_mss(self) -> None:
        """RFC 6691 §2/RFC 9293 §3.7.1: send at most min(peer's MSS, our
        route's MSS, TCP_MAXSEG), minus the timestamp option."""
        m = min(self.peer_mss, max_mss_for_route(self.mtu, self.ipv6))
        if self.config.user_mss is not None:
            m = min(m, self.config.user_mss)
        if self.ts_on:
            m -= TS_OPTION_LEN
        self.mss = max(m, 8)
        self.cc.on_mss_change(self.mss)

    def _established(self, now: float) -> None:
        self.state = State.ESTABLISHED
        self._events.append(Connected())
        self._retries = 0
        if self.config.keepalive:
            self._ka_at = now + self.config.keepalive_idle_s
        if self._fin_pending:
            self.state = State.FIN_WAIT_1

    # ------------------------------------------------------------ user calls

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data``; returns how many bytes fit in the send buffer
        (RFC 9293 §3.10.2). Raises BrokenPipeError after shutdown_write(),
        the connection's error after a reset or timeout."""
        if self._error is not None:
            raise self._error(
                "connection " + ("reset" if self._error is not TimeoutError else "timed out")
            )
        if self._fin_pending or self.state not in (
            State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT
        ):  # fmt: skip
            raise BrokenPipeError("connection is shut down for writing")
        room = self.config.snd_buf - len(self._sbuf)
        n = len(data)
        if n > room:
            n = max(room, 0)
            self._snd_blocked = True
        if n:
            self._sbuf.append(data if n == len(data) else memoryview(data)[:n])
        return n

    def recv(self, max_bytes: int = 1 << 16) -> bytes:
        """Up to ``max_bytes`` in-order bytes (b"" when none are buffered)."""
        if not self._rbuf:
            return b""
        out = self._rbuf.read(max_bytes)
        self._maybe_window_update()
        return out

    @property
    def readable(self) -> int:
        return len(self._rbuf)

    @property
    def eof(self) -> bool:
        """The peer's FIN was received and every byte before it read."""
        return self._peer_fin and not self._rbuf

    def shutdown_write(self) -> None:
        """Half-close (RFC 9293 §3.10.4 CLOSE while receiving): FIN after
        the queued data."""
        if self._fin_pending:
            return
        s = self.state
        if s in (State.CLOSED, State.LISTEN):
            return
        self._fin_pending = True
        self._fin_seq = seq_add(self._sbuf_seq, len(self._sbuf))
        if s is State.ESTABLISHED:
            self.state = State.FIN_WAIT_1
        elif s is State.CLOSE_WAIT:
            self.state = State.LAST_ACK
        # SYN-SENT / SYN-RECEIVED: FIN-WAIT-1 once established (_established)

    def close(self, now: float) -> None:
        """The application closes the socket (RFC 9293 §3.10.4). Unread data
        makes it an abort with RST (RFC 2525 §2.17, Linux tcp_close). In
        FIN-WAIT-2, starts TCP_LINGER2 (Linux tcp_fin_timeout semantics)."""
        s = self.state
        if s is State.CLOSED:
            return
        if s is State.SYN_SENT:
            self._close(now)
            return
        if self._rbuf or self._ooo:
            self.abort(now)
            return
        self.app_closed = True
        self._rd_shut = True
        self.shutdown_write()
        if self.state is State.FIN_WAIT_2:
            self._enter_fin_wait_2(now)

    def abort(self, now: float) -> None:
        """RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST> (with ACK, as
        Linux) in a synchronized state, then CLOSED."""
        if self.state in SYNCHRONIZED or self.state is State.SYN_RECEIVED:
            if self.state is not State.TIME_WAIT:
                self._queue_rst(self.snd_max, self.rcv_nxt)
        self._close(now)

    def set_nodelay(self, on: bool) -> None:
        self.nodelay = on

    def set_cork(self, on: bool) -> None:
        """TCP_CORK: while corked only full segments leave, and a partial one
        at most ``cork_s`` after it was held (tcp(7)); uncorking lets the
        tail go on the next poll."""
        self.cork = on
        if not on:
            self._cork_at = None

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    # ------------------------------------------------------------ ICMP

    def handle_pmtu(self, now: float, mtu: int) -> None:
        """Packet Too Big / Fragmentation Needed (RFC 8201, RFC 1191): a
        lower MTU lowers the MSS; unacknowledged data is resent in the new
        size (Linux tcp_simple_retransmit, without the window reduction)."""
        if mtu >= self.mtu:
            return
        self.mtu = mtu
        old = self.mss
        self._set_mss()
        if self.mss < old and self.state in SYNCHRONIZED and seq_lt(self.snd_una, self.snd_max):
            self.snd_nxt = self.snd_una  # the ledger marks the resends (Karn)

    def handle_icmp_unreachable(
        self, now: float, hard: bool, reason: str = "unreachable", *, errno: int = 0,
        seq: int | None = None,
    ) -> None:  # fmt: skip
        """A destination unreachable about a segment we sent, ``seq`` its
        quoted sequence number. RFC 5927 §4.1: one quoting a sequence number
        outside [SND.UNA, SND.MAX] is ignored. In SYN-SENT it ends the
        connect at once, as Linux (tcp_v4_err, tcp_v6_err) does: ``hard``
        (port/protocol unreachable) with ConnectionRefusedError, others with
        OSError(``errno``) (host or network unreachable). Otherwise errors
        are soft (RFC 1122 §4.2.3.9): remembered and reported if the
        retries run out."""
        if seq is not None and not (seq_geq(seq, self.snd_una) and seq_leq(seq, self.snd_max)):
            return
        if self.state is State.SYN_SENT:
            if hard:
                self._fail(now, ConnectionRefusedError, "ICMP " + reason)
                return
            if errno:
                self._fail(now, OSError, "ICMP " + reason, errno=errno)
                return
        self._soft_error = reason

    # ------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        best: float | None = None
        for t in (
            self._rto_at,
            self._ack_at,
            self._persist_at,
            self._ka_at,
            self._tw_at,
            self._fw2_at,
            self._cork_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timeout(self, now: float) -> None:
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            self._ack_now = True
        if self._rto_at is not None and now >= self._rto_at:
            self._rto_at = None
            kind = self._rto_kind
            if kind == _T_RTO:
                self._on_rto(now)
            elif kind == _T_PTO:
                self._on_pto(now)
            else:
                self._on_reo(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._persist_at = None
            self._on_persist(now)
        if self._ka_at is not None and now >= self._ka_at:
            self._ka_at = None
            self._on_keepalive(now)
        if self._tw_at is not None and now >= self._tw_at:
            self._tw_at = None
            self._close(now)
        if self._fw2_at is not None and now >= self._fw2_at:
            # TCP_LINGER2 expired: straight to CLOSED, no TIME-WAIT; later
            # segments get an RST from the no-endpoint path (RFC 9293 §3.10.7.1).
            self._fw2_at = None
            if self.state is State.FIN_WAIT_2:
                self._close(now)
        if self._cork_at is not None and now >= self._cork_at:
            self._cork_at = None
            self._uncork = True

    def _arm_rto(self, now: float) -> None:
        """RFC 6298 (5.1)/(5.3); with RACK-TLP the probe timeout instead when
        a probe may go (RFC 8985 §7.2: SACK in use, an SRTT, no recovery,
        no probe outstanding) and it comes before the RTO. Retransmitting
        with TCP_USER_TIMEOUT set, never past the user timeout (Linux's
        tcp_clamp_rto_to_user_timeout)."""
        rto = self.rtt.rto
        user_timeout = self.config.user_timeout_ms / 1000.0
        if user_timeout and self._retries and self._stall_since is not None:
            rto = max(min(rto, self._stall_since + user_timeout - now), 0.001)
        rack = self._rack
        if (
            rack is not None
            and rack.tlp_end is None
            and not rack.in_recovery
            and rack.rto_recover is None
            and self.state in SYNCHRONIZED
        ):
            srtt = self.rtt.srtt
            if srtt is not None:
                pto = 2.0 * srtt
                if seq_sub(self.snd_max, self.snd_una) <= self.mss:
                    pto += TLP_WC_DELACK_S  # one segment out: its ACK may be delayed
                if pto < TLP_MIN_PTO_S:
                    pto = TLP_MIN_PTO_S
                if pto < rto:
                    self._rto_at = now + pto
                    self._rto_kind = _T_PTO
                    return
        self._rto_at = now + rto
        self._rto_kind = _T_RTO

    def _on_pto(self, now: float) -> None:
        """RFC 8985 §7.3: the probe timeout fired; the probe goes on the next
        poll and the RTO watches it."""
        self._rto_at = now + self.rtt.rto
        self._rto_kind = _T_RTO
        if self.state in SYNCHRONIZED and seq_lt(self.snd_una, self.snd_max):
            self._probe = True

    def _on_reo(self, now: float) -> None:
        """RFC 8985 §6.3: the reorder timer fired: detect losses again."""
        self._arm_rto(now)
        if seq_lt(self.snd_una, self.snd_max):
            self._rack_detect(now)
            rec = self.recovery
            if rec.should_enter(self.snd_una, self.snd_max, 0, self.mss, self.config.dupthresh):
                self._enter_recovery(now)

    def _rack_detect(self, now: float) -> None:
        """RFC 8985 §6.2 step 5 and the reorder timer for what may still
        arrive (it takes the retransmission timer's place, as Linux)."""
        rack = self._rack
        if rack is None:
            return
        rack.detect_loss(now, self.rtt.srtt, self.mss, self.config.dupthresh)
        if rack.reo_timeout > 0.0:
            self._rto_at = now + rack.reo_timeout
            self._rto_kind = _T_REO

    def _on_rto(self, now: float) -> None:
        cfg = self.config
        s = self.state
        if s is State.CLOSED or s is State.TIME_WAIT:
            return
        if s is State.SYN_SENT or s is State.SYN_RECEIVED:
            limit = cfg.syn_retries if s is State.SYN_SENT else cfg.synack_retries
            if self._retries >= limit:
                self._fail(now, TimeoutError, "handshake timed out")
                return
            self._retries += 1
            self.retransmits += 1
            self.rto_expiries += 1
            self.rtt.backoff()
            self._need_syn = True
            return
        if not seq_lt(self.snd_una, self.snd_max):
            return
        if self._retries == 0:
            sent_at = self.ledger.oldest_sent_at()
            self._stall_since = now if sent_at is None else sent_at
        if cfg.user_timeout_ms:
            # RFC 5482 / Linux: the user timeout replaces the retry count.
            assert self._stall_since is not None
            if now - self._stall_since >= cfg.user_timeout_ms / 1000.0:
                self._fail(now, TimeoutError, "user timeout", errno=errno.ETIMEDOUT)
                return
        elif self._retries >= cfg.retries2:
            self._fail(now, TimeoutError, self._soft_error or "retransmission timed out")
            return
        self._retries += 1
        self.rto_expiries += 1
        # RFC 6298 (5.5)-(5.6); RFC 5681 §3.1 loss window; go-back-N.
        flight = seq_sub(self.snd_max, self.snd_una)
        self.cc.on_rto(now, flight)
        self._prr = None
        self.rtt.backoff()
        self.recovery.on_rto(self.snd_max)
        self.snd_nxt = self.snd_una  # the ledger marks the resends (Karn)

    def _on_persist(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: probe a zero window (Linux's probe: SND.UNA - 1,
        no data, which any receiver must ACK with its current window)."""
        if self.state not in (
            State.ESTABLISHED,
            State.CLOSE_WAIT,
            State.FIN_WAIT_1,
            State.LAST_ACK,
        ):
            return
        user_timeout = self.config.user_timeout_ms / 1000.0
        if self._persist_backoff == 0:
            self._stall_since = now
        if user_timeout:
            assert self._stall_since is not None
            if now - self._stall_since >= user_timeout:
                self._fail(now, TimeoutError, "user timeout", errno=errno.ETIMEDOUT)
                return
        elif self._persist_backoff > self.config.retries2:
            self._fail(now, TimeoutError, "zero-window probes unanswered")
            return
        self._persist_backoff += 1
        if self._usable_window() > 0 and self._unsent() > 0:
            # RFC 9293 §3.8.6.2.1 override timeout: send what fits now.
            self._persist_force = True
            return
        self._queued.append(self._make(now, seq_add(self.snd_una, -1), ACK))

    def _on_keepalive(self, now: float) -> None:
        cfg = self.config
        if not cfg.keepalive or self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        if seq_lt(self.snd_una, self.snd_max) or self._sbuf:
            self._ka_at = now + cfg.keepalive_idle_s  # data in flight: the RTO watches
            return
        if self._ka_probes >= cfg.keepalive_cnt:
            self._fail(now, TimeoutError, "keepalive timed out")
            return
        self._ka_probes += 1
        # RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT - 1, no data.
        self._queued.append(self._make(now, seq_add(self.snd_max, -1), ACK))
        self._ka_at = now + cfg.keepalive_intvl_s

    # ------------------------------------------------------------ input

    def handle_segment(self, now: float, seg: Segment) -> None:
        """One segment for this 4-tuple (RFC 9293 §3.10.7)."""
        self.segs_in += 1
        s = self.state
        if s is State.CLOSED:
            return
        if s is State.SYN_SENT:
            self._syn_sent(now, seg)
            return
        if s is State.TIME_WAIT:
            self._time_wait(now, seg)
            return
        flags = seg.flags
        if not flags & (ACK | RST | SYN):
            # Linux tcp_rcv_state_process and gVisor: nothing without ACK,
            # RST or SYN is acceptable (RFC 9293 §3.10.7.4 fifth drops it
            # anyway): dropped before the sequence check, never answered.
            return
        if self.config.keepalive and s in SYNCHRONIZED:
            self._ka_probes = 0
            self._ka_at = now + self.config.keepalive_idle_s
        seq = seg.seq
        o = seg.options
        ts = o.timestamp
        # RFC 7323 §5.3 R1: PAWS (not for RSTs).
        if self.ts_on and ts is not None and not flags & RST and seq_lt(ts[0], self.ts_recent):
            if now - self.ts_recent_at > PAWS_IDLE_S:
                self.ts_recent = ts[0]  # §5.5: TS.Recent is too old to judge
            else:
                self._note_duplicate(seg)  # Linux tcp_send_dupack
                self._ack_invalid(now, seg)
                return
        # RFC 5961 §4.2: a SYN in a synchronized state, whatever its sequence
        # number, gets a challenge ACK (RFC 9293 §3.10.7.4 fourth, moved
        # before the window check so that every such SYN is throttled alike).
        if flags & SYN and not flags & RST:
            if s is State.SYN_RECEIVED and seq == self.irs:
                self._syn_received_syn(now, seg)
            else:
                self._challenge_ack(now)
            return
        # §3.10.7.4 first: sequence number acceptability.
        rcv_wnd = seq_sub(self.rcv_adv, self.rcv_nxt)
        if rcv_wnd < 0:
            rcv_wnd = 0
        slen = seg.seg_len
        if slen == 0:
            # Linux tcp_sequence: a segment without data may sit exactly at
            # the right edge, RCV.NXT + RCV.WND (a window probe's answer).
            ok = seq_in_window(seq, self.rcv_nxt, rcv_wnd + 1)
        elif rcv_wnd == 0:
            ok = False
        else:
            ok = seq_in_window(seq, self.rcv_nxt, rcv_wnd) or seq_in_window(
                seq_add(seq, slen - 1), self.rcv_nxt, rcv_wnd
            )
        if not ok:
            if flags & RST:
                return
            self._note_duplicate(seg)
            # Zero window: still take a valid ACK at RCV.NXT (§3.10.7.4).
            if rcv_wnd == 0 and seq == self.rcv_nxt and flags & ACK and not flags & SYN:
                self._process_ack(now, seg)
            self._ack_invalid(now, seg)
            return
        # RFC 7323 §4.3 (2): TS.Recent.
        if self.ts_on and ts is not None and seq_leq(seq, self.last_ack_sent):
            if seq_geq(ts[0], self.ts_recent):
                self.ts_recent = ts[0]
                self.ts_recent_at = now
        # second: RST (RFC 5961 §3.2).
        if flags & RST:
            if seq != self.rcv_nxt:
                self._challenge_ack(now)
                return
            self._on_reset(now)
            return
        # fifth: ACK.
        if not flags & ACK:
            return
        if s is State.SYN_RECEIVED:
            ack = seg.ack
            if not (seq_lt(self.snd_una, ack) and seq_leq(ack, self.snd_max)):
                self._queue_rst(ack, None)  # §3.10.7.4: <SEQ=SEG.ACK><CTL=RST>
                return
            if self._rto_at is not None and self._retries == 0 and not self.ts_on:
                self.rtt.sample(now - self._syn_at)
            self.snd_una = seq_add(self.iss, 1)
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._rto_at = None
            self._established(now)
            if seq_lt(self.snd_una, self.snd_max):
                self._arm_rto(now)  # Fast Open data sent in SYN-RECEIVED
            s = self.state
        if self.ecn_on:
            self._ecn_input(now, seg)
        if not self._process_ack(now, seg):
            return
        s = self.state
        if s is State.CLOSED or s is State.TIME_WAIT:
            return
        # seventh: segment text.
        payload = seg.payload
        if payload or flags & FIN:
            self._process_text(now, seg)

    def _ecn_input(self, now: float, seg: Segment) -> None:
        """RFC 3168 §6.1.3 (receiver: CE sets ECE on our ACKs until a CWR
        arrives; the first CE is ACKed at once, as Linux) and §6.1.2
        (sender: ECE halves the window at most once per window of data,
        and CWR goes on the next new data)."""
        flags = seg.flags
        if flags & CWR:
            self._ecn_ece = False
        if seg.ecn == CE:
            self.ecn_ce_in += 1
            if not self._ecn_ece:
                self._ecn_ece = True
                self._ack_now = True
        if flags & ECE and seq_leq(seg.ack, self.snd_max):
            high = self._ecn_high
            if high is not None and not seq_gt(seg.ack, high):
                # Reduced already for this window: an ACK that does not
                # cover the first new data sent since (where CWR went) may
                # echo the same congestion.
                return
            if not self.recovery.in_recovery:
                # As Linux's CWR state: the window falls as for a loss, no
                # retransmission.
                self.cc.on_loss(now, seq_sub(self.snd_max, self.snd_una))
                self.cc.on_recovery_exit(now)
                self.ecn_reductions += 1
            self._ecn_high = self.snd_max
            self._cwr_pending = True

    def _syn_received_syn(self, now: float, seg: Segment) -> None:
        """The peer's SYN again in SYN-RECEIVED: a retransmitted SYN (our
        SYN-ACK was lost: send it again), or in a simultaneous open the
        peer's SYN-ACK, whose ACK of our SYN completes the handshake (Linux;
        RFC 9293 Figure 8 reaches the same state one ACK later)."""
        if seg.flags & ACK:
            if seg.ack != seq_add(self.iss, 1):
                self._challenge_ack(now)
                return
            self.snd_una = seg.ack
            self.snd_wnd = seg.window  # a SYN's window is not scaled
            self.max_snd_wnd = max(self.max_snd_wnd, seg.window)
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            self._rto_at = None
            self._ack_now = True
            self._established(now)
            return
        self._need_syn = True

    def _invalid_limited(self, now: float) -> bool:
        """Linux __tcp_oow_rate_limited: True if an invalid segment was
        answered less than ``invalid_ratelimit_s`` ago (then no answer now),
        else remember now."""
        limit = self.config.invalid_ratelimit_s
        if limit > 0 and self._oow_at is not None and 0 <= now - self._oow_at < limit:
            return True
        self._oow_at = now
        return False

    def _ack_invalid(self, now: float, seg: Segment) -> None:
        """RFC 9293 §3.10.7.4 first: an unacceptable segment gets an ACK,
        rate limited unless it carries data or FIN without SYN (Linux
        tcp_oow_rate_limited: data is not likely part of an ACK loop, and
        its ACK may be what the peer needs to recover)."""
        if (seg.seg_len == 0 or seg.flags & SYN) and self._invalid_limited(now):
            return
        self._ack_now = True

    def _note_duplicate(self, seg: Segment) -> None:
        """RFC 2883 §4 (1): data wholly below RCV.NXT is reported in a
        D-SACK block (the sender learns its retransmission was spurious)."""
        n = len(seg.payload)
        if n and self.sack_on and seq_leq(seq_add(seg.seq, n), self.rcv_nxt):
            self._dsack = (seg.seq, seq_add(seg.seq, n))

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>,
        throttled per connection (Linux tcp_send_challenge_ack) and by the
        token bucket (§7)."""
        if self._invalid_limited(now):
            self.challenge_acks_suppressed += 1
            return
        if self._limiter.allow(now):
            self.challenge_acks += 1
            self._queued.append(self._make(now, self.snd_max, ACK))
        else:
            self.challenge_acks_suppressed += 1

    def _on_reset(self, now: float) -> None:
        s = self.state
        if s is State.SYN_RECEIVED:
            err: type[OSError] = ConnectionRefusedError
        elif s is State.CLOSE_WAIT:
            err = BrokenPipeError  # as Linux: EPIPE, not ECONNRESET, in CLOSE-WAIT
        elif s in (State.CLOSING, State.LAST_ACK):
            self._close(now)  # RFC 9293: just close
            return
        else:
            err = ConnectionResetError
        self._fail(now, err, "reset by peer", send_rst=False)

    def _syn_sent(self, now: float, seg: Segment) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        if flags & ACK:
            if seq_leq(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_max):
                if not flags & RST:
                    self._queue_rst(seg.ack, None)
                return
        if flags & RST:
            if flags & ACK:  # RFC 5961 §3.2: only with an acceptable ACK
                self._fail(now, ConnectionRefusedError, "connection refused")
            return
        if not flags & SYN:
            return
        self._take_syn(now, seg)
        if flags & ACK:
            if self._retries == 0:
                if self.ts_on and seg.options.timestamp and seg.options.timestamp[1]:
                    self._ts_sample(now, seg.options.timestamp[1])
                else:
                    self.rtt.sample(now - self._syn_at)
            self.snd_una = seg.ack
            if self.tfo_cookie is not None:
                self._tfo_synack(seg)
            if seq_lt(self.snd_nxt, self.snd_una):
                self.snd_nxt = self.snd_una
            self.snd_wl2 = seg.ack
            self._rto_at = None
            self._ack_now = True
            self._established(now)
        else:
            # Simultaneous open (RFC 9293 Figure 7): SYN-ACK with our ISS.
            self.state = State.SYN_RECEIVED
            self._need_syn = True
            self._retries = 0

    def _tfo_synack(self, seg: Segment) -> None:
        """RFC 7413 §4.1.3/§4.2.1 at the SYN-ACK: keep its cookie; the SYN's
        data it acknowledges leaves the send buffer, the rest is sent
        again at once as the next data (not a loss for congestion control,
        as Linux's tcp_rcv_fastopen_synack)."""
        cookie = seg.options.fastopen
        if cookie:
            self.tfo_got = cookie
        acked = max(seq_sub(seg.ack, seq_add(self.iss, 1)), 0)
        if acked:
            self._sbuf.consume(acked)
            self._sbuf_seq = seq_add(self._sbuf_seq, acked)
            self.bytes_acked += acked
        self.tfo_acked = acked
        if self.tfo_sent > acked:
            self.bytes_sent -= self.tfo_sent - acked  # counted when sent again
        self.snd_nxt = self.snd_max = seg.ack

    def _time_wait(self, now: float, seg: Segment) -> None:
        """Segments in TIME-WAIT (RFC 9293 §3.10.7.4, RFC 1337, as gVisor's
        handleTimeWaitSegment)."""
        flags = seg.flags
        if flags & RST:
            # (1) An RST at RCV.NXT ends TIME-WAIT, as Linux with
            # tcp_rfc1337=0; with ``rfc1337`` it is ignored (RFC 1337 fix 1,
            # no TIME-WAIT assassination). Others are ignored.
            if seg.seq == self.rcv_nxt and not self.config.rfc1337:
                self._close(now)
            return
        if flags & SYN and not flags & ACK:
            ts = seg.options.timestamp
            newer_ts = self.ts_on and ts is not None and seq_gt(ts[0], self.ts_recent)
            if seq_gt(seg.seq, self.rcv_nxt) or newer_ts:
                # (2) RFC 1122 §4.2.2.13, RFC 6191: a new incarnation.
                self._events.append(SynInTimeWait(seg))
                self._close(now)
            return
        if not flags & ACK:
            return  # (3)
        ts = seg.options.timestamp
        if self.ts_on and ts is not None and seq_geq(ts[0], self.ts_recent):
            self.ts_recent = ts[0]  # (4) RFC 7323 §4.3
            self.ts_recent_at = now
        if flags & FIN and seq_add(seg.seq, len(seg.payload) + 1) == self.rcv_nxt:
            # (5) a retransmitted FIN: ACK it and restart the 2*MSL timer.
            self._queued.append(self._make(now, self.snd_max, ACK))
            self._tw_at = now + self.config.time_wait_s
            return
        if seg.seq != self.rcv_nxt or seg.payload:
            # (6) dup ACK, rate limited as in other states (Linux
            # tcp_timewait_check_oow_rate_limit).
            if (seg.seg_len and not flags & SYN) or not self._invalid_limited(now):
                self._queued.append(self._make(now, self.snd_max, ACK))

    def _process_ack(self, now: float, seg: Segment) -> bool:
        """RFC 9293 §3.10.7.4 fifth, with RFC 5961 §5. False: drop the segment."""
        ack = seg.ack
        una = self.snd_una
        if seq_gt(ack, self.snd_max):
            self._challenge_ack(now)  # acks data never sent (RFC 5961 §5.2)
            return False
        if seq_lt(ack, seq_add(una, -self.max_snd_wnd)):
            self._challenge_ack(now)  # RFC 5961 §5.2: too old
            return False
        win = seg.window << self.snd_wscale
        acked = seq_sub(ack, una)
        cfg = self.config
        rec = self.recovery
        newly_sacked = 0
        sacked_before = rec.sacked()
        blocks = seg.options.sack_blocks
        if blocks:
            newly_sacked = rec.take_sack(now, ack if acked > 0 else una, blocks, self.snd_max, ack)
        if acked > 0:
            ts = seg.options.timestamp
            self._on_new_ack(now, ts[1] if ts is not None else 0, ack, acked)
        elif acked == 0 and seq_lt(una, self.snd_max):
            if newly_sacked > 0:
                # RFC 6675 §2: an ACK that SACKs new octets is a duplicate
                # ACK, data and window notwithstanding (so it works while
                # the peer sends too).
                dup = True
            else:
                # RFC 5681 §2: no data, no SYN/FIN, same window (and, with
                # SACK in use, no stale blocks either).
                dup = (
                    not seg.payload
                    and not seg.flags & (SYN | FIN)
                    and win == self.snd_wnd
                    and not (self.sack_on and blocks)
                )
            if dup:
                self.dup_acks_in += 1
                rec.on_dup_ack()
        if self._rack is not None and blocks:
            self._rack_detect(now)
        if rec.should_enter(self.snd_una, self.snd_max, newly_sacked, self.mss, cfg.dupthresh):
            self._enter_recovery(now)
        if self._prr is not None and rec.in_recovery:
            # RFC 6937 §3: DeliveredData = change in SND.UNA + change in
            # SACKed octets (without SACK: one MSS per duplicate ACK).
            if self.sack_on:
                delivered = max(acked, 0) + rec.sacked() - sacked_before
            else:
                delivered = acked if acked > 0 else self.mss
            self._prr_ack(max(delivered, 0))
        self._update_window(seg.seq, ack, win)
        # State changes once our FIN is acknowledged.
        fin_acked = self._fin_seq is not None and seq_gt(self.snd_una, self._fin_seq)
        s = self.state
        if fin_acked:
            if s is State.FIN_WAIT_1:
                self.state = State.FIN_WAIT_2
                if self.app_closed:
                    self._enter_fin_wait_2(now)
            elif s is State.CLOSING:
                self._enter_time_wait(now)
            elif s is State.LAST_ACK:
                self._close(now)
                return False
        return True

    def _update_window(self, seq: int, ack: int, win: int) -> None:
        """RFC 9293 §3.10.7.4 fifth: the send window from a segment newer
        than the last one that set it (SND.WL1/SND.WL2)."""
        if seq_lt(self.snd_wl1, seq) or (self.snd_wl1 == seq and seq_leq(self.snd_wl2, ack)):
            opened = win > self.snd_wnd
            self.snd_wnd = win
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if win > self.max_snd_wnd:
                self.max_snd_wnd = win
            if opened or win:
                self._persist_at = None if win else self._persist_at
                if win:
                    self._persist_backoff = 0

    def handle_fast(
        self, now: float, seq: int, ack: int, window: int, tsval: int, tsecr: int,
        payload: bytes | memoryview, has_ts: bool,
    ) -> bool:  # fmt: skip
        """Header prediction (Van Jacobson's, as Linux tcp_rcv_established):
        the segment the peer sends most often — ACK (maybe PSH) and nothing
        else, exactly at RCV.NXT, acknowledging new data or carrying data
        that fits the window, in ESTABLISHED outside loss recovery, with no
        option but a timestamp — is processed here in a few steps, with
        the same outcome as RFC 9293 §3.10.7.4's full processing. Returns
        False, having changed nothing, for anything else: the caller then
        builds a ``Segment`` for ``handle_segment``."""
        if self.state is not State.ESTABLISHED or seq != self.rcv_nxt or self.recovery.in_recovery:
            return False
        if has_ts != self.ts_on or (has_ts and seq_lt(tsval, self.ts_recent)):
            return False  # timestamps not as negotiated, or PAWS (RFC 7323 §5) to judge
        una = self.snd_una
        acked = seq_sub(ack, una)
        n = len(payload)
        if acked < 0 or acked > seq_sub(self.snd_max, una) or (not acked and not n):
            return False  # old, unsent, or a duplicate ACK: the full rules
        if n and (self._ooo or self.app_closed or n > seq_sub(self.rcv_adv, seq)):
            return False
        self.segs_in += 1
        cfg = self.config
        if cfg.keepalive:
            self._ka_probes = 0
            self._ka_at = now + cfg.keepalive_idle_s
        if has_ts and seq_leq(seq, self.last_ack_sent):  # RFC 7323 §4.3 (2)
            self.ts_recent = tsval
            self.ts_recent_at = now
        if acked:
            self._on_new_ack(now, tsecr, ack, acked)
        self._update_window(seq, ack, window << self.snd_wscale)
        if n:
            self._deliver(now, payload)
            self._schedule_ack(now, n)
        return True

    def _on_new_ack(self, now: float, tsecr: int, ack: int, acked: int) -> None:
        """SND.UNA advances by ``acked`` to ``ack``; ``tsecr``: the
        segment's TSecr (0 without a timestamp)."""
        data = acked
        if self._fin_seq is not None and seq_gt(ack, self._fin_seq):
            data -= 1  # the FIN's sequence number
        if data > len(self._sbuf):
            data = len(self._sbuf)
        if data > 0:
            self._sbuf.consume(data)
            self._sbuf_seq = seq_add(self._sbuf_seq, data)
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        self.bytes_acked += acked
        self._retries = 0
        self._persist_backoff = 0
        # RTT: RFC 7323 §4.1 (timestamps) or Karn's rule (RFC 6298 §3).
        rtt = self.ledger.on_ack(now, ack)
        if self.ts_on:
            rtt = self._ts_sample(now, tsecr) if tsecr else None
        elif rtt is not None:
            self.rtt.sample(rtt)
        self.rtt.reset_backoff()
        # Loss recovery (a full ACK ends the episode: RFC 6582 §3.2 step 3,
        # RFC 6675 §5 (C)), then congestion control.
        rec = self.recovery
        if rec.on_new_ack(now, ack, data, self.mss):
            self._prr = None
            self.cc.on_recovery_exit(now)  # RFC 6937 §3: cwnd = ssthresh
        else:
            self.cc.on_ack(now, acked, rtt, seq_sub(self.snd_max, ack))
            rack = self._rack
            if rack is not None and rack.tlp_repaired:
                # RFC 8985 §7.4.2: the probe repaired a loss; congestion
                # control reacts as to a recovery episode (Linux: CWR).
                rack.tlp_repaired = False
                self.cc.on_loss(now, seq_sub(self.snd_max, self.snd_una))
                self.cc.on_recovery_exit(now)
        # RFC 6298 (5.2)/(5.3).
        if seq_lt(self.snd_una, self.snd_max):
            self._arm_rto(now)
        else:
            self._rto_at = None
        if self._snd_blocked and len(self._sbuf) < self.config.snd_buf:
            self._snd_blocked = False
            self._events.append(Writable())

    def _ts_sample(self, now: float, tsecr: int) -> float | None:
        d = (self._ts_now(now) - tsecr) & SEQ_MASK
        if d >= 1 << 31:
            return None
        rtt = d / 1000.0
        self.rtt.sample(rtt)
        return rtt

    def _enter_recovery(self, now: float) -> None:
        """RFC 5681 §3.2 steps 2-3 / RFC 6582 §3.2 / RFC 6675 §5 step 4;
        RFC 6937 §3: RecoverFS = SND.NXT - SND.UNA."""
        flight = seq_sub(self.snd_max, self.snd_una)
        self.recovery.enter(self.snd_una, self.snd_max)
        self.cc.on_loss(now, flight)
        self.fast_retransmits += 1
        if self.ecn_on:
            # Linux tcp_init_cwnd_reduction: the receiver learns of the
            # reduction too, and an ECE of the same window is not another.
            self._ecn_high = self.snd_max
            self._cwr_pending = True
        if self.config.prr:
            self._prr = Prr(flight)

    def _prr_ack(self, delivered: int) -> None:
        """RFC 6937 §3 on each ACK in recovery: cwnd = pipe + sndcnt (as
        Linux tcp_cwnd_reduction), which both the retransmissions and new
        data then respect."""
        prr = self._prr
        assert prr is not None
        cc = self.cc
        pipe = self.recovery.pipe(self.snd_una, self.snd_nxt, self.snd_max, self.mss)
        cc.cwnd = pipe + prr.sndcnt(delivered, pipe, cc.ssthresh, self.mss)

    def _process_text(self, now: float, seg: Segment) -> None:
        """RFC 9293 §3.10.7.4 seventh (text) and eighth (FIN)."""
        s = self.state
        if s not in RECEIVING:
            return  # CLOSE-WAIT, CLOSING, LAST-ACK: the peer's FIN came already
        payload = seg.payload
        seq = seg.seq
        fin = bool(seg.flags & FIN)
        if seg.flags & SYN:
            seq = seq_add(seq, 1)
        if payload and self.app_closed:
            # Linux tcp_rcv_state_process "TCPAbortOnData": nobody will read.
            self._fail(now, ConnectionResetError, "data after close")
            return
        # Trim to the window (§3.10.7.4: "trim any portion that lies outside").
        front = seq_sub(self.rcv_nxt, seq)
        if front > 0:
            if self.sack_on and payload:
                # RFC 2883 §4 (1): report the duplicate part, at once (Linux).
                self._dsack = (seq, seq_add(seq, min(front, len(payload))))
                self._ack_now = True
            payload = payload[front:]
            seq = self.rcv_nxt
        room = seq_sub(self.rcv_adv, seq)
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            fin = False
        n = len(payload)
        if seq != self.rcv_nxt:
            if n:
                if self.sack_on:
                    end = seq_add(seq, n)
                    for blk in self._ooo:
                        if seq_leq(blk[0], seq) and seq_leq(end, seq_add(blk[0], len(blk[1]))):
                            self._dsack = (seq, end)  # RFC 2883 §4 (2): held already
                            break
                self._ooo_insert(seq, payload)
            if fin:
                self._ooo_fin = seq_add(seq, n)
            self._ack_now = True  # RFC 5681 §4.2: immediate ACK for out-of-order data
            return
        filled_hole = bool(self._ooo)
        if n:
            self._deliver(now, payload)
        if self._ooo:
            self._drain_ooo(now)
        if fin or (self._ooo_fin is not None and self._ooo_fin == self.rcv_nxt):
            self._on_fin(now)
            return
        if filled_hole:
            self._ack_now = True  # RFC 5681 §4.2: ACK at once when a hole is filled
        elif n:
            self._schedule_ack(now, n)

    def _deliver(self, now: float, data: bytes | memoryview) -> None:
        n = len(data)
        self._rbuf.append(data)
        self.rcv_nxt = seq_add(self.rcv_nxt, n)
        self.bytes_received += n
        ev = self._events
        if ev and type(ev[-1]) is DataReceived:
            ev[-1] = DataReceived(ev[-1].nbytes + n)
        else:
            ev.append(DataReceived(n))
        if self.config.rcv_autotune:
            self._autotune(now, n)

    def _autotune(self, now: float, n: int) -> None:
        """Receive-buffer auto-tuning (simplified Linux DRS): once per RTT,
        if more than half the buffer arrived and the application is keeping
        up, double the buffer (bounded by ``rcv_buf_max``)."""
        if self.rcv_buf >= self.config.rcv_buf_max:
            return
        if self._drs_at is None:
            self._drs_at = now
            self._drs_bytes = 0
        self._drs_bytes += n
        srtt = self.rtt.srtt or 0.001
        if now - self._drs_at >= srtt:
            if 2 * self._drs_bytes > self.rcv_buf and 2 * len(self._rbuf) < self.rcv_buf:
                self.rcv_buf = min(2 * self.rcv_buf, self.config.rcv_buf_max)
            self._drs_at = now
            self._drs_bytes = 0

    def _schedule_ack(self, now: float, n: int) -> None:
        """RFC 1122 §4.2.3.2 / RFC 5681 §4.2: ACK at least every second
        full-sized segment, and within the delayed-ACK timeout."""
        cfg = self.config
        if not cfg.delayed_ack:
            self._ack_now = True
            return
        self._acks_owed += n
        if self._acks_owed >= 2 * self.mss:
            self._ack_now = True
        elif self._ack_at is None:
            self._ack_at = now + cfg.delayed_ack_s

    def _ooo_insert(self, seq: int, data: bytes | memoryview) -> None:
        base = self.rcv_nxt
        lo = seq_sub(seq, base)
        hi = lo + len(data)
        keep: list[list] = []
        merge: list[tuple[int, bytearray]] = []
        for blk in self._ooo:
            bo = seq_sub(blk[0], base)
            be = bo + len(blk[1])
            if be < lo or bo > hi:
                keep.append(blk)
            else:
                merge.append((bo, blk[1]))
        if merge:
            mlo = min(lo, min(b[0] for b in merge))
            mhi = max(hi, max(b[0] + len(b[1]) for b in merge))
            buf = bytearray(mhi - mlo)
            buf[lo - mlo : hi - mlo] = data
            for bo, d in merge:
                buf[bo - mlo : bo - mlo + len(d)] = d
            new = [seq_add(base, mlo), buf]
        else:
            new = [seq, bytearray(data)]
        keep.append(new)
        keep.sort(key=lambda b: seq_sub(b[0], base))
        self._ooo = keep
        self._sack_last = seq

    def _drain_ooo(self, now: float) -> None:
        ooo = self._ooo
        while ooo and seq_leq(ooo[0][0], self.rcv_nxt):
            start, data = ooo.pop(0)
            skip = seq_sub(self.rcv_nxt, start)
            if skip < len(data):
                self._deliver(now, memoryview(data)[skip:])
        if not ooo:
            self._sack_last = None

    def _on_fin(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth."""
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._ooo_fin = None
        self._ooo.clear()
        self._peer_fin = True
        self._ack_now = True
        self._events.append(PeerFin())
        s = self.state
        if s is State.ESTABLISHED:
            self.state = State.CLOSE_WAIT
        elif s is State.FIN_WAIT_1:
            # Our FIN not yet acknowledged (else we would be in FIN-WAIT-2).
            self.state = State.CLOSING
        elif s is State.FIN_WAIT_2:
            self._fw2_at = None
            self._enter_time_wait(now)

    def _enter_fin_wait_2(self, now: float) -> None:
        t = self.config.fin_wait_2_timeout()
        if t is None:
            # TCP_LINGER2 < 0 (Linux): abort with RST instead of waiting.
            self._queue_rst(self.snd_max, self.rcv_nxt)
            self._close(now)
            return
        self._fw2_at = now + t

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self._rto_at = self._persist_at = self._ka_at = self._fw2_at = None
        self._tw_at = now + self.config.time_wait_s

    def _fail(
        self, now: float, err: type[OSError], reason: str, *, send_rst: bool = True, errno: int = 0
    ) -> None:
        """Abnormal end: Reset event, RST to the peer if synchronized."""
        if send_rst and self.state in SYNCHRONIZED and self.state is not State.TIME_WAIT:
            self._queue_rst(self.snd_max, self.rcv_nxt)
        self._error = err
        self._events.append(Reset(err, reason, errno))
        self._close(now)

    def _close(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._rto_at = self._ack_at = self._persist_at = None
        self._ka_at = self._tw_at = self._fw2_at = self._cork_at = None
        self._need_syn = self._ack_now = self._win_update = False
        self._events.append(Closed())

    def _queue_rst(self, seq: int, ack: int | None) -> None:
        flags = RST if ack is None else RST | ACK
        self._queued.append(Segment(self.local_port, self.remote_port, seq, ack or 0, flags, 0))

    # ------------------------------------------------------------ output

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000.0) + self.ts_offset) & SEQ_MASK  # 1 ms ticks (RFC 7323 §5.4)

    def _rcv_window(self) -> int:
        """RFC 9293 §3.8.6.2.2 receiver SWS avoidance, never shrinking the
        right edge (§3.8.6.2.2, RFC 7323 §2.4); returns the scaled field."""
        free = self.rcv_buf - len(self._rbuf)
        for blk in self._ooo:
            free -= len(blk[1])
        cur = seq_sub(self.rcv_adv, self.rcv_nxt)
        if cur < 0:
            cur = 0
        win = cur if free - cur < min(self.rcv_buf // 2, self.mss) else free
        ws = self.rcv_wscale
        if win > 0xFFFF << ws:
            win = 0xFFFF << ws
        raw = win >> ws
        if raw << ws < cur:
            raw = min((cur + (1 << ws) - 1) >> ws, 0xFFFF)
        self.rcv_adv = seq_add(self.rcv_nxt, raw << ws)
        return raw

    def _maybe_window_update(self) -> None:
        """After the application read: announce the window if it grew by
        at least min(buffer/2, MSS) (RFC 9293 §3.8.6.2.2) and at least
        fourfold, so a stalled sender learns it at once. Linux
        (tcp_cleanup_rbuf) asks for twofold; fourfold keeps the first read
        after the handshake — the SYN-ACK's unscaled 65,535 against a
        128 KiB buffer — from costing an update that the next ACK carries
        anyway, while a nearly closed window still opens at once."""
        if self.state not in RECEIVING:
            return
        free = min(self.rcv_buf - len(self._rbuf), 0xFFFF << self.rcv_wscale)
        cur = max(seq_sub(self.rcv_adv, self.rcv_nxt), 0)
        if free - cur >= min(self.rcv_buf // 2, self.mss) and free >= 4 * cur:
            self._win_update = True

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """RFC 2018 §4: the block holding the latest segment first; a D-SACK
        block before it, once (RFC 2883 §4)."""
        ooo = self._ooo
        limit = 3 if self.ts_on else 4
        blocks = [(b[0], seq_add(b[0], len(b[1]))) for b in ooo]
        ds = self._dsack
        if ds is not None:
            self._dsack = None
            if not ooo:
                return (ds,)
        last = self._sack_last
        if last is not None:
            for i, (lo, hi) in enumerate(blocks):
                if seq_leq(lo, last) and seq_lt(last, hi):
                    blocks.insert(0, blocks.pop(i))
                    break
        if ds is not None:
            blocks.insert(0, ds)
        return tuple(blocks[:limit])

    def _make(self, now: float, seq: int, flags: int, payload: bytes | memoryview = b"") -> Segment:
        """A segment with the current ACK, window and options; every
        segment carrying ACK settles any owed ACK."""
        opts = TcpOptions()
        if self.ts_on:
            opts.timestamp = (self._ts_now(now), self.ts_recent)
        if self.sack_on and (self._ooo or self._dsack is not None):
            opts.sack_blocks = self._sack_blocks()
        ack = 0
        if flags & ACK:
            if self._ecn_ece:
                flags |= ECE  # RFC 3168 §6.1.3
            ack = self.rcv_nxt
            self.last_ack_sent = ack
            self._ack_now = False
            self._ack_at = None
            self._acks_owed = 0
            self._win_update = False
            window = self._rcv_window()
        else:
            window = 0
        self.segs_out += 1
        return Segment(self.local_port, self.remote_port, seq, ack, flags, window, opts, payload)

    def _make_syn(self, now: float) -> Segment:
        """SYN or SYN-ACK with our options (RFC 7323 §2.2: window unscaled)."""
        cfg = self.config
        opts = TcpOptions(mss=self.adv_mss)
        synack = self.state is State.SYN_RECEIVED
        if cfg.window_scaling and (not synack or self.rcv_wscale or self.snd_wscale):
            opts.window_scale = self.rcv_wscale
        payload: bytes | memoryview = b""
        if synack:
            if self.sack_on:
                opts.sack_permitted = True
            if self.ts_on:
                opts.timestamp = (self._ts_now(now), self.ts_recent)
            if self.passive_open:  # not our own option, in a simultaneous open
                opts.fastopen = self.tfo_cookie or None  # RFC 7413 §4.1.2
        else:
            opts.sack_permitted = cfg.sack
            if cfg.timestamps:
                opts.timestamp = (self._ts_now(now), 0)
            if self.tfo_cookie is not None:
                if self._retries == 0:
                    opts.fastopen = self.tfo_cookie
                    payload = self._tfo_payload(opts)
                elif self.tfo_sent:
                    # RFC 7413 §4.1.3: the SYN with data may have been
                    # dropped for its data; it goes again without.
                    self.tfo_syn_lost = True
        window = min(self.rcv_buf - len(self._rbuf), 0xFFFF)
        flags = SYN | ACK if synack else SYN
        if synack:
            if self.ecn_on:
                flags |= ECE
        elif cfg.ecn == 1 and self._retries == 0:
            # RFC 3168 §6.1.1.1: a retransmitted SYN goes without ECN, in
            # case a middlebox drops ECN-setup SYNs (as Linux).
            flags |= ECE | CWR
            self._ecn_syn = True
        else:
            self._ecn_syn = False
        if synack:
            self.rcv_adv = seq_add(self.rcv_nxt, window)
            self.last_ack_sent = self.rcv_nxt
        self.segs_out += 1
        return Segment(
            self.local_port, self.remote_port, self.iss, self.rcv_nxt if synack else 0,
            flags, window, opts, payload,
        )  # fmt: skip

    def _tfo_payload(self, opts: TcpOptions) -> bytes | memoryview:
        """RFC 7413 §4.2.1: the first queued bytes for a SYN carrying a
        cookie, at most the server's MSS less our options (RFC 6691 §2)."""
        if not opts.fastopen:
            return b""
        n = min(len(self._sbuf), self.tfo_syn_mss - options_len(opts))
        if n <= 0:
            return b""
        self.tfo_sent = n
        self.bytes_sent += n
        return self._sbuf.peek(0, n)

    def _unsent(self) -> int:
        """Bytes (FIN included) between SND.NXT and the end of the queue."""
        end = seq_add(self._sbuf_seq, len(self._sbuf))
        n = seq_sub(end, self.snd_nxt)
        if self._fin_pending and not seq_gt(self.snd_nxt, self._fin_seq):  # type: ignore[arg-type]
            n += 1
        return max(n, 0)

    def _flight(self) -> int:
        rec = self.recovery
        if rec.in_recovery:
            return rec.pipe(self.snd_una, self.snd_nxt, self.snd_max, self.mss)
        return max(seq_sub(self.snd_nxt, self.snd_una), 0)

    def _usable_window(self) -> int:
        """min(cwnd, SND.WND) less what is in flight, from SND.NXT."""
        wnd_end = seq_add(self.snd_una, self.snd_wnd)
        by_rwnd = seq_sub(wnd_end, self.snd_nxt)
        by_cwnd = self.cc.cwnd - self._flight()
        return max(min(by_rwnd, by_cwnd), 0)

    def poll_transmit(self, now: float) -> list[Segment]:
        """Everything to send now, in order: RSTs and challenge ACKs first,
        then SYN/SYN-ACK, retransmissions, new data, FIN, a bare ACK."""
        out = self._queued
        self._queued = []
        s = self.state
        if s is State.CLOSED:
            return out
        if s is State.TIME_WAIT:
            if self._ack_now:
                out.append(self._make(now, self.snd_max, ACK))
            return out
        if self._need_syn:
            self._need_syn = False
            if self._retries == 0:
                self._syn_at = now
            syn = self._make_syn(now)
            out.append(syn)
            nxt = seq_add(self.iss, 1 + len(syn.payload))
            # A Fast Open server's data already sent goes again after a
            # resent SYN-ACK (go-back-N, as after an RTO).
            if not (self.tfo_data_in and seq_gt(self.snd_max, nxt)):
                self.snd_max = nxt
            self.snd_nxt = nxt
            self._arm_rto(now)
        if s is State.SYN_SENT or s is State.SYN_RECEIVED:
            if s is State.SYN_RECEIVED and self.tfo_data_in:
                # RFC 7413 §4.2.2: a Fast Open server may send data before
                # the handshake completes (the answer to the SYN's data).
                self._output(now, out)
            self._ack_now = False
            self._win_update = False
            return out
        if self._probe:
            self._send_probe(now, out)
        self._output(now, out)
        if self._uncork:
            self._uncork = False  # the cork timer lets out what was held then, once
        if self._cork_at is not None and not self._unsent():
            self._cork_at = None  # nothing held any more
        if self._ack_now or self._win_update:
            out.append(self._make(now, self.snd_max, ACK))
        return out

    def _output(self, now: float, out: list[Segment]) -> None:
        rec = self.recovery
        if not rec.rtx_queue and not rec.in_recovery and not self._unsent():
            return  # nothing to send or resend (the common case after an ACK)
        sent = 0
        # Retransmissions the loss recovery asks for.
        while sent < MAX_SEND_PER_POLL:
            r = rec.next_retransmission(
                self.snd_una, self.snd_max, self.cc.cwnd, self.mss, self.config.dupthresh
            )
            if r is None:
                break
            out.append(self._segment_at(now, r[0], r[1], rtx=True))
            rec.on_retransmitted(r[0])
            sent += 1
        # RFC 5681 §4.1: nothing sent for longer than an RTO and nothing in
        # flight: the congestion window no longer reflects the path.
        if (
            self.config.slow_start_after_idle
            and self._sent_data_at is not None
            and self.snd_una == self.snd_max
            and now - self._sent_data_at > self.rtt.rto
        ):
            self.cc.on_idle(now)
            self._sent_data_at = None
        # New data (and go-back-N resends after an RTO).
        while sent < MAX_SEND_PER_POLL:
            unsent = self._unsent()
            if unsent <= 0:
                break
            usable = self._usable_window()
            data_left = unsent - (1 if self._fin_pending else 0)
            fin_only = data_left <= 0
            if fin_only:
                # FIN alone: sent regardless of the window (it takes no space).
                out.append(
                    self._segment_at(now, self.snd_nxt, 0, rtx=seq_lt(self.snd_nxt, self.snd_max))
                )
                sent += 1
                break
            seg_mss = self.mss - self._sack_option_len()
            goal = seg_mss
            if self.tso_max > seg_mss:  # whole segments per super-segment
                goal = self.tso_max // seg_mss * seg_mss
            n = min(goal, data_left, usable)
            if n <= 0:
                break
            if n > seg_mss and n < data_left:
                # A super-segment cut by the window: whole segments only, so
                # no runt leaves in the middle of the stream (Linux
                # tcp_tso_autosize and tcp_mss_split_point).
                n -= n % seg_mss
            elif n < seg_mss:
                if n < data_left:
                    # RFC 9293 §3.8.6.2.1: window-limited; wait for a useful window
                    if n < self.max_snd_wnd // 2 and not self._persist_force:
                        break
                elif seq_geq(self.snd_nxt, self.snd_max):
                    # the queue's tail: cork (tcp(7): held at most cork_s),
                    # else Nagle (§3.7.4).
                    if self.cork:
                        if not self._uncork:
                            if self._cork_at is None:
                                self._cork_at = now + self.config.cork_s
                            break
                    elif not self.nodelay and seq_lt(self._nagle_una(), self.snd_nxt):
                        break
            self._persist_force = False
            out.append(
                self._segment_at(now, self.snd_nxt, n, rtx=seq_lt(self.snd_nxt, self.snd_max))
            )
            sent += 1
        if sent and self._rto_kind == _T_PTO:
            self._arm_rto(now)  # RFC 8985 §7.2: the probe follows the newest data
        # Persist timer (RFC 9293 §3.8.6.1): data waits on a closed window
        # and nothing is in flight to bring an ACK back.
        if (
            self._persist_at is None
            and self._unsent() > (1 if self._fin_pending else 0)
            and not seq_lt(self.snd_una, self.snd_max)
            and self._usable_window() < min(self.mss, self._unsent())
            and self._rto_at is None
        ):
            t = self.rtt.rto * (1 << min(self._persist_backoff, 16))
            self._persist_at = now + min(t, self.config.persist_max_s)

    def _nagle_una(self) -> int:
        """Nagle's "unacknowledged data" starts after our SYN: in
        SYN-RECEIVED a Fast Open server's first answer is not held for the
        SYN-ACK (only data counts, as Linux's Minshall check)."""
        if self.state is State.SYN_RECEIVED:
            return seq_add(self.iss, 1)
        return self.snd_una

    def _send_probe(self, now: float, out: list[Segment]) -> None:
        """RFC 8985 §7.3: one segment of new data if the receive window lets
        it go (congestion window notwithstanding), else the last segment
        sent again; TLP.end_seq is SND.NXT after it."""
        self._probe = False
        rack = self._rack
        if rack is None or not seq_lt(self.snd_una, self.snd_max) or rack.in_recovery:
            return
        data_left = seq_sub(seq_add(self._sbuf_seq, len(self._sbuf)), self.snd_nxt)
        room = seq_sub(seq_add(self.snd_una, self.snd_wnd), self.snd_nxt)
        if self.snd_nxt == self.snd_max and data_left > 0 and room > 0:
            n = min(self.mss - self._sack_option_len(), data_left, room)
            out.append(self._segment_at(now, self.snd_nxt, n, rtx=False))
            rack.tlp_rtx = False
        else:
            end = self.snd_max
            fin = self._fin_seq
            if self._fin_pending and fin is not None and seq_gt(end, fin):
                end = fin  # the FIN goes with the last data (or alone)
            start = seq_add(end, -self.mss)
            if seq_lt(start, self.snd_una):
                start = self.snd_una
            out.append(self._segment_at(now, start, seq_sub(end, start), rtx=True))
            rack.tlp_rtx = True
        rack.tlp_end = self.snd_max
        self.tlp_probes += 1

    def _sack_option_len(self) -> int:
        if self.sack_on and (self._ooo or self._dsack is not None):
            n = len(self._ooo) + (self._dsack is not None)
            return 4 + 8 * min(n, 3 if self.ts_on else 4)
        return 0

    def _segment_at(self, now: float, seq: int, n: int, *, rtx: bool) -> Segment:
        """A data (and/or FIN) segment of up to ``n`` bytes from ``seq``."""
        off = seq_sub(seq, self._sbuf_seq)
        avail = len(self._sbuf) - off
        if n > avail:
            n = max(avail, 0)
        payload = self._sbuf.peek(off, n)
        flags = ACK
        end = seq_add(seq, n)
        if n and off + n == len(self._sbuf):
            flags |= PSH
        if self._fin_pending and end == self._fin_seq:
            flags |= FIN
        ecn = self.ecn_on and n > 0 and not rtx
        if ecn and self._cwr_pending:
            flags |= CWR  # RFC 3168 §6.1.2: the first new data after a reduction
            self._cwr_pending = False
        seg = self._make(now, seq, flags, payload)
        if ecn:
            seg.ecn = ECT0  # RFC 3168 §6.1.4: not on retransmissions, ACKs, SYNs
        seg_mss = self.mss - self._sack_option_len()
        if n > seg_mss:
            seg.gso_size = seg_mss
        new_end = seq_add(end, 1 if flags & FIN else 0)
        self.ledger.on_transmit(now, seq, new_end)
        if self._prr is not None:
            self._prr.out += n  # RFC 6937 §3: prr_out
        if rtx:
            self.retransmits += 1
            self.bytes_retrans += n
        else:
            self.bytes_sent += n
            if n:
                self._sent_data_at = now
        if seq_leq(seq, self.snd_nxt) and seq_gt(new_end, self.snd_nxt):
            self.snd_nxt = new_end
        if seq_gt(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
        if self._rto_at is None:
            self._arm_rto(now)  # RFC 6298 (5.1)
        self._persist_at = None
        return seg

    # ------------------------------------------------------------ stats

    def stats(self) -> TcpStats:
        cc = self.cc
        rack = self._rack
        return TcpStats(
            state=self.state.value,
            cwnd=cc.cwnd,
            ssthresh=cc.ssthresh,
            srtt=self.rtt.srtt,
            rttvar=self.rtt.rttvar,
            rto=self.rtt.rto,
            mss=self.mss,
            advmss=self.adv_mss,
            snd_wnd=self.snd_wnd,
            rcv_wnd=max(seq_sub(self.rcv_adv, self.rcv_nxt), 0),
            rcv_buf=self.rcv_buf,
            snd_wscale=self.snd_wscale,
            rcv_wscale=self.rcv_wscale,
            timestamps=self.ts_on,
            sack=self.sack_on,
            retransmits=self.retransmits,
            rto_expiries=self.rto_expiries,
            fast_retransmits=self.fast_retransmits,
            tlp_probes=self.tlp_probes,
            dsacks_in=rack.dsacks if rack is not None else 0,
            reordering_seen=rack.reordering_seen if rack is not None else False,
            reo_wnd_mult=rack.reo_wnd_mult if rack is not None else 0,
            ecn=self.ecn_on,
            ecn_ce_in=self.ecn_ce_in,
            ecn_reductions=self.ecn_reductions,
            bytes_sent=self.bytes_sent,
            bytes_retrans=self.bytes_retrans,
            bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_received,
            segs_in=self.segs_in,
            segs_out=self.segs_out,
            dup_acks_in=self.dup_acks_in,
            challenge_acks=self.challenge_acks,
            challenge_acks_suppressed=self.challenge_acks_suppressed,
            unacked=max(seq_sub(self.snd_max, self.snd_una), 0),
            unsent=self._unsent(),
            unread=len(self._rbuf),
        )

    def __repr__(self) -> str:
        return (
            f"<TcpEndpoint {self.local_port}>{self.remote_port} {self.state.value}"
            f" una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>"
        )
