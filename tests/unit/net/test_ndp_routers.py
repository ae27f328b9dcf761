"""Default router selection and RFC 4191 in the NDP machine, with a fake
clock and crafted RAs: routers ranked by reachability (RFC 4861 §6.3.6),
then preference (RFC 4191 §2.2), then round-robin after a NUD failure;
Route Information options (RFC 4191 §3.1) behind ``accept_rio``; RAs on a
forwarding NIC with ``accept_ra_forwarding`` (Linux accept_ra=2)."""

from __future__ import annotations

import random

from shardnet.common.addr import parse_ip
from shardnet.common.wire.ndp import (
    PREF_HIGH,
    PREF_LOW,
    PREF_MEDIUM,
    RouteInformation,
    RouterSolicitation,
    encode_preference,
)
from shardnet.shards.net.actions import AddRoute, RemoveRoute
from shardnet.shards.net.mld import MldMachine
from shardnet.shards.net.ndp import NdpConfig, NdpMachine, ProbeRouter
from shardnet.shards.net.route import Route, RouteTable

from .test_ndp import KEY, MAC, QUIET, ROUTER, ROUTER2, Rig, cfg

ANY = bytes(16)
ROUTER3 = parse_ip("fe80::3")


def rig(config: NdpConfig = QUIET, reachable: set[bytes] | None = None, **kw: object) -> Rig:
    known = reachable if reachable is not None else set()
    m = NdpMachine(
        1, "eth0", MAC, random.Random(7), config, secret_key=KEY,
        reachability=known.__contains__, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    r = Rig(m, MldMachine(config.mld(), random.Random(8), m.usable_link_local))
    r.start()
    return r


def table_of(r: Rig) -> RouteTable:
    """The route table as shard 0 would hold it after applying the log."""
    t = RouteTable()
    for _, a in r.log:
        if isinstance(a, AddRoute):
            t.add(a.route)
        elif isinstance(a, RemoveRoute):
            t.remove(a.route)
    return t


def default_gateway(r: Rig) -> bytes | None:
    route = table_of(r).lookup(parse_ip("2001:db8:ff::1"))
    return None if route is None else route.gateway


def test_first_router_in_use_second_after_it() -> None:
    r = rig()
    r.ra(ROUTER, router_lifetime=100)
    out = r.ra(ROUTER2, router_lifetime=100)
    assert AddRoute(Route(ANY, 0, 1, ROUTER2, 1025, "ra")) in out
    assert default_gateway(r) == ROUTER
    assert [i.addr for i in r.m.router_info(r.now)] == [ROUTER, ROUTER2]


def test_reachable_router_preferred_over_unknown() -> None:
    """RFC 4861 §6.3.6: a router in any NUD state but INCOMPLETE beats one
    whose reachability is unknown."""
    known: set[bytes] = set()
    r = rig(reachable=known)
    r.ra(ROUTER, router_lifetime=100)
    r.ra(ROUTER2, router_lifetime=100)
    known.add(ROUTER2)
    r.take(r.m.neighbour_changed(r.now, ROUTER2, failed=False))
    assert default_gateway(r) == ROUTER2
    info = r.m.router_info(r.now)
    assert [(i.addr, i.reachable, i.rank) for i in info] == [(ROUTER2, True, 0), (ROUTER, False, 1)]


def test_nud_failure_of_the_router_in_use_moves_traffic() -> None:
    """The router in use stops answering: NUD removes its entry (RFC 4861
    §7.3.3) and the other router, probably reachable, takes the traffic."""
    known = {ROUTER, ROUTER2}
    r = rig(reachable=known)
    r.ra(ROUTER, router_lifetime=1800)
    r.ra(ROUTER2, router_lifetime=1800)
    assert default_gateway(r) == ROUTER
    known.discard(ROUTER)
    r.take(r.m.neighbour_changed(r.now, ROUTER, failed=True))
    assert default_gateway(r) == ROUTER2
    # It answers again (a new RA with SLLA, or a solicited NA): both are
    # reachable, and the round-robin order now starts with ROUTER2.
    known.add(ROUTER)
    r.take(r.m.neighbour_changed(r.now, ROUTER, failed=False))
    assert default_gateway(r) == ROUTER2


def test_round_robin_when_no_router_is_reachable() -> None:
    """RFC 4861 §6.3.6: with no router known reachable, each failure moves
    on to the next one, and back to the first after all were tried."""
    r = rig()
    for router in (ROUTER, ROUTER2, ROUTER3):
        r.ra(router, router_lifetime=1800)
    seen = []
    for _ in range(4):
        gw = default_gateway(r)
        assert gw is not None
        seen.append(gw)
        r.take(r.m.neighbour_changed(r.now, gw, failed=True))
    assert seen == [ROUTER, ROUTER2, ROUTER3, ROUTER]


def test_preference_orders_routers_of_equal_reachability() -> None:
    """RFC 4191 §2.2: high before medium before low; the reserved value is
    medium (the codec's); reachability comes first (§3.2)."""
    known: set[bytes] = set()
    r = rig(reachable=known)
    r.ra(ROUTER, router_lifetime=100, flags=encode_preference(PREF_LOW))
    r.ra(ROUTER2, router_lifetime=100, flags=0x10)  # Prf 10: reserved -> medium
    assert default_gateway(r) == ROUTER2
    r.ra(ROUTER3, router_lifetime=100, flags=encode_preference(PREF_HIGH))
    assert default_gateway(r) == ROUTER3
    assert [i.preference for i in r.m.router_info(r.now)] == ["high", "medium", "low"]
    assert [e.preference for e in r.events("router_discovered")] == ["low", "medium", "high"]
    known.add(ROUTER)  # a reachable low-preference router beats unknown high ones
    r.take(r.m.neighbour_changed(r.now, ROUTER, failed=False))
    assert default_gateway(r) == ROUTER
    # A refresh with another preference re-ranks.
    known.clear()
    r.take(r.m.neighbour_changed(r.now, ROUTER, failed=False))
    r.ra(ROUTER3, router_lifetime=100, flags=encode_preference(PREF_LOW))
    assert default_gateway(r) == ROUTER2


def test_invalidated_router_hands_over() -> None:
    r = rig()
    r.ra(ROUTER, router_lifetime=100)
    r.ra(ROUTER2, router_lifetime=100)
    r.ra(ROUTER, router_lifetime=0)
    assert default_gateway(r) == ROUTER2
    assert table_of(r).lookup(parse_ip("2001:db8:ff::1")) == Route(ANY, 0, 1, ROUTER2, 1024, "ra")


def test_na_without_router_flag_removes_router() -> None:
    """RFC 4861 §7.2.5: IsRouter TRUE -> FALSE takes it off the Default
    Router List; the next router takes over."""
    r = rig()
    r.ra(ROUTER, router_lifetime=100)
    r.ra(ROUTER2, router_lifetime=100)
    r.take(r.m.router_unreachable(r.now, ROUTER))
    assert r.m.routers() == [ROUTER2]
    assert [e.addr for e in r.events("router_invalidated")] == [ROUTER]
    assert default_gateway(r) == ROUTER2
    assert r.take(r.m.router_unreachable(r.now, parse_ip("fe80::99"))) == []


def probes(actions: list[object]) -> list[bytes]:
    return [a.addr for a in actions if isinstance(a, ProbeRouter)]


def test_better_router_of_unknown_reachability_probed_while_another_is_used() -> None:
    """RFC 4191 §3.5: traffic to the reachable medium ROUTER2 stands in for
    the high ROUTER and the equal ROUTER3 before it in the list, whose
    reachability is unknown: each gets one probe, not again within a
    minute; the low ROUTER4 gets none, nor does anyone without traffic to
    the router in use."""
    known = {ROUTER2}
    r = rig(reachable=known)
    router4 = parse_ip("fe80::4")
    r.ra(ROUTER3, router_lifetime=1800)
    r.ra(ROUTER2, router_lifetime=1800)
    r.ra(ROUTER, router_lifetime=1800, flags=encode_preference(PREF_HIGH))
    r.ra(router4, router_lifetime=1800, flags=encode_preference(PREF_LOW))
    assert default_gateway(r) == ROUTER2
    assert probes(r.take(r.m.router_used(r.now, ROUTER2))) == [ROUTER, ROUTER3]
    assert probes(r.take(r.m.router_used(r.now + 59, ROUTER2))) == []
    assert r.take(r.m.router_used(r.now, router4)) == []  # not in use: not reachable
    assert r.take(r.m.router_used(r.now, parse_ip("fe80::99"))) == []  # no router
    r.advance(60)
    assert probes(r.take(r.m.router_used(r.now, ROUTER2))) == [ROUTER, ROUTER3]
    # ROUTER answered: it is reachable, ranked first, and nothing is probed.
    known.add(ROUTER)
    r.take(r.m.neighbour_changed(r.now, ROUTER, failed=False))
    assert default_gateway(r) == ROUTER
    r.advance(60)
    assert probes(r.take(r.m.router_used(r.now, ROUTER))) == []


RIO_PREFIX = parse_ip("2001:db8:77::")


def rio(lifetime: int = 600, pref: int = PREF_MEDIUM, plen: int = 48) -> RouteInformation:
    return RouteInformation(plen, pref, lifetime, RIO_PREFIX)


def test_route_information_ignored_by_default() -> None:
    r = rig()
    out = r.ra(router_lifetime=100, options=[rio()])
    assert [a.route.dst for a in out if isinstance(a, AddRoute)] == [ANY]
    assert r.m.stats.rio_ignored == 1


def test_route_information_installs_more_specific_routes() -> None:
    """RFC 4191 §3.1 with accept_rio: a route through the advertising
    router, even one that is not a default router (Router Lifetime 0);
    preference orders two routers' routes; lifetime 0 and expiry remove."""
    r = rig(cfg(accept_rio=True))
    r.ra(ROUTER, router_lifetime=0, options=[rio(600, PREF_LOW)])
    r.ra(ROUTER2, router_lifetime=0, options=[rio(30, PREF_HIGH)])
    table = table_of(r)
    got = table.lookup(parse_ip("2001:db8:77::5"))
    assert got == Route(RIO_PREFIX, 48, 1, ROUTER2, 1024, "ra")
    assert table.lookup(parse_ip("2001:db8:78::5")) is None  # no default router
    r.advance(31)  # ROUTER2's route expires
    assert table_of(r).lookup(parse_ip("2001:db8:77::5")) == Route(
        RIO_PREFIX, 48, 1, ROUTER, 1026, "ra"
    )
    r.ra(ROUTER, router_lifetime=0, options=[rio(0)])
    assert table_of(r).lookup(parse_ip("2001:db8:77::5")) is None
    assert r.m.rio_routes() == []


def test_route_information_limits_and_skips() -> None:
    r = rig(cfg(accept_rio=True, max_rio_routes=2))
    opts = [
        RouteInformation(0, PREF_HIGH, 600, ANY),  # ::/0: a default router, not a route
        RouteInformation(10, PREF_HIGH, 600, parse_ip("fe80::")),  # link-local
        *(RouteInformation(64, 0, 600, parse_ip(f"2001:db8:{i}::")) for i in range(1, 4)),
    ]
    r.ra(router_lifetime=0, options=opts)
    assert len(r.m.rio_routes()) == 2
    assert r.m.stats.rio_over_limit == 1
    assert r.m.routers() == [ROUTER]


def default_rio(lifetime: int, pref: int = PREF_MEDIUM) -> RouteInformation:
    return RouteInformation(0, pref, lifetime, ANY)


def test_default_route_information_overrides_the_header() -> None:
    """RFC 4191 §3.1: a ::/0 Route Information option's preference and
    lifetime override the RA header's (with accept_rio off, as Linux's
    default takes ::/0 options only): the router is high preference and
    lives 600 s, not 100; no more-specific route is made."""
    r = rig()
    r.ra(ROUTER2, router_lifetime=1800)
    r.ra(ROUTER, router_lifetime=100, options=[default_rio(600, PREF_HIGH)])
    assert default_gateway(r) == ROUTER
    info = {i.addr: i for i in r.m.router_info(r.now)}
    assert info[ROUTER].preference == "high" and info[ROUTER].expires_s == 600
    assert r.m.rio_routes() == [] and r.m.stats.rio_ignored == 0
    r.advance(101)
    assert r.m.routers() == [ROUTER2, ROUTER]  # the header's 100 s did not end it
    r.advance(500)
    assert r.m.routers() == [ROUTER2]
    assert default_gateway(r) == ROUTER2


def test_default_route_information_adds_and_removes_the_router() -> None:
    """A ::/0 option with a non-zero lifetime makes its sender a default
    router though the header's Router Lifetime is 0; 0xffffffff never
    expires; a ::/0 option with lifetime 0 removes the router (§3.1), even
    one the same RA's header advertised."""
    r = rig()
    r.ra(ROUTER, router_lifetime=0, options=[default_rio(0xFFFFFFFF, PREF_LOW)])
    assert r.m.routers() == [ROUTER]
    assert [(i.preference, i.expires_s) for i in r.m.router_info(r.now)] == [("low", None)]
    r.advance(100_000)
    assert default_gateway(r) == ROUTER
    r.ra(ROUTER2, router_lifetime=1800)
    r.ra(ROUTER, router_lifetime=1800, options=[default_rio(0)])
    assert r.m.routers() == [ROUTER2]
    assert [e.addr for e in r.events("router_invalidated")] == [ROUTER]
    assert default_gateway(r) == ROUTER2
    # Without accept_ra_defrtr's equivalent no router is learnt from it either.
    off = rig(cfg(discover_default_routers=False))
    off.ra(ROUTER, router_lifetime=0, options=[default_rio(600)])
    assert off.m.routers() == []


def test_forwarding_ignores_ras_unless_accept_ra_forwarding() -> None:
    """Linux accept_ra=1 vs 2 on a forwarding NIC."""
    plain = rig(forwarding=True)
    assert plain.ra(router_lifetime=100) == []
    assert plain.m.stats.ras_ignored == 1
    keen = rig(cfg(accept_ra_forwarding=True), forwarding=True)
    out = keen.ra(router_lifetime=100)
    assert AddRoute(Route(ANY, 0, 1, ROUTER, 1024, "ra")) in out
    # Turning forwarding on keeps what accept_ra=2 learnt, and RAs still count.
    host = rig(cfg(accept_ra_forwarding=True))
    host.ra(router_lifetime=100)
    assert host.take(host.m.set_forwarding(host.now, True)) == []
    assert host.m.routers() == [ROUTER]
    host.ra(ROUTER2, router_lifetime=100)
    assert host.m.routers() == [ROUTER, ROUTER2]


def test_forwarding_nic_with_accept_ra_forwarding_solicits() -> None:
    r = rig(cfg(max_rtr_solicitations=1, accept_ra_forwarding=True), forwarding=True)
    r.advance(1)
    assert len(r.sent(RouterSolicitation)) == 1


def test_accept_ra_forwarding_off_at_run_time_forgets_the_routers() -> None:
    r = rig(cfg(accept_ra_forwarding=True, accept_rio=True), forwarding=True)
    r.ra(router_lifetime=100, options=[rio()])
    assert r.m.routers() == [ROUTER] and r.m.rio_routes()
    out = r.take(r.m.set_config(cfg(accept_rio=True), r.now))
    assert [a.route.gateway for a in out if isinstance(a, RemoveRoute)] == [ROUTER, ROUTER]
    assert r.m.routers() == [] and r.m.rio_routes() == []
    assert r.events("router_invalidated")
