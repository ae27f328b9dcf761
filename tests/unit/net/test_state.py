"""The network state through shard 0's control plane: NICs (named, with an
opaque context, loopback without a link-local), addresses and the EUI-64
link-local (RFC 4291 App. A), positions after promotion, routes (longest
prefix, metric) used by the output path, the ``ctl`` requests and their
one-line errors, replication to a replica."""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ipv6 import link_local_from_mac
from shardnet.shards.net.model import AddressKind, PrimaryBehavior
from shardnet.shards.net.route import Route
from shardnet.shards.net.state import NetError, NetView

from .harness import (
    FAR4,
    FAR6,
    GW4,
    GW6,
    GW_MAC,
    OUR4,
    OUR6,
    OUR_LL,
    PEER4,
    PEER6,
    PEER_MAC,
    Net,
    eth,
    icmp4,
    icmp6,
    ip_bytes,
    ipv4,
    ipv6,
)

GW2_MAC, GW2_4 = "02:00:00:00:00:fd", "198.18.0.253"


def addrs(net: Net, nic: str) -> list[str]:
    return [f"{r['addr']}/{r['prefix_len']}" for r in net.request("addrs") if r["nic_name"] == nic]


def echo4(src: str = FAR4, *, mac: str = GW_MAC) -> Ether:
    return eth(mac) / IP(src=src, dst=OUR4) / ICMP(type=8, id=1, seq=1)


def echo6(src: str = FAR6, *, mac: str = GW_MAC) -> Ether:
    return eth(mac) / IPv6(src=src, dst=OUR6) / ICMPv6EchoRequest(id=1, seq=1)


# --- NICs ------------------------------------------------------------------------------
def test_bootstrap_builds_the_link_and_lo() -> None:
    net = Net()
    nics = {n["name"]: n for n in net.request("nics")}
    assert set(nics) == {"sntap0", "lo"}
    assert (
        nics["sntap0"] | {"mac": "02:02:03:04:05:06", "mtu": 1500, "loopback": False}
        == (nics["sntap0"])
    )
    assert nics["lo"]["loopback"] and nics["lo"]["kind"] == "loopback"
    assert nics["sntap0"]["addresses"] == [
        {"addr": f"{OUR4}/24", "kind": "permanent", "behavior": "can-be-primary"},
        {"addr": f"{OUR_LL}/64", "kind": "permanent", "behavior": "can-be-primary"},
        {"addr": f"{OUR6}/64", "kind": "permanent", "behavior": "can-be-primary"},
    ]


def test_loopback_has_127_0_0_1_and_1_and_no_link_local() -> None:
    # Never an auto-generated link-local on a loopback NIC (as Linux).
    net = Net()
    assert addrs(net, "lo") == ["127.0.0.1/8", "::1/128"]
    assert not any(a.startswith("fe80") for a in addrs(net, "lo"))


def test_the_link_gets_the_eui64_link_local_of_its_mac() -> None:
    # RFC 4291 App. A: 02:02:03:04:05:06 -> fe80::2:3ff:fe04:506 (IID 00 02 03 ff fe 04 05 06).
    net = Net()
    assert f"{OUR_LL}/64" in addrs(net, "sntap0")
    assert link_local_from_mac(bytes.fromhex("020203040506")) == parse_ip(OUR_LL)
    row = next(r for r in net.request("addrs") if r["addr"] == OUR_LL)
    assert row["origin"] == "linklocal"


def test_duplicate_nic_names_are_refused() -> None:
    # Names are unique (gVisor allowed duplicates until b8e22e241).
    net = Net()
    net.request("nic_add", name="lo1", loopback=True)
    for name in ("lo1", "lo", "sntap0"):
        with pytest.raises(NetError) as exc:
            net.request("nic_add", name=name, loopback=True)
        assert exc.value.errno == errno.EEXIST
        assert str(exc.value) == f"a NIC named {name} exists"


def test_nic_context_is_handed_back_unchanged() -> None:
    # gVisor TestNICContextPreservation: set -> the same value; unset -> None.
    net = Net()
    context = {"owner": "app", "tags": [1, 2, 3]}
    row = net.request("nic_add", name="lo1", loopback=True, context=context)
    assert row["context"] == context
    net.request("nic_add", name="lo2", loopback=True)
    nics = {n["name"]: n for n in net.request("nics")}
    assert nics["lo1"]["context"] == context
    assert nics["lo2"]["context"] is None
    assert net.net.nic("lo1").context == context


def test_a_nic_can_be_created_disabled_then_enabled_and_removed() -> None:
    net = Net()
    net.request("nic_add", name="lo1", loopback=True, disabled=True)
    net.request("addr_add", nic="lo1", address="198.18.9.1/24")
    assert ip_bytes("198.18.9.1") not in net.net.view.local  # a disabled NIC has no addresses
    net.request("nic_set", name="lo1", enabled=True)
    assert ip_bytes("198.18.9.1") in net.net.view.local
    net.request("nic_del", name="lo1")
    assert "lo1" not in {n["name"] for n in net.request("nics")}
    assert ip_bytes("198.18.9.1") not in net.net.view.local
    assert not [r for r in net.request("routes") if r["dst"] == "198.18.9.0"]


def test_nics_without_a_link_and_the_link_itself_are_refused() -> None:
    net = Net()
    with pytest.raises(NetError, match="only loopback NICs"):
        net.request("nic_add", name="eth9")
    with pytest.raises(NetError) as exc:
        net.request("nic_del", name="sntap0")
    assert exc.value.errno == errno.EBUSY
    with pytest.raises(NetError) as exc:
        net.request("nic_set", name="nope")
    assert str(exc.value) == "no NIC nope"


def test_a_disabled_link_accepts_and_sends_nothing() -> None:
    net = Net()
    net.learn(PEER4)
    net.request("nic_set", name="sntap0", enabled=False)
    net.inject(eth() / IP(src=PEER4, dst=OUR4) / ICMP(type=8))
    net.expect_nothing()
    net.request("nic_set", name="sntap0", enabled=True)
    # Up again: a new attachment, its groups reported anew (RFC 3810 §6.1).
    assert [f[IPv6].dst for f in net.sent()] == ["ff02::16"]
    net.inject(eth() / IP(src=PEER4, dst=OUR4) / ICMP(type=8))
    net.expect(ipv4(icmp4(0), src=OUR4, dst=PEER4))


# --- addresses ---------------------------------------------------------------------------
def test_addresses_are_listed_with_their_state_and_nic() -> None:
    net = Net()
    rows = {r["addr"]: r for r in net.request("addrs")}
    assert rows[OUR4] | {"nic_name": "sntap0", "prefix_len": 24, "kind": "permanent"} == rows[OUR4]
    assert rows["::1"]["origin"] == "loopback"


def test_addr_add_and_del_through_requests() -> None:
    net = Net()
    row = net.request(
        "addr_add", nic="sntap0", address="2001:db8:1::5/64", behavior="first-primary"
    )
    assert row | {"addr": "2001:db8:1::5", "prefix_len": 64, "behavior": "first-primary"} == row
    assert "2001:db8:1::/64" in {f"{r['dst']}/{r['prefix_len']}" for r in net.request("routes")}
    net.request("addr_del", nic="sntap0", address="2001:db8:1::5/64")
    assert "2001:db8:1::5/64" not in addrs(net, "sntap0")
    # Its connected route went with it.
    assert "2001:db8:1::/64" not in {f"{r['dst']}/{r['prefix_len']}" for r in net.request("routes")}


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        (
            "addr_add",
            {"nic": "sntap0", "address": "198.18.0.9"},
            "addr add: '198.18.0.9' needs a prefix length",
        ),
        (
            "addr_add",
            {"nic": "sntap0", "address": "nonsense/24"},
            "addr add: bad address 'nonsense/24' (want ADDRESS/LEN)",
        ),
        ("addr_add", {"nic": "sntap0", "address": f"{OUR4}/24"}, f"{OUR4} is already on sntap0"),
        ("addr_add", {"nic": "lo", "address": f"{OUR4}/24"}, f"{OUR4} is already on NIC 1"),
        (
            "addr_add",
            {"nic": "sntap0", "address": "224.0.0.9/4"},
            "224.0.0.9 is not a unicast address",
        ),
        ("addr_add", {"nic": "eth7", "address": "198.18.0.9/24"}, "no NIC eth7"),
        (
            "addr_add",
            {"nic": "sntap0", "address": "198.18.0.9/24", "behavior": "sometimes"},
            "addr add: bad behaviour 'sometimes'",
        ),
        ("addr_del", {"nic": "sntap0", "address": "198.18.0.99"}, "198.18.0.99 is not on sntap0"),
        ("addr_del", {"nic": "sntap0", "address": "x"}, "addr del: bad address 'x'"),
        ("route_add", {"dst": "198.19.0.0/16"}, "route add: give --dev NIC or --via GATEWAY"),
        (
            "route_add",
            {"dst": "198.19.0.0/16", "gateway": "198.20.0.1"},
            "route add: gateway 198.20.0.1 is not on a connected network",
        ),
        ("route_add", {"dst": "198.19.0.0/16", "gateway": GW4, "metric": -1}, "bad metric -1"),
        (
            "route_add",
            {"dst": "198.19.0.0/16", "gateway": GW4, "metric": "low"},
            "route add: bad metric 'low'",
        ),
        (
            "route_add",
            {"dst": "::/0", "gateway": GW4},
            "gateway and destination are of different families",
        ),
        ("route_del", {"dst": "198.19.0.0/16", "nic": "sntap0"}, "no route 198.19.0.0/16 1 -"),
        ("nope", {}, "unknown request 'nope'"),
    ],
)
def test_bad_requests_raise_net_error_with_one_line(
    op: str, args: dict[str, object], message: str
) -> None:
    net = Net()
    with pytest.raises(NetError) as exc:
        net.request(op, **args)
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, OSError) and exc.value.errno


def test_a_refused_route_leaves_the_table_usable() -> None:
    net = Net()
    with pytest.raises(NetError):
        net.request("route_add", dst="198.19.0.0/16", gateway=GW4, metric=-1)
    net.request("route_add", dst="198.19.0.0/16", gateway=GW4, metric=1)
    assert "198.19.0.0/16" in {f"{r['dst']}/{r['prefix_len']}" for r in net.request("routes")}
    with pytest.raises(NetError):
        net.net.add_route(Route(ip_bytes("198.19.0.0"), 40, 1))
    with pytest.raises(NetError):
        net.net.add_route(Route(ip_bytes("198.19.0.0"), 16, 1, origin="magic"))


def test_ipv6_default_route_stays_ipv6() -> None:
    net = Net()
    row = net.request("route_add", dst="::/0", gateway=GW6)
    assert row | {"dst": "::", "prefix_len": 0, "gateway": GW6, "nic_name": "sntap0"} == row


@pytest.mark.parametrize(
    ("initial", "new"), list(itertools.product(PrimaryBehavior, PrimaryBehavior))
)
@pytest.mark.parametrize("family", [4, 16])
def test_promotion_to_permanent_respects_the_new_behaviour(
    initial: PrimaryBehavior, new: PrimaryBehavior, family: int
) -> None:
    """gVisor TestNewPEBOnPromotionToPermanent: addr1 expired
    (still referenced), addr2 added first-primary, addr1 re-added with a
    new behaviour: the main address is addr1 iff the new behaviour is
    first-primary; once addr2 is gone it is addr1 unless never-primary."""
    net = Net(ipv4=(), ipv6=())
    owner, stack = net.net, net.stack
    if family == 4:
        addr1, addr2, dst = ip_bytes("198.18.5.1"), ip_bytes("198.18.5.2"), ip_bytes("198.18.5.9")
    else:
        addr1, addr2, dst = (
            ip_bytes("2001:db8:5::1"),
            ip_bytes("2001:db8:5::2"),
            ip_bytes("2001:db8:5::9"),
        )
        # The link-local would win for no global address: take it out of the race.
        owner.set_address_kind(1, ip_bytes(OUR_LL), AddressKind.TENTATIVE)

    def main() -> bytes | None:
        return stack.ipv4_source(1) if family == 4 else stack.ipv6_source(1, dst)

    owner.add_address("sntap0", addr1, 24 if family == 4 else 64, behavior=initial)
    owner.set_address_kind(1, addr1, AddressKind.EXPIRED)  # removed while referenced
    assert main() is None
    owner.add_address(
        "sntap0", addr2, 24 if family == 4 else 64, behavior=PrimaryBehavior.FIRST_PRIMARY
    )
    assert main() == addr2
    owner.add_address("sntap0", addr1, 24 if family == 4 else 64, behavior=new)
    assert owner.address(1, addr1).kind is AddressKind.PERMANENT
    assert main() == (addr1 if new is PrimaryBehavior.FIRST_PRIMARY else addr2)
    owner.remove_address("sntap0", addr2)
    assert main() == (None if new is PrimaryBehavior.NEVER_PRIMARY else addr1)


def test_a_never_primary_address_promoted_to_can_be_primary_is_appended() -> None:
    # It had no place in the primary list, so it goes to the end.
    net = Net(ipv4=())
    owner = net.net
    a1, a2 = ip_bytes("198.18.5.1"), ip_bytes("198.18.5.2")
    owner.add_address("sntap0", a1, 24, behavior=PrimaryBehavior.NEVER_PRIMARY)
    owner.add_address("sntap0", a2, 24)
    owner.set_address_kind(1, a1, AddressKind.EXPIRED)
    owner.add_address("sntap0", a1, 24, behavior=PrimaryBehavior.CAN_BE_PRIMARY)
    assert net.stack.ipv4_source(1) == a2
    owner.remove_address("sntap0", a2)
    assert net.stack.ipv4_source(1) == a1


def test_deprecated_addresses_are_sources_of_last_resort() -> None:
    net = Net(ipv4=(OUR4 + "/24", "198.18.0.3/24"))
    owner, stack = net.net, net.stack
    assert stack.ipv4_source(1) == ip_bytes(OUR4)
    owner.set_address_kind(1, ip_bytes(OUR4), AddressKind.DEPRECATED)
    assert stack.ipv4_source(1) == ip_bytes("198.18.0.3")
    owner.set_address_kind(1, ip_bytes("198.18.0.3"), AddressKind.DEPRECATED)
    assert stack.ipv4_source(1) == ip_bytes(OUR4)
    # Still accepting packets (RFC 4862 §5.5.4).
    net.learn(PEER4)
    net.inject(eth() / IP(src=PEER4, dst=OUR4) / ICMP(type=8))
    net.expect(ipv4(icmp4(0), src=OUR4))


def test_ipv6_source_selection_prefers_matching_scope() -> None:
    net = Net(ipv6=(OUR6 + "/64", "2001:db8:1::2/64"))
    stack = net.stack
    assert stack.ipv6_source(1, ip_bytes("fe80::99")) == ip_bytes(OUR_LL)  # RFC 6724 rule 2
    assert stack.ipv6_source(1, ip_bytes("2001:db8:1::99")) == ip_bytes("2001:db8:1::2")  # rule 8
    assert stack.ipv6_source(1, ip_bytes(PEER6)) == ip_bytes(OUR6)


# --- routes used by the output path ------------------------------------------------------
def test_longest_prefix_then_metric_picks_the_gateway() -> None:
    net = Net(gateway4=GW4)
    net.learn(GW4, GW_MAC)
    net.learn(GW2_4, GW2_MAC)
    net.inject(echo4())  # only the default route matches
    net.expect(ipv4(icmp4(0), mac=GW_MAC, dst=FAR4))
    net.request("route_add", dst="198.19.0.0/16", gateway=GW2_4, metric=10)
    net.inject(echo4())  # longer prefix wins over the default
    net.expect(ipv4(icmp4(0), mac=GW2_MAC, dst=FAR4))
    net.request("route_add", dst="198.19.0.0/16", gateway=GW4, metric=5)
    net.inject(echo4())  # same prefix: the lower metric
    net.expect(ipv4(icmp4(0), mac=GW_MAC, dst=FAR4))
    net.request("route_add", dst="198.19.0.0/16", gateway=GW4, metric=20)  # replaces
    net.inject(echo4())
    net.expect(ipv4(icmp4(0), mac=GW2_MAC, dst=FAR4))
    assert [
        (r["gateway"], r["metric"]) for r in net.request("routes") if r["dst"] == "198.19.0.0"
    ] == [(GW2_4, 10), (GW4, 20)]
    net.request("route_del", dst="198.19.0.0/16", gateway=GW2_4)
    net.inject(echo4())
    net.expect(ipv4(icmp4(0), mac=GW_MAC, dst=FAR4))


def test_ipv6_routes_via_a_gateway() -> None:
    net = Net()
    net.learn(GW6, GW_MAC)
    net.inject(echo6())
    net.expect_nothing()  # no route back
    assert net.stats[Drop.IPV6_NO_ROUTE] == 1
    net.request("route_add", dst="2001:db8:ff00::/40", gateway=GW6)
    net.inject(echo6())
    net.expect(ipv6(icmp6(ICMPv6EchoReply), mac=GW_MAC, src=OUR6, dst=FAR6))


def test_replace_routes_replaces_the_table() -> None:
    net = Net(gateway4=GW4)
    net.learn(GW2_4, GW2_MAC)
    keep = [r for r in net.net.view.routes.routes() if r.origin == "connected"]
    net.net.replace_routes([*keep, Route(bytes(4), 0, 1, ip_bytes(GW2_4))])
    assert {r["gateway"] for r in net.request("routes")} == {None, GW2_4}
    net.inject(echo4())
    net.expect(ipv4(icmp4(0), mac=GW2_MAC, dst=FAR4))


def test_no_route_is_counted() -> None:
    net = Net()
    net.inject(echo4())
    net.expect_nothing()
    assert net.stats[Drop.IPV4_NO_ROUTE] == 1


# --- never on the wire: loopback addresses ------------------------------------------------
def test_loopback_addresses_from_the_wire_are_martians() -> None:
    net = Net()
    net.learn(PEER4)
    net.learn(PEER6)
    net.inject(eth() / IP(src=PEER4, dst="127.0.0.1") / ICMP(type=8))
    net.inject(eth() / IP(src="127.0.0.5", dst=OUR4) / ICMP(type=8))
    net.inject(eth() / IPv6(src=PEER6, dst="::1") / ICMPv6EchoRequest())
    net.inject(eth() / IPv6(src="::1", dst=OUR6) / ICMPv6EchoRequest())
    net.expect_nothing()
    assert net.stats[Drop.IPV4_MARTIAN] == 2
    assert net.stats[Drop.IPV6_MARTIAN] == 2


def test_packets_to_our_own_addresses_never_reach_the_wire() -> None:
    # Loopback routing: no frame (and no ARP for ourselves) until loopback routing exists.
    net = Net()
    assert not net.stack.send_ipv4(ip_bytes(OUR4), 17, bytes(8))
    assert not net.stack.send_ipv4(ip_bytes("127.0.0.1"), 17, bytes(8))
    net.stack.send_ipv4(ip_bytes("127.0.0.9"), 17, bytes(8))  # routed to lo: stops there
    assert not net.stack.send_ipv6(ip_bytes(OUR6), 17, bytes(8))
    net.expect_nothing()
    assert net.stats[Drop.IPV4_LOCAL_NOT_LOOPED] == 2
    assert net.stats[Drop.LOOPBACK_NOT_LOOPED] == 1


def test_echo_from_an_unspecified_source_is_not_answered() -> None:
    net = Net(gateway4=GW4, gateway6=GW6)
    net.learn(GW4, GW_MAC)
    net.learn(GW6, GW_MAC)
    net.inject(echo4(src="0.0.0.0"))
    net.inject(echo6(src="::"))
    net.expect_nothing()


# --- replication ---------------------------------------------------------------------------
def test_a_change_in_shard_0_reaches_a_replica() -> None:
    net = Net()
    replica = net.replica(1)
    assert replica.view.local.keys() == net.net.view.local.keys()
    net.request("addr_add", nic="sntap0", address="198.18.0.3/24")
    assert ip_bytes("198.18.0.3") in replica.view.local
    net.request("route_add", dst="198.19.0.0/16", gateway=GW4, metric=3)
    assert replica.view.routes.lookup(ip_bytes(FAR4)).gateway == ip_bytes(GW4)
    net.request("addr_del", nic="sntap0", address="198.18.0.3")
    assert ip_bytes("198.18.0.3") not in replica.view.local
    net.request("nic_add", name="lo1", loopback=True, context="c")
    assert replica.view.nic_by_name["lo1"].context == "c"
    net.net.set_address_kind(1, ip_bytes(OUR6), AddressKind.TENTATIVE)
    assert ip_bytes(OUR6) in replica.view.tentative
    assert replica.tables.version == net.owner.version


def test_a_replica_answers_with_the_state_it_was_sent() -> None:
    net = Net()
    net.learn(PEER4)
    replica = net.replica(1)
    net.request("addr_add", nic="sntap0", address="198.18.0.3/24")
    replica.inject(eth() / IP(src=PEER4, dst="198.18.0.3") / ICMP(type=8, id=4))
    (out,) = replica.sent()
    ipv4(icmp4(0, id=4), mac=PEER_MAC, src="198.18.0.3", dst=PEER4)(out)
    net.request("addr_del", nic="sntap0", address="198.18.0.3")
    replica.inject(eth() / IP(src=PEER4, dst="198.18.0.3") / ICMP(type=8, id=4))
    assert replica.sent() == []
    assert replica.stack.counters.by_reason()[Drop.IPV4_NOT_FOR_US] == 1


@given(
    st.lists(
        st.tuples(
            st.integers(0, 7), st.sampled_from([None, "02:00:00:00:00:01", "02:00:00:00:00:02"])
        ),
        max_size=40,
    )
)
def test_neighbour_changes_reach_the_view_row_by_row_as_a_rebuild_would(
    changes: list[tuple[int, str | None]],
) -> None:
    """Shard 0 and every replica update one neighbour row per change (a
    neighbour learnt costs the same whatever the table's size); the view is
    then what a full rebuild from the tables gives."""
    net = Net()
    replica = net.replica()
    for host, mac in changes:
        ip = parse_ip(f"198.18.0.{10 + host}")
        net.net.set_neighbour(1, ip, parse_mac(mac) if mac else None)
    for view, tables in ((net.net.view, net.net.tables), (replica.view, replica.tables.tables)):
        rebuilt = NetView()
        rebuilt.load(tables)
        assert view.neighbours == rebuilt.neighbours
