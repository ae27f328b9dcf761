"""RFC 6937 Proportional Rate Reduction (PRR-SSRB): what a recovery
episode sends on each ACK, alone and in the endpoint."""

from __future__ import annotations

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import TcpOptions
from shardnet.shards.tcp.cc import make_cc
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.recovery import Prr

from .harness import ISS, Conn, FixedRtt

MSS = 1000
UNA = ISS + 1


def test_above_ssthresh_sending_follows_deliveries_in_proportion() -> None:
    """RFC 6937 §3 (and its §5 example): RecoverFS 20 segments, ssthresh
    10: one segment leaves for every two delivered, the first at once."""
    prr = Prr(20 * MSS)
    sent = []
    pipe = 19 * MSS
    for _ in range(10):
        n = prr.sndcnt(MSS, pipe, 10 * MSS, MSS)
        k = n // MSS  # whole segments (the sender never sends a runt here)
        prr.out += k * MSS
        sent.append(k)
        pipe += k * MSS - MSS
    assert sent == [1, 0, 0, 1, 0, 1, 0, 1, 0, 1]  # the first goes early, then on time
    assert prr.out == 5 * MSS  # = prr_delivered * ssthresh / RecoverFS


def test_below_ssthresh_the_slow_start_reduction_bound_applies() -> None:
    """PRR-SSRB: at most what was delivered plus one MSS per ACK, never
    past ssthresh (RFC 6937 §3: no burst after a large loss)."""
    prr = Prr(20 * MSS)
    prr.out = MSS  # the fast retransmit went
    assert prr.sndcnt(MSS, 2 * MSS, 10 * MSS, MSS) == 2 * MSS
    prr.out += 2 * MSS
    # an ACK delivering four segments at once: still bounded by ssthresh - pipe
    assert prr.sndcnt(4 * MSS, 8 * MSS, 10 * MSS, MSS) == 2 * MSS
    assert prr.sndcnt(0, 10 * MSS, 10 * MSS, MSS) == 0


def segments_sent_per_ack(prr: bool) -> tuple[list[int], int, int]:
    """20 segments out (cwnd 20), the first lost, then an ACK SACKing one
    more segment each; new data waiting. Returns the segments each ACK
    released, and cwnd and ssthresh after the full ACK."""
    cfg = TcpConfig(timestamps=False, window_scaling=False, prr=prr, rack=False)
    cc = make_cc("newreno", MSS)
    c = Conn.established(cfg, mss=MSS, peer_opts=TcpOptions(mss=MSS, sack_permitted=True),
                         cc=cc, rtt=FixedRtt(1.0))  # fmt: skip
    cc.cwnd = 20 * MSS  # type: ignore[misc]
    c.ep.send(b"x" * (40 * MSS))
    assert len(c.output()) == 20
    released = []
    for k in range(1, 20):
        c.now += 0.001
        c.send("A", ack=UNA, options=TcpOptions(sack_blocks=((UNA + MSS, UNA + (k + 1) * MSS),)))
        released.append(len([s for s in c.output() if s.payload]))
    c.send("A", ack=seq_add(UNA, 20 * MSS))  # the retransmission arrived: a full ACK
    return released, cc.cwnd, cc.ssthresh


def test_recovery_sends_one_segment_per_two_acks_from_the_start() -> None:
    """With PRR the fast retransmit goes on the third duplicate ACK and
    new data follows every second ACK; RFC 6675 alone (cwnd = ssthresh =
    10 against a pipe of 17) sends nothing for the next seven ACKs and
    then one per ACK (RFC 6937 §1: the silence, then the burst)."""
    with_prr, cwnd, ssthresh = segments_sent_per_ack(True)
    assert with_prr[:2] == [0, 0] and with_prr[2] == 1  # entering on the 3rd SACK
    assert with_prr[3:10] == [0, 0, 1, 0, 1, 0, 1] and max(with_prr) == 1
    assert cwnd == ssthresh == 10 * MSS  # RFC 6937 §3: cwnd = ssthresh at the end
    without, _, _ = segments_sent_per_ack(False)
    assert without[2] == 1 and sum(without[3:10]) == 0
    assert abs(sum(with_prr) - sum(without)) <= 1  # about the same total, spread out
