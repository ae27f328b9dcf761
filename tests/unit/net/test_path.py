"""Datagrams to a destination already sent to take a remembered path
(``shards/net/path.py``): the frames are the ones the full output path
builds, and any change of the tables the path came from — a neighbour's new
MAC, a route, the NIC's MTU, the path MTU, the RA's hop limit — shows in the
very next datagram."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from shardnet.common.addr import parse_ip
from shardnet.shards.net.route import Route

from .harness import (
    GW4,
    GW6,
    GW_MAC,
    OUR4,
    OUR6,
    OUR_MAC,
    PEER4,
    PEER6,
    PEER_MAC,
    Net,
    arp_request,
    checksums_ok,
)

NEW_MAC = "02:00:00:00:00:99"


@pytest.fixture
def net() -> Net:
    n = Net()
    for ip in (PEER4, PEER6, GW4, GW6):
        n.learn(ip, GW_MAC if ip in (GW4, GW6) else PEER_MAC)
    return n


def udp_header(sport: int = 4000, dport: int = 7, length: int = 8) -> bytearray:
    return bytearray(
        sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + length.to_bytes(2, "big") + b"\0\0"
    )


def send(net: Net, dst: str, data: bytes = b"hello", **kw: object) -> Ether:
    """One UDP datagram from the stack to ``dst``; the one frame written."""
    head = udp_header(length=8 + len(data))
    if ":" in dst:
        assert net.stack.send_ipv6(parse_ip(dst), 17, head, checksum_at=6, data=data, **kw)  # type: ignore[arg-type]
    else:
        assert net.stack.send_ipv4(parse_ip(dst), 17, head, checksum_at=6, data=data, **kw)  # type: ignore[arg-type]
    frames = net.sent()
    assert len(frames) == 1, [f.summary() for f in frames]
    return frames[0]


@pytest.mark.parametrize("dst", [PEER4, PEER6])
def test_a_second_datagram_takes_the_path_and_is_built_the_same(net: Net, dst: str) -> None:
    first = send(net, dst, b"one")
    assert len(net.stack.paths) == 1
    second = send(net, dst, b"two")
    for f in (first, second):
        checksums_ok(f)
        assert (f.src, f.dst) == (OUR_MAC, PEER_MAC)
        assert bytes(f[UDP].payload) in (b"one", b"two")
    ip = IP if ":" not in dst else IPv6
    assert second[ip].src == (OUR4 if ip is IP else OUR6)
    if ip is IP:  # every field but the identification and the checksums
        assert second[IP].id == (first[IP].id + 1) & 0xFFFF
        assert (second[IP].ttl, second[IP].flags, second[IP].tos) == (64, first[IP].flags, 0)
    else:
        assert (second[IPv6].hlim, second[IPv6].tc, second[IPv6].fl) == (64, 0, 0)


def test_the_callers_ttl_tos_and_df_are_sent_along_the_path(net: Net) -> None:
    send(net, PEER4)
    f = send(net, PEER4, ttl=3, tos=0xB8, df=True)
    checksums_ok(f)
    assert (f[IP].ttl, f[IP].tos, str(f[IP].flags)) == (3, 0xB8, "DF")


def test_a_neighbour_with_a_new_mac_is_used_at_once(net: Net) -> None:
    assert send(net, PEER4).dst == PEER_MAC
    net.inject(arp_request(PEER4, OUR4, mac=NEW_MAC))  # the peer's NIC was replaced
    net.sent()
    assert send(net, PEER4).dst == NEW_MAC


def test_a_new_route_is_used_at_once(net: Net) -> None:
    assert send(net, PEER4).dst == PEER_MAC
    net.net.add_route(Route(parse_ip(PEER4), 32, 1, gateway=parse_ip(GW4)))
    f = send(net, PEER4)
    assert (f.dst, f[IP].dst) == (GW_MAC, PEER4)


def test_a_lower_path_mtu_fragments_the_next_datagram(net: Net) -> None:
    data = bytes(1400)
    send(net, PEER4, data)
    net.stack.pmtu.update(net.clock(), parse_ip(PEER4), 1000)
    head = udp_header(length=8 + len(data))
    assert net.stack.send_ipv4(parse_ip(PEER4), 17, head, checksum_at=6, data=data)
    pieces = net.sent()
    assert len(pieces) == 2 and all(len(p[IP]) <= 1000 for p in pieces)


def test_a_smaller_nic_mtu_fragments_the_next_datagram(net: Net) -> None:
    data = bytes(1400)
    send(net, PEER6, data)
    net.net.set_nic_mtu(1, 1280)
    head = udp_header(length=8 + len(data))
    assert net.stack.send_ipv6(parse_ip(PEER6), 17, head, checksum_at=6, data=data)
    pieces = net.sent()
    assert len(pieces) == 2 and all(len(p[IPv6]) <= 1280 for p in pieces)


def test_the_ras_hop_limit_is_used_at_once(net: Net) -> None:
    assert send(net, PEER6)[IPv6].hlim == 64
    net.net.set_nic_param(1, "cur_hop_limit", 17)
    assert send(net, PEER6)[IPv6].hlim == 17
    assert send(net, PEER6, hop_limit=5)[IPv6].hlim == 5
