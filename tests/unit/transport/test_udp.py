"""UDP sockets through the real network layer (the crafted-frame harness):
bind/connect, the dual-stack matrix (RFC 3493 §3.7), V6ONLY, reuse-port spread,
IP_RECVTOS, SO_BINDTODEVICE, options and ICMP errors."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.layers.l2 import Ether

from shardnet.shards.api import ShardStack, UdpTransport
from shardnet.shards.transport.errors import IcmpErrorRouter
from shardnet.shards.transport.ports import PortManager
from shardnet.shards.transport.tcp import TcpDemux
from shardnet.shards.transport.udp import UdpDemux, UdpHooks

from ..net.harness import OUR4, OUR6, OUR_MAC, PEER4, PEER6, PEER_MAC, Net

PEER4B = "198.18.0.7"


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@pytest.fixture
def world() -> tuple[Net, ShardStack]:
    net = Net()
    net.learn(PEER4)
    net.learn(PEER6)
    udp = UdpDemux(PortManager(), seed=1)
    tcp = TcpDemux(net.stack, udp.ports, shard=0, nshards=1, secret=bytes(16), loop_time=net.clock)
    errors = IcmpErrorRouter(udp, tcp)
    net.stack.transport_v4[17] = net.stack.transport_v6[17] = UdpHooks(udp).datagram
    net.stack.transport_v4[-1] = errors.icmpv4_error
    net.stack.transport_v6[-58] = errors.icmpv6_error
    net.sent()
    return net, ShardStack(shard=0, nshards=1, net=net.stack, udp=udp, rng=random.Random(3))


def endpoint(stack: ShardStack, **kw: Any) -> tuple[UdpTransport, Recorder]:
    return asyncio.run(_endpoint(stack, **kw))


async def _endpoint(stack: ShardStack, **kw: Any) -> tuple[UdpTransport, Recorder]:
    t, p = await stack.create_datagram_endpoint(Recorder, **kw)
    return t, p  # type: ignore[return-value]


def v4(
    src: str = PEER4, sport: int = 4000, dport: int = 5000, tos: int = 0, payload: bytes = b"hi"
) -> Ether:
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=src, dst=OUR4, tos=tos)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def v6(sport: int = 4000, dport: int = 5000, tc: int = 0, payload: bytes = b"hi") -> Ether:
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OUR6, tc=tc)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def test_a_dual_stack_socket_gets_ipv4_as_v4_mapped(world) -> None:
    net, stack = world
    _, rec = endpoint(stack, local_addr=("::", 5000))
    net.inject(v4())
    net.inject(v6())
    assert rec.got == [(b"hi", (f"::ffff:{PEER4}", 4000, 0, 0)), (b"hi", (PEER6, 4000, 0, 0))]


def test_v6only_refuses_ipv4_and_leaves_the_port_to_an_ipv4_socket(world) -> None:
    net, stack = world
    _, rec6 = endpoint(stack, local_addr=("::", 5000), options={"IPV6_V6ONLY": True})
    _, rec4 = endpoint(stack, local_addr=("0.0.0.0", 5000))
    net.inject(v4())
    net.inject(v6())
    assert [a[0] for _, a in rec4.got] == [PEER4] and [a[0] for _, a in rec6.got] == [PEER6]


def test_bind_of_an_ipv4_address_on_an_ipv6_socket_fails_as_the_kernels(world) -> None:
    _, stack = world
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as k, pytest.raises(OSError) as kernel:
        k.bind(("198.18.0.2", 5000))
    with pytest.raises(OSError) as exc:
        endpoint(stack, local_addr=("198.18.0.2", 5000), family=10)  # AF_INET6
    assert type(exc.value) is type(kernel.value) and exc.value.errno == kernel.value.errno


def test_v6only_after_bind_is_einval_and_ipv4_options_apply_only_to_ipv4(world) -> None:
    _, stack = world
    t, _ = endpoint(stack, local_addr=("::", 5000))
    with pytest.raises(OSError) as exc:
        t.set_option("IPV6_V6ONLY", True)
    assert exc.value.errno == errno.EINVAL
    t4, _ = endpoint(stack, local_addr=("0.0.0.0", 5001))
    with pytest.raises(OSError) as exc:
        t4.set_option("IPV6_V6ONLY", True)
    assert exc.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as exc:
        t4.set_option("SO_NOSUCHTHING", 1)
    assert exc.value.errno == errno.ENOPROTOOPT


def test_closed_port_gets_port_unreachable_and_a_bound_one_does_not(world) -> None:
    net, stack = world
    net.inject(v4(dport=6000))
    (err,) = net.sent()
    assert err[ICMP].type == 3 and err[ICMP].code == 3
    endpoint(stack, local_addr=("0.0.0.0", 6000))
    net.inject(v4(dport=6000))
    assert net.sent() == []


def test_the_connected_socket_wins_over_the_wildcard(world) -> None:
    net, stack = world
    _, wild = endpoint(stack, local_addr=("0.0.0.0", 5000), options={"SO_REUSEADDR": True})
    _, conn = endpoint(
        stack, local_addr=(OUR4, 5000), remote_addr=(PEER4, 4000), options={"SO_REUSEADDR": True}
    )
    net.inject(v4(sport=4000))
    net.inject(v4(sport=4001))
    assert [a[1] for _, a in conn.got] == [4000] and [a[1] for _, a in wild.got] == [4001]


def test_reuse_port_keeps_each_peer_on_one_member_and_spreads(world) -> None:
    """Reuse-port: one source always reaches the same socket; spread within ±10 %."""
    net, stack = world
    members = [endpoint(stack, local_addr=("0.0.0.0", 5000), reuse_port=True)[1] for _ in range(4)]
    for sport in range(20000, 21000):
        net.inject(v4(sport=sport))
        net.inject(v4(sport=sport))
    for rec in members:
        ports = [a[1] for _, a in rec.got]
        assert all(ports.count(p) == 2 for p in set(ports))  # both copies to one member
        assert abs(len(set(ports)) - 250) <= 25


def test_ip_recvtos_reports_the_tos_byte_ecn_included(world) -> None:
    net, stack = world
    t, rec = endpoint(
        stack, local_addr=("::", 5000), options={"IP_RECVTOS": True, "IPV6_RECVTCLASS": True}
    )
    net.inject(v4(tos=0xB9))
    assert t.last_datagram is not None and t.last_datagram.tos == 0xB9
    net.inject(v6(tc=0x22))
    assert t.last_datagram.tos == 0x22


@pytest.mark.parametrize(
    ("options", "v4_tos", "v6_tclass"),
    [
        ({"IP_RECVTOS": True}, 0xB9, None),
        ({"IPV6_RECVTCLASS": True}, None, 0x22),
        ({}, None, None),
    ],
)
def test_ip_recvtos_and_ipv6_recvtclass_are_two_options(world, options, v4_tos, v6_tclass) -> None:
    """As on Linux: a dual-stack socket reports an IPv4 datagram's TOS only
    with IP_RECVTOS and an IPv6 one's traffic class only with
    IPV6_RECVTCLASS; each reads back as set."""
    net, stack = world
    t, rec = endpoint(stack, local_addr=("::", 5000), options=options)
    seen: list[int | None] = []
    rec.datagram_received = lambda data, addr: seen.append(t.last_datagram.tos)  # type: ignore[method-assign,union-attr]
    net.inject(v4(tos=0xB9))
    net.inject(v6(tc=0x22))
    assert seen == [v4_tos, v6_tclass]
    assert t.get_option("IP_RECVTOS") is ("IP_RECVTOS" in options)
    assert t.get_option("IPV6_RECVTCLASS") is ("IPV6_RECVTCLASS" in options)


def test_without_ip_recvtos_no_tos_is_reported(world) -> None:
    """ip(7): the TOS comes only when asked for; turned on later, from then on."""
    net, stack = world
    t, rec = endpoint(stack, local_addr=("0.0.0.0", 5000))
    seen: list[int | None] = []
    rec.datagram_received = lambda data, addr: seen.append(t.last_datagram.tos)  # type: ignore[method-assign,union-attr]
    net.inject(v4(tos=0xB9))
    t.set_option("IP_RECVTOS", True)
    net.inject(v4(tos=0x2A))
    t.set_option("IP_RECVTOS", False)
    net.inject(v4(tos=0x2A))
    assert seen == [None, 0x2A, None]


def test_the_tos_is_sent_per_datagram_or_from_the_option(world) -> None:
    """An IP_TOS / IPV6_TCLASS control message's worth (``sendto(..., tos=)``)
    for one datagram; the socket option for the others."""
    net, stack = world
    t, _ = endpoint(stack, local_addr=("::", 5000), options={"IPV6_TCLASS": 0x10})
    t.sendto(b"a", ("::ffff:" + PEER4, 9), tos=0x28)
    t.sendto(b"b", ("::ffff:" + PEER4, 9))
    t.sendto(b"c", (PEER6, 9), tos=0xB8)
    t.sendto(b"d", (PEER6, 9))
    a, b, c, d = net.sent()
    assert (a[IP].tos, b[IP].tos, c[IPv6].tc, d[IPv6].tc) == (0x28, 0x10, 0xB8, 0x10)
    with pytest.raises(OSError) as exc:
        t.sendto(b"e", (PEER6, 9), tos=256)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        t.set_option("IPV6_TCLASS", 300)
    t.set_option("IPV6_TCLASS", -1)  # RFC 3542 §6.5: back to the default
    assert t.get_option("IPV6_TCLASS") == 0


def test_sendto_from_an_unbound_socket_binds_and_checksums(world) -> None:
    net, stack = world
    t, _ = endpoint(stack, family=2)  # AF_INET
    t.sendto(b"payload", (PEER4, 9))
    (frame,) = net.sent()
    assert (
        frame[IP].src == OUR4 and frame[UDP].dport == 9 and bytes(frame[UDP].payload) == b"payload"
    )
    raw = frame[UDP].chksum
    del frame[UDP].chksum
    assert Ether(bytes(frame))[UDP].chksum == raw
    assert t.get_extra_info("sockname")[1] == frame[UDP].sport


def test_dual_stack_socket_sends_ipv4_to_a_mapped_peer(world) -> None:
    net, stack = world
    t, _ = endpoint(stack, local_addr=("::", 5000))
    t.sendto(b"x", (f"::ffff:{PEER4}", 9))
    (frame,) = net.sent()
    assert IP in frame and frame[IP].dst == PEER4 and frame[UDP].sport == 5000


def test_broadcast_needs_so_broadcast(world) -> None:
    net, stack = world
    t, _ = endpoint(stack, local_addr=("0.0.0.0", 5000))
    with pytest.raises(PermissionError):
        t.sendto(b"x", ("255.255.255.255", 9))
    t.set_option("SO_BROADCAST", True)
    t.sendto(b"x", ("255.255.255.255", 9))
    (frame,) = net.sent()
    assert frame.dst == "ff:ff:ff:ff:ff:ff"


def test_bind_to_device_unknown_is_enodev(world) -> None:
    _, stack = world
    t, _ = endpoint(stack)
    with pytest.raises(OSError) as exc:
        t.set_option("SO_BINDTODEVICE", "nope")
    assert exc.value.errno == errno.ENODEV
    t.set_option("SO_BINDTODEVICE", "sntap0")
    assert t.get_option("SO_BINDTODEVICE") == 1


@pytest.mark.parametrize("family", [4, 6])
def test_port_unreachable_reaches_the_connected_socket_as_connection_refused(
    world, family: int
) -> None:
    net, stack = world
    peer = PEER4 if family == 4 else PEER6
    t, rec = endpoint(stack, remote_addr=(peer, 9))
    t.sendto(b"anyone?")
    (sent,) = net.sent()
    if family == 4:
        err = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / ICMP(type=3, code=3)
            / bytes(sent[IP])[:28]
        )
    else:
        err = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IPv6(src=PEER6, dst=OUR6)
            / ICMPv6DestUnreach(code=4)
            / bytes(sent[IPv6])
        )
    net.inject(err)
    assert [type(e) for e in rec.errors] == [ConnectionRefusedError]


def test_unconnected_sockets_ignore_icmp_errors(world) -> None:
    net, stack = world
    t, rec = endpoint(stack, local_addr=("0.0.0.0", 5000))
    t.sendto(b"x", (PEER4, 9))
    (sent,) = net.sent()
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=PEER4, dst=OUR4)
        / ICMP(type=3, code=3)
        / bytes(sent[IP])[:28]
    )
    assert rec.errors == []


@pytest.mark.parametrize(
    ("family", "v6only", "dst"),
    [
        (socket.AF_INET, False, "2001:db8::1"),  # IPv6 literal on an IPv4 socket
        (socket.AF_INET6, False, "198.18.0.1"),  # IPv4 literal on an IPv6 socket
        (socket.AF_INET6, True, "::ffff:198.18.0.1"),  # v4-mapped on a V6ONLY socket
    ],
)
def test_family_mismatches_fail_as_the_kernels_sockets_do(
    world, family: socket.AddressFamily, v6only: bool, dst: str
) -> None:
    """The same sendto on a kernel socket and on ours: the same exception
    class and errno, and nothing sent in the other family. (The kernel's
    sockets fail before sending anything.)"""
    net, stack = world
    with socket.socket(family, socket.SOCK_DGRAM) as k:
        if v6only:
            k.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with pytest.raises(OSError) as kernel:
            k.sendto(b"x", (dst, 9))
    t, _ = endpoint(stack, family=int(family))
    if v6only:
        t.set_option("IPV6_V6ONLY", True)
    with pytest.raises(OSError) as ours:
        t.sendto(b"x", (dst, 9))
    assert type(ours.value) is type(kernel.value) and ours.value.errno == kernel.value.errno
    assert net.sent() == []
