"""Edge cases handled as Linux handles them: answers to invalid segments
rate limited per connection (tcp_invalid_ratelimit), segments without ACK,
RST or SYN dropped first, the right edge of the window, the TCP_CORK
ceiling, and ICMP unreachable during a connect."""

from __future__ import annotations

import errno

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import TcpOptions
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Closed, Reset
from shardnet.shards.tcp.state import State

from .harness import IRS, ISS, Conn

PLAIN = TcpConfig(timestamps=False, window_scaling=False, sack=False)


def window_edge(c: Conn) -> int:
    """RCV.NXT + RCV.WND as the endpoint last advertised it."""
    c.ep.send(b"x")
    seg = c.expect("PA")
    return seq_add(seg.ack, seg.window)


def test_out_of_window_acks_answered_once_per_500_ms() -> None:
    c = Conn.established(PLAIN)
    far = seq_add(c.nxt, 1 << 20)
    c.send("A", seq=far)
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    c.now += 0.01
    c.send("A", seq=far)
    c.now += 0.2
    c.send("S", seq=far, options=TcpOptions(mss=1460))  # its challenge ACK shares the limit
    c.expect_nothing()
    c.now += 0.3
    c.send("A", seq=far)
    c.expect("A", seq=ISS + 1, ack=IRS + 1)


def test_out_of_window_data_is_always_answered() -> None:
    """Data is not part of an ACK loop, and its ACK may be what the peer
    needs (Linux tcp_oow_rate_limited)."""
    c = Conn.established(PLAIN)
    old = seq_add(c.nxt, -100)
    for _ in range(3):
        c.send("PA", seq=old, payload=b"y" * 10)
        c.expect("A", ack=IRS + 1)


def test_segment_without_ack_rst_or_syn_is_dropped_unanswered() -> None:
    c = Conn.established(PLAIN)
    c.send("P", seq=seq_add(c.nxt, 1 << 20), payload=b"far")
    c.send("F", seq=c.nxt)
    c.send("P", seq=c.nxt, payload=b"no ack")
    c.expect_nothing()
    assert c.ep.state is State.ESTABLISHED and c.ep.recv() == b""


def test_empty_segment_at_the_right_edge_is_acceptable() -> None:
    """Linux tcp_sequence: SEG.SEQ = RCV.NXT + RCV.WND with no data is
    acceptable (its ACK is processed, no duplicate ACK); one further is not."""
    c = Conn.established(PLAIN)
    edge = window_edge(c)
    c.send("A", seq=edge, ack=ISS + 2)
    c.expect_nothing()
    assert c.ep.snd_una == ISS + 2
    c.send("A", seq=seq_add(edge, 1), ack=ISS + 2)
    c.expect("A", ack=IRS + 1)


def test_cork_holds_a_partial_segment_at_most_200_ms() -> None:
    c = Conn.established(PLAIN)
    c.ep.set_cork(True)
    c.ep.send(b"a" * 3000)
    c.expect("A", length=1460)
    c.expect("A", length=1460)
    c.expect_nothing()  # the 80-byte tail waits for more
    c.advance(0.19)
    c.expect_nothing()
    c.advance(0.02)
    c.expect("PA", seq=ISS + 1 + 2920, length=80)
    c.send("A", ack=ISS + 3001)
    c.ep.send(b"b" * 10)  # a new tail: a new 200 ms
    c.advance(0.1)
    c.expect_nothing()
    c.ep.set_cork(False)
    c.expect("PA", length=10)


def test_icmp_host_unreachable_fails_a_connect_at_once() -> None:
    """As Linux in SYN-SENT: EHOSTUNREACH / ENETUNREACH, no retries."""
    for err in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        c = Conn.active()
        c.expect("S", seq=ISS)
        c.ep.handle_icmp_unreachable(c.now, False, "unreachable", errno=err, seq=ISS + 7)
        assert c.ep.state is State.SYN_SENT  # quotes no segment of ours (RFC 5927 §4.1)
        c.ep.handle_icmp_unreachable(c.now, False, "unreachable", errno=err, seq=ISS)
        ev = c.drain_events()
        assert isinstance(ev[0], Reset) and (ev[0].error, ev[0].errno) == (OSError, err)
        assert ev[1] == Closed()
        c.advance(5)
        c.expect_nothing()


def test_icmp_host_unreachable_is_soft_once_established() -> None:
    c = Conn.established(TcpConfig(timestamps=False, retries2=1))
    c.ep.send(b"x")
    c.expect("PA")
    c.ep.handle_icmp_unreachable(c.now, False, "host unreachable", errno=errno.EHOSTUNREACH,
                                 seq=ISS + 1)  # fmt: skip
    assert c.ep.state is State.ESTABLISHED
    c.advance(10)
    assert c.drain_events()[0] == Reset(TimeoutError, "host unreachable")
