"""Traffic to an unconnected UDP socket's or an ephemeral listener's port
that hashes to another shard: steered to the shard that owns the port
(``record.udp_port_owner``) instead of refused; refused by the owner (port
unreachable, RST) when it has no socket either."""

from __future__ import annotations

import asyncio
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from shardnet.common.addr import parse_mac
from shardnet.common.record import TAG_LOOPED, TAG_WIRE
from shardnet.shards.api import ShardStack
from shardnet.shards.transport.errors import IcmpErrorRouter
from shardnet.shards.transport.ports import PortManager
from shardnet.shards.transport.steer import Steering
from shardnet.shards.transport.tcp import TcpDemux
from shardnet.shards.transport.udp import UdpDemux, UdpHooks

from ..net.harness import OUR4, OUR6, OUR_MAC, PEER4, PEER6, PEER_MAC, Net
from .test_udp import endpoint


def world(shard: int) -> tuple[Net, Steering, list[tuple[int, int, bytes]], ShardStack]:
    net = Net()
    net.learn(PEER4)
    net.learn(PEER6)
    steered: list[tuple[int, int, bytes]] = []

    def steer(target: int, tag: int, eth: bytes, packet: memoryview) -> bool:
        steered.append((target, tag, eth + bytes(packet)))  # the frame the owner gets
        return True

    udp = UdpDemux(PortManager(), seed=1)
    steering = Steering(shard=shard, nshards=2, steer=steer, mac=parse_mac(OUR_MAC))
    hooks = UdpHooks(udp, steering)
    net.stack.transport_v4[17] = net.stack.transport_v6[17] = hooks.datagram
    tcp = TcpDemux(
        net.stack, udp.ports, shard=shard, nshards=2, secret=bytes(16), loop_time=net.clock
    )
    tcp.steering = steering
    net.stack.transport_v4[6] = net.stack.transport_v6[6] = tcp.deliver
    errors = IcmpErrorRouter(udp, tcp, steering)
    net.stack.transport_v4[-1] = errors.icmpv4_error
    net.stack.transport_v6[-58] = errors.icmpv6_error
    net.sent()
    stack = ShardStack(shard=shard, nshards=2, net=net.stack, udp=udp, rng=random.Random(3))
    stack.tcp = tcp
    return net, steering, steered, stack


def test_a_datagram_for_another_shards_port_is_steered_there() -> None:
    net, hooks, steered, _ = world(shard=0)
    sent = Ether(src=PEER_MAC, dst=OUR_MAC) / IP(src=PEER4, dst=OUR4) / UDP(sport=53, dport=40001)
    net.inject(sent / b"answer")
    ((target, tag, frame),) = steered
    assert (target, tag) == (1, TAG_WIRE)  # 40001 % 2
    got = Ether(frame)
    assert got.dst == OUR_MAC and bytes(got[IP]) == bytes((sent / b"answer")[IP])
    net.expect_nothing()  # no port unreachable from here
    assert hooks.steered == 1


def test_the_owner_refuses_what_it_has_no_socket_for() -> None:
    net, _, steered, _ = world(shard=1)
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC) / IP(src=PEER4, dst=OUR4) / UDP(sport=53, dport=40001)
    )
    assert steered == []
    reply = net.sent()[0]
    assert reply[ICMP].type == 3 and reply[ICMP].code == 3


def test_ipv6_and_looped_datagrams_keep_their_kind() -> None:
    net, _, steered, _ = world(shard=0)
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6) / UDP(sport=53, dport=40003)
    )
    net.inject_looped(
        Ether(src=OUR_MAC, dst=OUR_MAC) / IP(src=OUR4, dst=OUR4) / UDP(sport=53, dport=40005)
    )
    assert [(t, tag) for t, tag, _ in steered] == [(1, TAG_WIRE), (1, TAG_LOOPED)]
    assert IPv6 in Ether(steered[0][2])


def test_a_local_socket_or_a_broadcast_is_never_steered() -> None:
    net, _, steered, stack = world(shard=0)
    _, proto = endpoint(stack, local_addr=("0.0.0.0", 40001))
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC) / IP(src=PEER4, dst=OUR4) / UDP(sport=53, dport=40001)
    )
    assert proto.got and steered == []
    net.inject(
        Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=PEER4, dst="255.255.255.255")
        / UDP(sport=53, dport=40003)
    )
    assert steered == []


def test_an_unconnected_socket_gets_a_port_its_shard_owns() -> None:
    for shard in (0, 1):
        _, _, _, stack = world(shard=shard)
        for _ in range(10):
            t, _ = endpoint(stack, local_addr=("0.0.0.0", 0))
            assert t.get_extra_info("sockname")[1] % 2 == shard


def syn(dport: int) -> Ether:
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=PEER4, dst=OUR4)
        / TCP(sport=45000, dport=dport, flags="S", seq=1000)
    )


def test_a_syn_for_another_shards_port_is_steered_and_the_owner_resets() -> None:
    net, steering, steered, _ = world(shard=0)
    net.inject(syn(40001))
    assert [(t, tag) for t, tag, _ in steered] == [(1, TAG_WIRE)]
    net.expect_nothing()
    net.inject(syn(40002))  # ours: closed here, so RST (RFC 9293 §3.10.7.1)
    (rst,) = net.sent()
    assert rst[TCP].flags == "RA"


def test_an_ephemeral_listener_gets_a_port_its_shard_owns() -> None:
    for shard in (0, 1):
        _, _, _, stack = world(shard=shard)
        for _ in range(5):
            server = asyncio.run(stack.start_server(lambda r, w: None, "0.0.0.0", 0))
            assert server.sockets[0][1] % 2 == shard


def test_an_icmp_error_about_another_shards_connection_is_steered_there() -> None:
    """The quoted flow hashed here; the connection of an ephemeral listener
    lives in the port's owner, which must see the error (RFC 5927, PMTU)."""
    net, _, steered, _ = world(shard=0)

    def frag_needed(sport: int) -> Ether:
        quoted = IP(src=OUR4, dst=PEER4) / TCP(sport=sport, dport=443, flags="A", seq=1)
        return (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / ICMP(type=3, code=4, nexthopmtu=1280)
            / bytes(quoted)[:28]
        )

    net.inject(frag_needed(40002))  # a port this shard owns: handled (and dropped) here
    assert steered == []
    net.inject(frag_needed(40001))  # shard 1's port
    ((target, tag, frame),) = steered
    assert (target, tag) == (1, TAG_WIRE) and ICMP in Ether(frame)
    net.expect_nothing()


def test_tcp_to_a_broadcast_or_multicast_address_is_dropped_and_counted() -> None:
    """RFC 1122 §4.2.3.10: a SYN (or any segment) to the subnet-directed or
    limited broadcast address or a multicast group draws neither RST nor
    SYN-ACK; the drop is counted. The same SYN to our address is answered."""
    net, _, steered, stack = world(shard=1)
    for dst, mac in (("198.18.0.255", "ff:ff:ff:ff:ff:ff"), ("255.255.255.255", "ff:ff:ff:ff:ff:ff"),
                     ("224.0.0.1", "01:00:5e:00:00:01")):  # fmt: skip
        net.inject(
            Ether(src=PEER_MAC, dst=mac) / IP(src=PEER4, dst=dst) / TCP(sport=5000, dport=40001)
        )
        net.expect_nothing()
    assert stack.tcp is not None and stack.tcp.dropped_non_unicast == 3
    assert steered == []
    net.inject(Ether(src=PEER_MAC, dst=OUR_MAC) / IP(src=PEER4, dst=OUR4) / TCP(dport=40001))
    assert net.sent()[0][TCP].flags == "RA"
