"""RACK-TLP (RFC 8985) and D-SACK (RFC 2883): time-based loss detection
with its reordering window, the reorder timer, tail loss probes, and the
comparison with RFC 6675 DupThresh (the ``rack`` setting off) on the
lossy, reordering link."""

from __future__ import annotations

import pytest

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import TcpOptions
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.recovery import RackRecovery, SentLedger, is_dsack

from .harness import ISS, Conn, FixedCC, FixedRtt
from .test_link import run_pair

MSS = 1000
UNA = ISS + 1


def sack_conn(rack: bool = True) -> Conn:
    """SACK without timestamps (blocks are easier to read), MSS 1000, a
    wide fixed window; a 10 ms RTT sample taken."""
    cfg = TcpConfig(timestamps=False, window_scaling=False, rack=rack)
    c = Conn.established(cfg, mss=MSS, peer_opts=TcpOptions(mss=MSS, sack_permitted=True),
                         cc=FixedCC(), rtt=FixedRtt(1.0))  # fmt: skip
    c.ep.send(b"x" * MSS)
    c.output()
    c.now += 0.01
    c.send("A", ack=UNA + MSS)  # RTT sample 10 ms, RACK.min_RTT 10 ms
    return c


def at(k: int) -> int:
    """The start of segment k of the data after the first (acknowledged) one."""
    return seq_add(UNA, MSS * (k + 1))


def send_segments(c: Conn, n: int) -> list[int]:
    c.ep.send(b"y" * (MSS * n))
    return [s.seq for s in c.output()]


def sack(c: Conn, *blocks: tuple[int, int], ack: int | None = None) -> None:
    c.send("A", ack=at(0) if ack is None else ack, options=TcpOptions(sack_blocks=blocks))


# ------------------------------------------------------------- D-SACK


def test_dsack_detection_rules() -> None:
    """RFC 2883 §4: below the cumulative ACK, or inside the second block."""
    assert is_dsack([(100, 200)], 200)
    assert is_dsack([(500, 600), (400, 700)], 300)
    assert not is_dsack([(500, 600), (700, 800)], 300)
    assert not is_dsack([(500, 600)], 300)
    assert not is_dsack([], 300)


def test_receiver_reports_a_duplicate_segment_with_dsack() -> None:
    """RFC 2883 §4 (1): the ACK for a segment received twice carries a
    D-SACK block for it (first), then no more."""
    c = sack_conn()
    data = b"d" * 500
    start = c.nxt
    c.send("PA", payload=data)
    c.send("PA", seq=start, payload=data)  # the same again
    out = c.output()
    assert out and out[-1].options.sack_blocks == ((start, seq_add(start, 500)),)
    assert out[-1].ack == seq_add(start, 500)
    c.send("PA", seq=start, payload=data[:100] + b"")  # again, a part of it
    assert c.output()[-1].options.sack_blocks == ((start, seq_add(start, 100)),)
    c.send("PA", payload=b"e" * 10)
    c.advance(0.5)
    assert all(not s.options.sack_blocks for s in c.output())


def test_dsack_grows_the_reordering_window_once_per_round_trip() -> None:
    """RFC 8985 §6.2 step 4: reo_wnd_mult += 1 per round trip with a
    D-SACK; the window is min_RTT/4 * mult, at most SRTT."""
    led = SentLedger()
    rack = RackRecovery(0, led)
    led.on_transmit(0.0, 0, 10_000)
    rack.take_sack(0.01, 0, [(1000, 2000)], 10_000)
    rack.on_new_ack(0.02, 0, 0, MSS)
    assert rack.min_rtt == pytest.approx(0.01) and rack.reo_wnd_mult == 1
    rack.take_sack(0.03, 0, [(1000, 2000)], 10_000)  # not a D-SACK: ordinary repeat
    assert rack.reo_wnd_mult == 1 and rack.dsacks == 0
    led.on_ack(0.03, 3000)
    rack.take_sack(0.03, 3000, [(0, 1000)], 10_000)  # below the ACK: D-SACK
    assert rack.reo_wnd_mult == 2 and rack.reordering_seen and rack.dsacks == 1
    rack.take_sack(0.03, 3000, [(500, 1000)], 10_000)  # same round trip
    assert rack.reo_wnd_mult == 2
    assert rack.reo_wnd(0.1, MSS, 3) == pytest.approx(0.01 / 4 * 2)
    assert rack.reo_wnd(0.001, MSS, 3) == pytest.approx(0.001)  # bounded by SRTT
    led.on_ack(0.05, 10_000)
    rack.take_sack(0.05, 10_000, [(4000, 5000)], 10_000)  # a later round trip
    assert rack.reo_wnd_mult == 3


# ------------------------------------------------------------- RACK


def test_reordered_segment_is_waited_for_then_marked_lost_by_the_timer() -> None:
    """Segment 0 missing and 1 SACKed: not lost yet (one segment SACKed,
    reo_wnd = min_RTT/4); the reorder timer marks it after RACK.rtt +
    reo_wnd and recovery resends it; nothing else is resent."""
    c = sack_conn()
    seqs = send_segments(c, 4)
    assert seqs == [at(k) for k in range(4)]
    c.now += 0.01
    sack(c, (at(1), at(2)))
    c.expect_nothing()  # DupThresh would not fire either, but RACK waits on time
    c.advance(0.0024)
    c.expect_nothing()
    c.advance(0.0002)  # 10 ms + 2.5 ms after it was sent
    c.expect("A", seq=at(0), length=MSS)
    c.expect_nothing()
    assert c.ep.fast_retransmits == 1 and c.ep.retransmits == 1


def test_reordered_segment_arriving_in_time_is_not_resent() -> None:
    c = sack_conn()
    send_segments(c, 4)
    c.now += 0.01
    sack(c, (at(1), at(2)))
    c.now += 0.001
    c.send("A", ack=at(4))  # the late segment arrived: everything is acknowledged
    c.advance(2.0)
    assert c.ep.retransmits == 0 and c.ep.fast_retransmits == 0
    assert c.ep.stats().reordering_seen  # sent once, delivered below RACK.fack


def test_three_sacked_segments_mark_the_hole_lost_at_once() -> None:
    """No reordering seen and DupThresh segments SACKed: reo_wnd = 0
    (RFC 8985 §6.2 step 4), as quick as RFC 6675's fast retransmit."""
    c = sack_conn()
    send_segments(c, 5)
    c.now += 0.01
    sack(c, (at(1), at(4)))
    c.expect("A", seq=at(0), length=MSS)
    c.expect_nothing()


def test_lost_retransmission_is_detected_without_an_rto() -> None:
    """RACK's marks are by time: a retransmission that is lost again is
    marked when data sent after it is SACKed (RFC 8985 §3.3 'lost
    retransmissions'); DupThresh would wait for the RTO."""
    c = sack_conn()
    send_segments(c, 5)
    c.now += 0.01
    sack(c, (at(1), at(4)))
    c.expect("A", seq=at(0), length=MSS)  # lost again
    c.ep.send(b"z" * MSS)
    c.expect("PA", seq=at(5))
    c.now += 0.01
    sack(c, (at(1), at(4)), (at(5), at(6)))
    c.advance(0.01)
    c.expect("A", seq=at(0), length=MSS)
    assert c.ep.rto_expiries == 0


# ------------------------------------------------------------- TLP


def tail_loss_time(rack: bool) -> float:
    """Ten segments, the last four lost: how long until the first of
    them is resent."""
    c = sack_conn(rack)
    t0 = c.now
    send_segments(c, 10)
    c.now += 0.01
    c.send("A", ack=at(6))
    for _ in range(200):
        c.advance(0.005)
        for s in c.output():
            if s.seq == at(9) and s.payload:  # the probe: answer with a SACK
                c.now += 0.01
                sack(c, (at(9), at(10)), ack=at(6))
            if s.seq == at(6) and s.payload:
                return c.now - t0
    raise AssertionError("never resent")


def test_tail_loss_probe_recovers_a_tail_loss_before_the_rto() -> None:
    """RFC 8985 §7: PTO = 2 * SRTT sends the last segment again; its SACK
    lets RACK mark the rest lost: a fast recovery instead of an RTO
    (here 1 s) with go-back-N."""
    with_rack = tail_loss_time(True)
    without = tail_loss_time(False)
    assert with_rack < 0.1
    assert without >= 1.0


def test_probe_carries_new_data_when_there_is_some() -> None:
    """RFC 8985 §7.3: new data goes as the probe (the window allows it,
    the congestion window does not matter)."""
    c = sack_conn()
    c.ep.cc.cwnd = 2 * MSS  # type: ignore[misc]
    send_segments(c, 4)  # two leave, two wait for the window
    c.advance(0.019)
    c.expect_nothing()
    c.advance(0.002)  # PTO = 2 * 10 ms
    c.expect("A", seq=at(2), length=MSS)
    c.expect_nothing()
    assert c.ep.tlp_probes == 1
    c.advance(0.5)
    c.expect_nothing()  # at most one probe per tail; the RTO comes next
    c.advance(0.6)
    c.expect("A", seq=at(0))
    assert c.ep.rto_expiries == 1


def test_single_segment_in_flight_allows_for_a_delayed_ack() -> None:
    """RFC 8985 §7.2: PTO += WCDelAckT (200 ms) when one segment is out."""
    c = sack_conn()
    send_segments(c, 1)
    c.advance(0.2)
    c.expect_nothing()
    c.advance(0.03)
    c.expect("PA", seq=at(0), length=MSS)  # the last segment, sent again
    assert c.ep.tlp_probes == 1


def test_no_probe_with_rack_off() -> None:
    c = sack_conn(rack=False)
    send_segments(c, 3)
    c.advance(0.9)
    c.expect_nothing()
    assert c.ep.tlp_probes == 0


# ------------------------------------------------------------- on the link


def test_reordering_link_fewer_spurious_retransmissions_than_dupthresh() -> None:
    """No loss, segments reordered within 4 ms: RFC 6675's DupThresh takes
    the reordering for loss (spurious retransmissions, and the halved
    window slows the transfer); RACK waits reo_wnd, and D-SACKs widen it."""
    rack_retx = plain_retx = 0
    rack_t = plain_t = 0.0
    for seed in (11, 12):
        a, b, t = run_pair(TcpConfig(), seed=seed, jitter=0.004)
        rack_retx += a.stats().retransmits + b.stats().retransmits
        rack_t += t
        a, b, t = run_pair(TcpConfig(rack=False), seed=seed, jitter=0.004)
        plain_retx += a.stats().retransmits + b.stats().retransmits
        plain_t += t
    assert plain_retx >= 10
    assert rack_retx * 4 <= plain_retx
    assert rack_t < plain_t


def test_lossy_link_recovers_without_timeouts() -> None:
    """5 % loss with reordering: RACK-TLP recovers tail losses by probes
    and lost retransmissions by time, so far fewer RTOs than DupThresh."""
    rack_rto = plain_rto = 0
    for seed in (2, 3):
        a, b, _ = run_pair(TcpConfig(), seed=seed, loss=0.05, jitter=0.004)
        rack_rto += a.stats().rto_expiries + b.stats().rto_expiries
        a, b, _ = run_pair(TcpConfig(rack=False), seed=seed, loss=0.05, jitter=0.004)
        plain_rto += a.stats().rto_expiries + b.stats().rto_expiries
    assert rack_rto * 4 <= plain_rto
