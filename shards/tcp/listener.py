"""A listening socket, sans-I/O: the SYN queue, the accept queue, SYN cookies.

RFC 9293 §3.10.7.2 (LISTEN): an RST is ignored, an ACK gets
<SEQ=SEG.ACK><CTL=RST>, a SYN makes a child endpoint in SYN-RECEIVED.
Children stay in the listener until ``accept()``: the listener routes their
segments and timers, so a half-open connection costs the caller nothing.

Bounds (Linux semantics): the configuration's ``syn_backlog`` children in SYN-RECEIVED (the SYN
queue; Linux tcp_max_syn_backlog), ``backlog`` established children waiting
for ``accept()`` (the accept queue; listen()'s backlog). A SYN with the
accept queue full is dropped; so is a handshake-completing ACK (the child
stays in SYN-RECEIVED and the peer retransmits, tcp_abort_on_overflow=0).
With the SYN queue full, SYN cookies (RFC 4987 §3.6, ``isn.SynCookies``)
answer statelessly if enabled, else the SYN is dropped. A connection made
from a cookie has only the MSS (3 bits of the cookie): no window scaling,
SACK or timestamps.

TCP Fast Open (RFC 7413 §4.2.2), with the ``fastopen`` server bit and a
``fastopen_qlen`` (TCP_FASTOPEN) above 0: a SYN with an empty Fast Open
option, or with a cookie that is not valid for its source address, gets a
SYN-ACK with the valid cookie (``isn.TfoCookies``) and a normal handshake
(its data is dropped; the client sends it again). A SYN with data and a
valid cookie makes a child that takes the data at once and goes to the
accept queue still in SYN-RECEIVED, so the application reads the data
before the handshake completes (Linux does the same); at most
``fastopen_qlen`` such children are in SYN-RECEIVED at a time (accepted or
not, as Linux's fastopenq), beyond that the SYN falls back to a normal
handshake without a cookie.

RFC 1122 §4.2.3.10: segments with a non-unicast source or destination are
dropped silently (counted in ``dropped_non_unicast``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, FIN, RST, SYN, TcpOptions

from .config import TcpConfig, advertised_mss
from .endpoint import TcpEndpoint, addresses_acceptable, rst_for
from .isn import SynCookies, TfoCookies
from .segment import Segment
from .state import State

LISTEN_BACKLOG = 128  # accept queue (Linux SOMAXCONN before 5.4)

IsnFn = Callable[[float, bytes, int, bytes, int], int]  # IsnGenerator.isn
Key = tuple[bytes, int, bytes]  # (remote address, remote port, local address)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An established connection handed to the caller, who drives it from
    now on (its ``Connected``/``DataReceived`` events are still queued)."""

    endpoint: TcpEndpoint
    local_addr: bytes
    remote_addr: bytes


class TcpListener:
    __slots__ = (
        "config",
        "local_port",
        "backlog",
        "mtu",
        "ipv6",
        "_isn",
        "cookies",
        "_endpoint_kw",
        "_children",
        "_accept",
        "_dirty",
        "_out",
        "syn_received",
        "syns_dropped",
        "syn_fin_dropped",
        "acks_dropped",
        "cookies_sent",
        "cookies_accepted",
        "cookies_rejected",
        "dropped_non_unicast",
        "resets_sent",
        "tfo",
        "_tfo_pending",
        "tfo_accepted",
        "tfo_cookies_sent",
        "tfo_cookies_rejected",
        "tfo_overflow",
    )

    def __init__(
        self,
        config: TcpConfig,
        local_port: int,
        *,
        isn: IsnFn,
        cookies: SynCookies | None = None,
        tfo: TfoCookies | None = None,
        backlog: int = LISTEN_BACKLOG,
        mtu: int = 1500,
        ipv6: bool = False,
        endpoint_kw: dict[str, Any] | None = None,
    ) -> None:
        if backlog < 1:
            raise ValueError("backlog must be >= 1")
        # The SYN queue's bound is the configuration's ``syn_backlog``: a
        # stack-wide setting, changed at run time by replacing ``config``.
        self.config = config
        self.local_port = local_port
        self.backlog = backlog
        self.mtu = mtu
        self.ipv6 = ipv6
        self._isn = isn
        self.cookies = cookies
        self._endpoint_kw = endpoint_kw or {}
        self._children: dict[Key, TcpEndpoint] = {}
        self._accept: deque[Key] = deque()
        self._dirty: set[Key] = set()
        self._out: list[tuple[bytes, bytes, Segment]] = []
        self.syn_received = 0
        self.syns_dropped = 0
        self.syn_fin_dropped = 0
        self.acks_dropped = 0
        self.cookies_sent = 0
        self.cookies_accepted = 0
        self.cookies_rejected = 0
        self.dropped_non_unicast = 0
        self.resets_sent = 0
        self.tfo = tfo
        # Fast Open children not yet past SYN-RECEIVED (accepted ones too).
        self._tfo_pending: list[TcpEndpoint] = []
        self.tfo_accepted = 0  # SYNs whose data was taken (valid cookie)
        self.tfo_cookies_sent = 0  # SYN-ACKs with a cookie
        self.tfo_cookies_rejected = 0  # SYNs with data and a cookie not valid
        self.tfo_overflow = 0  # valid cookie, but fastopen_qlen children pending

    @property
    def state(self) -> State:
        return State.LISTEN

    def syn_queue_len(self) -> int:
        return len(self._children) - len(self._accept)

    def accept_queue_len(self) -> int:
        return len(self._accept)

    def _kw(self, peer: bytes) -> dict[str, Any]:
        """Per connection: a dual-stack listener's IPv4 peers get IPv4's
        header sizes (MSS, RFC 6691)."""
        return {"mtu": self.mtu, "ipv6": len(peer) == 16, **self._endpoint_kw}

    # ------------------------------------------------------------ input

    def handle_segment(self, now: float, src: bytes, dst: bytes, seg: Segment) -> None:
        """A segment to the listening port from ``src`` to ``dst``."""
        if not addresses_acceptable(src, dst):
            self.dropped_non_unicast += 1  # RFC 1122 §4.2.3.10: no RST, no SYN-ACK
            return
        key = (src, seg.src_port, dst)
        child = self._children.get(key)
        flags = seg.flags
        if child is not None:
            if (
                child.state is State.SYN_RECEIVED
                and flags & ACK
                and not flags & (SYN | RST)
                and len(self._accept) >= self.backlog
                and key not in self._accept
            ):
                self.acks_dropped += 1  # accept queue full: the peer retransmits
                return
            child.handle_segment(now, seg)
            self._settle(key, child)
            return
        if flags & RST:
            return  # §3.10.7.2 first
        if flags & ACK:
            if not flags & SYN and self._cookie_ack(now, key, seg):
                return
            r = rst_for(seg)  # §3.10.7.2 second: <SEQ=SEG.ACK><CTL=RST>
            if r is not None:
                self.resets_sent += 1
                self._out.append((dst, src, r))
            return
        if not flags & SYN:
            return
        if flags & FIN:
            # SYN+FIN is no opening anyone sends, only scanners' probes:
            # dropped without an answer, as Linux does (tcp_rcv_state_process).
            self.syn_fin_dropped += 1
            return
        self.syn_received += 1
        if len(self._accept) >= self.backlog:
            self.syns_dropped += 1
            return
        if self.syn_queue_len() >= self.config.syn_backlog:
            if self.cookies is None:
                self.syns_dropped += 1
            else:
                self._cookie_syn_ack(now, key, seg)
            return
        iss = self._isn(now, dst, self.local_port, src, seg.src_port)
        cookie, take = self._fastopen(src, seg)
        ep = TcpEndpoint.passive(
            now, self.config, seg, iss=iss, fastopen=cookie, fastopen_data=take, **self._kw(src)
        )
        self._children[key] = ep
        self._dirty.add(key)
        if take:
            self._tfo_pending.append(ep)
            self._accept.append(key)  # RFC 7413 §4.2.2: the data is readable now

    def _fastopen(self, src: bytes, seg: Segment) -> tuple[bytes | None, bool]:
        """RFC 7413 §4.2.2 for a SYN: (cookie for the SYN-ACK, take the data)."""
        cfg, tfo, asked = self.config, self.tfo, seg.options.fastopen
        if asked is None or tfo is None or not cfg.fastopen & 2 or cfg.fastopen_qlen <= 0:
            return None, False
        if asked and seg.payload:
            if tfo.check(src, asked):
                self._tfo_pending = [
                    ep for ep in self._tfo_pending if ep.state is State.SYN_RECEIVED
                ]
                if len(self._tfo_pending) >= cfg.fastopen_qlen:
                    self.tfo_overflow += 1  # Linux: a normal handshake, no cookie
                    return None, False
                self.tfo_accepted += 1
                return None, True
            self.tfo_cookies_rejected += 1
        self.tfo_cookies_sent += 1
        return tfo.make(src), False

    def _cookie_syn_ack(self, now: float, key: Key, seg: Segment) -> None:
        """RFC 4987 §3.6: a SYN-ACK whose ISN encodes the connection."""
        src, sport, dst = key
        cookies = self.cookies
        assert cookies is not None  # noqa: S101 - checked by the caller
        peer_mss = seg.options.mss or 536
        ours = advertised_mss(self.config.user_mss, self.mtu, len(src) == 16)
        iss = cookies.make(now, (dst, self.local_port, src, sport), seg.seq, min(peer_mss, ours))
        self.cookies_sent += 1
        synack = Segment(
            self.local_port,
            sport,
            iss,
            seq_add(seg.seq, 1),
            SYN | ACK,
            min(self.config.rcv_buf, 0xFFFF),
            TcpOptions(mss=ours),
        )
        self._out.append((dst, src, synack))

    def _cookie_ack(self, now: float, key: Key, seg: Segment) -> bool:
        cookies = self.cookies
        if cookies is None:
            return False
        src, sport, dst = key
        iss = seq_add(seg.ack, -1)
        mss = cookies.check(now, (dst, self.local_port, src, sport), iss, seq_add(seg.seq, -1))
        if mss is None:
            self.cookies_rejected += 1
            return False
        if len(self._accept) >= self.backlog:
            self.acks_dropped += 1
            return True  # valid but no room: drop silently
        self.cookies_accepted += 1
        ep = TcpEndpoint.from_cookie(now, self.config, seg, iss=iss, mss=mss, **self._kw(src))
        ep.handle_segment(now, seg)  # data that came with the ACK
        self._children[key] = ep
        self._dirty.add(key)
        self._settle(key, ep)
        return True

    def _settle(self, key: Key, child: TcpEndpoint) -> None:
        self._dirty.add(key)
        s = child.state
        if s is State.CLOSED:
            self._out.extend((key[2], key[0], seg) for seg in child.poll_transmit(0.0))
            del self._children[key]
            self._dirty.discard(key)
            if key in self._accept:
                self._accept.remove(key)
        elif s is not State.SYN_RECEIVED and key not in self._accept:
            self._accept.append(key)

    # ------------------------------------------------------------ accept

    def accept(self) -> Accepted | None:
        """The oldest established connection, which leaves the listener."""
        while self._accept:
            key = self._accept.popleft()
            ep = self._children.pop(key)
            self._dirty.discard(key)
            return Accepted(ep, key[2], key[0])
        return None

    # ------------------------------------------------------------ output, timers

    def poll_transmit(self, now: float) -> list[tuple[bytes, bytes, Segment]]:
        """(local address, remote address, segment) to send."""
        out = self._out
        self._out = []
        for key in self._dirty:
            ep = self._children.get(key)
            if ep is not None:
                out.extend((key[2], key[0], seg) for seg in ep.poll_transmit(now))
        self._dirty.clear()
        return out

    def next_deadline(self) -> float | None:
        best: float | None = None
        for ep in self._children.values():
            t = ep.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timeout(self, now: float) -> None:
        for key, ep in list(self._children.items()):
            t = ep.next_deadline()
            if t is not None and t <= now:
                ep.handle_timeout(now)
                self._settle(key, ep)

    def close(self, now: float) -> None:
        """Stop listening: every child is reset (Linux inet_csk_listen_stop)."""
        for key, ep in list(self._children.items()):
            ep.abort(now)
            self._settle(key, ep)
