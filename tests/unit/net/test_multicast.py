"""Host multicast in shard 0 (``GroupControl``) and the IP layer: joins from
shards become IGMPv3 / MLDv2 reports on the wire, the joined groups are
replicated and accepted (others dropped), queries are answered, sends to a
group are looped to our own members and leave by the link without a route."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.igmp import IGMPv2_MR, IGMPv3, IGMPv3_MQ, IGMPv3_MR
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6MLReport2, ICMPv6Unknown, IPv6, IPv6ExtHdrHopByHop, RouterAlert
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from shardnet.common.checksum import checksum
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.igmp import IGMPV2_REPORT, IgmpV2Message
from shardnet.shards.net.multicast import has_router_alert
from shardnet.shards.net.state import NetError

from .harness import GW6, OUR4, OUR_MAC, PEER4, PEER_MAC, Net, ip_bytes

G4, G6 = "234.198.18.7", "ff3e:40:2001:db8::7"
G4_MAC, G6_MAC = "01:00:5e:46:12:07", "33:33:00:00:00:07"
LINK = 1


def igmp_reports(frames: list[Ether]) -> list[tuple[int, str]]:
    """(record type, group) of every IGMPv3 record in ``frames``, after
    checking the IP header RFC 3376 §4 asks for."""
    out = []
    for f in frames:
        ip = f[IP]
        assert (f.dst, ip.dst, ip.ttl, ip.tos, ip.proto) == (
            "01:00:5e:00:00:16",
            "224.0.0.22",
            1,
            0xC0,
            2,
        )
        assert has_router_alert(bytes(ip)) and ip.src == OUR4
        report = IGMPv3_MR(bytes(ip.payload))
        out += [(r.rtype, r.maddr) for r in report.records]
    return out


def mld_records(frames: list[Ether]) -> list[tuple[int, str]]:
    out = []
    for f in frames:
        ip = f[IPv6]
        assert ip.dst == "ff02::16" and ip.hlim == 1
        report = f[ICMPv6MLReport2]
        out += [(r.rtype, r.dst) for r in report.records]
    return out


def test_join_from_a_shard_reports_and_replicates() -> None:
    net = Net()
    replica = net.replica(1)
    net.control.groups.membership(1, LINK, ip_bytes(G4), True)
    assert igmp_reports(net.sent()) == [(4, G4)]  # CHANGE_TO_EXCLUDE_MODE {}
    assert (LINK, ip_bytes(G4)) in replica.view.groups
    assert net.request("groups") == [
        {"nic": LINK, "group": G4, "shards": [1], "protocol": "igmpv3"}
    ]
    net.advance(1.0)
    assert igmp_reports(net.sent()) == [(4, G4)]  # Robustness 2
    # Another shard joins: no report; both leave: one TO_IN {}.
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.control.groups.membership(1, LINK, ip_bytes(G4), True)  # repeated: ignored
    net.control.groups.membership(1, LINK, ip_bytes(G4), False)
    net.expect_nothing()
    net.control.groups.membership(0, LINK, ip_bytes(G4), False)
    assert igmp_reports(net.sent()) == [(3, G4)]
    assert replica.view.groups == frozenset()


def test_ipv6_join_is_an_mldv2_report() -> None:
    net = Net()
    net.control.groups.membership(0, LINK, ip_bytes(G6), True)
    assert mld_records(net.sent()) == [(4, G6)]
    net.control.groups.membership(0, LINK, ip_bytes(G6), False)
    assert mld_records(net.sent()) == [(3, G6)]


@pytest.mark.parametrize(
    ("nic", "group", "err"),
    [(LINK, OUR4, errno.EINVAL), (LINK, "2001:db8::1", errno.EINVAL), (9, G4, errno.ENODEV)],
)
def test_bad_joins(nic: int, group: str, err: int) -> None:
    net = Net()
    with pytest.raises(NetError) as exc:
        net.control.groups.membership(0, nic, ip_bytes(group), True)
    assert exc.value.errno == err


def test_a_restarted_shard_loses_its_groups() -> None:
    net = Net()
    net.control.groups.membership(2, LINK, ip_bytes(G4), True)
    net.sent()
    net.control.groups.shard_restarted(2)
    assert igmp_reports(net.sent()) == [(3, G4)]
    assert net.request("groups") == []


def test_only_joined_groups_are_accepted() -> None:
    net = Net()
    got = []
    net.stack.transport_v4[17] = lambda d: got.append(bytes(d.dst)) or True
    datagram = Ether(src=PEER_MAC, dst=G4_MAC) / IP(src=PEER4, dst=G4) / UDP(dport=6000) / b"x"
    net.inject(datagram)
    assert got == [] and net.stats[Drop.IPV4_MULTICAST_NOT_JOINED] == 1
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.inject(datagram)
    assert got == [ip_bytes(G4)]
    # A replica accepts it too (the flow may hash to any shard).
    replica = net.replica(1)
    replica.stack.transport_v4[17] = lambda d: got.append(b"replica") or True
    replica.inject(datagram)
    assert got[-1] == b"replica"


def test_ipv6_joined_group_accepted() -> None:
    net = Net()
    got = []
    net.stack.transport_v6[17] = lambda d: got.append(bytes(d.dst)) or True
    datagram = (
        Ether(src=PEER_MAC, dst=G6_MAC) / IPv6(src="2001:db8::1", dst=G6) / UDP(dport=6000) / b"x"
    )
    net.inject(datagram)
    assert got == []
    net.control.groups.membership(0, LINK, ip_bytes(G6), True)
    net.inject(datagram)
    assert got == [ip_bytes(G6)]


def query(version: int = 3, group: str = "0.0.0.0", router_alert: bool = True) -> Ether:
    options = [b"\x94\x04\x00\x00"] if router_alert else []
    dst = "224.0.0.1" if group == "0.0.0.0" else group
    ip = IP(src=PEER4, dst=dst, ttl=1, options=options)
    if version == 3:
        msg = IGMPv3(type=0x11, mrcode=10) / IGMPv3_MQ(gaddr=group)
    else:
        msg = IGMPv2_MR(type=0x11, mrcode=10, gaddr=group)
    if not router_alert:  # scapy adds the option to IGMP by itself: hide the type
        ip.proto = 2
        msg = Raw(bytes(msg))
    return Ether(src=PEER_MAC, dst="01:00:5e:00:00:01") / ip / msg


def test_general_query_is_answered_within_max_resp_time() -> None:
    net = Net()
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.advance(2.0)
    net.sent()
    net.inject(query())
    net.expect_nothing()  # a random delay first
    net.advance(1.0)  # Max Resp Code 10: 1 s
    assert igmp_reports(net.sent()) == [(2, G4)]  # MODE_IS_EXCLUDE {}


def test_query_without_router_alert_is_ignored() -> None:
    net = Net()
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.advance(2.0)
    net.sent()
    net.inject(query(router_alert=False))
    net.advance(2.0)
    net.expect_nothing()


def test_v2_querier_gets_v2_reports() -> None:
    net = Net()
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.advance(2.0)
    net.sent()
    net.inject(query(version=2))
    net.advance(1.0)
    (frame,) = net.sent()
    assert frame.dst == G4_MAC and frame[IP].dst == G4
    assert IgmpV2Message.parse(bytes(frame[IP].payload)) == IgmpV2Message(
        IGMPV2_REPORT, ip_bytes(G4)
    )
    assert net.request("groups")[0]["protocol"] == "igmpv2"


def test_bad_igmp_is_counted() -> None:
    net = Net()
    frame = (
        Ether(src=PEER_MAC, dst="01:00:5e:00:00:01")
        / IP(src=PEER4, dst="224.0.0.1", proto=2, ttl=1)
        / (b"\x11\x0a\x00\x00" + bytes(4))
    )  # bad checksum
    net.inject(frame)
    assert net.counters.drops.get(("igmp", Drop.IGMP_BAD_CHECKSUM)) == 1


def test_multicast_send_is_looped_to_our_members_and_needs_no_route() -> None:
    net = Net(loop_back=True, gateway4=None)
    body = bytes(UDP(sport=5000, dport=6000) / b"hello")
    assert net.stack.send_ipv4(ip_bytes(G4), 17, body, ttl=1, multicast_loop=True)
    (frame,) = net.sent()
    assert (frame.dst, frame.src, frame[IP].ttl) == (G4_MAC, OUR_MAC, 1)
    assert net.take_looped() == []  # not a member: nothing looped
    net.control.groups.membership(0, LINK, ip_bytes(G4), True)
    net.sent()
    assert net.stack.send_ipv4(ip_bytes(G4), 17, body, ttl=1, multicast_loop=True)
    assert len(net.sent()) == 1
    (looped,) = net.take_looped()
    assert looped[IP].dst == G4 and bytes(looped[UDP].payload) == b"hello"
    assert net.stack.send_ipv4(ip_bytes(G4), 17, body, ttl=1, multicast_loop=False)
    assert net.take_looped() == []


def test_ipv6_multicast_never_goes_to_the_gateway() -> None:
    net = Net(gateway6=GW6)
    body = bytes(UDP(sport=5000, dport=6000) / b"hello")
    assert net.stack.send_ipv6(ip_bytes(G6), 17, body, hop_limit=1)
    (frame,) = net.sent()
    assert frame.dst == G6_MAC and frame[IPv6].hlim == 1


_FUZZ_NET: list[Net] = []


def fuzz_net() -> Net:
    """One stack for every example (a fresh one each would dominate the
    time), member of both groups."""
    if not _FUZZ_NET:
        net = Net()
        net.control.groups.membership(0, LINK, ip_bytes(G4), True)
        net.control.groups.membership(0, LINK, ip_bytes(G6), True)
        _FUZZ_NET.append(net)
    return _FUZZ_NET[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0x11, 0x12, 0x16, 0x17, 0x22]), st.booleans())
def test_hostile_igmp_never_breaks_the_shard(body: bytes, kind: int, good_sum: bool) -> None:
    """Arbitrary IGMP (any length, type, checksum right or wrong, to
    all-systems or to a joined group) is dropped and counted or handled;
    never an internal error."""
    net = fuzz_net()
    payload = bytearray(bytes([kind]) + body)
    if good_sum and len(payload) >= 4:  # past the checksum, into the parsers
        payload[2:4] = b"\0\0"
        payload[2:4] = checksum(payload).to_bytes(2, "big")
    for dst in ("224.0.0.1", G4):
        ip = IP(src=PEER4, dst=dst, ttl=1, proto=2, options=[b"\x94\x04\x00\x00"])
        net.inject(Ether(src=PEER_MAC, dst="01:00:5e:00:00:01") / ip / Raw(bytes(payload)))
    net.advance(30.0)
    net.sent()
    assert net.counters.internal_errors == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([130, 131, 132, 143]))
def test_hostile_mld_never_breaks_the_shard(body: bytes, kind: int) -> None:
    net = fuzz_net()
    for dst in ("ff02::1", G6):
        net.inject(
            Ether(src=PEER_MAC, dst="33:33:00:00:00:01")
            / IPv6(src="fe80::1", dst=dst, hlim=1)
            / IPv6ExtHdrHopByHop(options=[RouterAlert()])
            / ICMPv6Unknown(type=kind, msgbody=body)
        )
    net.advance(30.0)
    net.sent()
    assert net.counters.internal_errors == 0
