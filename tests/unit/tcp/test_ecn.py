"""RFC 3168 ECN in the endpoint: negotiation on SYN/SYN-ACK (the ``ecn``
setting as Linux's tcp_ecn), ECT(0) on new data only, CE echoed with ECE
until CWR, the window reduced once per window of data on ECE."""

from __future__ import annotations

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, CWR, ECE, SYN, TcpOptions
from shardnet.shards.tcp.cc import make_cc
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import CE, ECT0, Connected, TcpEndpoint
from shardnet.shards.tcp.segment import Segment

from .harness import IRS, ISS, LOCAL_PORT, REMOTE_PORT, Conn, FixedRtt, wire

MSS = 1000
UNA = ISS + 1


def handshake(ecn: int = 1, synack_flags: int = ECE) -> tuple[Conn, Segment]:
    """Active open with ``ecn``; the peer's SYN-ACK carries ``synack_flags``."""
    cfg = TcpConfig(timestamps=False, window_scaling=False, sack=False, ecn=ecn)
    c = Conn.active(cfg, cc=make_cc("newreno", MSS), rtt=FixedRtt(1.0))
    syn = c.expect("S", seq=ISS)
    sa = c.seg("SA", seq=IRS, ack=ISS + 1, options=TcpOptions(mss=MSS))
    sa.flags |= synack_flags
    c.ep.handle_segment(c.now, wire(sa))
    c.expect("A", ack=seq_add(IRS, 1))
    assert c.drain_events() == [Connected()]
    return c, syn


def deliver(c: Conn, flags: str = "A", *, ecn: int = 0, extra: int = 0, **kw: object) -> None:
    """A segment from the peer with IP ECN field ``ecn`` and more TCP flags."""
    s = c.seg(flags, **kw)  # type: ignore[arg-type]
    s.flags |= extra
    w = wire(s)
    w.ecn = ecn
    c.ep.handle_segment(c.now, w)
    if "seq" not in kw:
        c.nxt = seq_add(c.nxt, s.seg_len)


def test_active_open_asks_and_an_ecn_setup_synack_agrees() -> None:
    c, syn = handshake(ecn=1)
    assert syn.flags & (ECE | CWR) == ECE | CWR  # RFC 3168 §6.1.1 ECN-setup SYN
    assert c.ep.ecn_on and c.ep.stats().ecn


def test_synack_with_both_bits_or_none_is_not_ecn_setup() -> None:
    assert not handshake(ecn=1, synack_flags=ECE | CWR)[0].ep.ecn_on
    assert not handshake(ecn=1, synack_flags=0)[0].ep.ecn_on


def test_default_setting_does_not_ask_on_active_opens() -> None:
    c, syn = handshake(ecn=2)
    assert not syn.flags & (ECE | CWR) and not c.ep.ecn_on


def test_retransmitted_syn_goes_without_ecn() -> None:
    """RFC 3168 §6.1.1.1: in case ECN-setup SYNs are what gets dropped."""
    cfg = TcpConfig(ecn=1)
    c = Conn.active(cfg, rtt=FixedRtt(1.0))
    assert c.expect("S").flags & ECE
    c.advance(1.0)
    assert not c.expect("S").flags & (ECE | CWR)


def passive(ecn: int, syn_flags: int) -> TcpEndpoint:
    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN | syn_flags, 65535, TcpOptions(mss=MSS))
    ep = TcpEndpoint.passive(0.0, TcpConfig(ecn=ecn), wire(syn), iss=ISS)
    return ep


def test_passive_open_accepts_with_settings_1_and_2_only() -> None:
    for ecn, on in ((0, False), (1, True), (2, True)):
        ep = passive(ecn, ECE | CWR)
        synack = ep.poll_transmit(0.0)[0]
        assert synack.flags & (SYN | ACK | ECE | CWR) == (SYN | ACK | ECE if on else SYN | ACK)
        assert ep.ecn_on is on
    assert not passive(2, ECE).ecn_on  # not an ECN-setup SYN


def test_ect0_on_new_data_only() -> None:
    """RFC 3168 §6.1.4/§6.1.5: not on pure ACKs, not on retransmissions."""
    c, _ = handshake()
    c.ep.send(b"x" * MSS)
    seg = c.ep.poll_transmit(c.now)[0]
    assert seg.ecn == ECT0 and seg.payload
    c.advance(1.0)  # RTO
    rtx = c.ep.poll_transmit(c.now)
    out = c.output() + rtx
    assert out and all(s.ecn == 0 for s in out)
    deliver(c, "PA", payload=b"y" * 10)
    c.advance(0.5)
    acks = c.ep.poll_transmit(c.now) + c.output()
    assert all(s.ecn == 0 for s in acks)


def test_ce_is_echoed_with_ece_until_cwr() -> None:
    """RFC 3168 §6.1.3: every ACK carries ECE from the CE-marked segment
    on, until a segment with CWR; the first is sent at once."""
    c, _ = handshake()
    deliver(c, "PA", payload=b"a" * 100, ecn=CE)
    ack = c.expect("A")  # at once, not delayed
    assert ack.flags & ECE
    deliver(c, "PA", payload=b"b" * 100, ecn=ECT0)
    c.advance(0.5)
    assert c.expect("A").flags & ECE  # still, without another CE
    deliver(c, "PA", payload=b"c" * 100, ecn=ECT0, extra=CWR)
    c.advance(0.5)
    assert not c.expect("A").flags & ECE
    assert c.ep.stats().ecn_ce_in == 1


def test_ece_halves_the_window_once_per_window_and_cwr_follows() -> None:
    """RFC 3168 §6.1.2: the sender reacts to ECE as to a loss (without
    retransmitting), once per window of data; CWR goes on the next new
    data segment, and only on it."""
    c, _ = handshake()
    cc = c.ep.cc
    cc.cwnd = 20 * MSS  # type: ignore[misc]
    c.ep.send(b"x" * (10 * MSS))
    assert len(c.output()) == 10
    deliver(c, ack=UNA + MSS, extra=ECE)
    assert cc.cwnd == 5 * MSS and c.ep.ecn_reductions == 1  # NewReno: half the flight
    deliver(c, ack=UNA + 2 * MSS, extra=ECE)  # the same window: no second reduction
    assert c.ep.ecn_reductions == 1
    assert c.ep.retransmits == 0
    deliver(c, ack=UNA + 7 * MSS)  # the window opens again
    c.ep.send(b"y" * (2 * MSS))
    out = c.output()
    assert out and out[0].flags & CWR and not any(s.flags & CWR for s in out[1:])
    deliver(c, ack=UNA + 10 * MSS, extra=ECE)
    assert c.ep.ecn_reductions == 1  # up to SND.MAX at the reduction: still that window
    deliver(c, ack=UNA + 11 * MSS, extra=ECE)  # past it: a new round trip's congestion
    assert c.ep.ecn_reductions == 2


def test_ece_ignored_without_ecn() -> None:
    c, _ = handshake(ecn=0, synack_flags=ECE)
    cc = c.ep.cc
    c.ep.send(b"x" * (2 * MSS))
    c.output()
    before = cc.cwnd
    deliver(c, ack=UNA + MSS, extra=ECE)
    assert cc.cwnd >= before and c.ep.ecn_reductions == 0
