"""Multicast on UDP sockets, through the real network layer and shard 0's
group control: membership options and their errors (as Linux's), delivery
to member sockets, IP_MULTICAST_ALL, TTL/hops, loop, interface, and close
leaving the groups."""

from __future__ import annotations

import asyncio
import errno
import random
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from shardnet.shards.api import ShardStack, UdpTransport
from shardnet.shards.transport.multicast import MAX_MEMBERSHIPS_PER_SOCKET, ShardGroups
from shardnet.shards.transport.ports import PortManager
from shardnet.shards.transport.udp import UdpDemux, UdpHooks

from ..net.harness import OUR4, PEER4, PEER6, PEER_MAC, Net
from .test_udp import Recorder

G4, G6 = "234.198.18.7", "ff3e:40:2001:db8::7"
G4_MAC, G6_MAC = "01:00:5e:46:12:07", "33:33:00:00:00:07"


@pytest.fixture
def world() -> tuple[Net, ShardStack]:
    net = Net(loop_back=True)
    groups = ShardGroups(
        lambda nic, group, join: net.control.groups.membership(0, nic, group, join)
    )
    udp = UdpDemux(PortManager(), seed=1, groups=groups)
    net.stack.transport_v4[17] = net.stack.transport_v6[17] = UdpHooks(udp).datagram
    net.sent()
    return net, ShardStack(shard=0, nshards=1, net=net.stack, udp=udp, rng=random.Random(3))


def endpoint(stack: ShardStack, **kw: Any) -> tuple[UdpTransport, Recorder]:
    async def make() -> tuple[UdpTransport, Recorder]:
        t, p = await stack.create_datagram_endpoint(Recorder, **kw)
        return t, p  # type: ignore[return-value]

    return asyncio.run(make())


def to_group4(payload: bytes = b"hi", dport: int = 6000) -> Ether:
    return (
        Ether(src=PEER_MAC, dst=G4_MAC)
        / IP(src=PEER4, dst=G4)
        / UDP(sport=4000, dport=dport)
        / payload
    )


def to_group6(payload: bytes = b"hi") -> Ether:
    return (
        Ether(src=PEER_MAC, dst=G6_MAC)
        / IPv6(src=PEER6, dst=G6)
        / UDP(sport=4000, dport=6000)
        / payload
    )


def test_join_receive_leave_ipv4(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    t, p = endpoint(stack, local_addr=("0.0.0.0", 6000))
    net.inject(to_group4())
    assert p.got == []  # not joined: dropped by IP
    t.set_option("IP_ADD_MEMBERSHIP", (G4, OUR4))  # the interface by its address
    (report,) = net.sent()
    assert report[IP].dst == "224.0.0.22"
    net.inject(to_group4(b"one"))
    assert p.got == [(b"one", (PEER4, 4000))]
    t.set_option("IP_DROP_MEMBERSHIP", G4)
    (leave,) = net.sent()
    assert leave[IP].dst == "224.0.0.22"
    net.inject(to_group4(b"two"))
    assert len(p.got) == 1


def test_join_receive_ipv6(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    t, p = endpoint(stack, local_addr=("::", 6000), options={"IPV6_V6ONLY": True})
    t.set_option("IPV6_JOIN_GROUP", (G6, 0))
    (report,) = net.sent()
    assert report[IPv6].dst == "ff02::16"
    net.inject(to_group6(b"six"))
    assert p.got == [(b"six", (PEER6, 4000, 0, 0))]
    t.set_option("IPV6_LEAVE_GROUP", (G6, "sntap0"))  # the same NIC by name
    net.inject(to_group6(b"gone"))
    assert len(p.got) == 1


def test_dual_stack_socket_joins_an_ipv4_group(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    t, p = endpoint(stack, local_addr=("::", 6000))
    t.set_option("IP_ADD_MEMBERSHIP", G4)
    net.inject(to_group4(b"mapped"))
    assert p.got == [(b"mapped", ("::ffff:" + PEER4, 4000, 0, 0))]


@pytest.mark.parametrize(
    ("name", "value", "err"),
    [
        ("IP_ADD_MEMBERSHIP", OUR4, errno.EINVAL),  # not a group
        ("IP_ADD_MEMBERSHIP", "not-an-ip", errno.EINVAL),
        ("IP_ADD_MEMBERSHIP", G6, errno.EINVAL),  # wrong family for the option
        ("IP_ADD_MEMBERSHIP", (G4, "198.18.0.99"), errno.EADDRNOTAVAIL),  # not our address
        ("IP_ADD_MEMBERSHIP", (G4, "nosuchnic"), errno.ENODEV),
        ("IP_ADD_MEMBERSHIP", (G4, 42), errno.ENODEV),
        ("IP_DROP_MEMBERSHIP", G4, errno.EADDRNOTAVAIL),  # not joined
        ("IPV6_JOIN_GROUP", G6, errno.ENOPROTOOPT),  # on an IPv4 socket
        ("IP_MULTICAST_TTL", 256, errno.EINVAL),
        ("IP_MULTICAST_TTL", -2, errno.EINVAL),
    ],
)
def test_option_errors(world: tuple[Net, ShardStack], name: str, value: Any, err: int) -> None:
    _, stack = world
    t, _ = endpoint(stack, local_addr=("0.0.0.0", 6000))
    with pytest.raises(OSError) as exc:
        t.set_option(name, value)
    assert exc.value.errno == err


def test_join_twice_and_too_many(world: tuple[Net, ShardStack]) -> None:
    _, stack = world
    t, _ = endpoint(stack, local_addr=("0.0.0.0", 6000))
    t.set_option("IP_ADD_MEMBERSHIP", G4)
    with pytest.raises(OSError) as exc:
        t.set_option("IP_ADD_MEMBERSHIP", G4)
    assert exc.value.errno == errno.EADDRINUSE
    for i in range(1, MAX_MEMBERSHIPS_PER_SOCKET):
        t.set_option("IP_ADD_MEMBERSHIP", f"239.1.0.{i}")
    with pytest.raises(OSError) as exc:
        t.set_option("IP_ADD_MEMBERSHIP", "239.1.1.1")
    assert exc.value.errno == errno.ENOBUFS
    with pytest.raises(OSError) as exc:
        t.get_option("IP_ADD_MEMBERSHIP")
    assert exc.value.errno == errno.ENOPROTOOPT


def test_every_member_socket_gets_a_copy_and_multicast_all(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    opts = {"SO_REUSEADDR": True}
    a, pa = endpoint(stack, local_addr=("0.0.0.0", 6000), options=opts)
    b, pb = endpoint(stack, local_addr=("0.0.0.0", 6000), options=opts)
    c, pc = endpoint(stack, local_addr=("0.0.0.0", 6000), options=opts)
    a.set_option("IP_ADD_MEMBERSHIP", G4)
    c.set_option("IP_MULTICAST_ALL", False)  # only groups it joined itself
    net.inject(to_group4(b"all"))
    assert (pa.got, pb.got, pc.got) == ([(b"all", (PEER4, 4000))], [(b"all", (PEER4, 4000))], [])


def test_close_leaves_the_groups(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    a, _ = endpoint(stack, local_addr=("0.0.0.0", 6000), options={"SO_REUSEADDR": True})
    b, _ = endpoint(stack, local_addr=("0.0.0.0", 6000), options={"SO_REUSEADDR": True})
    a.set_option("IP_ADD_MEMBERSHIP", G4)
    b.set_option("IP_ADD_MEMBERSHIP", G4)
    net.sent()
    asyncio.run(_close(a))
    assert net.sent() == []  # b is still a member
    asyncio.run(_close(b))
    (leave,) = net.sent()
    assert leave[IP].dst == "224.0.0.22"
    assert net.request("groups") == []


async def _close(t: UdpTransport) -> None:
    t.close()
    await asyncio.sleep(0)


def test_sending_to_a_group(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    t, _ = endpoint(stack, local_addr=("0.0.0.0", 5000))
    t.sendto(b"x", (G4, 6000))
    (frame,) = net.sent()
    assert (frame.dst, frame[IP].ttl) == (G4_MAC, 1)  # RFC 1112 §6.1: TTL 1 by default
    assert net.take_looped() == []  # nobody here is a member
    t.set_option("IP_MULTICAST_TTL", 8)
    t.set_option("IP_ADD_MEMBERSHIP", G4)
    net.sent()
    t.sendto(b"y", (G4, 6000))
    assert net.sent()[0][IP].ttl == 8
    assert len(net.take_looped()) == 1  # IP_MULTICAST_LOOP is on by default
    t.set_option("IP_MULTICAST_LOOP", False)
    t.sendto(b"z", (G4, 6000))
    assert net.take_looped() == [] and len(net.sent()) == 1
    assert t.get_option("IP_MULTICAST_TTL") == 8 and t.get_option("IP_MULTICAST_LOOP") is False
    t.set_option("IP_MULTICAST_IF", OUR4)
    assert t.get_option("IP_MULTICAST_IF") == 1


def test_sending_to_an_ipv6_group(world: tuple[Net, ShardStack]) -> None:
    net, stack = world
    t, _ = endpoint(stack, local_addr=("::", 5000))
    t.set_option("IPV6_MULTICAST_HOPS", 5)
    t.sendto(b"x", (G6, 6000))
    (frame,) = net.sent()
    assert (frame.dst, frame[IPv6].hlim) == (G6_MAC, 5)
    t.set_option("IPV6_MULTICAST_HOPS", -1)  # Linux: back to the default
    assert t.get_option("IPV6_MULTICAST_HOPS") == 1
