"""Options: MSS (RFC 6691, the user's TCP_MAXSEG), window scaling and timestamps
with PAWS (RFC 7323), SACK (RFC 2018)."""

from __future__ import annotations

import pytest

from shardnet.common.seqnum import seq_add
from shardnet.common.wire.tcp import SYN, TcpOptions
from shardnet.shards.tcp.config import TcpConfig, advertised_mss
from shardnet.shards.tcp.endpoint import TcpEndpoint
from shardnet.shards.tcp.segment import Segment

from .harness import IRS, ISS, LOCAL_PORT, REMOTE_PORT, Conn, FixedCC, FixedRtt

PLAIN = dict(timestamps=False, window_scaling=False, sack=False)


@pytest.mark.parametrize(("ipv6", "overhead"), [(False, 40), (True, 60)])
@pytest.mark.parametrize(("delta", "want_delta"), [(0, 0), (-1, -1), (1, 0)])
def test_user_mss_on_active_open(ipv6: bool, overhead: int, delta: int, want_delta: int) -> None:
    """RFC 9293 §3.7.1 (gVisor TestUserSuppliedMSSOnConnectV4/V6): MTU 5000,
    TCP_MAXSEG = maxMSS, maxMSS-1 used as is, maxMSS+1 clamped to maxMSS."""
    max_mss = 5000 - overhead
    cfg = TcpConfig(user_mss=max_mss + delta, **PLAIN)
    c = Conn.active(cfg, mtu=5000, ipv6=ipv6)
    syn = c.expect("S")
    assert syn.options.mss == max_mss + want_delta


def test_user_mss_on_passive_open() -> None:
    """Beyond gVisor: the listener's TCP_MAXSEG is honoured
    on the SYN-ACK and caps what we send."""
    syn = Segment(REMOTE_PORT, LOCAL_PORT, IRS, 0, SYN, 65535, TcpOptions(mss=1460))
    ep = TcpEndpoint.passive(
        0.0, TcpConfig(user_mss=1000, **PLAIN), syn, iss=ISS, cc=FixedCC(), rtt=FixedRtt()
    )
    c = Conn(ep)
    assert c.expect("SA").options.mss == 1000
    c.send("A", ack=ISS + 1)
    ep.send(b"x" * 3000)
    c.expect("A", length=1000)


def test_user_mss_range() -> None:
    """TCP_MAXSEG outside [88, 65535] is EINVAL."""
    for bad in (50, 87, 65536):
        with pytest.raises(ValueError):
            TcpConfig(user_mss=bad)
    TcpConfig(user_mss=88)
    assert advertised_mss(2000, 1500, False) == 1460
    assert advertised_mss(None, 1500, True) == 1440


def test_no_mss_option_means_536() -> None:
    """RFC 9293 §3.7.1 / RFC 1122 §4.2.2.6: no MSS option -> send 536."""
    c = Conn.established(peer_opts=TcpOptions())
    c.ep.send(b"x" * 1000)
    c.expect("A", length=536)


def test_pmtu_lowers_mss() -> None:
    """RFC 8201/1191: Packet Too Big lowers the MSS; unacked data is resent smaller."""
    c = Conn.established()
    c.ep.send(b"x" * 1460)
    c.expect("PA", length=1460)
    c.ep.handle_pmtu(c.now, 1280)
    assert c.ep.mss == 1240
    c.expect("A", seq=ISS + 1, length=1240)


def test_window_scaling_negotiated() -> None:
    """RFC 7323 §2: both sides offer it: windows are shifted, both ways."""
    c = Conn.established(TcpConfig(timestamps=False, sack=False),
                         peer_opts=TcpOptions(mss=1460, window_scale=2), window=1000)  # fmt: skip
    assert c.ep.snd_wscale == 2 and c.ep.rcv_wscale == 7
    assert c.ep.snd_wnd == 1000  # the SYN-ACK's window is not scaled
    c.send("A", window=1000)
    assert c.ep.snd_wnd == 4000
    c.send("PA", payload=b"x" * 10)
    c.advance(0.1)
    # 128 KiB buffer >> 7; the right edge never moves left (rounded up).
    assert c.expect("A").window == 1024


def test_window_scaling_not_offered_by_peer() -> None:
    """RFC 7323 §2.2: no scaling unless both SYNs carry the option."""
    c = Conn.established(TcpConfig(timestamps=False, sack=False))
    assert c.ep.snd_wscale == 0 and c.ep.rcv_wscale == 0
    c.send("PA", payload=b"x" * 10)
    c.advance(0.1)
    assert c.expect("A").window == 65535


def test_timestamps_echoed() -> None:
    """RFC 7323 §3/§4.3: every segment carries TSval; TSecr echoes TS.Recent."""
    c = Conn.established(TcpConfig(window_scaling=False, sack=False),
                         peer_opts=TcpOptions(mss=1460, timestamp=(5000, 0)))  # fmt: skip
    assert c.ep.ts_on and c.ep.mss == 1448
    c.peer_ts = 5100
    c.send("PA", payload=b"hi")
    c.advance(0.1)
    ack = c.expect("A")
    assert ack.options.timestamp is not None and ack.options.timestamp[1] == 5100


def test_paws_drops_old_timestamp() -> None:
    """RFC 7323 §5.3 R1: TSval < TS.Recent -> drop and ACK (not for RST)."""
    c = Conn.established(TcpConfig(window_scaling=False, sack=False),
                         peer_opts=TcpOptions(mss=1460, timestamp=(5000, 0)))  # fmt: skip
    c.peer_ts = 4000  # older than TS.Recent
    c.send("PA", payload=b"stale")
    c.expect("A", ack=IRS + 1)
    assert c.ep.recv() == b""
    c.peer_ts = 6000
    c.send("PA", seq=IRS + 1, payload=b"fresh")
    assert c.ep.recv() == b"fresh"


def test_rtt_sample_from_timestamps() -> None:
    """RFC 7323 §4.1: an ACK's TSecr gives an RTT sample (even after a retransmission)."""
    rtt = FixedRtt()
    c = Conn.established(TcpConfig(window_scaling=False, sack=False),
                         peer_opts=TcpOptions(mss=1460, timestamp=(5000, 0)), rtt=rtt)  # fmt: skip
    rtt.samples.clear()
    c.now = 1.0  # TSval 1000 (a TSecr of 0 is never used, RFC 7323 §4.1)
    c.ep.send(b"abc")
    seg = c.expect("PA")
    c.now += 0.25
    c.send("A", ack=ISS + 4, options=TcpOptions(timestamp=(5001, seg.options.timestamp[0])))
    assert rtt.samples == [pytest.approx(0.25)]


def test_sack_permitted_negotiation() -> None:
    """RFC 2018 §2: SACK only if both SYNs carry SACK-permitted."""
    c = Conn.established(TcpConfig(), peer_opts=TcpOptions(mss=1460))
    assert not c.ep.sack_on
    c = Conn.established(TcpConfig(), peer_opts=TcpOptions(mss=1460, sack_permitted=True))
    assert c.ep.sack_on


def test_sack_blocks_for_out_of_order_data() -> None:
    """RFC 2018 §4: out-of-order data is ACKed at once with SACK blocks, the
    block holding the most recent segment first."""
    c = Conn.established(TcpConfig(timestamps=False, window_scaling=False),
                         peer_opts=TcpOptions(mss=1460, sack_permitted=True))  # fmt: skip
    base = c.nxt
    c.send("PA", seq=seq_add(base, 100), payload=b"b" * 100)
    a1 = c.expect("A", ack=base)
    assert a1.options.sack_blocks == ((seq_add(base, 100), seq_add(base, 200)),)
    c.send("PA", seq=seq_add(base, 300), payload=b"d" * 100)
    a2 = c.expect("A", ack=base)
    assert a2.options.sack_blocks == (
        (seq_add(base, 300), seq_add(base, 400)),
        (seq_add(base, 100), seq_add(base, 200)),
    )
    c.send("PA", seq=base, payload=b"a" * 100)  # fills the first hole
    a3 = c.expect("A", ack=seq_add(base, 200))  # immediate: a hole was filled
    assert a3.options.sack_blocks == ((seq_add(base, 300), seq_add(base, 400)),)
    c.send("PA", seq=seq_add(base, 200), payload=b"c" * 100)
    a4 = c.expect("A", ack=seq_add(base, 400))
    assert a4.options.sack_blocks == ()
    assert c.ep.recv(1000) == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 100


def test_received_sack_drives_retransmission() -> None:
    """RFC 6675 §5: SACK blocks feed the scoreboard; after dupthresh duplicate
    ACKs the hole is retransmitted, not the SACKed data."""
    cc = FixedCC(cwnd=20 * 1460)
    c = Conn.established(TcpConfig(timestamps=False, window_scaling=False),
                         peer_opts=TcpOptions(mss=1000, sack_permitted=True), cc=cc)  # fmt: skip
    c.ep.send(b"x" * 6000)
    for _ in range(5):
        c.expect("A", length=1000)
    c.expect("PA", length=1000)
    c.expect_nothing()
    una = ISS + 1
    for k in range(2, 5):  # segment 0 lost; 1000..k*1000 SACKed
        c.send("A", ack=una, options=TcpOptions(sack_blocks=((una + 1000, una + k * 1000),)))
    assert cc.calls == ["loss"]
    c.expect("A", seq=una, length=1000)
    c.expect_nothing()
    c.send("A", ack=una + 6000)
    assert cc.calls == ["loss", "exit"]
    assert c.ep.stats().fast_retransmits == 1
