"""The network layer of a shard driven with crafted frames: IPv4
and IPv6 input, ICMP echo and errors, the rules that silence errors, the
rate limit, output fragmentation, path MTU and reassembly timeouts. Every
test asserts what comes out on the wire (``harness.py``)."""

from __future__ import annotations

import dataclasses

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror, defragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrRouting,
    defragment6,
)
from scapy.layers.l2 import Ether

from shardnet.common.addr import format_ip
from shardnet.common.wire.errors import Drop
from shardnet.shards.counters import NetEvent
from shardnet.shards.net.datagram import Delivery
from shardnet.shards.net.model import AddressKind

from .harness import (
    BCAST_MAC,
    FAR4,
    FAR6,
    OUR4,
    OUR6,
    OUR_LL,
    OUR_MAC,
    PEER4,
    PEER6,
    PEER_LL,
    PEER_MAC,
    Net,
    eth,
    icmp4,
    icmp6,
    ip_bytes,
    ipv4,
    ipv6,
    quotes,
)

OTHER4, OTHER6 = "198.18.0.77", "2001:db8::77"  # on our subnets, not ours
ALL_NODES = "ff02::1"


@pytest.fixture
def net() -> Net:
    n = Net()
    n.learn(PEER4)
    n.learn(PEER6)
    n.learn(PEER_LL)
    return n


def echo4(data: bytes = b"ping", *, src: str = PEER4, dst: str = OUR4, **ip: object) -> Ether:
    return eth() / IP(src=src, dst=dst, **ip) / ICMP(type=8, id=0x1234, seq=7) / data


def echo6(data: bytes = b"ping", *, src: str = PEER6, dst: str = OUR6, mac: str = OUR_MAC) -> Ether:
    return eth(dst=mac) / IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=0x1234, seq=7, data=data)


def udp4(dport: int = 9, *, src: str = PEER4, dst: str = OUR4, mac: str = OUR_MAC) -> Ether:
    return eth(dst=mac) / IP(src=src, dst=dst) / UDP(sport=4000, dport=dport) / b"hello"


def udp6(dport: int = 9, *, src: str = PEER6, dst: str = OUR6, mac: str = OUR_MAC) -> Ether:
    return eth(dst=mac) / IPv6(src=src, dst=dst) / UDP(sport=4000, dport=dport) / b"hello"


# --- echo (RFC 792, RFC 4443 §4) -------------------------------------------------------------
def test_echo_request_v4_gets_a_reply_with_the_same_id_seq_and_data(net: Net) -> None:
    net.inject(echo4(b"0123456789"))
    net.expect(
        ipv4(
            icmp4(0, 0, id=0x1234, seq=7, load=b"0123456789"),
            mac=PEER_MAC,
            src=OUR4,
            dst=PEER4,
            ttl=64,
            proto=1,
        )
    )
    assert net.stats[NetEvent.ICMPV4_ECHO_REPLIES] == 1


def test_echo_request_v6_gets_a_reply_from_the_address_pinged(net: Net) -> None:
    net.inject(echo6(b"0123456789"))
    net.expect(
        ipv6(
            icmp6(ICMPv6EchoReply, id=0x1234, seq=7, data=b"0123456789"),
            mac=PEER_MAC,
            src=OUR6,
            dst=PEER6,
            nh=58,
        )
    )


def test_echo_to_the_link_local_address_is_answered_from_it(net: Net) -> None:
    net.inject(echo6(src=PEER_LL, dst=OUR_LL))
    net.expect(ipv6(icmp6(ICMPv6EchoReply), mac=PEER_MAC, src=OUR_LL, dst=PEER_LL))


def test_echo_to_all_nodes_is_answered_from_a_unicast_source(net: Net) -> None:
    net.inject(echo6(src=PEER_LL, dst=ALL_NODES, mac="33:33:00:00:00:01"))
    # RFC 4443 §4.2: the source of a reply to a multicast request is a unicast
    # address of the interface; RFC 6724 picks the link-local for a
    # link-local destination.
    net.expect(ipv6(icmp6(ICMPv6EchoReply, id=0x1234, seq=7), src=OUR_LL, dst=PEER_LL))


def test_echo_to_broadcast_is_ignored(net: Net) -> None:
    net.inject(echo4(dst="198.18.0.255"))
    net.inject(echo4(dst="255.255.255.255"))
    net.expect_nothing()
    assert net.stats[Drop.ICMPV4_ECHO_BROADCAST_IGNORED] == 2


def test_large_echo_v4_is_answered_in_fragments_of_the_mtu(net: Net) -> None:
    data = bytes(range(256)) * 16  # 4096 bytes: the kernel's "ping -s 4000" and more
    net.inject(echo4(data))  # the dispatcher reassembled it: the shard sees it whole
    frames = net.sent()
    assert len(frames) == 3
    for f in frames:
        ipv4(mac=PEER_MAC, src=OUR4, dst=PEER4)(f)
        assert len(f[IP]) <= 1500
    (whole,) = defragment([f[IP] for f in frames])
    icmp4(0, 0, id=0x1234, seq=7)(IP(bytes(whole)))
    assert bytes(IP(bytes(whole))[ICMP].payload) == data


def test_large_echo_v6_is_answered_in_fragments_of_the_mtu(net: Net) -> None:
    data = bytes(range(256)) * 16
    net.inject(echo6(data))
    frames = net.sent()
    assert len(frames) == 3
    for f in frames:
        ipv6(mac=PEER_MAC, src=OUR6, dst=PEER6, nh=44)(f)
        assert len(f[IPv6]) <= 1500
        assert IPv6ExtHdrFragment in f
    assert len({f[IPv6ExtHdrFragment].id for f in frames}) == 1
    whole = defragment6([f[IPv6] for f in frames])
    reply = IPv6(bytes(whole))
    icmp6(ICMPv6EchoReply, id=0x1234, seq=7, data=data)(reply)
    # scapy checks the ICMPv6 checksum of the reassembled packet
    again = IPv6(bytes(reply))
    again[ICMPv6EchoReply].cksum = None
    assert bytes(again) == bytes(reply)


# --- ICMP errors for datagrams nobody takes ---------------------------------------------------
def test_udp_to_a_closed_port_v4_gets_port_unreachable_quoting_it(net: Net) -> None:
    sent = udp4(dport=9)
    net.inject(sent)
    net.expect(
        ipv4(
            icmp4(3, 3),
            quotes(sent[IP]),
            mac=PEER_MAC,
            src=OUR4,
            dst=PEER4,
        )
    )
    assert net.counters.unhandled == 1


def test_udp_to_a_closed_port_v6_gets_port_unreachable_quoting_it(net: Net) -> None:
    sent = udp6(dport=9)
    net.inject(sent)
    net.expect(ipv6(icmp6(ICMPv6DestUnreach, code=4), quotes(sent[IPv6]), src=OUR6, dst=PEER6))


def test_unknown_protocol_v4_gets_protocol_unreachable(net: Net) -> None:
    sent = eth() / IP(src=PEER4, dst=OUR4, proto=253) / b"experimental"
    net.inject(sent)
    net.expect(ipv4(icmp4(3, 2), quotes(sent[IP]), src=OUR4, dst=PEER4))


def test_unknown_next_header_v6_gets_parameter_problem_code_1_pointing_at_it(net: Net) -> None:
    sent = eth() / IPv6(src=PEER6, dst=OUR6, nh=253) / b"experimental"
    net.inject(sent)
    # RFC 8200 §4: code 1, the pointer is the offset of the Next Header field (6).
    net.expect(
        ipv6(icmp6(ICMPv6ParamProblem, code=1, ptr=6), quotes(sent[IPv6]), src=OUR6, dst=PEER6)
    )


def test_unknown_header_after_an_extension_points_at_that_extension(net: Net) -> None:
    sent = eth() / IPv6(src=PEER6, dst=OUR6) / IPv6ExtHdrDestOpt(nh=253) / b"experimental"
    net.inject(sent)
    net.expect(ipv6(icmp6(ICMPv6ParamProblem, code=1, ptr=40), src=OUR6, dst=PEER6))


def test_no_error_about_an_icmp_error(net: Net) -> None:
    quoted = IP(src=OUR4, dst=PEER4) / UDP(sport=1, dport=2)
    net.inject(eth() / IP(src=PEER4, dst=OUR4) / ICMP(type=3, code=3) / bytes(quoted))
    quoted6 = IPv6(src=OUR6, dst=PEER6) / UDP(sport=1, dport=2)
    net.inject(eth() / IPv6(src=PEER6, dst=OUR6) / ICMPv6DestUnreach(code=4) / bytes(quoted6))
    net.inject(eth() / IP(src=PEER4, dst=OUR4) / ICMP(type=42, code=0) / b"x")  # unknown: no error
    net.expect_nothing()


@pytest.mark.parametrize(
    ("dst", "mac"),
    [
        ("198.18.0.255", BCAST_MAC),
        ("255.255.255.255", BCAST_MAC),
        ("224.0.0.1", "01:00:5e:00:00:01"),
    ],
)
def test_no_error_about_a_broadcast_or_multicast_datagram_v4(net: Net, dst: str, mac: str) -> None:
    net.inject(udp4(dst=dst, mac=mac))
    net.inject(eth(dst=mac) / IP(src=PEER4, dst=dst, proto=253) / b"x")
    net.expect_nothing()


def test_no_error_about_a_multicast_datagram_v6(net: Net) -> None:
    net.inject(udp6(dst=ALL_NODES, mac="33:33:00:00:00:01", src=PEER_LL))
    net.inject(eth(dst="33:33:00:00:00:01") / IPv6(src=PEER_LL, dst=ALL_NODES, nh=253) / b"x")
    net.expect_nothing()


def test_no_error_to_an_unspecified_source(net: Net) -> None:
    net.inject(udp4(src="0.0.0.0"))
    net.inject(udp6(src="::"))
    net.expect_nothing()


def test_errors_are_rate_limited_burst_50_then_refilled_by_the_clock() -> None:
    net = Net()
    net.learn(PEER4)
    for _ in range(60):
        net.inject(udp4())
    assert len(net.sent()) == 50
    assert net.stats[Drop.ICMP_RATE_LIMITED] == 10
    net.advance(0.0)
    net.inject(udp4())
    net.expect_nothing()  # no time passed: no token
    net.clock.advance(0.0051)  # 1000/s: five tokens
    for _ in range(10):
        net.inject(udp4())
    assert len(net.sent()) == 5
    net.clock.advance(10.0)  # full again, never above the burst
    for _ in range(60):
        net.inject(udp4())
    assert len(net.sent()) == 50


def test_echo_replies_are_not_rate_limited(net: Net) -> None:
    for _ in range(60):
        net.inject(udp4())
    net.sent()
    for _ in range(5):
        net.inject(echo4())
    assert len(net.sent()) == 5


# --- what is not for us ---------------------------------------------------------------
def test_packets_from_our_own_address_are_dropped_and_counted(net: Net) -> None:
    # CERT CA-96.21 (land): a spoof of one of our addresses as the source.
    net.inject(echo4(src=OUR4))
    net.inject(echo6(src=OUR6))
    net.inject(udp4(src=OUR4))
    net.expect_nothing()
    assert net.stats[Drop.IPV4_SRC_IS_LOCAL] == 2
    assert net.stats[Drop.IPV6_SRC_IS_LOCAL] == 1


def test_packets_to_addresses_not_ours_are_dropped_and_counted(net: Net) -> None:
    net.inject(echo4(dst=OTHER4))
    net.inject(udp4(dst=OTHER4))
    net.inject(echo6(dst=OTHER6))
    net.expect_nothing()
    assert net.stats[Drop.IPV4_NOT_FOR_US] == 2
    assert net.stats[Drop.IPV6_NOT_FOR_US] == 1


def test_a_promiscuous_stack_takes_every_unicast_destination(net: Net) -> None:
    # Relay mode: echo to any address is answered from that address, and a
    # datagram to any address reaches the transport hook.
    net.stack.promiscuous = True
    seen: list[tuple[str, str]] = []

    def udp_hook(d: Delivery) -> bool:
        seen.append((format_ip(d.src), format_ip(d.dst)))
        return True

    net.stack.transport_v4[17] = net.stack.transport_v6[17] = udp_hook
    net.inject(echo4(dst=FAR4))
    net.expect(ipv4(icmp4(0, 0, id=0x1234, seq=7), src=FAR4, dst=PEER4))
    net.inject(echo6(dst=FAR6))
    net.expect(ipv6(icmp6(ICMPv6EchoReply, id=0x1234, seq=7), src=FAR6, dst=PEER6))
    net.inject(udp4(dst=FAR4))
    net.inject(udp6(dst=FAR6))
    net.expect_nothing()
    assert seen == [(PEER4, FAR4), (PEER6, FAR6)]
    assert net.stats[Drop.IPV4_NOT_FOR_US] == net.stats[Drop.IPV6_NOT_FOR_US] == 0


def test_frames_for_another_mac_are_counted_by_the_ingress(net: Net) -> None:
    net.inject(udp4(mac="02:00:00:00:00:99"))
    net.expect_nothing()
    assert net.counters.not_for_us == 1


def test_multicast_sources_and_bad_sources_are_dropped(net: Net) -> None:
    net.inject(echo4(src="224.0.0.9"))
    net.inject(echo6(src="ff02::9"))
    net.expect_nothing()
    assert net.stats[Drop.IPV4_BAD_SOURCE] == 1
    assert net.stats[Drop.IPV6_BAD_SOURCE] == 1


def test_ipv6_multicast_groups_not_joined_are_dropped(net: Net) -> None:
    net.inject(echo6(src=PEER_LL, dst="ff02::1:2", mac="33:33:00:01:00:02"))
    net.expect_nothing()
    assert net.stats[Drop.IPV6_MULTICAST_NOT_JOINED] == 1


def test_malformed_packets_are_counted_by_reason(net: Net) -> None:
    bad = bytearray(bytes(echo4()))
    bad[14 + 10] ^= 0xFF  # IPv4 header checksum
    net.inject(bytes(bad))
    bad6 = bytearray(bytes(echo6()))
    bad6[-1] ^= 0xFF  # ICMPv6 checksum no longer matches
    net.inject(bytes(bad6))
    net.expect_nothing()
    layers = {layer for layer, _ in net.counters.drops}
    assert sum(net.counters.drops.values()) == 2
    assert "ipv4" in layers


def test_a_routing_header_type_0_gets_parameter_problem(net: Net) -> None:
    sent = eth() / IPv6(src=PEER6, dst=OUR6) / IPv6ExtHdrRouting(type=0, addresses=[PEER6])
    sent = sent / UDP(sport=1, dport=2)
    net.inject(sent)
    net.expect(ipv6(icmp6(ICMPv6ParamProblem, code=0, ptr=42), src=OUR6, dst=PEER6))
    assert sum(net.counters.drops.values()) == 1


# --- tentative addresses (RFC 4862 §5.4) ------------------------------------------------
def test_a_tentative_address_accepts_nothing_but_ndp(net: Net) -> None:
    net.net.set_address_kind(1, ip_bytes(OUR6), AddressKind.TENTATIVE)
    net.inject(echo6())
    net.inject(udp6())
    net.expect_nothing()
    assert net.stats[Drop.IPV6_TO_TENTATIVE] == 1


def test_a_tentative_address_is_never_a_source(net: Net) -> None:
    net.net.set_address_kind(1, ip_bytes(OUR6), AddressKind.TENTATIVE)
    net.net.set_address_kind(1, ip_bytes(OUR4), AddressKind.TENTATIVE)
    assert net.stack.ipv6_source(1, ip_bytes(PEER6)) == ip_bytes(OUR_LL)
    assert net.stack.ipv4_source(1) is None
    net.inject(echo6(dst=ALL_NODES, mac="33:33:00:00:00:01", src=PEER6))
    net.expect(ipv6(icmp6(ICMPv6EchoReply), src=OUR_LL, dst=PEER6))


# --- path MTU (RFC 8201) and reassembly timeouts ------------------------------------------
def test_packet_too_big_lowers_the_size_of_later_fragments(net: Net) -> None:
    data = bytes(3000)
    net.inject(echo6(data))
    first = net.sent()
    assert max(len(f[IPv6]) for f in first) == 1496  # 1500 cut at 8-byte boundaries
    # A router on the path reports an MTU of 1280 for packets to PEER6.
    quoted = bytes(first[0][IPv6])[:1232]
    net.inject(eth() / IPv6(src="2001:db8::fe", dst=OUR6) / ICMPv6PacketTooBig(mtu=1280) / quoted)
    net.expect_nothing()
    net.inject(echo6(data))
    later = net.sent()
    assert len(later) == 3
    assert max(len(f[IPv6]) for f in later) <= 1280
    reply = IPv6(bytes(defragment6([f[IPv6] for f in later])))
    icmp6(ICMPv6EchoReply, data=data)(reply)
    # Other destinations keep the link MTU.
    net.inject(echo6(data, src=PEER_LL, dst=OUR_LL))
    assert max(len(f[IPv6]) for f in net.sent()) == 1496


def test_fragmentation_needed_lowers_the_ipv4_path_mtu(net: Net) -> None:
    data = bytes(3000)
    net.inject(echo4(data))
    first = net.sent()
    quoted = bytes(first[0][IP])[:28]
    net.inject(
        eth() / IP(src="198.18.0.254", dst=OUR4) / ICMP(type=3, code=4, nexthopmtu=1000) / quoted
    )
    net.expect_nothing()
    net.inject(echo4(data))
    later = net.sent()
    assert max(len(f[IP]) for f in later) <= 1000
    assert len(later) == 4


def test_reassembly_timeout_v4_sends_time_exceeded_code_1(net: Net) -> None:
    first = IP(src=PEER4, dst=OUR4, flags="MF", id=99, proto=17) / bytes(
        UDP(sport=1, dport=2) / bytes(100)
    )
    net.stack.reassembly_expired(bytes(first))
    net.expect(ipv4(icmp4(11, 1), quotes(first, 28), mac=PEER_MAC, src=OUR4, dst=PEER4))


def test_reassembly_timeout_v6_sends_time_exceeded_code_1(net: Net) -> None:
    first = (
        IPv6(src=PEER6, dst=OUR6)
        / IPv6ExtHdrFragment(m=1, id=99, offset=0)
        / bytes(UDP(sport=1, dport=2) / bytes(96))
    )
    net.request("reassembly_expired", packet=bytes(first))  # the dispatcher's way in
    net.expect(
        ipv6(icmp6(ICMPv6TimeExceeded, code=1), quotes(first), mac=PEER_MAC, src=OUR6, dst=PEER6)
    )


def test_reassembly_timeout_of_an_icmp_error_sends_nothing(net: Net) -> None:
    error4 = IP(src=PEER4, dst=OUR4, flags="MF", id=9, proto=1) / bytes(ICMP(type=3) / bytes(96))
    error6 = (
        IPv6(src=PEER6, dst=OUR6)
        / IPv6ExtHdrFragment(m=1, id=99, offset=0, nh=58)
        / bytes(ICMPv6DestUnreach() / bytes(96))
    )
    net.stack.reassembly_expired(bytes(error4))
    net.stack.reassembly_expired(bytes(error6))
    net.expect_nothing()


def test_reassembly_timeout_for_a_datagram_not_to_us_sends_nothing(net: Net) -> None:
    first = IP(src=PEER4, dst="198.18.0.255", flags="MF", id=9, proto=17) / bytes(108)
    net.stack.reassembly_expired(bytes(first))
    net.stack.reassembly_expired(b"\x45garbage")
    net.expect_nothing()
    assert net.stats[Drop.REASSEMBLY_EXPIRED_MALFORMED] == 1


def test_icmp_errors_quote_at_most_576_bytes_v4_and_1280_v6(net: Net) -> None:
    net.inject(udp4() / bytes(2000))
    out = net.expect(ipv4(icmp4(3, 3), src=OUR4, dst=PEER4))
    assert len(out[IP]) == 576
    assert IPerror in out and UDPerror in out
    net.inject(udp6() / bytes(2000))
    out = net.expect(ipv6(icmp6(ICMPv6DestUnreach, code=4), src=OUR6, dst=PEER6))
    assert len(out[IPv6]) == 1280


def test_source_choices_follow_address_changes() -> None:
    """The (NIC, destination) source cache is dropped when addresses change."""
    net = Net()
    peer6, peer4 = ip_bytes(PEER6), ip_bytes(PEER4)
    assert net.stack.ipv6_source(1, peer6) == ip_bytes(OUR6)
    assert net.stack.ipv4_source(1, peer4) == ip_bytes(OUR4)
    net.request("addr_del", nic="sntap0", address=OUR6)
    net.request("addr_del", nic="sntap0", address=OUR4)
    assert net.stack.ipv6_source(1, peer6) != ip_bytes(OUR6)
    assert net.stack.ipv4_source(1, peer4) is None
    net.request("addr_add", nic="sntap0", address="198.18.0.9/24")
    assert net.stack.ipv4_source(1, peer4) == ip_bytes("198.18.0.9")
    # A replica's stack follows its own view the same way.
    replica = net.replica(1)
    assert replica.stack.ipv4_source(1, peer4) == ip_bytes("198.18.0.9")
    net.request("addr_add", nic="sntap0", address="198.18.0.8/24", behavior="first-primary")
    assert replica.stack.ipv4_source(1, peer4) == ip_bytes("198.18.0.8")


def test_the_relays_echo_hook_takes_echoes_it_sends_on(net: Net) -> None:
    # --relay-icmp relay: the destination answers, not the stack; an echo
    # the hook leaves (one of our addresses) is answered here.
    sent: list[tuple[str, str, int, int, bytes]] = []

    def hook(src: bytes, dst: bytes, ident: int, seq: int, data: bytes) -> bool:
        sent.append((format_ip(src), format_ip(dst), ident, seq, data))
        return dst != bytes(4) + bytes(12) and format_ip(dst) not in (OUR4, OUR6)

    net.stack.promiscuous = True
    net.stack.echo_hook = hook
    net.inject(echo4(b"far", dst=OTHER4))
    net.inject(echo6(b"far6", dst=OTHER6))
    net.expect_nothing()
    assert sent == [(PEER4, OTHER4, 0x1234, 7, b"far"), (PEER6, OTHER6, 0x1234, 7, b"far6")]
    net.inject(echo4(b"near"))
    net.expect(ipv4(icmp4(0, 0, id=0x1234, seq=7, load=b"near"), src=OUR4, dst=PEER4))


def test_next_hops_on_a_tun_are_not_reported_to_nud(net: Net) -> None:
    # A TUN's next hop is a placeholder: nothing for shard 0's NUD to confirm.
    net.inject(echo4())
    net.expect(ipv4(icmp4(0, 0), src=OUR4, dst=PEER4))
    assert net.stack.used_hops  # on Ethernet, the peer's use is reported
    net.advance(2.0)
    assert not net.stack.used_hops
    link = net.stack.link_nic
    nic = net.net.view.nics[link]
    net.net.view.nics[link] = dataclasses.replace(nic, kind="tun")
    net.stack.paths.clear()
    net.inject(echo4())
    net.expect(ipv4(icmp4(0, 0), src=OUR4, dst=PEER4))
    assert not net.stack.used_hops and net.stack.next_deadline() is None
