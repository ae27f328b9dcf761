"""Retransmission: RFC 6298 timer, Karn, back-off and the retry budget;
RFC 5681 fast retransmit; RFC 6582 NewReno partial ACKs."""

from __future__ import annotations

import pytest

from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Closed, Reset
from shardnet.shards.tcp.state import State

from .harness import IRS, ISS, Conn, FixedCC, FixedRtt

PLAIN = TcpConfig(timestamps=False, window_scaling=False, sack=False)


def test_rto_retransmits_with_backoff() -> None:
    """RFC 6298 (5.4)-(5.6): on expiry resend the earliest unacked segment,
    double the RTO, restart the timer."""
    c = Conn.established(PLAIN)
    c.ep.send(b"data")
    c.expect("PA", seq=ISS + 1)
    c.advance(0.99)
    c.expect_nothing()
    c.advance(0.02)
    c.expect("PA", seq=ISS + 1, payload=b"data")
    c.advance(1.98)
    c.expect_nothing()
    c.advance(0.04)
    c.expect("PA", seq=ISS + 1)
    assert c.ep.stats().rto_expiries == 2


def test_ack_stops_the_timer_and_resets_backoff() -> None:
    """RFC 6298 (5.2)/(5.3): all acked -> timer off; new ACK -> back-off ends."""
    rtt = FixedRtt()
    c = Conn.established(PLAIN, rtt=rtt)
    c.ep.send(b"data")
    c.output()
    c.advance(1.01)
    c.expect("PA")
    assert rtt.rto == 2.0
    c.send("A", ack=ISS + 5)
    assert c.ep.next_deadline() is None
    assert rtt.rto == 1.0


def test_retries2_budget_ends_in_timeout() -> None:
    """RFC 1122 §4.2.3.5 (R2), Linux tcp_retries2: after the budget the
    connection is reset with TimeoutError and an RST is sent."""
    c = Conn.established(TcpConfig(timestamps=False, retries2=3))
    c.ep.send(b"data")
    c.expect("PA")
    c.advance(1 + 2 + 4 + 0.01)
    assert [s.seq for s in c.output()] == [ISS + 1] * 3
    c.advance(8.0)
    c.expect("RA", seq=ISS + 5)
    assert c.ep.state is State.CLOSED
    ev = c.drain_events()
    assert isinstance(ev[0], Reset) and ev[0].error is TimeoutError and ev[1] == Closed()
    with pytest.raises(TimeoutError):
        c.ep.send(b"x")


def test_soft_icmp_error_reported_on_timeout() -> None:
    """RFC 1122 §4.2.3.9 / RFC 5927: unreachable is soft, reported at the end."""
    c = Conn.established(TcpConfig(timestamps=False, retries2=1))
    c.ep.handle_icmp_unreachable(c.now, hard=False, reason="host unreachable")
    assert c.ep.state is State.ESTABLISHED
    c.ep.send(b"x")
    c.advance(10)
    ev = c.drain_events()
    assert ev[0] == Reset(TimeoutError, "host unreachable")


def test_hard_icmp_error_in_syn_sent_refuses() -> None:
    """RFC 1122 §4.2.3.9 (Linux): port unreachable aborts a connect."""
    c = Conn.active()
    c.expect("S")
    c.ep.handle_icmp_unreachable(c.now, hard=True, reason="port unreachable")
    assert c.drain_events()[0].error is ConnectionRefusedError


def test_karn_no_sample_from_retransmitted_segment() -> None:
    """RFC 6298 §3 (Karn): no RTT sample from a retransmitted segment."""
    rtt = FixedRtt()
    c = Conn.established(PLAIN, rtt=rtt)
    rtt.samples.clear()
    c.ep.send(b"data")
    c.output()
    c.advance(1.01)
    c.expect("PA")
    c.send("A", ack=ISS + 5)
    assert rtt.samples == []
    c.ep.send(b"more")
    c.output()
    c.now += 0.3
    c.send("A", ack=ISS + 9)
    assert rtt.samples == [pytest.approx(0.3)]


def test_go_back_n_after_rto() -> None:
    """RFC 5681 §3.1: after an RTO cwnd is one segment; sending restarts at SND.UNA."""
    cc = FixedCC(cwnd=10 * 1460)

    class LossWindow(FixedCC):
        def on_rto(self, now: float, in_flight: int) -> None:
            self.cwnd = 1460

    cc = LossWindow(cwnd=10 * 1460)
    c = Conn.established(PLAIN, cc=cc)
    c.ep.send(b"x" * 4380)
    assert len(c.output()) == 3
    c.advance(1.01)
    c.expect("A", seq=ISS + 1, length=1460)
    c.expect_nothing()
    cc.cwnd = 10 * 1460
    c.send("A", ack=ISS + 1461)
    c.expect("A", seq=ISS + 1461)
    c.expect("PA", seq=ISS + 2921)


def test_fast_retransmit_on_three_dup_acks() -> None:
    """RFC 5681 §3.2: the third duplicate ACK triggers a retransmission of
    SND.UNA's segment and the congestion response, before any RTO."""
    cc = FixedCC(cwnd=20 * 1460)
    c = Conn.established(PLAIN, cc=cc)
    c.ep.send(b"x" * 1460 * 6)
    assert len(c.output()) == 6
    c.send("A", ack=ISS + 1)  # not a dup: nothing outstanding was acked? (it is, 1st)
    c.send("A", ack=ISS + 1)
    c.expect_nothing()
    c.send("A", ack=ISS + 1)
    assert cc.calls == ["loss"]
    c.expect("A", seq=ISS + 1, length=1460)
    assert c.ep.stats().dup_acks_in == 3


def test_dup_ack_rules() -> None:
    """RFC 5681 §2: an ACK with data, a window change, or nothing
    outstanding is not a duplicate ACK."""
    c = Conn.established(PLAIN)
    for _ in range(4):
        c.send("A", ack=ISS + 1)  # nothing outstanding
    c.ep.send(b"x" * 3000)
    c.output()
    c.send("PA", ack=ISS + 1, payload=b"a")
    c.send("A", ack=ISS + 1, window=1000)
    c.send("A", ack=ISS + 1, window=2000)
    assert c.ep.stats().dup_acks_in == 0


def test_newreno_partial_ack() -> None:
    """RFC 6582 §3.2 step 5: a partial ACK retransmits the next hole at once;
    the full ACK (>= recover) ends recovery."""
    cc = FixedCC(cwnd=20 * 1460)
    c = Conn.established(PLAIN, cc=cc)
    c.ep.send(b"x" * 1460 * 6)
    c.output()
    for _ in range(3):
        c.send("A", ack=ISS + 1)
    c.expect("A", seq=ISS + 1)  # fast retransmit of segment 0
    c.send("A", ack=ISS + 1 + 2 * 1460)  # partial: segment 2 lost too
    c.expect("A", seq=ISS + 1 + 2 * 1460, length=1460)
    assert c.ep.recovery.in_recovery
    c.send("A", ack=ISS + 1 + 6 * 1460)
    assert not c.ep.recovery.in_recovery and cc.calls == ["loss", "exit"]


def test_no_second_fast_retransmit_in_same_window() -> None:
    """RFC 6582 §3.2 step 2: dup ACKs below "recover" do not start another recovery."""
    cc = FixedCC(cwnd=20 * 1460)
    c = Conn.established(PLAIN, cc=cc)
    c.ep.send(b"x" * 1460 * 6)
    c.output()
    for _ in range(6):
        c.send("A", ack=ISS + 1)
    assert cc.calls == ["loss"]


def test_fin_retransmitted() -> None:
    """RFC 9293 §3.10.4 / RFC 6298: a lost FIN is retransmitted on RTO."""
    c = Conn.established(PLAIN)
    c.ep.close(c.now)
    c.expect("FA", seq=ISS + 1, ack=IRS + 1)
    c.advance(1.01)
    c.expect("FA", seq=ISS + 1)
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.FIN_WAIT_2


def test_synack_retries() -> None:
    """Linux tcp_synack_retries: a passive child gives up after its budget."""
    from shardnet.common.wire.tcp import SYN, TcpOptions
    from shardnet.shards.tcp.endpoint import TcpEndpoint
    from shardnet.shards.tcp.segment import Segment

    from .harness import LOCAL_PORT, REMOTE_PORT

    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN, 65535, TcpOptions(mss=1400))
    cfg = TcpConfig(synack_retries=1, timestamps=False)
    c = Conn(TcpEndpoint.passive(0.0, cfg, syn, iss=ISS, cc=FixedCC(), rtt=FixedRtt()))
    c.expect("SA")
    c.advance(1.01)
    c.expect("SA")
    c.advance(2.0)
    assert c.ep.state is State.CLOSED
    c.expect_nothing()


def test_user_timeout_ends_unacknowledged_data_with_etimedout() -> None:
    """RFC 5482 / Linux TCP_USER_TIMEOUT: data unacknowledged for 3 s aborts
    the connection with ETIMEDOUT, long before the retry budget (15 RTOs);
    the last retransmission timer is clamped to the timeout."""
    import errno

    c = Conn.established(TcpConfig(timestamps=False, user_timeout_ms=3000))
    c.ep.send(b"data")
    c.expect("PA")
    c.advance(2.99)  # RTOs at 1 and 3 (clamped from 1+2=3): one retransmission
    assert c.ep.state is State.ESTABLISHED
    c.advance(0.02)
    assert c.ep.state is State.CLOSED
    ev = c.drain_events()
    assert isinstance(ev[0], Reset) and ev[0].errno == errno.ETIMEDOUT


def test_user_timeout_counts_from_the_first_unacknowledged_send() -> None:
    """Data that keeps being acknowledged never times out, however long the
    connection lives."""
    c = Conn.established(TcpConfig(timestamps=False, user_timeout_ms=1500))
    for _ in range(5):
        c.ep.send(b"x")
        (seg,) = c.output()
        c.advance(0.5)
        c.send("A", ack=seg.seq + 1)
    assert c.ep.state is State.ESTABLISHED
