"""RFC 9293 state machine, RFC 5961 hardening, resets: one test per rule."""

from __future__ import annotations

import pytest

from shardnet.common.addr import parse_ip
from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import ACK, RST, SYN, TcpOptions
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import (
    Closed,
    Connected,
    DataReceived,
    PeerFin,
    Reset,
    TcpEndpoint,
    addresses_acceptable,
    rst_for,
)
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State

from .harness import IRS, ISS, LOCAL_PORT, REMOTE_PORT, Conn, FixedCC, FixedRtt, wire

PLAIN = TcpConfig(timestamps=False, window_scaling=False, sack=False)


def test_state_values_are_rfc_spellings() -> None:
    """RFC 9293 §3.3.2: eleven states, spelled as in the RFC."""
    assert len(State) == 11
    assert State.SYN_RECEIVED.value == "SYN-RECEIVED"
    assert State.TIME_WAIT.value == "TIME-WAIT"


def test_active_open() -> None:
    """RFC 9293 §3.5 Figure 6: SYN, SYN-ACK, ACK -> ESTABLISHED, Connected."""
    c = Conn.active()
    assert c.ep.state is State.SYN_SENT
    syn = c.expect("S", seq=ISS, ack=0)
    assert syn.options.mss == 1460
    c.expect_nothing()
    c.send("SA", seq=IRS, ack=ISS + 1, options=TcpOptions(mss=1000))
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    assert c.ep.state is State.ESTABLISHED
    assert c.drain_events() == [Connected()]
    assert c.ep.mss == 1000


def test_active_open_syn_carries_all_options() -> None:
    """RFC 7323 §2.2/§3.2, RFC 2018 §2: SYN offers wscale, TS, SACK-permitted."""
    c = Conn.active(TcpConfig())
    syn = c.expect("S")
    o = syn.options
    assert o.mss == 1460 and o.sack_permitted and o.timestamp is not None
    assert o.window_scale == 7  # 65535 << 7 >= 4 MiB rcv_buf_max
    assert syn.window == 65535  # a SYN's window is never scaled


def test_passive_open() -> None:
    """RFC 9293 §3.10.7.2: SYN -> SYN-ACK (options mirror the peer's) -> ACK."""
    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN, 65535, TcpOptions(mss=1400))
    ep = TcpEndpoint.passive(0.0, TcpConfig(), syn, iss=ISS, cc=FixedCC(), rtt=FixedRtt())
    c = Conn(ep)
    assert ep.state is State.SYN_RECEIVED
    sa = c.expect("SA", seq=ISS, ack=IRS + 1)
    assert sa.options.mss == 1460
    assert sa.options.window_scale is None  # the peer did not offer it
    assert sa.options.timestamp is None and not sa.options.sack_permitted
    c.send("A", ack=ISS + 1)
    assert ep.state is State.ESTABLISHED
    assert c.drain_events() == [Connected()]
    assert ep.mss == 1400


def test_passive_open_bad_ack_gets_rst() -> None:
    """RFC 9293 §3.10.7.4 (SYN-RECEIVED): an unacceptable ACK -> <SEQ=SEG.ACK><RST>."""
    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN, 65535, TcpOptions(mss=1400))
    c = Conn(TcpEndpoint.passive(0.0, PLAIN, syn, iss=ISS, cc=FixedCC(), rtt=FixedRtt()))
    c.expect("SA")
    c.send("A", ack=ISS + 5000)
    c.expect("R", seq=ISS + 5000)
    assert c.ep.state is State.SYN_RECEIVED


def test_syn_received_retransmitted_syn_gets_syn_ack_again() -> None:
    """RFC 9293 §3.10.7.4 / Linux: the peer's SYN again means our SYN-ACK was lost."""
    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN, 65535, TcpOptions(mss=1400))
    c = Conn(TcpEndpoint.passive(0.0, PLAIN, syn, iss=ISS, cc=FixedCC(), rtt=FixedRtt()))
    c.expect("SA")
    c.send("S", seq=IRS, options=TcpOptions(mss=1400))
    c.expect("SA", seq=ISS, ack=IRS + 1)


def test_simultaneous_open() -> None:
    """RFC 9293 §3.5 Figure 7: SYN-SENT + SYN -> SYN-RECEIVED (SYN-ACK with
    the same ISS), then the peer's SYN-ACK -> ESTABLISHED."""
    c = Conn.active()
    c.expect("S", seq=ISS)
    c.send("S", seq=IRS, options=TcpOptions(mss=1460))
    assert c.ep.state is State.SYN_RECEIVED
    c.expect("SA", seq=ISS, ack=IRS + 1)
    c.send("SA", seq=IRS, ack=ISS + 1, options=TcpOptions(mss=1460))
    assert c.ep.state is State.ESTABLISHED
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    assert c.drain_events() == [Connected()]


def test_syn_sent_rst_with_acceptable_ack_refuses() -> None:
    """RFC 9293 §3.10.7.3: RST+ACK acking our SYN -> ConnectionRefusedError."""
    c = Conn.active()
    c.expect("S")
    c.send("RA", seq=0, ack=ISS + 1)
    assert c.ep.state is State.CLOSED
    ev = c.drain_events()
    assert ev[0].error is ConnectionRefusedError and ev[-1] == Closed()


def test_syn_sent_rst_without_good_ack_ignored() -> None:
    """RFC 5961 §3.2 / RFC 9293 §3.10.7.3: RST without an acceptable ACK is dropped."""
    c = Conn.active()
    c.expect("S")
    c.send("R", seq=0)
    c.send("RA", seq=0, ack=ISS + 7)
    assert c.ep.state is State.SYN_SENT
    c.expect_nothing()


def test_syn_sent_bad_ack_gets_rst() -> None:
    """RFC 9293 §3.10.7.3: SEG.ACK =< ISS or > SND.NXT -> <SEQ=SEG.ACK><RST>."""
    c = Conn.active()
    c.expect("S")
    c.send("SA", seq=IRS, ack=ISS + 10)
    c.expect("R", seq=ISS + 10)
    assert c.ep.state is State.SYN_SENT


def test_syn_retries_end_in_timeout() -> None:
    """RFC 6298 §5, RFC 1122 §4.2.3.5: SYN resent with back-off (1, 2, 4 s),
    then Reset(TimeoutError) after syn_retries."""
    c = Conn.active(TcpConfig(syn_retries=2, timestamps=False))
    c.expect("S")
    c.advance(0.99)
    c.expect_nothing()
    c.advance(0.02)
    c.expect("S", seq=ISS)
    c.advance(2.0)
    c.expect("S", seq=ISS)
    c.advance(3.9)
    c.expect_nothing()
    c.advance(0.2)
    assert c.ep.state is State.CLOSED
    ev = c.drain_events()
    assert isinstance(ev[0], Reset) and ev[0].error is TimeoutError


def test_data_in_order_and_recv() -> None:
    """RFC 9293 §3.10.7.4 seventh: in-order text is delivered."""
    c = Conn.established()
    c.send("PA", payload=b"hello ")
    c.send("PA", payload=b"world")
    assert c.drain_events() == [DataReceived(11)]
    assert c.ep.recv(100) == b"hello world"
    assert c.ep.recv(100) == b""


def test_send_segments_by_mss() -> None:
    """RFC 9293 §3.7.1: segments carry at most the send MSS."""
    c = Conn.established(mss=1000)
    assert c.ep.send(b"a" * 2500) == 2500
    c.expect("A", seq=ISS + 1, length=1000)
    c.expect("A", seq=ISS + 1001, length=1000)
    c.expect_nothing()  # Nagle: the 500-byte tail waits for an ACK
    c.send("A", ack=ISS + 2001)
    c.expect("PA", seq=ISS + 2001, length=500)


def test_unacceptable_segment_gets_ack() -> None:
    """RFC 9293 §3.10.7.4 first: an unacceptable segment is answered with
    <SEQ=SND.NXT><ACK=RCV.NXT><ACK> and dropped."""
    c = Conn.established()
    c.send("PA", seq=seq_add(IRS, 1 + 70000), payload=b"x")  # beyond the window
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    c.send("PA", seq=seq_add(IRS, -5), payload=b"old")  # entirely old
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    assert c.ep.recv() == b""


def test_rst_exact_resets() -> None:
    """RFC 5961 §3.2: an RST with SEG.SEQ == RCV.NXT resets the connection."""
    c = Conn.established()
    c.send("R", seq=c.nxt)
    assert c.ep.state is State.CLOSED
    ev = c.drain_events()
    assert ev == [Reset(ConnectionResetError, "reset by peer"), Closed()]
    with pytest.raises(ConnectionResetError):
        c.ep.send(b"x")
    c.expect_nothing()


def test_rst_in_window_not_exact_gets_challenge_ack() -> None:
    """RFC 5961 §3.2: an in-window RST not at RCV.NXT gets a challenge ACK and
    the connection lives."""
    c = Conn.established()
    c.send("R", seq=seq_add(c.nxt, 100))
    c.expect("A", seq=ISS + 1, ack=c.nxt)
    assert c.ep.state is State.ESTABLISHED
    assert c.ep.stats().challenge_acks == 1


def test_rst_out_of_window_dropped() -> None:
    """RFC 5961 §3.2 / RFC 9293 §3.10.7.4: an RST outside the window is dropped silently."""
    c = Conn.established()
    c.send("R", seq=seq_add(c.nxt, 100000))
    c.send("R", seq=seq_add(c.nxt, -1))
    c.expect_nothing()
    assert c.ep.state is State.ESTABLISHED


def test_syn_in_established_gets_challenge_ack() -> None:
    """RFC 5961 §4.2: a SYN in a synchronized state, any seq,
    gets <SEQ=SND.NXT><ACK=RCV.NXT><ACK>; the connection lives."""
    c = Conn.established()
    for seq in (c.nxt, seq_add(c.nxt, 5), seq_add(c.nxt, 1 << 30), IRS):
        c.send("S", seq=seq, options=TcpOptions(mss=1460))
        c.expect("A", seq=ISS + 1, ack=c.nxt)
        c.now += 0.5  # past the per-connection limit (Linux tcp_invalid_ratelimit)
    assert c.ep.state is State.ESTABLISHED


def test_ack_of_unsent_data_challenged_and_dropped() -> None:
    """RFC 5961 §5.2 / RFC 9293: SEG.ACK > SND.NXT -> ACK, drop (data ignored)."""
    c = Conn.established()
    c.send("PA", ack=ISS + 500, payload=b"data")
    c.expect("A", seq=ISS + 1, ack=IRS + 1)
    assert c.ep.recv() == b""


def test_ack_too_old_challenged() -> None:
    """RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND -> challenge ACK, drop."""
    c = Conn.established(window=1000)
    c.send("PA", ack=seq_add(ISS, -5000), payload=b"data")
    c.expect("A", ack=IRS + 1)
    assert c.ep.recv() == b""


def test_challenge_ack_rate_limit() -> None:
    """RFC 5961 §7: challenge ACKs are throttled (token bucket, configurable)."""
    cfg = TcpConfig(
        timestamps=False, window_scaling=False, sack=False,
        challenge_ack_per_s=10, challenge_ack_burst=3, invalid_ratelimit_s=0,
    )  # fmt: skip
    c = Conn.established(cfg)
    for _ in range(5):
        c.send("R", seq=seq_add(c.nxt, 10))
    assert len(c.output()) == 3
    st = c.ep.stats()
    assert (st.challenge_acks, st.challenge_acks_suppressed) == (3, 2)
    c.now += 0.1  # one more token
    c.send("R", seq=seq_add(c.nxt, 10))
    assert len(c.output()) == 1


def test_active_close() -> None:
    """RFC 9293 §3.6 Figure 12: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT -> CLOSED."""
    c = Conn.established(TcpConfig(timestamps=False, time_wait_s=5.0))
    c.ep.close(c.now)
    assert c.ep.state is State.FIN_WAIT_1
    c.expect("FA", seq=ISS + 1, ack=IRS + 1)
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.FIN_WAIT_2
    c.send("FA", ack=ISS + 2)
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    assert c.ep.state is State.TIME_WAIT
    assert c.drain_events() == [PeerFin()]
    c.advance(4.9)
    assert c.ep.state is State.TIME_WAIT
    c.advance(0.2)
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_passive_close() -> None:
    """RFC 9293 §3.6: FIN -> CLOSE-WAIT; close -> LAST-ACK; ACK -> CLOSED
    (the passive closer never enters TIME-WAIT)."""
    c = Conn.established()
    c.send("FA")
    c.expect("A", ack=IRS + 2)
    assert c.ep.state is State.CLOSE_WAIT
    assert c.drain_events() == [PeerFin()]
    assert c.ep.eof
    c.ep.close(c.now)
    assert c.ep.state is State.LAST_ACK
    c.expect("FA", seq=ISS + 1, ack=IRS + 2)
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_simultaneous_close() -> None:
    """RFC 9293 §3.6 Figure 13: FIN-WAIT-1 + FIN -> CLOSING; ACK -> TIME-WAIT."""
    c = Conn.established()
    c.ep.close(c.now)
    c.expect("FA", seq=ISS + 1)
    c.send("FA", ack=ISS + 1)  # the peer's FIN crossed ours
    assert c.ep.state is State.CLOSING
    c.expect("A", seq=ISS + 2, ack=IRS + 2)
    c.send("A", ack=ISS + 2)
    assert c.ep.state is State.TIME_WAIT


def test_fin_ack_together_from_fin_wait_1() -> None:
    """RFC 9293 §3.10.7.4 eighth: FIN-WAIT-1 with our FIN acked and a FIN -> TIME-WAIT."""
    c = Conn.established()
    c.ep.close(c.now)
    c.expect("FA")
    c.send("FA", ack=ISS + 2)
    assert c.ep.state is State.TIME_WAIT


def test_half_close_keeps_receiving() -> None:
    """RFC 9293 §3.6 half-close: after shutdown_write the peer's data still arrives."""
    c = Conn.established()
    c.ep.send(b"req")
    c.ep.shutdown_write()
    c.expect("FPA", seq=ISS + 1, payload=b"req")
    c.send("A", ack=ISS + 5)
    assert c.ep.state is State.FIN_WAIT_2
    c.send("PA", payload=b"response")
    assert c.ep.recv() == b"response"
    with pytest.raises(BrokenPipeError):
        c.ep.send(b"more")
    c.send("FA")
    assert c.ep.state is State.TIME_WAIT


def test_peer_half_close_we_keep_sending() -> None:
    """RFC 9293 §3.6: in CLOSE-WAIT we may still send."""
    c = Conn.established()
    c.send("FA")
    c.expect("A")
    c.ep.send(b"late data")
    c.expect("PA", payload=b"late data")


def test_rst_in_close_wait_is_epipe() -> None:
    """RFC 9293 §3.10.7.4: an acceptable RST in CLOSE-WAIT closes with EPIPE
    (BrokenPipeError), not ECONNRESET."""
    c = Conn.established()
    c.send("FA")
    c.expect("A")
    c.drain_events()
    c.send("R")
    assert c.ep.state is State.CLOSED
    assert c.drain_events()[0].error is BrokenPipeError


def test_rst_in_last_ack_just_closes() -> None:
    """RFC 9293 §3.10.7.4 second (CLOSING, LAST-ACK, TIME-WAIT): RST -> CLOSED."""
    c = Conn.established()
    c.send("FA")
    c.ep.close(c.now)
    c.output()
    c.drain_events()
    c.send("R")
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_close_with_unread_data_sends_rst() -> None:
    """RFC 2525 §2.17 (Linux tcp_close): closing with unread data aborts with RST."""
    c = Conn.established()
    c.send("PA", payload=b"unread")
    c.output()
    c.ep.close(c.now)
    c.expect("RA", seq=ISS + 1, ack=seq_add(IRS, 7))
    assert c.ep.state is State.CLOSED


def test_data_after_close_gets_rst() -> None:
    """Linux "TCPAbortOnData": data arriving after close() is answered with RST."""
    c = Conn.established()
    c.ep.close(c.now)
    c.expect("FA")
    c.send("A", ack=ISS + 2)
    c.send("PA", ack=ISS + 2, payload=b"nobody reads this")
    c.expect("RA", seq=ISS + 2)
    assert c.ep.state is State.CLOSED


def test_abort_sends_rst() -> None:
    """RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>, CLOSED."""
    c = Conn.established()
    c.ep.abort(c.now)
    c.expect("RA", seq=ISS + 1)
    assert c.ep.state is State.CLOSED
    assert c.drain_events() == [Closed()]


def test_close_in_syn_sent() -> None:
    """RFC 9293 §3.10.4 (SYN-SENT): CLOSE deletes the TCB, nothing sent."""
    c = Conn.active()
    c.expect("S")
    c.ep.close(c.now)
    assert c.ep.state is State.CLOSED
    c.expect_nothing()


def test_rst_for_segment_with_ack() -> None:
    """RFC 9293 §3.10.7.1: ACK set -> <SEQ=SEG.ACK><CTL=RST>."""
    seg = Segment(REMOTE_PORT, LOCAL_PORT, 100, 5000, ACK, 1000, payload=b"abc")
    r = rst_for(seg)
    assert r is not None
    assert (r.src_port, r.dst_port, r.seq, r.flags) == (LOCAL_PORT, REMOTE_PORT, 5000, RST)
    wire(r)


def test_rst_for_segment_without_ack() -> None:
    """RFC 9293 §3.10.7.1: no ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    (SYN and FIN count in SEG.LEN); never answer an RST."""
    syn = Segment(REMOTE_PORT, LOCAL_PORT, 0xFFFFFFFF, 0, SYN, 1000, payload=b"ab")
    r = rst_for(syn)
    assert r is not None and (r.seq, r.ack, r.flags) == (0, 2, RST | ACK)
    assert rst_for(Segment(1, 2, 3, 4, RST, 0)) is None


def test_non_unicast_addresses_rejected() -> None:
    """RFC 1122 §4.2.3.10: non-unicast source or destination."""
    u4, u6 = parse_ip("198.18.0.1"), parse_ip("2001:db8::1")
    assert addresses_acceptable(u4, parse_ip("198.18.0.2"))
    assert addresses_acceptable(u6, parse_ip("2001:db8::2"))
    for bad in ("0.0.0.0", "255.255.255.255", "224.0.1.2", "239.1.1.1"):
        assert not addresses_acceptable(parse_ip(bad), u4)
        assert not addresses_acceptable(u4, parse_ip(bad))
    for bad in ("::", "ff02::1", "ff0e::5"):
        assert not addresses_acceptable(parse_ip(bad), u6)
        assert not addresses_acceptable(u6, parse_ip(bad))


def test_send_buffer_bound_and_writable() -> None:
    """Configurable send buffer (wmem): send() takes what fits; Writable after ACKs."""
    from shardnet.shards.tcp.endpoint import Writable

    c = Conn.established(
        TcpConfig(timestamps=False, window_scaling=False, sack=False, snd_buf=3000)
    )
    assert c.ep.send(b"x" * 5000) == 3000
    assert c.ep.send(b"y") == 0
    c.output()
    c.send("A", ack=ISS + 1 + 1460)
    assert Writable() in c.drain_events()
    assert c.ep.send(b"z" * 2000) == 1460


def test_stats_like_ss() -> None:
    """Per-connection stats: state, cwnd, srtt, rto, retransmits, bytes."""
    c = Conn.established()
    c.ep.send(b"abc")
    c.output()
    c.send("PA", ack=ISS + 4, payload=b"xy")
    st = c.ep.stats()
    assert st.state == "ESTABLISHED"
    assert (st.bytes_sent, st.bytes_acked, st.bytes_received) == (3, 3, 2)
    assert st.mss == 1460 and st.rto == 1.0 and st.cwnd == 1 << 20
    assert st.unread == 2 and st.unacked == 0
