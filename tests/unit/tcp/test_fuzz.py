"""Robustness: random (often hostile) segments into endpoints in every
state never raise and keep the sequence-space invariants."""

from __future__ import annotations

import random

import pytest

from shardnet.common.seqnum import seq_add, seq_leq
from shardnet.common.wire.tcp import TcpOptions
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import ISS, LOCAL_PORT, REMOTE_PORT, Conn, wire


def random_segment(rng: random.Random, c: Conn) -> Segment:
    near = rng.random() < 0.7
    seq = seq_add(c.nxt, rng.randint(-3000, 3000) if near else rng.getrandbits(32))
    ack = seq_add(c.ep.snd_una, rng.randint(-3000, 60000) if near else rng.getrandbits(32))
    opts = TcpOptions()
    if rng.random() < 0.5:
        opts.timestamp = (rng.getrandbits(32), rng.getrandbits(32))
    if rng.random() < 0.3:
        blocks = []
        for _ in range(rng.randint(1, 3)):
            lo = seq_add(c.ep.snd_una, rng.randint(-2000, 60000))
            blocks.append((lo, seq_add(lo, rng.randint(-100, 5000))))
        opts.sack_blocks = tuple(blocks)
    payload = rng.randbytes(rng.choice((0, 0, 1, 100, 1000)))
    flags = rng.getrandbits(6) | (0x10 if rng.random() < 0.8 else 0)
    return Segment(REMOTE_PORT, LOCAL_PORT, seq, ack, flags, rng.getrandbits(16), opts, payload)


@pytest.mark.parametrize("seed", range(6))
def test_random_segments_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    peer = TcpOptions(mss=1000, sack_permitted=True, timestamp=(100, 0), window_scale=3)
    c = Conn.established(TcpConfig(time_wait_s=1.0), peer_opts=peer)
    c.ep.send(rng.randbytes(40000))
    if seed % 2:
        c.ep.shutdown_write()
    for _ in range(1500):
        c.ep.handle_segment(c.now, wire(random_segment(rng, c)))
        if rng.random() < 0.2:
            c.nxt = seq_add(c.nxt, rng.randint(0, 1000))
        c.ep.recv(rng.randint(0, 5000))
        c.output()
        c.now += rng.random() * 0.05
        d = c.ep.next_deadline()
        if d is not None and d <= c.now:
            c.ep.handle_timeout(c.now)
        ep = c.ep
        assert seq_leq(ep.snd_una, ep.snd_nxt) and seq_leq(ep.snd_nxt, ep.snd_max)
        assert seq_leq(ep.snd_una, seq_add(ISS, 40002))
        ep.stats()
        c.drain_events()
        if ep.state is State.CLOSED:
            break
