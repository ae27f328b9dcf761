"""A DSL over one sans-I/O TCP endpoint (STYLE.md §5), gVisor-context style.

``Conn`` holds an endpoint under test, a fake clock and the fake peer's
sequence numbers. Segments go through the real codec both ways (emit, then
``TcpView.checked``), so the wire layout is exercised too.

    c = Conn.established()               # handshake done, events drained
    c.send("PA", payload=b"hi")          # from the peer: seq/ack filled in
    c.expect("A", ack=c.irs + 3)         # the next segment the endpoint sent
    c.expect_nothing()
    c.advance(0.2)                       # fires timers, collects their output

Flags are tcpdump-like letters: F S R P A (e.g. "SA", "FA", "R", "RA").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, TcpView
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Connected, TcpEndpoint
from shardnet.shards.tcp.segment import Segment

LOCAL_PORT = 40000  # the endpoint under test
REMOTE_PORT = 80  # the fake peer
ISS = 1_000_000  # endpoint's ISS
IRS = 4_294_960_000  # peer's ISN: close to the wrap on purpose
PEER_WND = 65535

_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG}


def flags_of(spec: str) -> int:
    f = 0
    for ch in spec:
        f |= _LETTERS[ch]
    return f


def letters(flags: int) -> str:
    return "".join(ch for ch, bit in _LETTERS.items() if flags & bit) or "-"


def wire(seg: Segment) -> Segment:
    """Through the codec and back: what the other side parses."""
    return Segment.from_view(TcpView.checked(seg.to_bytes()))


class FixedRtt:
    """A fixed RTO that still doubles on back-off; records samples."""

    def __init__(self, rto: float = 1.0) -> None:
        self.base = rto
        self._rto = rto
        self.samples: list[float] = []

    @property
    def rto(self) -> float:
        return self._rto

    @property
    def srtt(self) -> float | None:
        return self.samples[-1] if self.samples else None

    @property
    def rttvar(self) -> float | None:
        return 0.0 if self.samples else None

    def sample(self, rtt: float) -> None:
        self.samples.append(rtt)

    def backoff(self) -> None:
        self._rto *= 2

    def reset_backoff(self) -> None:
        self._rto = self.base


class FixedCC:
    """A fixed congestion window; records the calls it gets."""

    def __init__(self, cwnd: int = 1 << 20) -> None:
        self.cwnd = cwnd
        self.ssthresh = cwnd
        self.calls: list[str] = []

    def on_ack(self, now: float, acked_bytes: int, rtt: float | None, in_flight: int) -> None:
        pass

    def on_loss(self, now: float, in_flight: int) -> None:
        self.calls.append("loss")

    def on_recovery_exit(self, now: float) -> None:
        self.calls.append("exit")

    def on_rto(self, now: float, in_flight: int) -> None:
        self.calls.append("rto")

    def on_mss_change(self, mss: int) -> None:
        pass

    def on_idle(self, now: float) -> None:
        pass  # a fixed window does not restart


@dataclass
class Conn:
    ep: TcpEndpoint
    now: float = 0.0
    irs: int = IRS  # peer's ISN
    iss: int = ISS
    nxt: int = seq_add(IRS, 1)  # the peer's next sequence number
    peer_ts: int | None = None  # peer TSval to send (None: no timestamps)
    peer_wscale: int = 0
    pending: list[Segment] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    last_tsval: int = 0  # the endpoint's latest TSval, echoed by the peer

    # ------------------------------------------------------------ building

    @staticmethod
    def kw(cc: Any = None, rtt: Any = None, **kw: Any) -> dict[str, Any]:
        return {"cc": cc or FixedCC(), "rtt": rtt or FixedRtt(), **kw}

    @classmethod
    def active(cls, config: TcpConfig | None = None, **kw: Any) -> Conn:
        cfg = config or TcpConfig(timestamps=False, window_scaling=False, sack=False)
        ep = TcpEndpoint.connect(0.0, cfg, LOCAL_PORT, REMOTE_PORT, iss=ISS, **cls.kw(**kw))
        return cls(ep)

    @classmethod
    def established(
        cls,
        config: TcpConfig | None = None,
        *,
        mss: int = 1460,
        window: int = PEER_WND,
        peer_opts: TcpOptions | None = None,
        **kw: Any,
    ) -> Conn:
        """Active open completed against the fake peer; events drained."""
        c = cls.active(config, **kw)
        c.expect("S", seq=ISS)
        opts = peer_opts or TcpOptions(mss=mss)
        if opts.timestamp is not None:
            c.peer_ts = opts.timestamp[0]
        if opts.window_scale is not None:
            c.peer_wscale = opts.window_scale
        c.ep.handle_segment(
            c.now, wire(c.seg("SA", seq=IRS, ack=ISS + 1, window=window, options=opts))
        )
        c.expect("A", seq=ISS + 1, ack=seq_add(IRS, 1))
        assert c.drain_events() == [Connected()]
        return c

    # ------------------------------------------------------------ peer side

    def seg(
        self,
        flags: str,
        *,
        seq: int | None = None,
        ack: int | None = None,
        window: int = PEER_WND,
        payload: bytes = b"",
        options: TcpOptions | None = None,
    ) -> Segment:
        f = flags_of(flags)
        if options is None:
            options = TcpOptions()
            if self.peer_ts is not None:
                options.timestamp = (self.peer_ts, self.last_tsval)
        return Segment(
            REMOTE_PORT,
            LOCAL_PORT,
            self.nxt if seq is None else seq,
            (self.ep.snd_max if ack is None else ack) if f & ACK else 0,
            f,
            window,
            options,
            payload,
        )

    def send(self, flags: str = "A", **kw: Any) -> Segment:
        """A segment from the peer; a default seq advances ``nxt``."""
        advance = "seq" not in kw
        s = self.seg(flags, **kw)
        self.ep.handle_segment(self.now, wire(s))
        if advance:
            self.nxt = seq_add(self.nxt, s.seg_len)
        return s

    def send_seg(self, s: Segment) -> None:
        self.ep.handle_segment(self.now, wire(s))

    # ------------------------------------------------------------ expectations

    def _poll(self) -> None:
        for s in self.ep.poll_transmit(self.now):
            w = wire(s)
            if w.options.timestamp is not None:
                self.last_tsval = w.options.timestamp[0]
            self.pending.append(w)

    def output(self) -> list[Segment]:
        self._poll()
        out, self.pending = self.pending, []
        return out

    def expect(
        self,
        flags: str,
        *,
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        payload: bytes | None = None,
        length: int | None = None,
    ) -> Segment:
        self._poll()
        assert self.pending, f"expected [{flags}], got nothing"
        s = self.pending.pop(0)
        got = letters(s.flags)
        want = letters(flags_of(flags))
        assert got == want, f"flags {got} != {want}: {s.summary()}"
        if seq is not None:
            assert s.seq == seq & 0xFFFFFFFF, f"seq {s.seq} != {seq}: {s.summary()}"
        if ack is not None:
            assert s.ack == ack & 0xFFFFFFFF, f"ack {s.ack} != {ack}: {s.summary()}"
        if window is not None:
            assert s.window == window, f"window {s.window} != {window}"
        if payload is not None:
            assert bytes(s.payload) == payload
        if length is not None:
            assert len(s.payload) == length, f"len {len(s.payload)} != {length}"
        return s

    def expect_nothing(self) -> None:
        self._poll()
        assert not self.pending, "unexpected: " + "; ".join(s.summary() for s in self.pending)

    def drain_events(self) -> list[Any]:
        out = []
        while (e := self.ep.next_event()) is not None:
            out.append(e)
        return out

    # ------------------------------------------------------------ time

    def advance(self, dt: float) -> None:
        """Move the clock, firing every deadline on the way in order and
        collecting the output of each (as the shard loop does)."""
        end = self.now + dt
        self._poll()  # what is due now arms the timers
        while True:
            d = self.ep.next_deadline()
            if d is None or d > end:
                break
            self.now = max(self.now, d)
            self.ep.handle_timeout(self.now)
            self._poll()
        self.now = end
        self._poll()
