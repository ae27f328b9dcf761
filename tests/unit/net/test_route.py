"""Routing table: longest-prefix match, metric, NIC filters, destinations
that need no route (gVisor FindRoute)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import parse_ip
from shardnet.shards.net.route import Route, RouteDecision, RouteTable, needs_route, next_hop

ip = parse_ip
ANY4, ANY6 = ip("0.0.0.0"), ip("::")


def r4(
    text: str, nic: int = 1, gw: str | None = None, metric: int = 0, origin: str = "static"
) -> Route:
    net, _, plen = text.partition("/")
    return Route(ip(net), int(plen), nic, ip(gw) if gw else None, metric, origin)


r6 = r4


def test_longest_prefix_wins() -> None:
    t = RouteTable(
        [r4("0.0.0.0/0", 1, "198.18.0.254"), r4("198.18.0.0/15", 2), r4("198.18.4.0/24", 3)]
    )
    assert t.lookup(ip("198.18.4.9")).nic == 3
    assert t.lookup(ip("198.18.5.9")).nic == 2
    assert t.lookup(ip("198.19.255.255")).nic == 2
    assert t.lookup(ip("198.20.0.1")).nic == 1


def test_ipv6_longest_prefix_and_families_are_separate() -> None:
    t = RouteTable([r6("::/0", 1, "fe80::1"), r6("2001:db8::/32", 2), r6("2001:db8:1::/48", 3)])
    assert t.lookup(ip("2001:db8:1::5")).nic == 3
    assert t.lookup(ip("2001:db8:2::5")).nic == 2
    assert t.lookup(ip("2001:db9::1")).nic == 1
    assert t.lookup(ip("198.18.0.1")) is None  # no IPv4 route at all
    assert t.lookup(b"\x01\x02") is None  # not an address


def test_lowest_metric_then_oldest() -> None:
    t = RouteTable()
    t.add(r4("198.18.0.0/24", 1, metric=100))
    t.add(r4("198.18.0.0/24", 2, metric=10))
    t.add(r4("198.18.0.0/24", 3, metric=10))
    assert t.lookup(ip("198.18.0.7")).nic == 2  # metric 10, added before NIC 3's


def test_longer_prefix_beats_lower_metric() -> None:
    t = RouteTable([r4("198.18.0.0/16", 1, metric=0), r4("198.18.0.0/24", 2, metric=1000)])
    assert t.lookup(ip("198.18.0.1")).nic == 2


def test_nic_filter_and_unusable_nics_fall_through_to_shorter_prefixes() -> None:
    t = RouteTable(
        [
            r4("0.0.0.0/0", 1, "198.18.0.254"),
            r4("198.18.0.0/24", 2),
            r4("198.18.0.0/24", 3, metric=5),
        ]
    )
    dst = ip("198.18.0.9")
    assert t.lookup(dst, nic=3).nic == 3
    assert t.lookup(dst, nic=1).nic == 1  # only the default route goes out of NIC 1
    assert t.lookup(dst, nic=9) is None
    assert t.lookup(dst, usable=lambda n: n != 2).nic == 3
    assert t.lookup(dst, usable=lambda n: n == 1).nic == 1
    assert t.lookup(dst, usable=lambda n: False) is None


def test_equal_route_replaces_in_place() -> None:
    t = RouteTable()
    t.add(r4("198.18.0.0/24", 1, metric=5))
    t.add(r4("198.18.0.0/24", 2, metric=5))
    t.add(r4("198.18.0.0/24", 1, metric=5, origin="connected"))  # same dst/len/nic/gateway
    assert len(t) == 2
    assert t.lookup(ip("198.18.0.1")) == r4("198.18.0.0/24", 1, metric=5, origin="connected")
    t.add(r4("198.18.0.0/24", 1, metric=50))  # a new metric replaces the old one
    assert len(t) == 2 and t.lookup(ip("198.18.0.1")).nic == 2


def test_remove() -> None:
    a, b = r4("198.18.0.0/24", 1), r4("198.18.0.0/24", 2, "198.18.0.1")
    t = RouteTable([a, b])
    assert t.remove(r4("198.18.0.0/24", 1, metric=77))  # metric is not part of identity
    assert not t.remove(a)
    assert a not in t and b in t
    assert t.lookup(ip("198.18.0.5")) == b


def test_remove_matching_and_remove_nic() -> None:
    t = RouteTable(
        [
            r4("198.18.0.0/24", 1),
            r4("198.18.0.0/24", 2),
            r4("198.18.1.0/24", 2),
            r6("2001:db8::/64", 2),
        ]
    )
    assert t.remove_matching(ip("198.18.0.0"), 24, nic=2) == 1
    assert t.remove_matching(ip("198.18.0.0"), 24, gateway=ip("198.18.9.9")) == 0
    assert t.remove_nic(2) == 2
    assert t.routes() == [r4("198.18.0.0/24", 1)]
    assert t.remove_matching(ip("198.18.0.0"), 24) == 1
    assert len(t) == 0 and t.lookup(ip("198.18.0.1")) is None


def test_replace_all_and_version() -> None:
    t = RouteTable([r4("198.18.0.0/24", 1)])
    v = t.version
    t.replace_all([r6("::/0", 3, "fe80::1")])
    assert t.version > v
    assert t.lookup(ip("198.18.0.1")) is None
    assert t.lookup(ip("2001:db8::1")).nic == 3


def test_routes_order() -> None:
    routes = [
        r6("::/0", 1, "fe80::1"),
        r4("0.0.0.0/0", 1, "198.18.0.1"),
        r4("198.18.0.0/24", 2, metric=9),
        r6("2001:db8::/64", 1),
        r4("198.18.0.0/24", 1, metric=1),
        r4("198.18.0.0/15", 3),
        r4("198.18.0.0/24", 3, metric=1),
    ]
    assert RouteTable(routes).routes() == [
        r4("198.18.0.0/24", 1, metric=1),
        r4("198.18.0.0/24", 3, metric=1),
        r4("198.18.0.0/24", 2, metric=9),
        r4("198.18.0.0/15", 3),
        r4("0.0.0.0/0", 1, "198.18.0.1"),
        r6("2001:db8::/64", 1),
        r6("::/0", 1, "fe80::1"),
    ]


@pytest.mark.parametrize(
    "route",
    [
        Route(ip("198.18.0.1"), 24, 1),  # host bits set
        Route(ip("198.18.0.0"), 33, 1),
        Route(ip("198.18.0.0"), -1, 1),
        Route(b"\x01\x02\x03", 0, 1),
        Route(ip("198.18.0.0"), 24, 1, ip("2001:db8::1")),  # gateway of the other family
        Route(ip("198.18.0.0"), 24, 1, origin="bgp"),
        Route(ip("198.18.0.0"), 24, 1, metric=-1),
    ],
)
def test_malformed_routes_are_refused(route: Route) -> None:
    with pytest.raises(ValueError):
        RouteTable().add(route)


def test_unspecified_gateway_means_on_link() -> None:
    t = RouteTable([Route(ip("198.18.0.0"), 24, 1, ANY4), Route(ip("2001:db8::"), 64, 1, ANY6)])
    r = t.lookup(ip("198.18.0.9"))
    assert r.gateway is None and next_hop(r, ip("198.18.0.9")) == ip("198.18.0.9")
    assert t.lookup(ip("2001:db8::9")).gateway is None


def test_next_hop() -> None:
    dst = ip("198.18.5.5")
    assert next_hop(r4("0.0.0.0/0", 1, "198.18.0.1"), dst) == ip("198.18.0.1")
    assert next_hop(r4("198.18.0.0/15", 1), dst) == dst


def test_summary() -> None:
    assert (
        r4("0.0.0.0/0", 1, "198.18.0.1", 5).summary()
        == "0.0.0.0/0 via 198.18.0.1 nic 1 metric 5 proto static"
    )


# --- destinations that need no route (gVisor FindRoute) ----------------------------------
@pytest.mark.parametrize(
    ("dst", "needed"),
    [
        ("255.255.255.255", False),  # limited broadcast
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("198.18.0.1", True),
        ("198.18.255.255", True),  # a directed broadcast is routed
        ("ff02::1", False),
        ("ff0e::101", False),
        ("fe80::1", False),
        ("febf::1", False),  # still fe80::/10
        ("fec0::1", True),
        ("2001:db8::1", True),
        ("::1", True),
    ],
)
def test_needs_route(dst: str, needed: bool) -> None:
    """gVisor TestMulticastOrIPv6LinkLocalNeedsNoRoute."""
    assert needs_route(ip(dst)) is needed


def test_resolve_no_route_needed_uses_the_given_nic() -> None:
    t = RouteTable()  # TestOutgoingBroadcastWithEmptyRouteTable
    for dst in ("255.255.255.255", "224.0.0.1", "ff02::1", "fe80::2"):
        assert t.resolve(ip(dst), nic=4) == RouteDecision(4, ip(dst), None)
        with pytest.raises(OSError) as exc:
            t.resolve(ip(dst))
        assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as exc:
        t.resolve(ip("ff02::1"), nic=4, usable=lambda n: False)
    assert exc.value.errno == errno.ENETUNREACH


def test_resolve_no_route_needed_without_nic_searches_table_but_next_hop_is_dst() -> None:
    default = r4("0.0.0.0/0", 2, "198.18.0.254")
    t = RouteTable([default])  # TestOutgoingBroadcastWithRouteTable
    bcast = ip("255.255.255.255")
    assert t.resolve(bcast) == RouteDecision(2, bcast, default)
    assert t.resolve(ip("224.0.0.251")).next_hop == ip("224.0.0.251")


def test_resolve_routed() -> None:
    t = RouteTable([r4("0.0.0.0/0", 2, "198.18.0.254"), r4("198.18.0.0/24", 1)])
    assert t.resolve(ip("198.18.0.7")).next_hop == ip("198.18.0.7")
    d = t.resolve(ip("198.19.0.7"))
    assert (d.nic, d.next_hop) == (2, ip("198.18.0.254"))
    assert t.resolve(ip("198.18.0.7"), nic=2).nic == 2  # bound to NIC 2: the default route
    assert t.resolve(ip("198.18.0.7"), nic=0).nic == 1  # 0 means unbound
    with pytest.raises(OSError) as exc:
        t.resolve(ip("2001:db8::1"))
    assert exc.value.errno == errno.ENETUNREACH


# --- hypothesis: lookup equals a brute-force scan -------------------------------------------
_prefix_lens4 = st.sampled_from([0, 8, 15, 16, 23, 24, 31, 32])


@st.composite
def tables(draw: st.DrawFn) -> list[Route]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        plen = draw(_prefix_lens4)
        value = draw(st.integers(0, 2**32 - 1)) >> (32 - plen) << (32 - plen) if plen else 0
        out.append(
            Route(
                value.to_bytes(4, "big"),
                plen,
                draw(st.integers(1, 3)),
                None,
                draw(st.integers(0, 3)),
            )
        )
    return out


def brute(routes: list[Route], dst: bytes, nic: int | None, up: set[int]) -> Route | None:
    uniq: dict[tuple, Route] = {}
    for r in routes:
        uniq[r.key] = r
    best = None
    best_key = None
    for i, r in enumerate(uniq.values()):
        net = int.from_bytes(r.dst, "big")
        if (
            int.from_bytes(dst, "big") >> (32 - r.prefix_len) << (32 - r.prefix_len)
            if r.prefix_len
            else 0
        ) != net:
            continue
        if (nic is not None and r.nic != nic) or r.nic not in up:
            continue
        key = (-r.prefix_len, r.metric, i)
        if best_key is None or key < best_key:
            best, best_key = r, key
    return best


@given(
    tables(), st.integers(0, 2**32 - 1), st.none() | st.integers(1, 3), st.sets(st.integers(1, 3))
)
def test_lookup_matches_brute_force(
    routes: list[Route], d: int, nic: int | None, up: set[int]
) -> None:
    dst = d.to_bytes(4, "big")
    t = RouteTable(routes)
    assert t.lookup(dst, nic=nic, usable=up.__contains__) == brute(routes, dst, nic, up)
    assert t.lookup(dst) == brute(routes, dst, None, {1, 2, 3})
