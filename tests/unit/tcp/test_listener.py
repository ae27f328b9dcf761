"""TcpListener: LISTEN processing (RFC 9293 §3.10.7.2), SYN and accept
queues, SYN cookies (RFC 4987 §3.6), non-unicast drops (RFC 1122 §4.2.3.10)."""

from __future__ import annotations

from shardnet.common.addr import parse_ip
from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions
from shardnet.shards.tcp.config import SYN_BACKLOG, TcpConfig
from shardnet.shards.tcp.endpoint import Connected, DataReceived
from shardnet.shards.tcp.isn import SynCookies
from shardnet.shards.tcp.listener import TcpListener
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import wire

US = parse_ip("198.18.0.1")
PEER = parse_ip("198.18.0.2")
PORT = 80
SERVER_ISS = 5555
SECRET = bytes(range(16))


def listener(syn_backlog: int = SYN_BACKLOG, **kw: object) -> TcpListener:
    config = TcpConfig(syn_backlog=syn_backlog)
    return TcpListener(config, PORT, isn=lambda *_: SERVER_ISS, **kw)  # type: ignore[arg-type]


def syn(sport: int, seq: int = 1000, mss: int = 1460) -> Segment:
    return wire(Segment(sport, PORT, seq, 0, SYN, 65535, TcpOptions(mss=mss)))


def ack(sport: int, seq: int, ack_: int, flags: int = ACK, payload: bytes = b"") -> Segment:
    return wire(Segment(sport, PORT, seq, ack_, flags, 65535, payload=payload))


def test_syn_ack_then_accept() -> None:
    """RFC 9293 §3.10.7.2: SYN -> SYN-ACK; the ACK completes it; accept()."""
    lst = listener()
    lst.handle_segment(0.0, PEER, US, syn(5000))
    [(src, dst, sa)] = lst.poll_transmit(0.0)
    assert (src, dst) == (US, PEER)
    assert sa.flags == SYN | ACK and sa.seq == SERVER_ISS and sa.ack == 1001
    assert lst.syn_queue_len() == 1 and lst.accept() is None
    lst.handle_segment(0.0, PEER, US, ack(5000, 1001, SERVER_ISS + 1, ACK | PSH, b"GET /"))
    acc = lst.accept()
    assert acc is not None and (acc.local_addr, acc.remote_addr) == (US, PEER)
    ep = acc.endpoint
    assert ep.state is State.ESTABLISHED
    assert [ep.next_event(), ep.next_event()] == [Connected(), DataReceived(5)]
    assert ep.recv() == b"GET /"
    assert lst.syn_queue_len() == 0 and lst.accept() is None


def test_rst_ignored_ack_reset() -> None:
    """RFC 9293 §3.10.7.2: RST ignored; ACK -> <SEQ=SEG.ACK><CTL=RST>; other
    segments without SYN dropped."""
    lst = listener()
    lst.handle_segment(0.0, PEER, US, ack(5000, 1, 2, RST))
    lst.handle_segment(0.0, PEER, US, ack(5000, 1, 0, FIN))
    assert lst.poll_transmit(0.0) == []
    lst.handle_segment(0.0, PEER, US, ack(5000, 1, 777))
    [(_, _, r)] = lst.poll_transmit(0.0)
    assert r.flags == RST and r.seq == 777


def test_syn_with_fin_gets_nothing() -> None:
    """A SYN carrying FIN (a scanner's probe, never an opening) is dropped
    without a SYN-ACK or a reset, as Linux drops it; a plain SYN still opens."""
    lst = listener()
    lst.handle_segment(0.0, PEER, US, wire(Segment(5000, PORT, 1000, 0, SYN | FIN, 65535)))
    assert lst.poll_transmit(0.0) == [] and lst.syn_queue_len() == 0
    assert lst.syn_fin_dropped == 1
    lst.handle_segment(0.0, PEER, US, syn(5001))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.flags == SYN | ACK


def test_non_unicast_dropped_silently() -> None:
    """RFC 1122 §4.2.3.10 (gVisor TestListenNoAcceptNonUnicastV4/V6): SYNs from or
    to non-unicast addresses get nothing; a unicast SYN still gets SYN-ACK."""
    lst = listener()
    bad4 = ["0.0.0.0", "255.255.255.255", "224.0.1.2", "224.0.1.3"]
    for b in bad4:
        lst.handle_segment(0.0, parse_ip(b), US, syn(5000))
        lst.handle_segment(0.0, PEER, parse_ip(b), syn(5000))
    for b in ("::", "ff02::1", "ff0e::1"):
        lst.handle_segment(0.0, parse_ip(b), parse_ip("2001:db8::1"), syn(5000))
        lst.handle_segment(0.0, parse_ip("2001:db8::2"), parse_ip(b), syn(5000))
    assert lst.poll_transmit(0.0) == []
    assert lst.dropped_non_unicast == 14
    lst.handle_segment(0.0, PEER, US, syn(5000))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.flags == SYN | ACK and sa.ack == 1001


def test_accept_queue_bound() -> None:
    """listen() backlog: with the accept queue full, SYNs and the completing
    ACKs are dropped (Linux tcp_abort_on_overflow=0); the peer retries."""
    lst = listener(backlog=1)
    for port in (5000, 5001):
        lst.handle_segment(0.0, PEER, US, syn(port))
    lst.poll_transmit(0.0)
    lst.handle_segment(0.0, PEER, US, ack(5000, 1001, SERVER_ISS + 1))
    lst.handle_segment(0.0, PEER, US, ack(5001, 1001, SERVER_ISS + 1))
    assert lst.accept_queue_len() == 1 and lst.acks_dropped == 1
    lst.handle_segment(0.0, PEER, US, syn(5002))
    assert lst.syns_dropped == 1
    assert lst.accept() is not None
    lst.handle_segment(0.0, PEER, US, ack(5001, 1001, SERVER_ISS + 1))
    assert lst.accept() is not None


def test_syn_queue_full_drops_without_cookies() -> None:
    lst = listener(syn_backlog=2)
    for port in (5000, 5001, 5002):
        lst.handle_segment(0.0, PEER, US, syn(port))
    assert len(lst.poll_transmit(0.0)) == 2 and lst.syns_dropped == 1


def test_syn_cookies_when_syn_queue_full() -> None:
    """RFC 4987 §3.6: with the SYN queue full a cookie SYN-ACK keeps no
    state; the ACK echoing it makes an ESTABLISHED connection with the MSS
    the cookie encoded."""
    cookies = SynCookies(SECRET)
    lst = listener(syn_backlog=1, cookies=cookies)
    lst.handle_segment(10.0, PEER, US, syn(5000))
    lst.handle_segment(10.0, PEER, US, syn(6000, seq=42, mss=1400))
    out = lst.poll_transmit(10.0)
    assert len(out) == 2 and lst.cookies_sent == 1
    sa = out[-1][2] if out[-1][2].dst_port == 6000 else out[0][2]
    assert sa.flags == SYN | ACK and sa.ack == 43 and sa.options.mss == 1460
    assert sa.options.timestamp is None and sa.options.window_scale is None
    assert lst.syn_queue_len() == 1  # no state for the cookie
    lst.handle_segment(11.0, PEER, US, ack(6000, 43, seq_add(sa.seq, 1), ACK | PSH, b"hi"))
    acc = lst.accept()
    assert acc is not None and lst.cookies_accepted == 1
    ep = acc.endpoint
    assert ep.state is State.ESTABLISHED and ep.mss == 1300  # table entry <= 1400
    assert ep.recv() == b"hi"
    # A forged ACK is not a cookie: RST.
    lst.handle_segment(11.0, PEER, US, ack(6001, 43, 123456))
    [(_, _, r)] = lst.poll_transmit(11.0)
    assert r.flags == RST and lst.cookies_rejected == 1


def test_child_syn_ack_retransmitted_by_listener_timers() -> None:
    """RFC 6298: the listener drives its children's timers (SYN-ACK resent)."""
    lst = listener()
    lst.handle_segment(0.0, PEER, US, syn(5000))
    lst.poll_transmit(0.0)
    t = lst.next_deadline()
    assert t == 1.0
    lst.handle_timeout(t)
    [(_, _, sa)] = lst.poll_transmit(t)
    assert sa.flags == SYN | ACK and sa.seq == SERVER_ISS


def test_child_reset_before_accept_is_forgotten() -> None:
    lst = listener()
    lst.handle_segment(0.0, PEER, US, syn(5000))
    lst.poll_transmit(0.0)
    lst.handle_segment(0.0, PEER, US, ack(5000, 1001, 0, RST))
    assert lst.syn_queue_len() == 0
