"""Neighbours through the stack: ARP answers and gratuitous ARP
(RFC 826, RFC 5227), NS/NA (RFC 4861 §7.2), resolution with queued packets,
retries 1 s apart then failure, and the replicas' ask-resolve path."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from shardnet.common.wire.errors import Drop
from shardnet.shards.net.route import Route

from .harness import (
    BCAST_MAC,
    FAR4,
    GW4,
    GW_MAC,
    OUR4,
    OUR6,
    OUR_LL,
    OUR_MAC,
    PEER4,
    PEER6,
    PEER_LL,
    PEER_MAC,
    Check,
    Net,
    arp,
    arp_reply,
    arp_request,
    eth,
    icmp4,
    icmp6,
    ip_bytes,
    ipv4,
    ipv6,
    na,
    ns,
)

OTHER4 = "198.18.0.77"


def echo4(src: str = PEER4, *, mac: str = PEER_MAC, seq: int = 1) -> Ether:
    return eth(mac) / IP(src=src, dst=OUR4) / ICMP(type=8, id=1, seq=seq) / b"data"


def echo6(src: str = PEER6, dst: str = OUR6, *, seq: int = 1) -> Ether:
    return eth() / IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=1, seq=seq, data=b"data")


def neigh(net: Net, ip: str) -> dict[str, object] | None:
    rows = [r for r in net.request("neigh") if r["ip"] == ip]
    return rows[0] if rows else None


# --- ARP (RFC 826) --------------------------------------------------------------------
def test_arp_request_for_our_address_is_answered_and_teaches_the_requester() -> None:
    net = Net()
    net.inject(arp_request(PEER4, OUR4))
    net.expect(arp(2, OUR4, PEER4, mac=PEER_MAC, hwdst=PEER_MAC))
    row = neigh(net, PEER4)
    assert row == {
        "nic": 1,
        "nic_name": "sntap0",
        "family": "ipv4",
        "ip": PEER4,
        "mac": PEER_MAC,
        "state": "STALE",
        "age_s": 0.0,
    }
    # Learnt: the echo reply goes out at once, to the requester's MAC.
    net.inject(echo4())
    net.expect(ipv4(icmp4(0), mac=PEER_MAC, src=OUR4, dst=PEER4))


def test_arp_for_another_address_is_ignored_and_teaches_nothing() -> None:
    net = Net()
    net.inject(arp_request(PEER4, OTHER4))
    net.expect_nothing()
    assert neigh(net, PEER4) is None


def test_arp_claiming_our_address_is_a_conflict_never_learnt() -> None:
    net = Net()
    net.inject(arp_request(OUR4, OUR4, mac="02:00:00:00:00:66"))
    net.expect_nothing()
    assert net.control.arp[1].stats.conflicts == 1
    assert neigh(net, OUR4) is None


def test_bootstrap_announces_its_ipv4_addresses() -> None:
    net = Net(ipv4=(OUR4 + "/24", "198.18.1.2/24"))
    arps = [f for f in net.boot_frames if ARP in f]  # besides them: the MLD report (NDP)
    assert len(arps) == 4  # RFC 5227 §2.3: each twice, 2 s apart
    for i, addr in enumerate((OUR4, "198.18.1.2", OUR4, "198.18.1.2")):
        arp(1, addr, addr, mac=BCAST_MAC)(arps[i])


def test_adding_an_address_sends_a_gratuitous_arp() -> None:
    net = Net()
    row = net.request("addr_add", nic="sntap0", address="198.18.1.5/24")
    assert row["addr"] == "198.18.1.5"
    # RFC 5227 §3: a broadcast request with sender IP = target IP = the address.
    net.expect(arp(1, "198.18.1.5", "198.18.1.5", mac=BCAST_MAC))
    net.inject(arp_request(PEER4, "198.18.1.5"))
    net.expect(arp(2, "198.18.1.5", PEER4, mac=PEER_MAC, hwdst=PEER_MAC))

    # RFC 5227 §2.3: ANNOUNCE_NUM (2) announcements, ANNOUNCE_INTERVAL (2 s) apart.
    def announcements() -> list[Ether]:
        return [f for f in net.sent() if ARP in f and f[ARP].psrc == "198.18.1.5"]

    net.advance(1.9)
    assert announcements() == []
    net.advance(0.2)
    (again,) = announcements()
    arp(1, "198.18.1.5", "198.18.1.5", mac=BCAST_MAC)(again)
    net.advance(10)
    assert announcements() == []


def test_a_removed_address_is_not_announced_again() -> None:
    net = Net()
    net.request("addr_add", nic="sntap0", address="198.18.1.6/24")
    net.sent()
    net.request("addr_del", nic="sntap0", address="198.18.1.6")
    net.advance(5)
    assert not [f for f in net.sent() if ARP in f]


def test_adding_an_ipv6_address_sends_no_arp() -> None:
    net = Net()
    net.request("addr_add", nic="sntap0", address="2001:db8:1::5/64")
    frames = net.sent()
    assert not any(ARP in f for f in frames)
    # What it sends instead: an MLDv2 report joining its solicited-node group (RFC 3810).
    assert [f[IPv6].dst for f in frames] == ["ff02::16"]


def test_echo_to_an_unknown_neighbour_waits_for_the_arp_reply() -> None:
    net = Net()
    net.inject(echo4(seq=1))
    net.expect(arp(1, OUR4, PEER4, mac=BCAST_MAC))
    net.inject(echo4(seq=2))  # queued behind the same resolution: no second request
    net.expect_nothing()
    net.inject(arp_reply(PEER4))
    frames = net.sent()
    assert [f[ICMP].seq for f in frames] == [1, 2]
    for f in frames:
        ipv4(icmp4(0, id=1), mac=PEER_MAC, src=OUR4, dst=PEER4)(f)
    assert neigh(net, PEER4) == neigh(net, PEER4) | {"mac": PEER_MAC, "state": "REACHABLE"}


def test_the_queue_per_neighbour_holds_a_burst() -> None:
    """Bounded in bytes (Linux unres_qlen_bytes), not three packets: a burst
    of answers to one peer whose address is being resolved all go out."""
    net = Net()
    for seq in range(1, 41):
        net.inject(echo4(seq=seq))
    net.sent()
    net.inject(arp_reply(PEER4))
    assert [f[ICMP].seq for f in net.sent()] == list(range(1, 41))


def test_three_requests_one_second_apart_then_local_packets_are_dropped_and_counted() -> None:
    net = Net()
    t0 = net.clock()
    net.inject(echo4())
    times = [net.clock()]
    net.expect(arp(1, OUR4, PEER4, mac=BCAST_MAC))
    for _ in range(2):
        net.advance(1.0)
        net.expect(arp(1, OUR4, PEER4, mac=BCAST_MAC))
        times.append(net.clock())
    assert times == [t0, t0 + 1, t0 + 2]
    net.advance(5.0)
    # Our own echo reply cannot be delivered: no ICMP to ourselves.
    net.expect_nothing()
    assert net.stats[Drop.NEIGHBOUR_UNRESOLVED] == 1
    assert neigh(net, PEER4) is None


def test_a_forwarded_packet_whose_next_hop_fails_gets_host_unreachable() -> None:
    net = Net()
    net.learn(PEER4)
    # A datagram from PEER4 for OTHER4 going out again (what --forwarding
    # will send); its next hop never answers.
    udp = bytes(UDP(sport=1, dport=2) / b"x")
    assert net.stack.send_ipv4(ip_bytes(OTHER4), 17, udp, src=ip_bytes(PEER4))
    net.expect(arp(1, OUR4, OTHER4, mac=BCAST_MAC))
    net.advance(1.0)
    net.advance(1.0)
    assert len(net.sent()) == 2
    net.advance(1.0)
    # RFC 1122 §2.3.2.2 / RFC 792: host unreachable to the sender, quoting it.
    out = net.expect(ipv4(icmp4(3, 1), mac=PEER_MAC, src=OUR4, dst=PEER4))
    assert out[IPerror].dst == OTHER4 and out[IPerror].src == PEER4


def test_only_the_first_fragment_of_a_failed_packet_gets_an_error() -> None:
    net = Net()
    net.learn(PEER4)
    udp = bytes(UDP(sport=1, dport=2) / bytes(2900))
    assert net.stack.send_ipv4(ip_bytes(OTHER4), 17, udp, src=ip_bytes(PEER4))
    net.advance(5.0)
    assert net.stats[Drop.NEIGHBOUR_UNRESOLVED] == 2  # two fragments were queued
    # RFC 1122 §3.2.2: no error about a non-initial fragment.
    (error,) = [f for f in net.sent() if ICMP in f]
    ipv4(icmp4(3, 1), mac=PEER_MAC, src=OUR4, dst=PEER4)(error)
    assert error[IPerror].frag == 0 and error[IPerror].flags.MF


def test_an_ipv6_packet_whose_next_hop_fails_gets_address_unreachable() -> None:
    net = Net()
    net.learn(PEER6)
    udp = bytes(UDP(sport=1, dport=2) / b"x")
    net.stack.send_ipv6(ip_bytes("2001:db8::77"), 17, udp, src=ip_bytes(PEER6))
    net.expect(ipv6(icmp6(ICMPv6ND_NS, tgt="2001:db8::77"), src=OUR6, dst="ff02::1:ff00:77"))
    net.advance(1.0)
    net.advance(1.0)
    assert len(net.sent()) == 2
    net.advance(1.0)
    net.expect(ipv6(icmp6(ICMPv6DestUnreach, code=3), mac=PEER_MAC, src=OUR6, dst=PEER6))


def test_off_link_destinations_resolve_the_gateway() -> None:
    net = Net(gateway4=GW4)
    net.inject(eth(GW_MAC) / IP(src=FAR4, dst=OUR4) / ICMP(type=8, id=3, seq=1))
    net.expect(arp(1, OUR4, GW4, mac=BCAST_MAC))
    net.inject(arp_reply(GW4, mac=GW_MAC))
    net.expect(ipv4(icmp4(0, id=3), mac=GW_MAC, src=OUR4, dst=FAR4))


# --- NS / NA (RFC 4861 §7.2) -------------------------------------------------------------
def test_ns_for_our_address_gets_a_solicited_na_with_our_mac() -> None:
    net = Net()
    net.inject(ns(PEER6, OUR6))
    net.expect(
        ipv6(
            icmp6(ICMPv6ND_NA, R=0, S=1, O=1, tgt=OUR6),
            has_tlla(OUR_MAC),
            mac=PEER_MAC,
            src=OUR6,
            dst=PEER6,
            hlim=255,
        )
    )
    # The NS's source link-layer option taught us the peer (STALE), and
    # sending the NA with it started NUD's DELAY (RFC 4861 §7.3.3).
    assert neigh(net, PEER6) == neigh(net, PEER6) | {"mac": PEER_MAC, "state": "DELAY"}


def test_ns_for_our_link_local_address_from_a_link_local_source() -> None:
    net = Net()
    net.inject(ns(PEER_LL, OUR_LL))
    net.expect(ipv6(icmp6(ICMPv6ND_NA, S=1, O=1, tgt=OUR_LL), src=OUR_LL, dst=PEER_LL))


def test_dad_ns_for_our_address_gets_an_unsolicited_na_to_all_nodes() -> None:
    net = Net()
    net.inject(ns("::", OUR6))
    # RFC 4861 §7.2.4: to ff02::1, S=0.
    net.expect(
        ipv6(
            icmp6(ICMPv6ND_NA, S=0, O=1, tgt=OUR6),
            has_tlla(OUR_MAC),
            mac="33:33:00:00:00:01",
            src=OUR6,
            dst="ff02::1",
            hlim=255,
        )
    )
    assert neigh(net, "::") is None


def test_ns_for_another_target_is_ignored() -> None:
    net = Net()
    net.inject(ns(PEER6, "2001:db8::77"))
    net.inject(ns(PEER6, "2001:db8::77", dst=OUR6))
    net.expect_nothing()


def test_na_releases_the_queued_ipv6_packets() -> None:
    net = Net()
    net.inject(echo6(seq=1))
    net.inject(echo6(seq=2))
    net.expect(
        ipv6(
            icmp6(ICMPv6ND_NS, tgt=PEER6),
            mac="33:33:ff:00:00:01",
            src=OUR6,
            dst="ff02::1:ff00:1",
            hlim=255,
        )
    )
    net.inject(na(PEER6))
    frames = net.sent()
    assert [f[ICMPv6EchoReply].seq for f in frames] == [1, 2]
    for f in frames:
        ipv6(icmp6(ICMPv6EchoReply), mac=PEER_MAC, src=OUR6, dst=PEER6)(f)
    assert neigh(net, PEER6) == neigh(net, PEER6) | {"mac": PEER_MAC, "state": "REACHABLE"}


def test_an_unsolicited_na_for_an_unknown_neighbour_creates_nothing() -> None:
    net = Net()
    net.inject(na(PEER6, s=0, dst="ff02::1"))
    net.expect_nothing()
    assert neigh(net, PEER6) is None


def test_ns_retries_one_second_apart_then_gives_up() -> None:
    net = Net()
    net.inject(echo6(src=PEER_LL, dst=OUR_LL))
    net.expect(ipv6(icmp6(ICMPv6ND_NS, tgt=PEER_LL), src=OUR_LL))
    net.advance(1.0)
    net.expect(ipv6(icmp6(ICMPv6ND_NS, tgt=PEER_LL)))
    net.advance(1.0)
    net.expect(ipv6(icmp6(ICMPv6ND_NS, tgt=PEER_LL)))
    net.advance(1.0)
    net.expect_nothing()
    assert net.stats[Drop.NEIGHBOUR_UNRESOLVED] == 1


def has_tlla(mac: str) -> Check:
    """For ``ipv6``: the NDP message carries a Target Link-Layer option with ``mac``."""

    def check(ip: IPv6) -> None:
        assert ICMPv6NDOptDstLLAddr in ip, ip.summary()
        assert ip[ICMPv6NDOptDstLLAddr].lladdr == mac

    return check


# --- replicas: the neighbour table reaches them; they ask shard 0 ---------------------
def test_a_neighbour_learnt_in_shard_0_reaches_a_replica() -> None:
    net = Net()
    replica = net.replica(1)
    net.learn(PEER4)
    assert replica.view.neighbours[(1, ip_bytes(PEER4))] == bytes.fromhex("020000000001")
    replica.inject(echo4())
    (out,) = replica.sent()
    ipv4(icmp4(0), mac=PEER_MAC, src=OUR4, dst=PEER4)(out)
    assert replica.asked == []


def test_a_replica_asks_shard_0_and_sends_when_the_answer_is_replicated() -> None:
    net = Net()
    replica = net.replica(1)
    replica.inject(echo4(seq=1))
    replica.inject(echo4(seq=2))
    assert replica.asked == [(1, ip_bytes(PEER4))]  # asked once
    assert replica.sent() == []
    net.expect(arp(1, OUR4, PEER4, mac=BCAST_MAC))  # shard 0 resolves
    net.inject(arp_reply(PEER4))
    net.expect_nothing()  # shard 0 had nothing queued
    frames = replica.sent()
    assert [f[ICMP].seq for f in frames] == [1, 2]
    for f in frames:
        ipv4(icmp4(0), mac=PEER_MAC, src=OUR4, dst=PEER4)(f)
    assert replica.stack.next_deadline() is None


def test_a_replica_holds_a_burst_while_shard_0_resolves() -> None:
    """Bounded in bytes like shard 0's queue, not three packets: the burst
    of answers to a peer not heard from for a while all go out."""
    net = Net()
    replica = net.replica(1)
    for seq in range(1, 41):
        replica.inject(echo4(seq=seq))
    net.sent()
    net.inject(arp_reply(PEER4))
    assert [f[ICMP].seq for f in replica.sent()] == list(range(1, 41))
    assert replica.stack.counters.by_reason()[Drop.NEIGHBOUR_QUEUE_OVERFLOW] == 0


def test_a_replica_drops_and_counts_its_packets_when_resolution_fails() -> None:
    net = Net()
    replica = net.replica(1)
    replica.inject(echo4())
    net.advance(10.0)
    assert len(net.sent()) == 3  # shard 0's three ARP requests
    assert replica.sent() == []
    assert replica.stack.counters.by_reason()[Drop.NEIGHBOUR_UNRESOLVED] == 1
    assert replica.stack.next_deadline() is None


def test_a_replica_resolves_ipv6_through_shard_0() -> None:
    net = Net()
    replica = net.replica(1)
    replica.inject(echo6())
    net.expect(ipv6(icmp6(ICMPv6ND_NS, tgt=PEER6), src=OUR6))
    net.inject(na(PEER6))
    (out,) = replica.sent()
    ipv6(icmp6(ICMPv6EchoReply), mac=PEER_MAC, src=OUR6, dst=PEER6)(out)


def test_a_replica_that_missed_a_neighbour_gets_it_again_when_it_asks() -> None:
    net = Net()
    net.learn(PEER4)
    replica = net.replica(1)
    replica.view.neighbours.clear()  # as if the patch had been lost
    replica.inject(echo4())
    assert replica.asked == [(1, ip_bytes(PEER4))]
    net.expect_nothing()  # shard 0 knows it: no ARP, it republishes the row
    (out,) = replica.sent()
    ipv4(icmp4(0), mac=PEER_MAC, src=OUR4, dst=PEER4)(out)


def test_route_via_a_gateway_in_a_replica() -> None:
    net = Net()
    replica = net.replica(1)
    net.net.add_route(Route(ip_bytes("198.19.0.0"), 16, 1, ip_bytes(GW4)))
    net.learn(GW4, GW_MAC)
    replica.inject(eth(GW_MAC) / IP(src=FAR4, dst=OUR4) / ICMP(type=8, id=1, seq=1))
    (out,) = replica.sent()
    ipv4(icmp4(0), mac=GW_MAC, src=OUR4, dst=FAR4)(out)


def test_arp_frames_are_handled_in_shard_0_only() -> None:
    net = Net()
    replica = net.replica(1)
    replica.inject(arp_request(PEER4, OUR4))
    assert replica.sent() == []
    assert replica.counters.unhandled == 1  # no ARP handler outside shard 0 (runtime.py)
