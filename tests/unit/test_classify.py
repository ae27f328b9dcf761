"""The dispatcher's classification, one test per row of DESIGN.md's table."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.igmp import IGMP
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from shardnet.common.classify import FRAGMENT, classify, control_plane
from shardnet.common.flowhash import shard_for

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
N = 4


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def expected(proto: int, a: str, ap: int, b: str, bp: int) -> int:
    return shard_for(proto, ip(a), ap, ip(b), bp, N)


@pytest.mark.parametrize("l4", [TCP, UDP])
@pytest.mark.parametrize(("a", "b", "net"), [(A4, B4, IP), (A6, B6, IPv6)])
def test_tcp_and_udp_hash_symmetrically(l4: type, a: str, b: str, net: type) -> None:
    proto = 6 if l4 is TCP else 17
    fwd = bytes(ETH / net(src=a, dst=b) / l4(sport=40000, dport=80))
    rev = bytes(ETH / net(src=b, dst=a) / l4(sport=80, dport=40000))
    assert classify(fwd, N) == classify(rev, N) == expected(proto, a, 40000, b, 80)


def test_flows_spread_over_shards() -> None:
    seen = {
        classify(bytes(ETH / IP(src=A4, dst=B4) / TCP(sport=p, dport=80)), N)
        for p in range(40000, 40200)
    }
    assert seen == set(range(N))


def test_ipv6_extension_headers_are_walked_to_the_ports() -> None:
    frame = bytes(
        ETH
        / IPv6(src=A6, dst=B6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5, dport=6)
    )
    assert classify(frame, N) == expected(17, A6, 5, B6, 6)


def test_icmpv4_error_follows_the_quoted_flow() -> None:
    sent = IP(src=B4, dst=A4) / UDP(sport=5353, dport=9999)
    err = bytes(ETH / IP(src=A4, dst=B4) / ICMP(type=3, code=3) / bytes(sent)[:28])
    assert classify(err, N) == expected(17, B4, 5353, A4, 9999)


@pytest.mark.parametrize("icmp", [ICMPv6DestUnreach(code=4), ICMPv6PacketTooBig(mtu=1280)])
def test_icmpv6_error_follows_the_quoted_flow(icmp) -> None:
    sent = IPv6(src=B6, dst=A6) / TCP(sport=33000, dport=443)
    err = bytes(ETH / IPv6(src=A6, dst=B6) / icmp / bytes(sent))
    assert classify(err, N) == expected(6, B6, 33000, A6, 443)


def test_echo_hashes_addresses_and_identifier() -> None:
    for net, proto, echo, a, b in (
        (IP, 1, ICMP(id=77), A4, B4),
        (IPv6, 58, ICMPv6EchoRequest(id=77), A6, B6),
    ):
        frame = bytes(ETH / net(src=a, dst=b) / echo)
        assert classify(frame, N) == expected(proto, a, 77, b, 77)


def test_fragments_go_to_reassembly() -> None:
    frags = fragment(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / (b"x" * 3000), fragsize=1000)
    assert all(classify(bytes(ETH / f), N) == FRAGMENT for f in frags)
    frag6 = bytes(ETH / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1) / UDP(sport=1, dport=2))
    assert classify(frag6, N) == FRAGMENT


@pytest.mark.parametrize(
    "frame",
    [
        ETH / ARP(psrc=A4, pdst=B4),
        ETH / IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA(),
        ETH / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=B6),
        ETH / Dot1Q(vlan=5) / IP(src=A4, dst=B4) / TCP(sport=1, dport=2),
        ETH / IP(src=A4, dst=B4, proto=99) / b"xx",
        Ether(type=0x88B5) / b"local experimental",
        # RFC 1122 §3.2.2.2: the routes it changes are shard 0's, whatever flow it quotes.
        ETH
        / IP(src=A4, dst=B4)
        / ICMP(type=5, code=1, gw="198.18.0.9")
        / IP(src=B4, dst="198.19.0.1")
        / TCP(sport=1234, dport=80),
    ],
    ids=["arp", "ra", "ns", "vlan", "unknown-proto", "unknown-ethertype", "icmpv4-redirect"],
)
def test_control_and_unknown_go_to_shard_0(frame) -> None:
    assert classify(bytes(frame), N) == 0


def test_dhcp_replies_go_to_shard_0() -> None:
    """The DHCPv4 client lives in shard 0 (RFC 2131 §4.1: server port 67 to client port 68)."""
    for dst in ("255.255.255.255", B4):
        frame = ETH / IP(src=A4, dst=dst) / UDP(sport=67, dport=68) / b"x"
        assert classify(bytes(frame), N) == 0
    other = [
        classify(bytes(ETH / IP(src=A4, dst=B4) / UDP(sport=67, dport=port)), N)
        for port in range(69, 200)
    ]
    assert set(other) != {0}  # any other UDP flow is hashed


def test_dhcp6_replies_go_to_shard_0() -> None:
    """The DHCPv6 client lives in shard 0 (RFC 8415 §7.2: server port 547 to client port 546)."""
    for src in ("fe80::1", A6):
        frame = ETH / IPv6(src=src, dst="fe80::2") / UDP(sport=547, dport=546) / b"x"
        assert classify(bytes(frame), N) == 0
    other = [
        classify(bytes(ETH / IPv6(src=A6, dst=B6) / UDP(sport=547, dport=port)), N)
        for port in range(547, 700)
    ]
    assert set(other) != {0}  # any other UDP flow is hashed


def test_short_and_malformed_go_to_shard_0() -> None:
    good = bytes(ETH / IP(src=A4, dst=B4) / TCP(sport=1, dport=2))
    for cut in (0, 13, 14, 20, 33, 34, 36):
        assert classify(good[:cut], N) == 0
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x4F  # IHL 60 bytes, longer than the frame
    assert classify(bytes(bad_ihl), N) == 0


@given(st.binary(max_size=200), st.integers(1, 8))
def test_nothing_in_a_frame_makes_it_raise(data: bytes, nshards: int) -> None:
    for frame in (data, b"\x02" * 12 + b"\x08\x00" + data, b"\x02" * 12 + b"\x86\xdd" + data):
        assert classify(frame, nshards) in (FRAGMENT, *range(nshards))


def test_fragments_are_found_with_one_shard_too() -> None:
    """With ``--shards 1`` fragments must still go to reassembly."""
    frag = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", flags="MF") / UDP() / (b"x" * 8))
    assert classify(frag, 1) == FRAGMENT
    whole = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP() / (b"x" * 8))
    assert classify(whole, 1) == 0


@pytest.mark.parametrize(
    ("frame", "control"),
    [
        (ETH / ARP(psrc=A4, pdst=B4), True),
        (ETH / IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA(), True),
        (ETH / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=B6), True),
        (ETH / IPv6(src="fe80::1", dst="ff02::16") / IPv6ExtHdrHopByHop() / ICMPv6MLReport2(), True),
        (ETH / IP(src=A4, dst="224.0.0.22") / IGMP(), True),
        (ETH / IP(src=A4, dst=B4, proto=99) / b"xx", True),
        (Ether(type=0x88B5) / (b"local experimental" * 4), True),
        (ETH / IP(src=A4, dst=B4) / TCP(flags="S"), False),
        (ETH / IP(src=A4, dst=B4) / TCP(flags="A") / b"data", False),
        (ETH / IPv6(src=A6, dst=B6) / TCP(flags="PA") / b"data", False),
        (ETH / IP(src=A4, dst=B4) / UDP(sport=1, dport=2), False),
        (ETH / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(), False),
        (ETH / IP(src=A4, dst=B4) / ICMP(), False),
        (ETH / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1) / UDP(), False),
    ],
    ids=[
        "arp", "ra", "ns", "mld", "igmp", "unknown-proto", "unknown-ethertype",
        "syn", "tcp-data", "tcp6-data", "udp", "echo6", "echo", "fragment6",
    ],
)  # fmt: skip
def test_control_plane_is_what_no_flow_carries(frame, control: bool) -> None:
    """The frames whose backlog the dispatcher bounds per shard."""
    assert control_plane(bytes(frame)) is control


def test_short_frames_are_control_plane() -> None:
    good = bytes(ETH / IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2))
    for cut in (0, 13, 14, 33, 54):
        assert control_plane(good[:cut])


@given(st.binary(max_size=120))
def test_control_plane_never_raises(data: bytes) -> None:
    for frame in (data, b"\x02" * 12 + b"\x08\x00" + data, b"\x02" * 12 + b"\x86\xdd" + data):
        assert control_plane(frame) in (True, False)
