"""RA parameters applied to the stack (RFC 4861 §6.3.4): CurHopLimit to IPv6
output in every shard, ReachableTime/RetransTimer to neighbour resolution,
MTU to the NIC."""

from __future__ import annotations

from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_RA, ICMPv6NDOptMTU, IPv6
from scapy.layers.l2 import Ether

from .harness import OUR6, OUR_MAC, PEER6, PEER_MAC, Net


def test_an_ra_sets_hop_limit_timers_and_mtu() -> None:
    net = Net()
    net.learn(PEER6)
    ra = (
        Ether(src=PEER_MAC, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(chlim=42, routerlifetime=0, reachabletime=20000, retranstimer=500, prf=0)
        / ICMPv6NDOptMTU(mtu=1400)
    )
    net.inject(ra)
    replica = net.replica()
    nic = replica.view.nics[1]
    assert nic.params["cur_hop_limit"] == 42 and nic.mtu == 1400  # replicated to other shards
    table = net.control.v6[1]
    # RFC 4861 §6.3.4: ReachableTime = BaseReachableTime (20 s) times a random 0.5-1.5.
    assert nic.params["base_reachable_time"] == 20.0
    assert 10.0 <= table.config.reachable_s <= 30.0 and table.config.retrans_s == 0.5
    net.sent()
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OUR6)
        / ICMPv6EchoRequest(id=1, seq=1)
    )
    (reply,) = net.sent()
    assert reply[IPv6].hlim == 42


def test_absurd_ra_timers_and_unresolvable_sources_do_not_lock_ipv6() -> None:
    """The sequence a scanner found: an RA whose Retrans Timer is
    0xFFFFFFFF ms, then echo requests from 64 link-local sources nobody
    answers for (every resolution slot taken). The timer is clamped (and
    counted), the resolutions fail in time or give way, and a new peer is
    still resolved and answered."""
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr

    from .harness import OUR_LL

    net = Net()
    net.inject(
        Ether(src=PEER_MAC, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=0, reachabletime=0xFFFFFFFF, retranstimer=0xFFFFFFFF)
    )
    assert net.control.ndp[1].stats.ra_values_clamped == 2
    table = net.control.v6[1]
    assert table.config.retrans_s == 60.0 and table.config.reachable_s <= 1.5 * 3600
    for i in range(64):
        net.inject(
            Ether(src=f"02:00:00:00:10:{i:02x}", dst=OUR_MAC)
            / IPv6(src=f"fe80::10:{i:x}", dst=OUR_LL)
            / ICMPv6EchoRequest(id=i, seq=1)
        )
    net.sent()
    assert table.incomplete == 64
    new_peer, new_mac = "fe80::beef", "02:00:00:00:be:ef"
    net.inject(
        Ether(src=new_mac, dst=OUR_MAC)
        / IPv6(src=new_peer, dst=OUR_LL)
        / ICMPv6EchoRequest(id=999, seq=1)
    )
    (ns,) = net.sent()  # its resolution starts at once
    assert ns[ICMPv6ND_NS].tgt == new_peer
    net.inject(
        Ether(src=new_mac, dst=OUR_MAC)
        / IPv6(src=new_peer, dst=OUR_LL, hlim=255)
        / ICMPv6ND_NA(tgt=new_peer, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=new_mac)
    )
    (reply,) = net.sent()
    assert reply[ICMPv6EchoReply].id == 999 and reply.dst == new_mac
    net.advance(4 * 60.0)  # the clamped Retrans Timer: the stuck resolutions end
    assert table.incomplete == 0
