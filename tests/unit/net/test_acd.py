"""IPv4 address conflict detection (RFC 5227) with a fake clock: the
machine's probe timing, conflicts while probing, defence and abandon; then
the same through shard 0's control plane (tentative addresses, probes and
announcements on the wire, events, ``ctl addrs``) and a DHCP lease declined
on a conflict (RFC 2131 §3.1 step 5)."""

from __future__ import annotations

import random
from typing import Any

from scapy.layers.dhcp import DHCP
from scapy.layers.l2 import ARP

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.arp import ARP_REPLY, ARP_REQUEST
from shardnet.scripts import ctl
from shardnet.shards.net.acd import (
    ANNOUNCE_WAIT_S,
    DEFEND_INTERVAL_S,
    MAX_CONFLICTS,
    PROBE_MAX_S,
    PROBE_MIN_S,
    PROBE_NUM,
    PROBE_WAIT_S,
    RATE_LIMIT_INTERVAL_S,
    AcdAbandoned,
    AcdConflict,
    AcdDefend,
    AcdDefended,
    AcdMachine,
    AcdProbe,
    AcdReady,
)
from shardnet.shards.net.dhcp4 import DECLINE_WAIT_S, Dhcp4Client, Dhcp4State

from .harness import OUR_MAC, PEER_MAC, Net, arp_reply, arp_request
from .test_dhcp4 import ACK, OFFER, reply

US = parse_mac(OUR_MAC)
THEM = parse_mac(PEER_MAC)
ADDR = parse_ip("198.18.0.7")
OTHER = parse_ip("198.18.0.8")
ANY = bytes(4)


def machine() -> AcdMachine:
    return AcdMachine(1, US, random.Random(3))


def ready(m: AcdMachine, now: float = 0.0) -> float:
    """Probe ``ADDR`` to the end; returns the time it became ready."""
    m.probe(now, ADDR)
    while True:
        deadline = m.next_deadline()
        assert deadline is not None
        if any(isinstance(a, AcdReady) for a in m.handle_timeout(deadline)):
            return deadline


# --- the machine --------------------------------------------------------------------------
def test_probe_timing() -> None:
    for seed in range(20):
        m = AcdMachine(1, US, random.Random(seed))
        assert m.probe(100.0, ADDR) == []  # §2.1.1: nothing before the random wait
        times = []
        while True:
            deadline = m.next_deadline()
            assert deadline is not None
            out = m.handle_timeout(deadline)
            if out == [AcdReady(ADDR)]:
                break
            assert out == [AcdProbe(ADDR)]
            times.append(deadline)
        assert len(times) == PROBE_NUM
        assert 100.0 <= times[0] <= 100.0 + PROBE_WAIT_S
        for a, b in zip(times, times[1:], strict=False):
            assert PROBE_MIN_S <= b - a <= PROBE_MAX_S
        assert deadline == times[-1] + ANNOUNCE_WAIT_S
        assert m.next_deadline() is None
        assert m.row(ADDR) == {"state": "in-use", "probes_left": 0, "defended": False}


def test_reply_while_probing_is_a_conflict() -> None:
    m = machine()
    m.probe(0.0, ADDR)
    assert m.handle_timeout(m.next_deadline() or 0.0) == [AcdProbe(ADDR)]
    assert m.handle_arp(1.5, ARP_REPLY, THEM, ADDR, ANY) == [AcdConflict(1, ADDR, THEM)]
    assert m.next_deadline() is None and m.row(ADDR) is None  # no more probes


def test_another_probe_for_the_address_is_a_conflict() -> None:
    m = machine()
    m.probe(0.0, ADDR)
    assert m.handle_arp(0.1, ARP_REQUEST, US, ANY, ADDR) == []  # our own probe, looped
    assert m.handle_arp(0.1, ARP_REQUEST, THEM, ANY, OTHER) == []  # another address
    assert m.handle_arp(0.1, ARP_REQUEST, THEM, OTHER, ADDR) == []  # someone resolving it
    assert m.handle_arp(0.2, ARP_REQUEST, THEM, ANY, ADDR) == [AcdConflict(1, ADDR, THEM)]


def test_rate_limited_after_max_conflicts() -> None:
    m = machine()
    now = 0.0
    for _ in range(MAX_CONFLICTS):
        m.probe(now, ADDR)
        deadline = m.next_deadline()
        assert deadline is not None and deadline <= now + PROBE_WAIT_S
        now = deadline
        m.handle_timeout(now)
        assert m.handle_arp(now, ARP_REPLY, THEM, ADDR, ANY) == [AcdConflict(1, ADDR, THEM)]
    # §2.1.1: from now on one attempt per RATE_LIMIT_INTERVAL.
    m.probe(now, OTHER)
    first = m.next_deadline()
    assert first is not None and first >= now + RATE_LIMIT_INTERVAL_S - PROBE_WAIT_S
    assert m.handle_timeout(first) == [AcdProbe(OTHER)]
    while True:
        deadline = m.next_deadline()
        assert deadline is not None
        if m.handle_timeout(deadline) == [AcdReady(OTHER)]:
            break
    assert m.conflicts == 0  # a success ends the rate limit
    m.probe(deadline, ADDR)
    assert (m.next_deadline() or 0.0) <= deadline + PROBE_WAIT_S


def test_defend_once_then_abandon() -> None:
    m = machine()
    t = ready(m)
    conflict = (ARP_REQUEST, THEM, ADDR, ADDR)  # a gratuitous ARP claiming it
    assert m.handle_arp(t + 1, *conflict) == [AcdDefend(ADDR), AcdDefended(1, ADDR, THEM)]
    assert m.row(ADDR) == {"state": "in-use", "probes_left": 0, "defended": True}
    # A probe for an address in use is answered by ARP, not a conflict (§2.4).
    assert m.handle_arp(t + 2, ARP_REQUEST, THEM, ANY, ADDR) == []
    assert m.handle_arp(t + DEFEND_INTERVAL_S, *conflict) == [AcdAbandoned(1, ADDR, THEM)]
    assert m.row(ADDR) is None


def test_conflicts_further_apart_are_defended_each_time() -> None:
    m = machine()
    t = ready(m)
    for i in range(3):
        out = m.handle_arp(t + 1 + i * (DEFEND_INTERVAL_S + 0.5), ARP_REPLY, THEM, ADDR, ADDR)
        assert out == [AcdDefend(ADDR), AcdDefended(1, ADDR, THEM)]


# --- through the control plane -----------------------------------------------------------
def acd_net() -> tuple[Net, list[dict[str, Any]]]:
    net = Net(ipv4=(), acd="all")
    events: list[dict[str, Any]] = []
    net.control.emit_event = events.append
    net.request("addr_add", nic="sntap0", address="198.18.0.7/24")
    return net, events


def addr_row(net: Net) -> dict[str, Any] | None:
    rows = [r for r in net.request("addrs") if r["addr"] == "198.18.0.7"]
    return rows[0] if rows else None


def is_probe(frame: Any) -> bool:
    a = frame[ARP]
    return bool(a.op == 1 and a.psrc == "0.0.0.0" and a.pdst == "198.18.0.7")


def test_static_address_tentative_until_probed_then_announced() -> None:
    net, events = acd_net()
    row = addr_row(net)
    assert row is not None and row["kind"] == "tentative" and row["acd"]["state"] == "probing"
    assert "tentative (acd probing, 3 probes left)" in ctl.render("addrs", net.request("addrs"))
    # Tentative: a request for it is not answered.
    net.inject(arp_request("198.18.0.1", "198.18.0.7"))
    net.expect_nothing()
    probes = []
    for _ in range(40):
        net.advance(0.25)
        probes += [f for f in net.sent() if is_probe(f)]
    assert len(probes) == PROBE_NUM
    assert all(f.dst == "ff:ff:ff:ff:ff:ff" and f[ARP].hwdst == "00:00:00:00:00:00" for f in probes)
    row = addr_row(net)
    assert row is not None and row["kind"] == "permanent" and row["acd"]["state"] == "in-use"
    # §2.3: then announced (the second one ANNOUNCE_INTERVAL later), and answered for.
    net.advance(2.0)
    net.sent()
    net.inject(arp_request("198.18.0.1", "198.18.0.7"))
    reply = net.expect()
    assert reply[ARP].op == 2 and reply[ARP].psrc == "198.18.0.7"
    assert events == []


def test_conflict_while_probing_drops_the_address() -> None:
    net, events = acd_net()
    net.advance(PROBE_WAIT_S)
    assert any(is_probe(f) for f in net.sent())
    net.inject(arp_reply("198.18.0.7", "0.0.0.0"))  # the holder answers the probe
    assert addr_row(net) is None
    assert events == [{"type": "acd_conflict", "nic": 1, "addr": "198.18.0.7", "mac": PEER_MAC}]
    net.advance(10.0)
    assert not any(f.haslayer(ARP) and f[ARP].psrc == "198.18.0.7" for f in net.sent())


def test_in_use_defended_once_then_abandoned() -> None:
    net, events = acd_net()
    net.advance(10.0)
    net.sent()
    gratuitous = arp_request("198.18.0.7", "198.18.0.7", mac=PEER_MAC)
    net.inject(gratuitous)
    defence = net.expect()
    assert defence[ARP].psrc == defence[ARP].pdst == "198.18.0.7"
    assert defence[ARP].hwsrc == OUR_MAC
    row = addr_row(net)
    assert row is not None and row["acd"]["defended"] is True
    net.advance(DEFEND_INTERVAL_S / 2)
    net.inject(gratuitous)
    net.expect_nothing()
    assert addr_row(net) is None
    assert [e["type"] for e in events] == ["acd_defended", "acd_abandoned"]


def test_probed_again_when_the_nic_comes_back_up() -> None:
    net, events = acd_net()
    net.advance(10.0)
    row = addr_row(net)
    assert row is not None and row["kind"] == "permanent"
    net.request("nic_set", name="sntap0", enabled=False)
    net.request("nic_set", name="sntap0", enabled=True)
    row = addr_row(net)
    assert row is not None and row["kind"] == "tentative"  # RFC 5227 §2.1: a new attachment
    net.sent()
    net.advance(PROBE_WAIT_S)
    assert any(is_probe(f) for f in net.sent())
    net.inject(arp_reply("198.18.0.7", "0.0.0.0"))  # someone took it meanwhile
    assert addr_row(net) is None
    assert [e["type"] for e in events if e["type"].startswith("acd")] == ["acd_conflict"]


def test_off_by_default_for_static_addresses() -> None:
    net = Net(ipv4=())
    row = net.request("addr_add", nic="sntap0", address="198.18.0.7/24")
    assert row["kind"] == "permanent" and "acd" not in (addr_row(net) or {})


def test_dhcp_lease_probed_and_declined_on_conflict() -> None:
    net = Net(ipv4=())
    events: list[dict[str, Any]] = []
    net.control.emit_event = events.append
    client = net.control.dhcp4[1] = Dhcp4Client(1, net.mac, random.Random(1))
    net.control.apply(1, client.start(net.clock()))
    net.sent()
    for kind in (OFFER, ACK):
        msg = reply(client, kind, chaddr=net.mac)  # the DHCP tests' scripted server
        out = client.handle(net.clock(), msg, parse_ip("198.18.0.1"))
        assert isinstance(out, list)
        net.control.apply(1, out)
    net.sent()
    row = next(r for r in net.request("addrs") if r["addr"] == "198.18.0.50")
    assert row["kind"] == "tentative" and row["acd"]["state"] == "probing"
    net.inject(arp_reply("198.18.0.50", "0.0.0.0"))
    assert not any(r["addr"] == "198.18.0.50" for r in net.request("addrs"))
    decline = [f for f in net.sent() if f.haslayer(DHCP)]
    assert len(decline) == 1
    opts = dict(o for o in decline[0][DHCP].options if isinstance(o, tuple))
    assert opts["message-type"] == 4 and opts["requested_addr"] == "198.18.0.50"
    assert client.state is Dhcp4State.INIT and client.lease is None
    assert [e["type"] for e in events if e["type"].startswith("acd")] == ["acd_conflict"]
    net.advance(DECLINE_WAIT_S)  # §3.1 step 5: then DISCOVER again
    assert any(f.haslayer(DHCP) for f in net.sent())
