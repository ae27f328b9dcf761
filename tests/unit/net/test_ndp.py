"""The NDP machine (shards/net/ndp.py) with a fake clock and crafted
messages: DAD (RFC 4862 §5.4), opaque IIDs and regeneration (RFC 7217),
EUI-64 (RFC 4291 App. A), RS (RFC 4861 §6.3.7), RA validation (§6.1.2),
M/O flags (§4.2), router and prefix discovery and RA parameters (§6.3.4),
SLAAC (RFC 4862 §5.5), RDNSS/DNSSL (RFC 8106), router mode (RFC 4861 §6.2),
cancellable timers; the MLD machine is wired to the NDP machine as shard 0's
control plane wires it (``JoinGroup``/``LeaveGroup``, the link-local source). Test names follow gVisor's where one
exists."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.icmpv6 import icmpv6_pseudo
from shardnet.common.wire.ipv6 import ALL_NODES, ALL_ROUTERS, solicited_node_multicast
from shardnet.common.wire.ndp import (
    DnsSearchList,
    Mtu,
    NeighborAdvertisement,
    NeighborSolicitation,
    Nonce,
    PrefixInformation,
    RecursiveDns,
    RouterAdvertisement,
    RouterSolicitation,
    SourceLinkLayer,
    TargetLinkLayer,
)
from shardnet.shards.net.actions import (
    AddAddress,
    AddRoute,
    JoinGroup,
    LeaveGroup,
    RemoveAddress,
    RemoveRoute,
    SetAddressKind,
    SetNicParam,
    UpdateNeighbour,
)
from shardnet.shards.net.mld import MldMachine, SendMld
from shardnet.shards.net.model import AddressKind
from shardnet.shards.net.ndp import (
    DadResult,
    Dhcpv6Configuration,
    IidMode,
    NdpConfig,
    NdpMachine,
    SendNdp,
    event_to_dict,
)
from shardnet.shards.net.route import Route
from shardnet.shards.net.state import NetError

MAC = parse_mac("02:02:03:04:05:06")
PEER_MAC = parse_mac("02:00:00:00:00:99")
KEY = bytes(range(16))
ANY = bytes(16)
ADDR = parse_ip("2001:db8::1")
ROUTER = parse_ip("fe80::1")
ROUTER2 = parse_ip("fe80::2")
P1 = parse_ip("2001:db8:1::")
P2 = parse_ip("2001:db8:2::")
INF = 0xFFFFFFFF
# No random delays unless a test wants them; DAD off unless a test wants it.
QUIET = NdpConfig(
    dup_addr_detect_transmits=0,
    max_dad_delay_s=0.0,
    max_rtr_solicitations=0,
    auto_gen_link_local=False,
)


def opaque(prefix: bytes, counter: int = 0, name: str = "eth0") -> bytes:
    return (
        prefix[:8]
        + hashlib.sha256(prefix[:8] + name.encode() + bytes((counter,)) + KEY).digest()[:8]
    )


@dataclass
class Rig:
    """The shard loop around the NDP machine and the NIC's MLD machine, with
    a fake clock: the NDP machine's group joins go to the MLD machine, whose
    reports come from the NDP machine's link-local address."""

    m: NdpMachine
    mld: MldMachine
    now: float = 0.0
    log: list[tuple[float, Any]] = field(default_factory=list)

    def take(self, actions: list[Any]) -> list[Any]:
        out: list[Any] = []
        for a in actions:
            out.append(a)
            if isinstance(a, JoinGroup):
                out += self.mld.join(self.now, a.group, limit=False)
            elif isinstance(a, LeaveGroup):
                out += self.mld.leave(self.now, a.group)
        self.log += [(self.now, a) for a in out]
        return out

    def advance(self, dt: float) -> list[Any]:
        end = self.now + dt
        got: list[Any] = []
        while (d := self._deadline()) is not None and d <= end:
            self.now = max(self.now, d)
            got += self.take(self.mld.handle_timeout(self.now))
            got += self.take(self.m.handle_timeout(self.now))
        self.now = end
        return got

    def _deadline(self) -> float | None:
        deadlines = [d for d in (self.m.next_deadline(), self.mld.next_deadline()) if d is not None]
        return min(deadlines, default=None)

    def start(self) -> list[Any]:
        return self.take(self.mld.start(self.now) + self.m.start(self.now))

    def stop(self) -> list[Any]:
        """The NIC goes down: MLD first, so that nothing is reported."""
        self.mld.stop()
        return self.take(self.m.stop(self.now))

    def add(self, addr: bytes = ADDR, plen: int = 64) -> list[Any]:
        return self.take(self.m.add_address(self.now, addr, plen))

    def ra(self, src: bytes = ROUTER, **kw: Any) -> list[Any]:
        return self.take(self.m.handle_ra(self.now, src, 255, RouterAdvertisement(**kw)))

    def pi(
        self,
        prefix: bytes,
        vl: int,
        pl: int,
        *,
        on_link: bool = False,
        auto: bool = True,
        plen: int = 64,
        **kw: Any,
    ) -> list[Any]:
        return self.ra(options=[PrefixInformation(plen, on_link, auto, vl, pl, prefix)], **kw)

    def events(self, type_: str, since: float = -1.0) -> list[Any]:
        return [a for t, a in self.log if getattr(a, "type", None) == type_ and t >= since]

    def sent(self, cls: type) -> list[Any]:
        return [a for _, a in self.log if isinstance(a, SendNdp) and isinstance(a.message, cls)]


def rig(config: NdpConfig = QUIET, **kw: Any) -> Rig:
    m = NdpMachine(1, "eth0", MAC, random.Random(7), config, secret_key=KEY, **kw)
    r = Rig(m, MldMachine(config.mld(), random.Random(8), m.usable_link_local))
    r.start()
    return r


def cfg(**kw: Any) -> NdpConfig:
    base = {
        "dup_addr_detect_transmits": 0,
        "max_dad_delay_s": 0.0,
        "max_rtr_solicitations": 0,
        "auto_gen_link_local": False,
    }
    base.update(kw)
    return NdpConfig(**base)


# --------------------------------------------------------------------------- DAD


def test_dad_disabled() -> None:
    r = rig()
    out = r.add()
    assert out[0] == AddAddress(ADDR, 64, AddressKind.PERMANENT, "static")
    assert DadResult(1, ADDR, True) in out  # reported even when DAD is off
    assert r.sent(NeighborSolicitation) == []
    assert r.m.addresses()[ADDR] is AddressKind.PERMANENT


@pytest.mark.parametrize(("transmits", "retrans"), [(1, 1.0), (2, 1.0), (1, 2.0), (3, 0.5)])
def test_dad_resolve(transmits: int, retrans: float) -> None:
    r = rig(cfg(dup_addr_detect_transmits=transmits, retrans_timer_s=retrans))
    out = r.add()
    assert out[0] == AddAddress(ADDR, 64, AddressKind.TENTATIVE, "static")
    ns = r.sent(NeighborSolicitation)
    assert len(ns) == 1  # the first NS at once (no delay configured)
    assert ns[0].src == ANY and ns[0].dst == solicited_node_multicast(ADDR)
    assert ns[0].message.target == ADDR and ns[0].message.options == []  # RFC 4862 §5.4.2: no SLLA
    r.advance(transmits * retrans - 0.01)
    assert r.m.is_tentative(ADDR) and r.events("dad_result") == []
    r.advance(0.02)
    assert r.m.addresses()[ADDR] is AddressKind.PERMANENT
    assert r.events("dad_result") == [DadResult(1, ADDR, True)]
    assert SetAddressKind(ADDR, AddressKind.PERMANENT) in [a for _, a in r.log]
    assert len(r.sent(NeighborSolicitation)) == transmits
    times = [t for t, a in r.log if isinstance(a, SendNdp)]
    assert times == [i * retrans for i in range(transmits)]


def test_dad_random_initial_delay() -> None:
    """RFC 4862 §5.4.2: the first NS waits a random time <= 1 s."""
    r = rig(cfg(dup_addr_detect_transmits=1, max_dad_delay_s=1.0))
    r.add()
    assert r.sent(NeighborSolicitation) == []
    d = r.m.next_deadline()
    assert d is not None and 0.0 < d <= 1.0
    r.advance(1.0)
    assert len(r.sent(NeighborSolicitation)) == 1
    r.advance(1.0)
    assert r.events("dad_result") == [DadResult(1, ADDR, True)]


@pytest.mark.parametrize("how", ["ns_from_unspecified", "na"])
def test_dad_fail(how: str) -> None:
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.add()
    r.advance(0.5)
    if how == "na":
        na = NeighborAdvertisement(override=True, target=ADDR, options=[TargetLinkLayer(PEER_MAC)])
        out = r.take(r.m.handle_na(r.now, parse_ip("fe80::99"), ALL_NODES, na))
    else:
        ns = NeighborSolicitation(target=ADDR)
        out = r.take(r.m.handle_ns(r.now, ANY, solicited_node_multicast(ADDR), ns))
    assert RemoveAddress(ADDR) in out
    assert r.events("dad_result") == [DadResult(1, ADDR, False, "duplicate")]
    assert ADDR not in r.m.addresses()
    r.advance(10)
    assert len(r.events("dad_result")) == 1  # the DAD timer never fires afterwards


def test_dad_ns_from_unicast_source_ignored() -> None:
    """RFC 4862 §5.4.3: address resolution for a tentative target: no NA,
    not a duplicate."""
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.add()
    ns = NeighborSolicitation(target=ADDR, options=[SourceLinkLayer(PEER_MAC)])
    assert r.m.handle_ns(r.now, parse_ip("fe80::99"), solicited_node_multicast(ADDR), ns) == []
    r.advance(1.0)
    assert r.events("dad_result") == [DadResult(1, ADDR, True)]


def test_dad_enhanced_nonce_loopback() -> None:
    """RFC 7527: our own NS coming back (same nonce) is not a duplicate."""
    r = rig(cfg(dup_addr_detect_transmits=1, enhanced_dad=True))
    r.add()
    (ns,) = r.sent(NeighborSolicitation)
    nonce = ns.message.options[0]
    assert isinstance(nonce, Nonce) and len(nonce.value) == 6
    assert r.m.handle_ns(r.now, ANY, ns.dst, ns.message) == []
    assert r.m.stats.looped_back_ns == 1
    other = NeighborSolicitation(target=ADDR, options=[Nonce(b"\x01" * 6)])
    r.take(r.m.handle_ns(r.now, ANY, ns.dst, other))
    assert r.events("dad_result") == [DadResult(1, ADDR, False, "duplicate")]


def test_dad_stop() -> None:
    """Removing a tentative address: event false, only one NS sent."""
    r = rig(cfg(dup_addr_detect_transmits=3))
    r.add()
    r.advance(0.5)
    out = r.take(r.m.remove_address(r.now, ADDR))
    assert RemoveAddress(ADDR) in out
    assert r.events("dad_result") == [DadResult(1, ADDR, False, "removed")]
    r.advance(10)
    assert len(r.sent(NeighborSolicitation)) == 1


def test_add_address_errors() -> None:
    r = rig()
    r.add()
    with pytest.raises(NetError):
        r.add()
    with pytest.raises(NetError):
        r.add(parse_ip("ff02::1"))
    with pytest.raises(NetError):
        r.add(parse_ip("198.18.0.1"))


def test_na_for_usable_address_reported() -> None:
    """RFC 4862 §5.4.4: duplicate detection outside DAD: an event, the address stays."""
    r = rig()
    r.add()
    na = NeighborAdvertisement(override=True, target=ADDR, options=[TargetLinkLayer(PEER_MAC)])
    r.take(r.m.handle_na(r.now, parse_ip("fe80::99"), ALL_NODES, na))
    (ev,) = r.events("duplicate_address")
    assert ev.addr == ADDR and ev.mac == PEER_MAC
    assert r.m.addresses()[ADDR] is AddressKind.PERMANENT


def test_set_ndp_configurations() -> None:
    """Per-NIC configuration, replaceable at run time; retrans < 1 ms
    means the default."""
    assert NdpConfig(retrans_timer_s=0.0).retrans_timer_s == 1.0
    r1, r2 = rig(), rig()
    r1.m.set_config(cfg(dup_addr_detect_transmits=1))
    r1.add()
    r2.add()
    assert r1.m.is_tentative(ADDR) and not r2.m.is_tentative(ADDR)
    r1.advance(1.0)
    assert not r1.m.is_tentative(ADDR)
    with pytest.raises(ValueError):
        NdpConfig(dup_addr_detect_transmits=-1)


def test_dad_on_start_for_existing_addresses() -> None:
    """RFC 4862 §5.4: addresses added while the NIC is down get DAD when it starts."""
    m = NdpMachine(
        1, "eth0", MAC, random.Random(1), cfg(dup_addr_detect_transmits=1), secret_key=KEY
    )
    r = Rig(m, MldMachine(m.config.mld(), random.Random(8), m.usable_link_local))
    out = r.add()
    assert out[0].kind is AddressKind.TENTATIVE and r.sent(NeighborSolicitation) == []
    r.start()
    assert len(r.sent(NeighborSolicitation)) == 1
    r.advance(1)
    assert r.events("dad_result") == [DadResult(1, ADDR, True)]
    out = r.take(m.stop(r.now))
    assert out == []  # static addresses stay; nothing sent
    r.start()
    assert SetAddressKind(ADDR, AddressKind.TENTATIVE) in [a for _, a in r.log]
    assert len(r.sent(NeighborSolicitation)) == 2


# --------------------------------------------------------------------------- link-local, IIDs


def test_nic_auto_gen_addr_with_opaque() -> None:
    """RFC 7217 §5: the link-local address from the NIC name via the name function."""
    r = rig(cfg(auto_gen_link_local=True), name_fn=lambda nic_id, name: name + "x")
    ll = opaque(bytes.fromhex("fe80") + bytes(14), 0, "eth0x")
    assert r.m.addresses() == {ll: AddressKind.PERMANENT}
    (ev,) = r.events("address_autogenerated")
    assert ev.addr == ll and ev.origin == "linklocal"


@pytest.mark.parametrize("mac", [b"", bytes(6), parse_mac("01:00:5e:00:00:01")])
def test_opaque_link_local_for_invalid_macs(mac: bytes) -> None:
    m = NdpMachine(1, "eth0", mac, random.Random(1), cfg(auto_gen_link_local=True), secret_key=KEY)
    m.start(0.0)
    assert list(m.addresses()) == [opaque(bytes.fromhex("fe80") + bytes(14))]
    m2 = NdpMachine(
        1, "eth0", mac, random.Random(1), cfg(auto_gen_link_local=True, iid_mode=IidMode.EUI64)
    )
    m2.start(0.0)
    assert m2.addresses() == {}  # no IID from an invalid MAC without opaque IIDs


def test_nic_auto_gen_addr_eui64() -> None:
    """RFC 4291 App. A: fe80::2:3ff:fe04:506 from 02:02:03:04:05:06, through DAD."""
    r = rig(cfg(auto_gen_link_local=True, iid_mode=IidMode.EUI64, dup_addr_detect_transmits=1))
    ll = parse_ip("fe80::2:3ff:fe04:506")
    (ns,) = r.sent(NeighborSolicitation)
    assert ns.message.target == ll
    r.advance(1)
    assert r.m.addresses() == {ll: AddressKind.PERMANENT}


def test_no_link_local_auto_gen_for_loopback_nic() -> None:
    """No link-local address on a loopback NIC (as Linux)."""
    r = rig(cfg(auto_gen_link_local=True), loopback=True)
    assert r.m.addresses() == {}


def test_opaque_link_local_regenerated_after_dad_failure() -> None:
    """RFC 7217 §6: DAD_Counter + 1, up to 3 retries."""
    r = rig(cfg(auto_gen_link_local=True, dup_addr_detect_transmits=1))
    fe80 = bytes.fromhex("fe80") + bytes(14)
    for counter in range(4):
        want = opaque(fe80, counter)
        assert list(r.m.addresses()) == [want]
        na = NeighborAdvertisement(target=want, options=[TargetLinkLayer(PEER_MAC)])
        r.take(r.m.handle_na(r.now, parse_ip("fe80::99"), ALL_NODES, na))
    assert r.m.addresses() == {}  # 3 regenerations, then none
    assert [e.resolved for e in r.events("dad_result")] == [False] * 4
    assert r.m.stats.dad_regenerations == 3


def test_eui64_link_local_not_regenerated() -> None:
    r = rig(cfg(auto_gen_link_local=True, dup_addr_detect_transmits=1, iid_mode=IidMode.EUI64))
    ll = parse_ip("fe80::2:3ff:fe04:506")
    r.take(r.m.handle_ns(r.now, ANY, solicited_node_multicast(ll), NeighborSolicitation(target=ll)))
    assert r.m.addresses() == {}


# --------------------------------------------------------------------------- RS


def test_router_solicitation() -> None:
    """RFC 4861 §6.3.7: 3 RS 4 s apart after a random delay <= 1 s, to ff02::2; from ::
    (no SLLA) while there is no usable link-local, else with SLLA."""
    r = rig(
        cfg(
            max_rtr_solicitations=3,
            auto_gen_link_local=True,
            dup_addr_detect_transmits=1,
            max_dad_delay_s=0.0,
        )
    )
    r.advance(20)
    rs = r.sent(RouterSolicitation)
    times = [
        t for t, a in r.log if isinstance(a, SendNdp) and isinstance(a.message, RouterSolicitation)
    ]
    assert len(rs) == 3
    assert 0 < times[0] <= 1.0
    assert times[1] - times[0] == pytest.approx(4.0) and times[2] - times[1] == pytest.approx(4.0)
    assert all(a.dst == ALL_ROUTERS for a in rs)
    ll = opaque(bytes.fromhex("fe80") + bytes(14))
    first = rs[0] if times[0] < 1.0 else None
    if first is not None:  # the link-local was still tentative
        assert first.src == ANY and first.message.options == []
    assert rs[2].src == ll and rs[2].message.options == [SourceLinkLayer(MAC)]


def test_router_solicitation_stops_on_ra() -> None:
    r = rig(cfg(max_rtr_solicitations=3, max_rtr_solicitation_delay_s=0.0))
    r.advance(0)
    assert len(r.sent(RouterSolicitation)) == 1
    r.ra(router_lifetime=0)  # §6.3.7: only a non-zero router lifetime stops RS
    r.advance(4)
    assert len(r.sent(RouterSolicitation)) == 2
    r.ra(router_lifetime=100)
    r.advance(20)
    assert len(r.sent(RouterSolicitation)) == 2


# --------------------------------------------------------------------------- RA validation (RFC 4861 §6.1.2)


def _ra_bytes(src: bytes, ra: RouterAdvertisement) -> bytes:
    return ra.to_bytes(src, ALL_NODES)


def _corrupt(raw: bytes, **patch: int) -> bytearray:
    b = bytearray(raw)
    for k, v in patch.items():
        b[int(k[1:])] = v
    return b


VALID_RA = RouterAdvertisement(router_lifetime=1000)


@pytest.mark.parametrize(
    ("name", "src", "hop_limit", "payload", "checksum", "reason"),
    [
        ("NonLinkLocalSourceAddr", parse_ip("2001:db8::9"), 255, None, True, Drop.NDP_BAD_SOURCE),
        ("HopLimitNot255", ROUTER, 254, None, True, Drop.NDP_BAD_HOP_LIMIT),
        ("NonZeroCode", ROUTER, 255, "code", False, Drop.NDP_BAD_CODE),
        ("NDPPayloadTooSmall", ROUTER, 255, "short", False, Drop.NDP_TRUNCATED),
        ("OptionWithZeroLength", ROUTER, 255, "zero_opt", False, Drop.NDP_ZERO_LENGTH_OPTION),
        ("TruncatedPrefixInformation", ROUTER, 255, "short_pi", False, Drop.NDP_BAD_OPTION_LENGTH),
        ("RDNSSMulticast", ROUTER, 255, "rdnss_mc", False, Drop.NDP_BAD_OPTION_BODY),
        ("BadChecksum", ROUTER, 255, "checksum", True, Drop.ICMPV6_BAD_CHECKSUM),
    ],
)
def test_router_advert_validation(
    name: str, src: bytes, hop_limit: int, payload: str | None, checksum: bool, reason: Drop
) -> None:
    """gVisor TestRouterAdvertValidation: each invalid RA is dropped whole
    (no router, no RDNSS event); the valid one discovers the router."""
    r = rig()
    raw = bytearray(_ra_bytes(src, VALID_RA))
    if payload == "code":
        raw[1] = 1
    elif payload == "short":
        raw = raw[:15]
    elif payload == "zero_opt":
        raw += bytes((1, 0, 0, 0, 0, 0, 0, 0))
    elif payload == "short_pi":
        raw += bytes((3, 3)) + bytes(22)
    elif payload == "rdnss_mc":
        raw += bytearray(
            RouterAdvertisement(options=[RecursiveDns(10, (ALL_NODES,))]).to_bytes()[16:]
        )
    elif payload == "checksum":
        raw[2] ^= 0xFF
    pseudo = icmpv6_pseudo(src, ALL_NODES, len(raw)) if checksum else None
    with pytest.raises(MalformedPacket) as exc:
        r.m.handle_ndp(r.now, src, ALL_NODES, hop_limit, raw, pseudo=pseudo)
    assert exc.value.reason is reason
    assert r.m.routers() == []
    ok = _ra_bytes(ROUTER, VALID_RA)
    r.take(
        r.m.handle_ndp(
            r.now, ROUTER, ALL_NODES, 255, ok, pseudo=icmpv6_pseudo(ROUTER, ALL_NODES, len(ok))
        )
    )
    assert r.m.routers() == [ROUTER]


def test_handle_ra_rechecks_addresses() -> None:
    r = rig()
    with pytest.raises(MalformedPacket) as exc:
        r.m.handle_ra(0.0, ROUTER, 64, VALID_RA)
    assert exc.value.reason is Drop.NDP_BAD_HOP_LIMIT
    with pytest.raises(MalformedPacket) as exc:
        r.m.handle_ra(0.0, ADDR, 255, VALID_RA)
    assert exc.value.reason is Drop.NDP_BAD_SOURCE


def test_handle_ndp_dispatches_ns_na() -> None:
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.add()
    dst = solicited_node_multicast(ADDR)
    raw = NeighborSolicitation(target=ADDR).to_bytes(ANY, dst)
    r.take(r.m.handle_ndp(r.now, ANY, dst, 255, raw, pseudo=icmpv6_pseudo(ANY, dst, len(raw))))
    assert r.events("dad_result") == [DadResult(1, ADDR, False, "duplicate")]
    with pytest.raises(MalformedPacket) as exc:  # §7.1.1: DAD NS to a non-solicited-node group
        r.m.handle_ndp(r.now, ANY, ALL_NODES, 255, raw)
    assert exc.value.reason is Drop.NDP_BAD_DESTINATION
    rs = RouterSolicitation().to_bytes()
    assert r.m.handle_ndp(r.now, ROUTER, ALL_ROUTERS, 255, rs) == []


# --------------------------------------------------------------------------- M/O (RFC 4861 §4.2)


def test_dhcpv6_configuration_from_ndp_ra() -> None:
    """gVisor TestDHCPv6ConfigurationFromNDPDA: only transitions are reported."""
    r = rig()
    seq = [
        ((0, 0), None),
        ((0, 1), "other"),
        ((0, 1), None),
        ((1, 0), "managed"),
        ((1, 0), None),
        ((0, 0), "none"),
        ((0, 0), None),
        ((1, 1), "managed"),
        ((1, 1), None),
        ((1, 0), None),
        ((1, 1), None),
        ((0, 1), "other"),
        ((0, 1), None),
    ]
    for (mflag, oflag), want in seq:
        out = r.ra(flags=(0x80 if mflag else 0) | (0x40 if oflag else 0))
        got = [
            a.configuration.value for a in out if getattr(a, "type", "") == "dhcpv6_configuration"
        ]
        assert got == ([want] if want else []), ((mflag, oflag), got)
    assert r.m.dhcpv6 is Dhcpv6Configuration.OTHER


# --------------------------------------------------------------------------- routers (RFC 4861 §6.3.4)


def test_router_discovery() -> None:
    r = rig()
    assert r.ra(router_lifetime=0) == []  # unknown, lifetime 0: ignored
    out = r.ra(router_lifetime=1000)
    route = Route(ANY, 0, 1, ROUTER, 1024, "ra")
    assert AddRoute(route) in out
    assert [e.addr for e in r.events("router_discovered")] == [ROUTER]
    r.ra(ROUTER2, router_lifetime=6)
    r.ra(router_lifetime=2)  # shortens
    r.advance(1.9)
    assert r.events("router_invalidated") == []
    r.advance(0.2)
    assert [e.addr for e in r.events("router_invalidated")] == [ROUTER]
    assert RemoveRoute(route) in [a for _, a in r.log]
    r.ra(router_lifetime=1000)
    out = r.ra(router_lifetime=0)  # known, lifetime 0: at once
    assert [e.addr for e in r.events("router_invalidated")] == [ROUTER, ROUTER]
    r.advance(10)
    assert [e.addr for e in r.events("router_invalidated")] == [ROUTER, ROUTER, ROUTER2]
    assert r.m.routers() == []


def test_router_discovery_max_routers() -> None:
    r = rig()
    for i in range(12):
        r.ra(parse_ip(f"fe80::{i + 1}"), router_lifetime=100)
    assert len(r.events("router_discovered")) == 10
    assert r.m.stats.routers_over_limit == 2


@pytest.mark.parametrize(
    "config",
    [
        cfg(handle_ras=False),
        cfg(discover_default_routers=False),
        cfg(handle_ras=False, discover_default_routers=False),
    ],
)
def test_no_router_discovery(config: NdpConfig) -> None:
    r = rig(config)
    r.ra(router_lifetime=1000)
    assert r.events("router_discovered") == []


def test_no_router_discovery_when_forwarding() -> None:
    r = rig(forwarding=True)
    assert r.ra(router_lifetime=1000) == []
    assert r.m.stats.ras_ignored == 1


def test_ra_refresh_at_expiry_never_spuriously_invalidates() -> None:
    """Cancellable timers: an RA refreshing the lifetime in the loop turn where the timer
    is due (processed first) must not be followed by an invalidation."""
    r = rig()
    r.ra(router_lifetime=5)
    r.now = 5.0  # due now, but the loop handles the frame before the timers
    r.ra(router_lifetime=5)
    r.take(r.m.handle_timeout(r.now))
    assert r.events("router_invalidated") == []
    r.advance(5.0)
    assert len(r.events("router_invalidated")) == 1


# --------------------------------------------------------------------------- RA parameters (RFC 4861 §6.3.4)


def test_ra_parameters() -> None:
    r = rig(link_mtu=1500)
    out = r.ra(
        cur_hop_limit=42,
        reachable_time=20_000,
        retrans_timer=500,
        options=[Mtu(1400), SourceLinkLayer(PEER_MAC)],
    )
    params = {a.name: a.value for a in out if isinstance(a, SetNicParam)}
    assert params["cur_hop_limit"] == 42
    assert params["base_reachable_time"] == 20.0
    assert 10.0 <= params["reachable_time"] <= 30.0  # random factor 0.5-1.5
    assert params["retrans_timer"] == 0.5
    assert params["mtu"] == 1400
    assert UpdateNeighbour(ROUTER, PEER_MAC, True) in out
    # unchanged values: nothing; zero values: unspecified; out-of-range MTU ignored
    out = r.ra(cur_hop_limit=42, reachable_time=20_000, retrans_timer=0, options=[Mtu(1000)])
    assert [a for a in out if isinstance(a, SetNicParam)] == []
    out = r.ra(options=[Mtu(9000)])
    assert [a for a in out if isinstance(a, SetNicParam)] == []
    # the learnt RetransTimer paces DAD (RFC 4862 §5.4)
    r.m.set_config(cfg(dup_addr_detect_transmits=2))
    r.add()
    r.advance(0.49)
    assert len(r.sent(NeighborSolicitation)) == 1
    r.advance(0.02)
    assert len(r.sent(NeighborSolicitation)) == 2


# --------------------------------------------------------------------------- RDNSS / DNSSL


def test_ndp_recursive_dns_server_dispatch() -> None:
    r = rig()
    s1, s2, s3 = (parse_ip(f"2001:db8::{i}") for i in (53, 54, 55))
    for servers, lifetime in (((s1,), 2), ((s1, s2), 1), ((s1, s2, s3), 0), ((ROUTER,), INF)):
        out = r.ra(options=[RecursiveDns(lifetime, servers)])
        (ev,) = [a for a in out if getattr(a, "type", "") == "rdnss"]
        assert ev.servers == servers and ev.lifetime_s == lifetime
    r.ra(options=[RecursiveDns(5, (s1,))])
    assert len(r.events("rdnss")) == 5  # every RA, even unchanged


def test_dnssl() -> None:
    r = rig()
    out = r.ra(options=[DnsSearchList(300, ("example.com", "example.org"))])
    (ev,) = [a for a in out if getattr(a, "type", "") == "dnssl"]
    assert ev.domains == ("example.com", "example.org") and ev.lifetime_s == 300
    assert event_to_dict(ev) == {
        "type": "dnssl",
        "nic": 1,
        "domains": ["example.com", "example.org"],
        "lifetime_s": 300,
    }


# --------------------------------------------------------------------------- prefixes (RFC 4861 §6.3.4)


def test_prefix_discovery() -> None:
    r = rig()
    r.pi(P1, 0, 0, on_link=True, auto=False)  # unknown, VL 0: ignored
    assert r.events("prefix_discovered") == []
    out = r.pi(P1, 100, 0, on_link=True, auto=False)
    assert AddRoute(Route(P1, 64, 1, None, 1024, "ra")) in out
    r.pi(P2, 200, 0, on_link=True, auto=False, plen=48)
    r.pi(P1, 2, 0, on_link=True, auto=False)  # shortened: no 2 h rule for on-link
    r.advance(2.01)
    assert [(e.prefix, e.prefix_len) for e in r.events("prefix_invalidated")] == [(P1, 64)]
    r.pi(P2, 0, 0, on_link=True, auto=False, plen=48)  # known, VL 0: at once
    assert [(e.prefix, e.prefix_len) for e in r.events("prefix_invalidated")] == [
        (P1, 64),
        (P2, 48),
    ]
    assert r.m.prefixes() == []


def test_prefix_masked_and_skipped() -> None:
    r = rig()
    r.pi(parse_ip("2001:db8:1::99"), 100, 0, on_link=True, auto=False)
    r.pi(parse_ip("fe80::"), 100, 0, on_link=True, auto=True)  # link-local: skipped
    r.pi(ANY, 100, 0, on_link=True, auto=True, plen=0)  # /0: skipped
    assert r.m.prefixes() == [(P1, 64)] and r.m.addresses() == {}


def test_prefix_discovery_with_infinite_lifetime() -> None:
    """gVisor patches NDPInfiniteLifetime to 2 s: VL=2 never expires, VL=1
    expires, VL=3 counts as infinite, VL=0 invalidates."""
    r = rig(cfg(infinite_lifetime_s=2))
    r.pi(P1, 2, 0, on_link=True, auto=False)
    r.advance(100)
    assert r.events("prefix_invalidated") == []
    r.pi(P1, 1, 0, on_link=True, auto=False)
    r.advance(1.01)
    assert len(r.events("prefix_invalidated")) == 1
    r.pi(P1, 3, 0, on_link=True, auto=False)
    r.advance(100)
    assert len(r.events("prefix_invalidated")) == 1
    r.pi(P1, 0, 0, on_link=True, auto=False)
    assert len(r.events("prefix_invalidated")) == 2


def test_prefix_discovery_max_on_link_prefixes() -> None:
    r = rig()
    for i in range(12):
        r.pi(parse_ip(f"2001:db8:{i + 1}::"), 100, 0, on_link=True, auto=False)
    assert len(r.events("prefix_discovered")) == 10
    assert r.m.stats.prefixes_over_limit == 2


def test_no_prefix_discovery() -> None:
    for config, fwd in (
        (cfg(handle_ras=False), False),
        (cfg(discover_on_link_prefixes=False), False),
        (cfg(), True),
    ):
        r = rig(config, forwarding=fwd)
        r.pi(P1, 100, 0, on_link=True, auto=False)
        assert r.events("prefix_discovered") == []


# --------------------------------------------------------------------------- SLAAC (RFC 4862 §5.5)


def test_auto_gen_addr() -> None:
    r = rig()
    a1, a2 = opaque(P1), opaque(P2)
    r.pi(P1, 0, 0)  # VL 0: nothing
    assert r.m.addresses() == {}
    out = r.pi(P1, 100, 100)
    assert AddAddress(a1, 64, AddressKind.PERMANENT, "slaac", False, 100.0, 100.0) in out
    assert [e.addr for e in r.events("address_autogenerated")] == [a1]
    r.pi(P2, 100, 200)  # PL > VL: ignored
    assert a2 not in r.m.addresses()
    r.pi(P2, 100, 100)
    assert a2 in r.m.addresses()
    r.pi(P1, 100, 100, plen=48)  # /48: no address
    r.pi(P1, 2, 2)  # remaining 100 > 2 h? no: 100 < 7200 -> (e) 2: unchanged
    r.advance(99.9)
    assert a1 in r.m.addresses()
    r.advance(0.2)
    assert a1 not in r.m.addresses()
    assert [e.addr for e in r.events("address_invalidated")] == [a1, a2]


def test_no_auto_gen_addr() -> None:
    for config in (cfg(handle_ras=False), cfg(auto_gen_global_addresses=False)):
        r = rig(config)
        r.pi(P1, 100, 100)
        assert r.m.addresses() == {}


def test_auto_gen_addr_eui64() -> None:
    r = rig(cfg(iid_mode=IidMode.EUI64))
    r.pi(P1, 100, 100)
    assert list(r.m.addresses()) == [parse_ip("2001:db8:1:0:2:3ff:fe04:506")]


@pytest.mark.parametrize(
    ("first", "second", "want"),
    [
        (9999, 1, 4),
        (9999, 0, 4),
        (INF, 1, 4),
        (INF, 0, 4),
        (3, 1, 3),
        (9, 7, 7),
        (1, 3, 3),
        (2, 9999, 9999),
        (3, INF, None),
    ],
)
def test_auto_gen_addr_valid_lifetime_updates(first: int, second: int, want: int | None) -> None:
    """gVisor TestAutoGenAddrValidLifetimeUpdates with the 2 h shrunk to 4 s."""
    r = rig(cfg(min_valid_lifetime_for_update_s=4.0))
    r.pi(P1, first, 0)
    r.pi(P1, second, 0)
    addr = opaque(P1)
    if want is None:
        r.advance(100000)
        assert addr in r.m.addresses()
        return
    r.advance(want - 0.01)
    assert addr in r.m.addresses()
    r.advance(0.02)
    assert addr not in r.m.addresses()


def test_auto_gen_addr_finite_to_infinite_to_finite_vl() -> None:
    r = rig(cfg(min_valid_lifetime_for_update_s=4.0))
    addr = opaque(P1)
    r.pi(P1, 2, 0)
    r.pi(P1, INF, 0)
    r.advance(10)
    assert addr in r.m.addresses()
    r.pi(P1, 6, 0)  # > remaining (infinite)? no; 6 > 4 s rule: yes
    r.advance(5.99)
    assert addr in r.m.addresses()
    r.advance(0.02)
    assert addr not in r.m.addresses()


def test_auto_gen_addr_deprecate_from_pi() -> None:
    r = rig()
    a1 = opaque(P1)
    r.pi(P1, 100, 100)
    out = r.pi(P1, 100, 0)
    assert SetAddressKind(a1, AddressKind.DEPRECATED) in out
    assert [e.addr for e in r.events("address_deprecated")] == [a1]
    r.pi(P1, 100, 0)  # already deprecated: no event
    assert len(r.events("address_deprecated")) == 1
    out = r.pi(P1, 100, 100)  # silently preferred again
    assert SetAddressKind(a1, AddressKind.PERMANENT) in out
    assert len(r.events("address_deprecated")) == 1
    r.pi(P2, 100, 0)  # new with PL 0: deprecated from the start
    assert r.m.addresses()[opaque(P2)] is AddressKind.DEPRECATED


def test_auto_gen_addr_timer_deprecation() -> None:
    r = rig(cfg(min_valid_lifetime_for_update_s=2.0))
    a1 = opaque(P1)
    r.pi(P1, 100, 100)
    r.pi(P1, 2, 1)
    r.advance(0.99)
    assert r.events("address_deprecated") == []
    r.advance(0.02)
    assert [e.addr for e in r.events("address_deprecated")] == [a1]
    assert r.m.addresses()[a1] is AddressKind.DEPRECATED
    r.pi(P1, 2, 0)
    assert len(r.events("address_deprecated")) == 1
    r.pi(P1, 2, 1)  # un-deprecates, then deprecates again after 1 s
    assert r.m.addresses()[a1] is AddressKind.PERMANENT
    r.advance(1.01)
    assert len(r.events("address_deprecated")) == 2
    r.advance(1.0)
    assert [e.addr for e in r.events("address_invalidated")] == [a1]
    # VL == PL: deprecation and invalidation due together: never a
    # deprecation after the invalidation.
    r.pi(P2, 2, 2)
    r.advance(5)
    kinds = [
        a.type
        for _, a in r.log
        if getattr(a, "type", "") in ("address_deprecated", "address_invalidated")
        and a.addr == opaque(P2)
    ]
    assert kinds in (["address_deprecated", "address_invalidated"], ["address_invalidated"])


def test_auto_gen_addr_removal() -> None:
    r = rig()
    a1 = opaque(P1)
    r.pi(P1, 100, 100)
    out = r.take(r.m.remove_address(r.now, a1))
    assert RemoveAddress(a1) in out
    assert [e.addr for e in r.events("address_invalidated")] == [a1]
    r.advance(200)
    assert len(r.events("address_invalidated")) == 1  # timers cancelled
    r.pi(P1, 100, 100)  # the prefix again: a new address
    assert a1 in r.m.addresses()


def test_auto_gen_addr_static_conflict() -> None:
    r = rig()
    a1 = opaque(P1)
    r.add(a1, 64)
    r.pi(P1, 100, 100)
    assert r.events("address_autogenerated") == []
    r.advance(200)
    assert r.m.addresses() == {a1: AddressKind.PERMANENT}
    assert r.events("address_invalidated") == []


def test_auto_gen_addr_with_opaque_iid() -> None:
    """gVisor TestAutoGenAddrWithOpaqueIID: two prefixes, prefix 1 with VL 1 s."""
    r = rig()
    r.pi(P1, 1, 1)
    r.pi(P2, 100, 100)
    assert set(r.m.addresses()) == {opaque(P1), opaque(P2)}
    r.advance(1.01)
    assert set(r.m.addresses()) == {opaque(P2)}


def test_slaac_dad_failure_regenerates() -> None:
    """RFC 7217 §6: the SLAAC address is regenerated with DAD_Counter + 1 and keeps
    the prefix's lifetimes."""
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.pi(P1, 100, 100)
    a0, a1 = opaque(P1, 0), opaque(P1, 1)
    assert r.m.addresses() == {a0: AddressKind.TENTATIVE}
    r.advance(0.5)
    na = NeighborAdvertisement(target=a0, options=[TargetLinkLayer(PEER_MAC)])
    r.take(r.m.handle_na(r.now, parse_ip("fe80::99"), ALL_NODES, na))
    assert r.m.addresses() == {a1: AddressKind.TENTATIVE}
    add = [a for _, a in r.log if isinstance(a, AddAddress) and a.addr == a1][0]
    assert add.valid_lifetime_s == pytest.approx(99.5)
    r.advance(1)
    assert r.m.addresses() == {a1: AddressKind.PERMANENT}
    r.advance(100)
    assert r.m.addresses() == {}
    assert [e.addr for e in r.events("address_invalidated")] == [a1]


def test_slaac_deprecated_while_tentative() -> None:
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.pi(P1, 100, 0)
    r.advance(1)
    assert r.m.addresses() == {opaque(P1): AddressKind.DEPRECATED}


def test_autogen_limit() -> None:
    r = rig(cfg(max_autogen_addresses=2))
    for i in range(3):
        r.pi(parse_ip(f"2001:db8:{i + 1}::"), 100, 100)
    assert len(r.m.addresses()) == 2 and r.m.stats.autogen_over_limit == 1


# --------------------------------------------------------------------------- router mode (RFC 4861 §6.2)


def test_cleanup_host_only_state_on_becoming_router() -> None:
    r = rig()
    for src, prefix in ((ROUTER, P1), (ROUTER2, P2)):
        r.pi(prefix, 100, 100, on_link=True, src=src, router_lifetime=100)
    assert len(r.m.addresses()) == 2
    out = r.take(r.m.set_forwarding(r.now, True))
    assert len(r.events("router_invalidated")) == 2
    assert len(r.events("prefix_invalidated")) == 2
    assert len(r.events("address_invalidated")) == 2
    assert sum(isinstance(a, RemoveRoute) for a in out) == 4
    assert sum(isinstance(a, RemoveAddress) for a in out) == 2
    assert r.m.addresses() == {} and r.m.is_router
    r.advance(1000)
    n = len(r.log)
    assert r.ra(router_lifetime=100) == []  # RAs ignored
    assert len(r.log) == n
    assert r.m.set_forwarding(r.now, True) == []  # no change: nothing
    r.take(r.m.set_forwarding(r.now, False))  # nothing restored
    assert r.m.routers() == [] and r.m.addresses() == {}


def test_leaving_router_mode_solicits_again() -> None:
    r = rig(cfg(max_rtr_solicitations=1, max_rtr_solicitation_delay_s=0.0), forwarding=True)
    r.advance(10)
    assert r.sent(RouterSolicitation) == []
    r.take(r.m.set_forwarding(r.now, False))
    r.advance(0)
    assert len(r.sent(RouterSolicitation)) == 1


def test_stop_invalidates_discovered_state() -> None:
    r = rig(cfg(auto_gen_link_local=True))
    r.pi(P1, 100, 100, on_link=True, router_lifetime=100)
    r.add()
    out = r.stop()
    assert not any(isinstance(a, (SendMld, SendNdp)) for a in out)
    assert {a.type for a in out if hasattr(a, "type")} == {
        "router_invalidated",
        "prefix_invalidated",
        "address_invalidated",
    }
    assert list(r.m.addresses()) == [ADDR]  # the link-local and SLAAC ones are gone
    r.start()
    assert len(r.m.addresses()) == 2  # link-local regenerated


# --------------------------------------------------------------------------- events


def test_events_are_json() -> None:
    r = rig(cfg(dup_addr_detect_transmits=1))
    r.ra(
        router_lifetime=100,
        flags=0x80,
        options=[PrefixInformation(64, True, True, 100, 100, P1), RecursiveDns(10, (ADDR,))],
    )
    r.advance(2)
    types = set()
    for _, a in r.log:
        if hasattr(a, "type"):
            d = event_to_dict(a)
            json.dumps(d)
            types.add(d["type"])
            assert d["nic"] == 1
    assert types == {
        "dhcpv6_configuration",
        "router_discovered",
        "prefix_discovered",
        "address_autogenerated",
        "rdnss",
        "dad_result",
    }
    ev = r.events("router_discovered")[0]
    assert event_to_dict(ev) == {
        "type": "router_discovered",
        "nic": 1,
        "addr": "fe80::1",
        "lifetime_s": 100,
        "preference": "medium",
    }
