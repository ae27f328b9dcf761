"""IPv6 routers and redirects through shard 0, with crafted frames and a
fake clock: default router failover when NUD finds the router in use dead
(RFC 4861 §6.3.6, §7.3.3), an NA with IsRouter clear (§7.2.5), router
preference (RFC 4191 §2.2), ICMPv6 Redirects (RFC 4861 §8) and ICMPv4
Redirects (RFC 1122 §3.2.2.2) with their refusals counted, and what
``ctl routes`` / ``ctl neigh`` show."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, IPerror, TCPerror
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether

from shardnet.common.addr import parse_ip
from shardnet.common.wire.errors import Drop

from .harness import FAR4, FAR6, GW4, GW_MAC, OUR4, OUR6, OUR_MAC, Net, eth, na

R1, R1_MAC = "fe80::a", "02:00:00:00:00:0a"
R2, R2_MAC = "fe80::b", "02:00:00:00:00:0b"
FAR6B = "2001:db8:ffff::10"


def ra(src: str, mac: str, *, lifetime: int = 1800, prf: int = 0, slla: bool = True) -> Ether:
    msg = (
        Ether(src=mac, dst="33:33:00:00:00:01")
        / IPv6(src=src, dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=lifetime, prf=prf)
    )
    return msg / ICMPv6NDOptSrcLLAddr(lladdr=mac) if slla else msg


def echo6(src: str = FAR6, *, mac: str = R1_MAC, seq: int = 1) -> Ether:
    return eth(mac) / IPv6(src=src, dst=OUR6) / ICMPv6EchoRequest(id=3, seq=seq)


def reply_mac(net: Net, src: str = FAR6, seq: int = 1) -> str:
    """Ping shardnet from the off-link ``src``: the MAC its reply goes to."""
    net.inject(echo6(src, seq=seq))
    replies = [f for f in net.sent() if ICMPv6EchoReply in f]
    assert len(replies) == 1, [f.summary() for f in net.sent()]
    return str(replies[0].dst)


def two_routers(**kw: int) -> Net:
    net = Net()
    net.inject(ra(R1, R1_MAC, **kw))
    net.inject(ra(R2, R2_MAC))
    net.sent()
    return net


def test_traffic_moves_to_the_other_router_when_nud_fails() -> None:
    """The router in use stops answering: the reply that uses its STALE
    entry starts NUD (DELAY 5 s, then 3 unicast NS 1 s apart, RFC 4861
    §7.3.3), the entry goes, and the next reply leaves through the other
    router, which is probably reachable (STALE from its RA's SLLA)."""
    net = two_routers()
    assert reply_mac(net) == R1_MAC
    probes = []
    for _ in range(10):
        net.advance(1.0)
        probes += [f for f in net.sent() if ICMPv6ND_NS in f]
    assert [(p.dst, p[ICMPv6ND_NS].tgt) for p in probes] == [(R1_MAC, R1)] * 3
    assert reply_mac(net, seq=2) == R2_MAC
    routes = {
        r["gateway"]: r
        for r in net.request(
            "routes",
        )
        if r["prefix_len"] == 0
    }
    assert routes[R2]["router"] | {"expires_s": 0} == {
        "preference": "medium", "reachable": True, "rank": 0, "expires_s": 0,
    }  # fmt: skip
    assert routes[R1]["router"]["reachable"] is False and routes[R1]["metric"] == 1025


def test_another_shards_traffic_starts_nud_too() -> None:
    """A shard other than 0 sends through its replica: it reports the next
    hop it used (once a second, however many datagrams), shard 0's NUD
    probes the router, and its next reply leaves through the other one."""
    net = two_routers()
    shard1 = net.replica()
    for seq in range(1, 4):
        shard1.inject(echo6(seq=seq))
    assert [f.dst for f in shard1.sent() if ICMPv6EchoReply in f] == [R1_MAC] * 3
    net.advance(1.0)
    assert shard1.used == [(1, parse_ip(R1))]
    net.advance(9.0)  # DELAY 5 s, three unanswered probes
    shard1.inject(echo6(seq=9))
    assert [f.dst for f in shard1.sent() if ICMPv6EchoReply in f] == [R2_MAC]


def test_a_router_that_answers_keeps_the_traffic() -> None:
    net = two_routers()
    assert reply_mac(net) == R1_MAC
    net.advance(5.5)  # reported used at once, DELAY 5 s, PROBE: the first unicast NS
    assert [f.dst for f in net.sent() if ICMPv6ND_NS in f] == [R1_MAC]
    net.inject(na(R1, mac=R1_MAC, dst=OUR6, r=1))  # solicited: REACHABLE
    net.advance(10)
    assert reply_mac(net, seq=2) == R1_MAC
    rows = {n["ip"]: n for n in net.request("neigh") if n["family"] == "ipv6"}
    assert rows[R1]["state"] == "REACHABLE" and rows[R1]["router"] is True
    assert rows[R2]["router"] is True  # from its RA (RFC 4861 §6.3.4)


def test_na_with_router_flag_clear_takes_the_router_off_the_list() -> None:
    """RFC 4861 §7.2.5: IsRouter TRUE -> FALSE removes it from the Default
    Router List; traffic goes to the other router at once."""
    net = two_routers()
    net.inject(na(R1, mac=R1_MAC, dst=OUR6, s=0, o=1, r=0))
    assert reply_mac(net) == R2_MAC
    assert [r["gateway"] for r in net.request("routes") if r["prefix_len"] == 0] == [R2]
    rows = {n["ip"]: n for n in net.request("neigh") if n["family"] == "ipv6"}
    assert rows[R1]["router"] is False


def test_preferred_router_takes_the_traffic() -> None:
    """RFC 4191 §2.2: a high-preference router (Prf 01) beats a medium one
    whatever the order they were heard in."""
    net = Net()
    net.inject(ra(R2, R2_MAC))
    net.inject(ra(R1, R1_MAC, prf=1))
    net.sent()
    assert reply_mac(net) == R1_MAC
    rows = [r for r in net.request("routes") if r["prefix_len"] == 0 and r["dst"] == "::"]
    assert [(r["gateway"], r["router"]["preference"]) for r in rows] == [
        (R1, "high"),
        (R2, "medium"),
    ]


def probed(frames: list[Ether], router: str) -> list[Ether]:
    return [f for f in frames if ICMPv6ND_NS in f and f[ICMPv6ND_NS].tgt == router]


def test_a_better_router_never_heard_from_is_probed_and_takes_the_traffic() -> None:
    """RFC 4191 §3.5: R1 (high) advertised without its link-layer address,
    so nothing says it is reachable; R2 (medium, STALE from its SLLA)
    carries the replies, and that traffic has R1 probed with one NS.
    Unanswered, the probe is not repeated within a minute; answered, R1
    is reachable and takes the traffic."""
    net = Net()
    net.inject(ra(R2, R2_MAC))
    net.inject(ra(R1, R1_MAC, prf=1, slla=False))
    net.sent()
    assert reply_mac(net) == R2_MAC
    net.advance(0.1)  # the next hops used are reported
    ns = probed(net.sent(), R1)
    assert [(f[IPv6].dst, f.dst) for f in ns] == [("ff02::1:ff00:a", "33:33:ff:00:00:0a")]
    for second in range(1, 60):  # a minute of traffic: no other probe of R1
        net.advance(1.0)
        assert not probed(net.sent(), R1)
        net.inject(na(R2, mac=R2_MAC, dst=OUR6, r=1))  # R2 answers (NUD)
        assert reply_mac(net, seq=second) == R2_MAC
    net.advance(1.0)
    net.inject(na(R2, mac=R2_MAC, dst=OUR6, r=1))
    assert reply_mac(net, seq=60) == R2_MAC
    net.advance(0.1)  # a minute after the first probe, traffic again: a second one
    assert len(probed(net.sent(), R1)) == 1
    net.inject(na(R1, mac=R1_MAC, dst=OUR6, r=1))  # the solicited answer
    assert reply_mac(net, seq=61) == R1_MAC
    rows = {r["gateway"]: r["router"] for r in net.request("routes") if r["prefix_len"] == 0}
    assert rows[R1]["rank"] == 0 and rows[R1]["reachable"] and rows[R2]["rank"] == 1


def redirect6(
    *,
    src: str = R1,
    mac: str = R1_MAC,
    target: str = R2,
    dst: str = FAR6,
    tlla: str | None = R2_MAC,
) -> Ether:
    msg = (
        Ether(src=mac, dst=OUR_MAC)
        / IPv6(src=src, dst=OUR6, hlim=255)
        / ICMPv6ND_Redirect(tgt=target, dst=dst)
    )
    if tlla is not None:
        msg = msg / ICMPv6NDOptDstLLAddr(lladdr=tlla)
    return msg / ICMPv6NDOptRedirectedHdr(pkt=IPv6(src=OUR6, dst=dst) / ICMPv6EchoReply())


def test_icmpv6_redirect_moves_one_destination() -> None:
    """RFC 4861 §8.3: a redirect from the first hop for FAR6 makes R2 the
    next hop for FAR6 only (a host route), with the Target Link-Layer
    Address learnt; other destinations still go to R1."""
    net = Net()
    net.inject(ra(R1, R1_MAC))
    net.inject(redirect6(tlla=R2_MAC))
    assert reply_mac(net) == R2_MAC
    assert reply_mac(net, FAR6B) == R1_MAC
    host = [r for r in net.request("routes") if r["origin"] == "redirect"]
    assert [(r["dst"], r["prefix_len"], r["gateway"]) for r in host] == [(FAR6, 128, R2)]
    rows = {n["ip"]: n for n in net.request("neigh") if n["family"] == "ipv6"}
    assert rows[R2]["mac"] == R2_MAC and rows[R2]["router"] is True
    net.advance(301)  # the learnt next hop expires (Linux ip_rt_gc_timeout)
    assert not [r for r in net.request("routes") if r["origin"] == "redirect"]


def test_icmpv6_redirect_to_the_destination_itself_is_on_link() -> None:
    net = Net()
    net.inject(ra(R1, R1_MAC))
    net.inject(redirect6(target=FAR6, dst=FAR6, tlla="02:00:00:00:00:77"))
    assert reply_mac(net) == "02:00:00:00:00:77"
    host = [r for r in net.request("routes") if r["origin"] == "redirect"]
    assert [(r["dst"], r["gateway"]) for r in host] == [(FAR6, None)]


def test_icmpv6_redirects_refused_and_counted() -> None:
    """RFC 4861 §8.1: only the current first hop may redirect; the target
    must be link-local or the destination (the codec's); accept_redirects
    off (and forwarding) ignore them. Each refusal is counted."""
    net = Net()
    net.inject(ra(R1, R1_MAC))
    net.inject(ra(R2, R2_MAC))
    net.inject(redirect6(src=R2, mac=R2_MAC, target="fe80::c"))  # R2 is not in use
    assert net.stats[Drop.REDIRECT_NOT_FROM_FIRST_HOP] == 1
    net.inject(redirect6(target="2001:db8::99"))  # global target != destination
    assert net.stats[Drop.NDP_BAD_TARGET] == 1
    net.request("ndp_set", settings={"accept_redirects": "off"})
    net.inject(redirect6())
    assert net.stats[Drop.REDIRECT_NOT_ACCEPTED] == 1
    net.request("ndp_set", settings={"accept_redirects": "on"})
    net.request("forwarding", on=True)
    net.inject(redirect6())
    assert net.stats[Drop.REDIRECT_NOT_ACCEPTED] == 2
    assert not [r for r in net.request("routes") if r["origin"] == "redirect"]


def test_redirect_routes_go_when_redirects_are_turned_off() -> None:
    """Host routes a redirect taught are withdrawn at once when
    ``accept_redirects`` goes off at run time (or the stack starts
    forwarding, RFC 4861 §8.2), not left to expire: FAR6 goes back to R1."""
    for switch_off in ({"accept_redirects": "off"}, None):
        net = Net()
        net.inject(ra(R1, R1_MAC))
        net.inject(redirect6(tlla=R2_MAC))
        assert reply_mac(net) == R2_MAC
        if switch_off is None:
            net.request("forwarding", on=True)
        else:
            net.request("ndp_set", settings={"accept_redirects": "on"})  # no change: kept
            assert [r["origin"] for r in net.request("routes")].count("redirect") == 1
            net.request("ndp_set", settings=switch_off)
        assert not [r for r in net.request("routes") if r["origin"] == "redirect"]
        if switch_off is not None:
            assert reply_mac(net, seq=2) == R1_MAC


NEW_GW4, NEW_GW_MAC = "198.18.0.253", "02:00:00:00:00:fd"


def redirect4(*, src: str = GW4, mac: str = GW_MAC, gw: str = NEW_GW4, code: int = 1) -> Ether:
    return (
        eth(mac)
        / IP(src=src, dst=OUR4)
        / ICMP(type=5, code=code, gw=gw)
        / IPerror(src=OUR4, dst=FAR4)
        / TCPerror(sport=40000, dport=80)
    )


def echo4_reply_mac(net: Net) -> str:
    net.inject(eth(GW_MAC) / IP(src=FAR4, dst=OUR4) / ICMP(type=8, id=1, seq=1))
    replies = [f for f in net.sent() if ICMP in f and f[ICMP].type == 0]
    assert len(replies) == 1
    return str(replies[0].dst)


def test_icmpv4_redirect_from_the_gateway_moves_the_destination() -> None:
    """RFC 1122 §3.2.2.2: from the current first-hop gateway, to a gateway
    on the same network: a host route (network redirects as host ones)."""
    net = Net(gateway4=GW4)
    net.learn(GW4, GW_MAC)
    net.learn(NEW_GW4, NEW_GW_MAC)
    assert echo4_reply_mac(net) == GW_MAC
    net.inject(redirect4(code=0))
    assert echo4_reply_mac(net) == NEW_GW_MAC
    host = [r for r in net.request("routes") if r["origin"] == "redirect"]
    assert [(r["dst"], r["prefix_len"], r["gateway"]) for r in host] == [(FAR4, 32, NEW_GW4)]


def test_icmpv4_redirects_refused_and_counted() -> None:
    net = Net(gateway4=GW4)
    net.learn(GW4, GW_MAC)
    net.inject(redirect4(src="198.18.0.50", mac="02:00:00:00:00:50"))  # not our gateway
    assert net.stats[Drop.REDIRECT_NOT_FROM_FIRST_HOP] == 1
    net.inject(redirect4(gw="198.19.5.5"))  # not on the connected network
    net.inject(redirect4(gw=OUR4))  # ourselves
    net.inject(redirect4(gw="198.18.0.255"))  # the subnet's broadcast
    assert net.stats[Drop.REDIRECT_BAD_TARGET] == 3
    net.inject(redirect4(code=4))  # RFC 792: no such Redirect code
    assert net.stats[Drop.ICMPV4_OTHER] == 1
    net.request("ndp_set", settings={"accept_redirects": False})
    net.inject(redirect4())
    assert net.stats[Drop.REDIRECT_NOT_ACCEPTED] == 1
    assert not [r for r in net.request("routes") if r["origin"] == "redirect"]
    assert echo4_reply_mac(net) == GW_MAC


def test_icmpv4_redirect_route_goes_when_redirects_are_turned_off() -> None:
    net = Net(gateway4=GW4)
    net.learn(GW4, GW_MAC)
    net.learn(NEW_GW4, NEW_GW_MAC)
    net.inject(redirect4())
    assert echo4_reply_mac(net) == NEW_GW_MAC
    net.request("ndp_set", settings={"accept_redirects": False})
    assert not [r for r in net.request("routes") if r["origin"] == "redirect"]
    assert echo4_reply_mac(net) == GW_MAC
