"""Two real endpoints under a hypothesis state machine: the applications
send, read and close at random, the network between them delivers any
segment in flight in any order, drops and duplicates segments, time jumps
fire the timers, and a blind attacker (who does not know the sequence
numbers) injects segments. After every step:

* nothing raised;
* each side's sequence variables keep their order (SND.UNA ≤ SND.NXT ≤
  SND.MAX) and never go back (RFC 9293 §3.4);
* what each application has read is a prefix of what the other side's
  application wrote: no byte lost, reordered, duplicated or invented.

At the end the network heals (no more loss) and, unless an injected RST
hit the exact sequence number (RFC 5961 §3.2 still accepts that one), both
sides must have read everything the other wrote and closed.

Segments reach the endpoint as the demultiplexer hands them over
(``TcpDemux.deliver``): a bare ACK with at most a timestamp option tries
header prediction (``handle_fast``) first, everything else
``handle_segment``.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shardnet.common.seqnum import seq_add, seq_leq, seq_sub
from shardnet.common.wire.tcp import ACK, PSH, RST, SYN, URG, TcpOptions
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Reset, TcpEndpoint
from shardnet.shards.tcp.listener import TcpListener
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import wire

A_ADDR = bytes([198, 18, 0, 1])
B_ADDR = bytes([198, 18, 0, 2])
A_PORT, B_PORT = 40000, 80
HEAL_LIMIT_S = 3600.0  # simulated time the healed network gets to finish


def feed(ep: TcpEndpoint, now: float, seg: Segment) -> None:
    """As ``TcpDemux.deliver`` does: header prediction for a bare ACK."""
    opts = seg.options
    bare = opts.mss is None and opts.window_scale is None and not opts.sack_permitted
    if seg.flags & ~PSH == ACK and bare and not opts.sack_blocks:
        tsval, tsecr = opts.timestamp or (0, 0)
        has_ts = opts.timestamp is not None
        if ep.handle_fast(now, seg.seq, seg.ack, seg.window, tsval, tsecr, seg.payload, has_ts):
            return
    ep.handle_segment(now, seg)


class Side:
    """One endpoint and its application: what it wrote, what it read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ep: TcpEndpoint | None = None
        self.written = bytearray()
        self.read = bytearray()
        self.shut = False
        self.eof = False
        self.reset = False
        self.una = 0
        self.rcv = 0

    def pump(self, now: float) -> list[Segment]:
        ep = self.ep
        if ep is None:
            return []
        while chunk := ep.recv(1 << 20):
            self.read += chunk
        if ep.eof:
            self.eof = True
        while (e := ep.next_event()) is not None:
            if isinstance(e, Reset):
                self.reset = True
        return ep.poll_transmit(now)


class TcpPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.rng = random.Random(0)
        self.cfg = TcpConfig(rcv_buf=32768, rcv_buf_max=65536, snd_buf=32768, time_wait_s=5.0)
        self.a = Side("a")
        self.b = Side("b")
        self.a.ep = TcpEndpoint.connect(self.now, self.cfg, A_PORT, B_PORT, iss=0xFFFF0000)
        self.listener = TcpListener(self.cfg, B_PORT, isn=lambda *_: 0x7FFFFFF0)
        # Segments in flight: to B (from A or the attacker) and to A.
        self.to_b: list[Segment] = []
        self.to_a: list[Segment] = []
        self.pump()

    # --- the machinery ---------------------------------------------------------
    def pump(self) -> None:
        self.to_b.extend(wire(s) for s in self.a.pump(self.now))
        self.to_a.extend(wire(s) for s in self.b.pump(self.now))
        self.to_a.extend(wire(s) for _, _, s in self.listener.poll_transmit(self.now))
        if self.b.ep is None and (acc := self.listener.accept()) is not None:
            self.b.ep = acc.endpoint
            self.to_a.extend(wire(s) for s in self.b.pump(self.now))

    def arrive(self, to_b: bool, seg: Segment) -> None:
        if not to_b:
            assert self.a.ep is not None
            feed(self.a.ep, self.now, seg)
        elif self.b.ep is None:  # the listener holds the connection until accept
            self.listener.handle_segment(self.now, A_ADDR, B_ADDR, seg)
        else:
            feed(self.b.ep, self.now, seg)
        self.pump()

    def fire_timers(self) -> None:
        for side in (self.a, self.b):
            ep = side.ep
            if ep is not None and (d := ep.next_deadline()) is not None and d <= self.now:
                ep.handle_timeout(self.now)
        d = self.listener.next_deadline()
        if d is not None and d <= self.now:
            self.listener.handle_timeout(self.now)
        self.pump()

    def queue(self, to_b: bool) -> list[Segment]:
        return self.to_b if to_b else self.to_a

    def side(self, is_a: bool) -> Side:
        return self.a if is_a else self.b

    # --- rules -----------------------------------------------------------------
    @rule(is_a=st.booleans(), n=st.integers(1, 20000))
    def app_writes(self, is_a: bool, n: int) -> None:
        s = self.side(is_a)
        if s.ep is None or s.shut or s.ep.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        data = self.rng.randbytes(n)
        taken = s.ep.send(data)
        s.written += data[:taken]
        self.pump()

    @rule(is_a=st.booleans())
    def app_shuts_down(self, is_a: bool) -> None:
        s = self.side(is_a)
        if s.ep is None or s.shut or s.ep.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        s.ep.shutdown_write()
        s.shut = True
        self.pump()

    @precondition(lambda self: self.to_b or self.to_a)
    @rule(to_b=st.booleans(), pick=st.integers(0, 1 << 16))
    def network_delivers(self, to_b: bool, pick: int) -> None:
        q = self.queue(to_b) or self.queue(not to_b)
        to_b = q is self.to_b
        self.arrive(to_b, q.pop(pick % len(q)))

    @precondition(lambda self: self.to_b or self.to_a)
    @rule(to_b=st.booleans(), pick=st.integers(0, 1 << 16))
    def network_drops(self, to_b: bool, pick: int) -> None:
        q = self.queue(to_b) or self.queue(not to_b)
        q.pop(pick % len(q))

    @precondition(lambda self: self.to_b or self.to_a)
    @rule(to_b=st.booleans(), pick=st.integers(0, 1 << 16))
    def network_duplicates(self, to_b: bool, pick: int) -> None:
        q = self.queue(to_b) or self.queue(not to_b)
        q.append(q[pick % len(q)])

    @rule(dt=st.sampled_from([0.001, 0.04, 0.2, 1.0, 3.0, 30.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.fire_timers()

    @rule(
        to_b=st.booleans(),
        flags=st.sets(st.sampled_from([ACK, SYN, RST, URG, PSH])),
        seq=st.integers(0, (1 << 32) - 1),
        ack=st.integers(0, (1 << 32) - 1),
        window=st.integers(0, 65535),
        payload=st.binary(max_size=64),
        ts=st.none() | st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1)),
    )
    def attacker_injects(
        self, to_b: bool, flags: set[int], seq: int, ack: int, window: int, payload: bytes,
        ts: tuple[int, int] | None,
    ) -> None:  # fmt: skip
        """A blind segment from the peer's address and port. Data and FIN
        in the window are indistinguishable from the peer's own (TCP cannot
        tell), so injected payload lands outside the receive window; a RST
        may hit (RFC 5961 §3.2 accepts one at exactly RCV.NXT)."""
        target = self.b if to_b else self.a
        ep = target.ep
        if ep is None:
            return
        f = 0
        for bit in flags:
            f |= bit
        if payload:
            # Outside [RCV.NXT - 2**30, RCV.NXT + 2**30): never acceptable.
            seq = seq_add(ep.rcv_nxt, (1 << 31) + (seq % (1 << 29)))
        src, dst = (A_PORT, B_PORT) if to_b else (B_PORT, A_PORT)
        opts = TcpOptions(timestamp=ts)
        self.arrive(to_b, wire(Segment(src, dst, seq, ack, f, window, opts, payload)))

    # --- invariants -------------------------------------------------------------
    @invariant()
    def sequence_space_in_order(self) -> None:
        for s in (self.a, self.b):
            ep = s.ep
            if ep is None or ep.state in (State.SYN_SENT, State.SYN_RECEIVED):
                continue
            assert seq_leq(ep.snd_una, ep.snd_nxt) and seq_leq(ep.snd_nxt, ep.snd_max), s.name
            if s.una:
                assert seq_leq(s.una, ep.snd_una), f"{s.name}: SND.UNA went back"
                assert seq_leq(s.rcv, ep.rcv_nxt), f"{s.name}: RCV.NXT went back"
            s.una, s.rcv = ep.snd_una, ep.rcv_nxt

    @invariant()
    def reads_are_prefixes_of_writes(self) -> None:
        for reader, writer in ((self.a, self.b), (self.b, self.a)):
            n = len(reader.read)
            assert n <= len(writer.written), f"{reader.name} read bytes nobody wrote"
            assert reader.read == writer.written[:n], f"{reader.name} read corrupted data"

    def teardown(self) -> None:
        """The network heals: whatever is in flight arrives, nothing more is
        lost; both sides close and must end with everything read."""
        done = (State.TIME_WAIT, State.CLOSED)
        limit = self.now + HEAL_LIMIT_S
        while self.now < limit:
            if self.a.reset or self.b.reset:
                return  # an injected RST hit: the data check above is what holds
            for s in (self.a, self.b):
                if s.ep is not None and not s.shut:
                    s.ep.shutdown_write()
                    s.shut = True
                    self.pump()
            if self.to_b or self.to_a:
                to_b = bool(self.to_b)
                self.arrive(to_b, self.queue(to_b).pop(0))
                continue
            a, b = self.a.ep, self.b.ep
            if a is not None and b is not None and a.state in done and b.state in done:
                break
            times = [t for s in (self.a, self.b) if s.ep and (t := s.ep.next_deadline())]
            if (t := self.listener.next_deadline()) is not None:
                times.append(t)
            if not times:
                break
            self.now = max(self.now, min(times))
            self.fire_timers()
        if self.a.reset or self.b.reset:
            return
        assert self.b.ep is not None, "the connection never opened"
        assert self.a.read == self.b.written, f"a read {len(self.a.read)} of {len(self.b.written)}"
        assert self.b.read == self.a.written, f"b read {len(self.b.read)} of {len(self.a.written)}"
        assert self.a.eof and self.b.eof
        assert seq_sub(self.a.ep.snd_una, self.a.ep.snd_max) == 0


TcpPair.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tcp_pair_under_chaos = TcpPair.TestCase
