"""Two real endpoints (real CC, RTT estimator, SACK scoreboard) over an
in-memory link that drops, duplicates, reorders and delays segments with a
seeded random generator: 1 MB goes each way intact (RFC 9293 reliability,
RFC 6298 / 5681 / 6582 / 6675 recovery)."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Reset, TcpEndpoint
from shardnet.shards.tcp.listener import TcpListener
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import wire

A_ADDR = bytes([198, 18, 0, 1])
B_ADDR = bytes([198, 18, 0, 2])
MB = 1 << 20


@dataclass
class Link:
    """One direction: each segment is dropped with ``loss``, duplicated with
    ``dup``, and delayed by ``delay`` plus a random jitter up to ``jitter``
    (which reorders)."""

    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    delay: float = 0.01
    jitter: float = 0.0
    q: list[tuple[float, int, Segment]] = field(default_factory=list)
    n: int = 0
    dropped: int = 0

    def put(self, now: float, seg: Segment) -> None:
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self.n += 1
            t = now + self.delay + self.rng.random() * self.jitter
            heapq.heappush(self.q, (t, self.n, wire(seg)))

    def next_time(self) -> float | None:
        return self.q[0][0] if self.q else None

    def pop_due(self, now: float) -> list[Segment]:
        out = []
        while self.q and self.q[0][0] <= now:
            out.append(heapq.heappop(self.q)[2])
        return out


def run_pair(
    cfg: TcpConfig,
    *,
    seed: int,
    loss: float = 0.0,
    dup: float = 0.0,
    jitter: float = 0.0,
    nbytes: int = MB,
    limit_s: float = 600.0,
) -> tuple[TcpEndpoint, TcpEndpoint, float]:
    """A connects to B's listener; both send ``nbytes`` and close; returns
    the endpoints and the simulated time taken."""
    rng = random.Random(seed)
    ab = Link(rng, loss, dup, 0.01, jitter)
    ba = Link(rng, loss, dup, 0.01, jitter)
    data_a = rng.randbytes(nbytes)
    data_b = rng.randbytes(nbytes)
    now = 0.0
    a = TcpEndpoint.connect(now, cfg, 40000, 80, iss=rng.getrandbits(32))
    lst = TcpListener(cfg, 80, isn=lambda *_: rng.getrandbits(32))
    b: TcpEndpoint | None = None
    got_a = bytearray()  # what A received (B's data)
    got_b = bytearray()
    sent = {"a": 0, "b": 0}

    def pump(ep: TcpEndpoint, name: str, data: bytes, got: bytearray, link: Link) -> None:
        if ep.state in (State.ESTABLISHED, State.CLOSE_WAIT) and sent[name] < len(data):
            sent[name] += ep.send(memoryview(data)[sent[name] : sent[name] + 65536])
            if sent[name] == len(data):
                ep.shutdown_write()
        while chunk := ep.recv(1 << 20):
            got += chunk
        while (e := ep.next_event()) is not None:
            assert not isinstance(e, Reset), f"{name}: {e}"
        for s in ep.poll_transmit(now):
            link.put(now, s)

    while now < limit_s:
        for s in ab.pop_due(now):
            if b is None:
                lst.handle_segment(now, A_ADDR, B_ADDR, s)
                for _, _, out in lst.poll_transmit(now):
                    ba.put(now, out)
                acc = lst.accept()
                if acc is not None:
                    b = acc.endpoint
            else:
                b.handle_segment(now, s)
        for s in ba.pop_due(now):
            a.handle_segment(now, s)
        for ep in (a, b):
            if ep is not None:
                d = ep.next_deadline()
                if d is not None and d <= now:
                    ep.handle_timeout(now)
        if b is None:
            d = lst.next_deadline()
            if d is not None and d <= now:
                lst.handle_timeout(now)
            for _, _, out in lst.poll_transmit(now):
                ba.put(now, out)
        pump(a, "a", data_a, got_a, ab)
        if b is not None:
            pump(b, "b", data_b, got_b, ba)
        done = (State.TIME_WAIT, State.CLOSED)
        if b is not None and a.state in done and b.state in done:
            break  # one side may wait out TIME-WAIT: not worth simulating
        times = [t for t in (ab.next_time(), ba.next_time(), a.next_deadline()) if t is not None]
        if b is not None and (t := b.next_deadline()) is not None:
            times.append(t)
        if b is None and (t := lst.next_deadline()) is not None:
            times.append(t)
        assert times, f"deadlock: {a!r} {b!r}"
        now = max(now, min(times))
    assert b is not None
    assert bytes(got_b) == data_a, f"B got {len(got_b)} of {len(data_a)}"
    assert bytes(got_a) == data_b, f"A got {len(got_a)} of {len(data_b)}"
    assert {a.state, b.state} <= {State.TIME_WAIT, State.CLOSED}
    return a, b, now


def test_clean_link_transfers_both_ways() -> None:
    a, b, t = run_pair(TcpConfig(), seed=1)
    assert a.stats().retransmits == 0 and b.stats().retransmits == 0
    assert a.ts_on and a.sack_on and a.snd_wscale == 7


@pytest.mark.parametrize("sack", [True, False])
@pytest.mark.parametrize(("seed", "loss"), [(2, 0.05), (3, 0.10)])
def test_lossy_reordering_duplicating_link(sack: bool, seed: int, loss: float) -> None:
    """5-10% loss, 5% duplication, reordering within 20 ms jitter."""
    a, b, t = run_pair(TcpConfig(sack=sack), seed=seed, loss=loss, dup=0.05, jitter=0.02)
    st = a.stats()
    assert st.retransmits > 0
    assert a.sack_on is sack


def test_lossy_link_newreno_no_options() -> None:
    """RFC 6582 NewReno without SACK, timestamps or window scaling."""
    cfg = TcpConfig(cc="newreno", sack=False, timestamps=False, window_scaling=False)
    run_pair(cfg, seed=4, loss=0.07, dup=0.02, jitter=0.01)


def test_small_buffers_and_delayed_acks_off() -> None:
    """Flow control with a 16 KiB receive buffer (no auto-tuning) and a
    4 KiB send buffer, delayed ACKs off, TCP_NODELAY."""
    cfg = TcpConfig(rcv_buf=16384, rcv_buf_max=16384, snd_buf=4096, delayed_ack=False, nodelay=True)
    run_pair(cfg, seed=5, loss=0.03, jitter=0.005, nbytes=200_000)
