"""--forwarding (RFC 1812 §5.3, RFC 8200 §3, RFC 4443): TTL and hop limit,
time exceeded, no route, link-local never forwarded, Packet Too Big."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6
from scapy.layers.l2 import Ether

from shardnet.common.wire.errors import Drop
from shardnet.shards.counters import NetEvent

from .harness import OUR_MAC, PEER4, PEER6, PEER_MAC, Net

OTHER4, OTHER6 = "198.18.0.9", "2001:db8::9"  # on-link hosts that are not us


def router() -> Net:
    net = Net()
    net.stack.forwarding = True
    for ip in (PEER4, PEER6, OTHER4, OTHER6):
        net.learn(ip)
    net.sent()
    return net


def v4(ttl: int, dst: str = OTHER4, src: str = PEER4, size: int = 10) -> Ether:
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=src, dst=dst, ttl=ttl)
        / UDP(sport=1, dport=2)
        / (b"x" * size)
    )


def test_forwarded_with_ttl_decremented_and_a_valid_checksum() -> None:
    net = router()
    net.inject(v4(ttl=64))
    (out,) = net.sent()
    assert out[IP].ttl == 63 and out[IP].dst == OTHER4 and out.dst == PEER_MAC
    claimed = out[IP].chksum
    del out[IP].chksum
    assert Ether(bytes(out))[IP].chksum == claimed
    assert net.stats[NetEvent.FORWARDED_V4] == 1


def test_ttl_1_gets_time_exceeded() -> None:
    net = router()
    net.inject(v4(ttl=1))
    (err,) = net.sent()
    assert err[ICMP].type == 11 and err[ICMP].code == 0 and err[IP].dst == PEER4


def test_no_route_gets_net_unreachable() -> None:
    net = router()
    net.inject(v4(ttl=64, dst="198.51.100.7"))
    (err,) = net.sent()
    assert err[ICMP].type == 3 and err[ICMP].code == 0


def test_link_local_is_never_forwarded() -> None:
    net = router()
    net.inject(v4(ttl=64, dst="169.254.1.1"))
    assert net.sent() == [] and net.stats[Drop.FORWARD_LINK_LOCAL] == 1


def test_ipv6_hop_limit_and_packet_too_big() -> None:
    net = router()
    base = (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OTHER6, hlim=1)
        / UDP(sport=1, dport=2)
    )
    net.inject(base)
    (err,) = net.sent()
    assert ICMPv6TimeExceeded in err
    big = (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OTHER6)
        / UDP(sport=1, dport=2)
        / (b"y" * 1600)
    )
    net.inject(big)
    (ptb,) = net.sent()
    assert ICMPv6PacketTooBig in ptb and ptb[ICMPv6PacketTooBig].mtu == 1500


def test_without_forwarding_it_is_dropped() -> None:
    net = router()
    net.stack.forwarding = False
    net.inject(v4(ttl=64))
    assert net.sent() == [] and net.stats[Drop.IPV4_NOT_FOR_US] == 1


def test_turning_forwarding_on_makes_the_stack_a_router_in_every_shard() -> None:
    """RFC 4861 §6.2: routers discovered as a host are invalidated (event), RAs are
    ignored from then on, and every shard forwards (a replicated setting)."""
    from scapy.layers.inet6 import ICMPv6ND_RA

    net = Net()
    events: list[dict] = []
    net.control.emit_event = events.append
    replica = net.replica()
    ra = (
        Ether(src=PEER_MAC, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=1800, prf=0)
    )
    net.inject(ra)
    assert [e["type"] for e in events] == ["router_discovered"]
    assert net.request("forwarding", on=True) == {"forwarding": True}
    assert "router_invalidated" in [e["type"] for e in events]
    assert net.stack.forwarding
    assert replica.tables.tables["settings"]["stack"] == {"forwarding": True}  # replicated
    events.clear()
    net.inject(ra)
    assert events == []  # RAs are ignored by a router
    assert net.request("forwarding", on=False) == {"forwarding": False}
