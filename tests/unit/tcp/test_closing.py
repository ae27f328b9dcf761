"""TIME-WAIT and FIN-WAIT-2 (RFC 9293 §3.6, Linux TCP_LINGER2): gVisor's tests translated.

In gVisor the endpoint under test is the *server* (accepted) side that
closes first; here it is the active-open endpoint of the harness, which is
the same TCB once established. "iss" is ours, "IRS" the peer's.
"""

from __future__ import annotations

import pytest

from shardnet.common.addr import parse_ip
from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, SYN, TcpOptions
from shardnet.shards.tcp.config import FIN_TIMEOUT_S, TcpConfig
from shardnet.shards.tcp.endpoint import Closed, PeerFin, SynInTimeWait
from shardnet.shards.tcp.listener import TcpListener
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import IRS, ISS, LOCAL_PORT, REMOTE_PORT, Conn, wire

US = parse_ip("198.18.0.1")
PEER = parse_ip("198.18.0.2")


def time_wait_conn(time_wait_s: float = 60.0, **cfg: object) -> Conn:
    """We close first; the peer ACKs our FIN and sends its own: TIME-WAIT."""
    c = Conn.established(
        TcpConfig(
            timestamps=False, window_scaling=False, sack=False, time_wait_s=time_wait_s, **cfg
        )
    )
    c.ep.close(c.now)
    c.expect("FA", seq=ISS + 1, ack=IRS + 1)
    c.send("FA", ack=ISS + 2)
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    assert c.ep.state is State.TIME_WAIT
    assert c.drain_events() == [PeerFin()]
    return c


def test_time_wait_rst_ends_it_as_linux() -> None:
    """Linux tcp_rfc1337=0 (the default): an RST at RCV.NXT ends TIME-WAIT at
    once, silently; one at another sequence number is ignored."""
    c = time_wait_conn()
    c.send("R", seq=seq_add(c.nxt, 5))
    c.expect_nothing()
    assert c.ep.state is State.TIME_WAIT
    c.send("R", seq=c.nxt)
    c.expect_nothing()
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_time_wait_rst_ignored_with_rfc1337() -> None:
    """gVisor TestTCPTimeWaitRSTIgnored; RFC 1337 fix 1 (``rfc1337``): an RST
    in TIME-WAIT does nothing; a later out-of-order ACK still gets ACK
    seq=iss+2 ack=IRS+2."""
    c = time_wait_conn(rfc1337=True)
    c.send("R", seq=c.nxt)
    c.expect_nothing()
    assert c.ep.state is State.TIME_WAIT
    c.send("A", seq=seq_add(c.nxt, 1), ack=ISS + 2)  # out of order
    c.expect("A", seq=ISS + 2, ack=IRS + 2)


def test_time_wait_out_of_order_gets_dup_ack() -> None:
    """gVisor TestTCPTimeWaitOutOfOrder; RFC 9293 §3.10.7.4: seq != RCV.NXT or data ->
    immediate duplicate ACK <SEQ=SND.NXT><ACK=RCV.NXT>."""
    c = time_wait_conn()
    c.send("PA", seq=seq_add(c.nxt, 1000), ack=ISS + 2, payload=b"x")
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    c.send("PA", seq=c.nxt, ack=ISS + 2, payload=b"data")
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    c.send("A", seq=c.nxt, ack=ISS + 2)  # in order, no data: nothing
    c.expect_nothing()


def test_time_wait_new_syn() -> None:
    """gVisor TestTCPTimeWaitNewSyn; RFC 1122 §4.2.2.13: a SYN
    with seq <= RCV.NXT gets nothing; one above ends TIME-WAIT and is handed
    back (SynInTimeWait) so a listener on the port pair answers it."""
    c = time_wait_conn()
    c.send("S", seq=c.nxt, options=TcpOptions(mss=1460))
    c.send("S", seq=IRS, options=TcpOptions(mss=1460))
    c.expect_nothing()
    assert c.ep.state is State.TIME_WAIT
    c.advance(1.0)
    c.expect_nothing()
    syn = c.seg("S", seq=seq_add(c.nxt, 3), options=TcpOptions(mss=1460))
    c.send_seg(syn)
    c.expect_nothing()
    ev = c.drain_events()
    assert isinstance(ev[0], SynInTimeWait) and ev[1] == Closed()
    assert c.ep.state is State.CLOSED
    # The caller re-injects the SYN into the listener: SYN-ACK, accept works.
    lst = TcpListener(TcpConfig(), REMOTE_PORT, isn=lambda *_: 7777)
    reused = ev[0].segment
    flipped = Segment(reused.src_port, reused.dst_port, reused.seq, 0, SYN, 65535, reused.options)
    lst.handle_segment(c.now, PEER, US, wire(flipped))
    [(_, _, sa)] = lst.poll_transmit(c.now)
    assert sa.flags == SYN | ACK and sa.ack == seq_add(c.nxt, 4) and sa.seq == 7777
    ack = Segment(REMOTE_PORT, LOCAL_PORT, seq_add(c.nxt, 4), 7778, ACK, 65535)
    lst.handle_segment(c.now, PEER, US, wire(ack))
    acc = lst.accept()
    assert acc is not None and acc.endpoint.state is State.ESTABLISHED


def test_time_wait_duplicate_fin_extends_time_wait() -> None:
    """gVisor TestTCPTimeWaitDuplicateFINExtendsTimeWait; RFC 9293 §3.10.7.4: with a 5 s
    TIME-WAIT, a retransmitted FIN at t=2 s is ACKed and restarts the timer:
    an ACK at t=6 s gets nothing, at t=9 s the endpoint is gone."""
    c = time_wait_conn(time_wait_s=5.0)
    c.advance(2.0)
    c.send("FA", seq=IRS + 1, ack=ISS + 2)
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    c.advance(4.0)  # t = 6: the first timer would have expired at 5
    c.send("A", seq=c.nxt, ack=ISS + 2)
    c.expect_nothing()
    assert c.ep.state is State.TIME_WAIT
    c.advance(3.0)  # t = 9 > 2 + 5
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_time_wait_timeout_is_configurable() -> None:
    """RFC 9293 §3.6.1: TIME-WAIT lasts time_wait_s (default 2*MSL = 60 s, Linux)."""
    assert TcpConfig().time_wait_s == 60.0
    c = time_wait_conn(time_wait_s=0.5)
    c.advance(0.49)
    assert c.ep.state is State.TIME_WAIT
    c.advance(0.02)
    assert c.ep.state is State.CLOSED


@pytest.mark.parametrize(
    ("linger2", "want"),
    [(-123123.0, None), (-1.0, None), (0.0, FIN_TIMEOUT_S), (None, FIN_TIMEOUT_S),
     (10.0, 10.0), (59.0, 59.0), (65.0, FIN_TIMEOUT_S)],
)  # fmt: skip
def test_linger2_values(linger2: float | None, want: float | None) -> None:
    """gVisor TestTCPLingerTimeout with Linux semantics (tcp(7)):
    negative = RST instead of waiting, 0 or above tcp_fin_timeout = the
    default 60 s, else the value."""
    assert TcpConfig(linger2_s=linger2).fin_wait_2_timeout() == want


def linger_conn(linger2: float | None) -> Conn:
    c = Conn.established(
        TcpConfig(timestamps=False, window_scaling=False, sack=False, linger2_s=linger2)
    )
    c.ep.close(c.now)
    c.expect("FA", seq=ISS + 1)
    return c


def test_linger2_expiry_closes_without_time_wait() -> None:
    """gVisor TestConnectResetAfterClose (linger 3 s): after close() the
    peer ACKs our FIN but sends none; after TCP_LINGER2 the endpoint is
    CLOSED (no TIME-WAIT) and a later ACK meets the no-endpoint RST path."""
    c = linger_conn(3.0)
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.FIN_WAIT_2
    c.advance(2.9)
    assert c.ep.state is State.FIN_WAIT_2
    c.advance(1.1)
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]
    c.expect_nothing()


def test_linger2_negative_aborts_with_rst() -> None:
    """Linux tcp_close: TCP_LINGER2 < 0 sends an RST instead
    of waiting in FIN-WAIT-2."""
    c = linger_conn(-1.0)
    c.send("A", ack=ISS + 2)
    c.expect("RA", seq=ISS + 2, ack=IRS + 1)
    assert c.ep.state is State.CLOSED


def test_fin_wait_2_after_shutdown_only_has_no_timer() -> None:
    """The FIN-WAIT-2 timer starts only when the application closed,
    not after a mere shutdown(SHUT_WR)."""
    c = Conn.established(TcpConfig(timestamps=False, linger2_s=1.0))
    c.ep.shutdown_write()
    c.expect("FA")
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.FIN_WAIT_2
    assert c.ep.next_deadline() is None
    c.advance(100.0)
    assert c.ep.state is State.FIN_WAIT_2
    c.ep.close(c.now)  # now the application closes: the timer starts
    c.advance(1.01)
    assert c.ep.state is State.CLOSED


def test_ack_in_time_wait_restarts_nothing() -> None:
    """RFC 9293 §3.10.7.4: only a retransmitted FIN restarts the 2*MSL timer."""
    c = time_wait_conn(time_wait_s=5.0)
    c.advance(4.0)
    c.send("A", seq=c.nxt, ack=ISS + 2)
    c.advance(1.01)
    assert c.ep.state is State.CLOSED
