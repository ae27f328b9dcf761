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
