"""Loopback routing: a datagram for one of our own addresses,
or routed over the loopback NIC, is never written to the link; it goes to
``loop_back`` as an Ethernet frame, and the ingress accepts it back (local
source, 127/8 and ::1 included) when the dispatcher hands it to the shard
that owns its flow."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP
from shardnet.shards.counters import NetEvent
from shardnet.shards.net.datagram import Delivery

from .harness import OUR4, OUR6, OUR_LL, OUR_MAC, PEER4, PEER6, Net, eth, ip_bytes, ipv4, ipv6


def echo_request4(ident: int = 7) -> bytes:
    return bytes(ICMP(type=8, id=ident, seq=1) / b"ping")


def looped4(net: Net) -> Ether:
    """The one frame looped back, checked: our MAC both ways, checksums right."""
    frames = net.take_looped()
    assert len(frames) == 1, [f.summary() for f in frames]
    ipv4(mac=OUR_MAC)(frames[0])
    return frames[0]


def looped6(net: Net) -> Ether:
    frames = net.take_looped()
    assert len(frames) == 1, [f.summary() for f in frames]
    ipv6(mac=OUR_MAC)(frames[0])
    return frames[0]


@pytest.mark.parametrize("dst", [OUR4, "127.0.0.1", "127.0.0.9"])
def test_an_echo_to_ourselves_is_looped_not_written_and_answered(dst: str) -> None:
    net = Net(loop_back=True)
    assert net.stack.send_ipv4(ip_bytes(dst), IPPROTO_ICMP, echo_request4())
    net.expect_nothing()  # never on the wire, and no ARP for ourselves
    request = looped4(net)
    src = OUR4 if dst == OUR4 else "127.0.0.1"  # the destination, or lo's address
    assert (request[IP].src, request[IP].dst, request[ICMP].type) == (src, dst, 8)
    net.inject_looped(request)  # the dispatcher hands it back
    net.expect_nothing()
    reply = looped4(net)
    assert (reply[IP].src, reply[IP].dst, reply[ICMP].type) == (dst, src, 0)
    assert reply[ICMP].id == 7 and bytes(reply[ICMP].payload) == b"ping"
    stats = net.stats
    assert stats[NetEvent.IPV4_LOOPED_IN] == 1 and stats[NetEvent.LOOPED_OUT] == 2
    assert "ipv4_src_is_local" not in stats and "ipv4_martian" not in stats


@pytest.mark.parametrize("dst", [OUR6, OUR_LL, "::1"])
def test_an_ipv6_echo_to_ourselves_is_looped_not_written_and_answered(dst: str) -> None:
    net = Net(loop_back=True)
    request = bytes(ICMPv6EchoRequest(id=9, seq=1, data=b"ping"))
    assert net.stack.send_ipv6(ip_bytes(dst), 58, request, checksum_at=2)
    net.expect_nothing()
    frame = looped6(net)
    assert (frame[IPv6].src, frame[IPv6].dst) == (dst, dst)
    net.inject_looped(frame)
    net.expect_nothing()
    reply = looped6(net)
    assert reply[ICMPv6EchoReply].id == 9 and reply[IPv6].src == dst
    assert net.stats[NetEvent.IPV6_LOOPED_IN] == 1
    assert Drop.IPV6_SRC_IS_LOCAL not in net.stats and Drop.IPV6_MARTIAN not in net.stats


def test_looped_datagrams_reach_the_transport_with_their_checksums_trusted() -> None:
    net = Net(loop_back=True)
    got: list[Delivery] = []
    net.stack.transport_v4[IPPROTO_UDP] = lambda d: got.append(d) or True
    net.stack.send_ipv4(
        ip_bytes(OUR4), IPPROTO_UDP, bytes(UDP(sport=5, dport=6) / b"x"), checksum_at=6
    )
    frame = bytearray(bytes(looped4(net)))
    frame[-1] ^= 0xFF  # built by us and never on a wire: the checksum is not checked
    net.inject_looped(bytes(frame))
    assert len(got) == 1 and (got[0].src, got[0].dst) == (ip_bytes(OUR4), ip_bytes(OUR4))
    assert got[0].nic == net.stack.link_nic and not net.counters.drops


def test_another_shard_accepts_a_frame_looped_by_shard_0() -> None:
    """The flow may belong to another shard: the dispatcher classifies the
    looped frame like a wire frame and hands it there."""
    net = Net(loop_back=True)
    replica = net.replica(1)
    net.stack.send_ipv4(ip_bytes(OUR4), IPPROTO_ICMP, echo_request4())
    replica.inject_looped(looped4(net))
    assert (
        replica.stack.counters.by_reason()[NetEvent.ICMPV4_ECHO_REPLIES] == 1 and not replica.sent()
    )


def test_wire_frames_with_our_source_or_loopback_addresses_are_still_dropped() -> None:
    net = Net(loop_back=True)
    net.inject(eth() / IP(src=OUR4, dst=OUR4) / ICMP(type=8))  # CERT CA-96.21
    net.inject(eth() / IP(src=PEER4, dst="127.0.0.1") / ICMP(type=8))
    net.inject(eth() / IPv6(src=OUR6, dst=OUR6) / ICMPv6EchoRequest())
    net.inject(eth() / IPv6(src=PEER6, dst="::1") / ICMPv6EchoRequest())
    net.expect_nothing()
    assert not net.looped
    stats = net.stats
    assert stats[Drop.IPV4_SRC_IS_LOCAL] == 1 and stats[Drop.IPV4_MARTIAN] == 1
    assert stats[Drop.IPV6_SRC_IS_LOCAL] == 1 and stats[Drop.IPV6_MARTIAN] == 1


def test_a_full_uplink_drops_and_counts() -> None:
    net = Net()
    net.stack.loop_back = lambda frame: False
    assert not net.stack.send_ipv4(ip_bytes(OUR4), IPPROTO_ICMP, echo_request4())
    net.expect_nothing()
    assert net.stats[Drop.LOOP_BACK_DROPPED] == 1


def test_other_destinations_still_go_to_the_wire() -> None:
    net = Net(loop_back=True)
    net.learn(PEER4)
    net.stack.send_ipv4(ip_bytes(PEER4), IPPROTO_ICMP, echo_request4())
    net.expect(ipv4(src=OUR4, dst=PEER4))
    assert not net.looped
