"""NUD (RFC 4861 §7.3) state changes of IPv6 neighbours are events (``nud_state``)."""

from __future__ import annotations

from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from .harness import OUR6, OUR_LL, OUR_MAC, PEER6, PEER_LL, PEER_MAC, Net, na, ns


def test_nud_transitions_are_reported() -> None:
    net = Net()
    events: list[dict] = []
    net.control.emit_event = events.append
    net.inject(ns(PEER6, OUR6))  # the NS's SLLA creates the entry, STALE
    net.sent()
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OUR6)
        / ICMPv6EchoRequest(id=1, seq=1)
    )
    net.advance(5.0)  # DELAY_FIRST_PROBE_TIME: PROBE with a unicast NS
    transitions = [
        (e["old"], e["new"]) for e in events if e["type"] == "nud_state" and e["ip"] == PEER6
    ]
    # Created STALE and used at once by the NA that answers the NS (DELAY).
    assert transitions[0][0] is None and transitions[0][1] in ("STALE", "DELAY")
    assert ("DELAY", "PROBE") in transitions
    net.advance(3.0)  # no answer: the entry goes
    assert ("PROBE", "removed") in [
        (e["old"], e["new"]) for e in events if e["type"] == "nud_state"
    ]


def test_a_probe_answered_without_tlla_makes_the_entry_reachable() -> None:
    """RFC 4861 §7.2.5: a solicited NA without a Target Link-Layer Address
    option (Linux's answer to a unicast NS) confirms the cached address."""
    net = Net()
    events: list[dict] = []
    net.control.emit_event = events.append
    net.inject(ns(PEER6, OUR6))
    net.sent()
    net.inject(
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IPv6(src=PEER6, dst=OUR6)
        / ICMPv6EchoRequest(id=1, seq=1)
    )
    net.advance(5.0)  # PROBE: a unicast NS
    net.sent()
    net.inject(na(PEER6, s=1, o=0, tlla=False))
    net.advance(3.0)  # past the last probe's deadline: still there
    rows = [r for r in net.request("neigh") if r["ip"] == PEER6]
    assert [(r["mac"], r["state"]) for r in rows] == [(PEER_MAC, "REACHABLE")]
    assert ("PROBE", "REACHABLE") in [(e["old"], e["new"]) for e in events if e["ip"] == PEER6]


def test_an_na_with_r_clear_takes_a_router_off_the_default_router_list() -> None:
    """RFC 4861 §7.2.5: a router whose NA clears the Router flag is no longer
    a default router (its route and an event go); one with R set stays."""
    from scapy.layers.inet6 import ICMPv6ND_RA

    net = Net()
    events: list[dict] = []
    net.control.emit_event = events.append
    net.inject(
        Ether(src=PEER_MAC, dst="33:33:00:00:00:01")
        / IPv6(src=PEER_LL, dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=1800, prf=0)
    )
    net.sent()

    def default_routes() -> list[dict]:
        return [r for r in net.request("routes") if r["dst"] == "::" and r["prefix_len"] == 0]

    assert [e["type"] for e in events] == ["router_discovered"] and default_routes()
    net.inject(na(PEER_LL, dst=OUR_LL, s=0, o=1, r=1))  # still a router
    assert "router_invalidated" not in [e["type"] for e in events] and default_routes()
    net.inject(na(PEER_LL, dst=OUR_LL, s=0, o=1, r=0))
    assert "router_invalidated" in [e["type"] for e in events]
    assert default_routes() == []
