"""The ledger of sent data (RTT samples by Karn's rule, RFC 6298 §3) and the
two loss recoveries' choices, without an endpoint around them."""

from __future__ import annotations

import pytest

from shardnet.common.seqnum import seq_add
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.recovery import NewRenoRecovery, SackRecovery, SentLedger

from .harness import ISS, Conn, FixedCC, FixedRtt

BASE = 0xFFFF_F000  # close to the wrap on purpose


def at(n: int) -> int:
    return seq_add(BASE, n)


def test_sample_is_from_the_newest_data_acknowledged_once_per_round_trip() -> None:
    led = SentLedger()
    led.on_transmit(0.0, at(0), at(1000))
    led.on_transmit(0.1, at(1000), at(2000))
    assert led.on_ack(0.5, at(1500)) == pytest.approx(0.4)
    assert led.on_ack(0.6, at(2000)) is None  # not past SND.MAX of the last sample
    led.on_transmit(0.7, at(2000), at(3000))
    assert led.on_ack(0.9, at(3000)) == pytest.approx(0.2)
    assert led.on_ack(1.0, at(3000)) is None  # nothing newly acknowledged


def test_no_sample_when_acknowledged_data_was_retransmitted() -> None:
    """Karn: the ACK may be for either transmission."""
    led = SentLedger()
    led.on_transmit(0.0, at(0), at(3000))
    led.on_transmit(1.0, at(1000), at(2000))  # resent from the middle
    assert led.on_ack(1.6, at(1500)) is None
    assert led.on_ack(1.7, at(2000)) is None
    assert led.on_ack(2.0, at(3000)) == pytest.approx(2.0)  # the tail, sent once at 0


def test_a_resend_reaching_past_the_top_records_the_new_part() -> None:
    led = SentLedger()
    led.on_transmit(0.0, at(0), at(1000))
    led.on_transmit(1.0, at(500), at(2000))  # go-back-N super-segment over the top
    assert led.on_ack(1.2, at(1000)) is None
    led.on_transmit(1.3, at(2000), at(2001))  # a FIN takes one sequence number
    assert led.on_ack(1.5, at(2001)) == pytest.approx(0.2)


def test_a_long_transfer_keeps_sampling() -> None:
    """Bursts every millisecond, each acknowledged 10 ms later: a sample
    once the ACKs pass what was in flight at the previous one."""
    led = SentLedger()
    t = 0.0
    samples = []
    for k in range(1000):
        t += 0.001
        led.on_transmit(t, at(k * 100), at(k * 100 + 100))
        if k >= 10 and (r := led.on_ack(t, at((k - 9) * 100))) is not None:
            samples.append(r)
    assert 80 <= len(samples) <= 100 and samples == [pytest.approx(0.010)] * len(samples)
    assert led.on_ack(t + 1, at(100_000)) == pytest.approx(1.0)


def test_newreno_partial_ack_queues_the_next_hole() -> None:
    """RFC 6582 §3.2 step 5."""
    rec = NewRenoRecovery(at(0))
    for _ in range(3):
        rec.on_dup_ack()
    assert rec.should_enter(at(0), at(6000), 0, 1000, 3)
    rec.enter(at(0), at(6000))
    assert rec.next_retransmission(at(0), at(6000), 10_000, 1000, 3) == (at(0), 1000)
    assert rec.next_retransmission(at(0), at(6000), 10_000, 1000, 3) is None
    assert not rec.on_new_ack(0.0, at(2000), 2000, 1000)
    assert rec.next_retransmission(at(2000), at(6000), 10_000, 1000, 3) == (at(2000), 1000)
    assert rec.on_new_ack(0.0, at(6000), 4000, 1000)  # the full ACK ends the episode
    assert not rec.in_recovery


def test_sack_recovery_enters_on_sacked_loss_and_picks_holes() -> None:
    """RFC 6675 §5: IsLost(HighACK + 1) starts recovery before three
    duplicate ACKs; NextSeg then resends each hole once."""
    rec = SackRecovery(at(0))
    newly = rec.take_sack(0.0, at(0), [(at(1000), at(5000))], at(6000))
    assert newly == 4000
    assert rec.should_enter(at(0), at(6000), newly, 1000, 3)
    rec.enter(at(0), at(6000))
    got = []
    while (r := rec.next_retransmission(at(0), at(6000), 20_000, 1000, 3)) is not None:
        got.append(r)
        rec.on_retransmitted(r[0])
    assert got == [(at(0), 1000)]
    rec.on_rto(at(6000))
    assert not rec.in_recovery and rec.sb is not None and rec.sb.n_ranges == 0


def test_rtt_sampled_once_per_round_trip_without_timestamps() -> None:
    """Without timestamps the endpoint times its data through the ledger,
    one sample per round trip (RFC 6298 §3)."""
    rtt = FixedRtt()
    c = Conn.established(TcpConfig(timestamps=False, window_scaling=False, sack=False),
                         rtt=rtt, cc=FixedCC())  # fmt: skip
    rtt.samples.clear()
    c.ep.send(b"a" * 1460)
    c.output()
    c.now += 0.1
    c.ep.send(b"b" * 1460)
    c.output()
    c.now += 0.1
    c.send("A", ack=ISS + 1 + 1460)
    c.now += 0.05
    c.send("A", ack=ISS + 1 + 2920)  # sent before the first sample was taken
    c.ep.send(b"c" * 100)
    c.output()
    c.now += 0.15
    c.send("A", ack=ISS + 1 + 3020)
    assert rtt.samples == [pytest.approx(0.2), pytest.approx(0.15)]
