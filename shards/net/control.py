"""Shard 0's control plane for the network layer: the NIC, address and route
state (``NetOwner``), neighbour resolution (ARP, RFC 826; NS/NA, RFC 4861
§7.2), and the requests of ``shardnet ctl``.

At start it builds the stack the configuration describes: the link's NIC
(its MAC, MTU, the configured addresses, gateways as default routes), its
NDP machine (``ndp.NdpMachine``: a link-local address with an RFC 7217
opaque IID by default (RFC 8064), modified EUI-64 when configured, RFC 4291
App. A; DAD, router and prefix discovery, SLAAC), its multicast membership
machines (MLD and IGMP, ``multicast.py``) and the loopback NIC
``lo`` (127.0.0.1/8, ::1/128, never a link-local, as Linux). The same
happens after a restart of shard 0: its state is rebuilt from the
configuration.

Other shards resolve through the replicated neighbour table; when it lacks
an entry they ask here (``resolve_for``) and get it by replication. NUD
(RFC 4861 §7.3) runs in ``neighbour.NeighbourTable``; its state changes
are ``nud_state`` events, and they rank the NDP machine's default routers
(RFC 4861 §6.3.6: a router whose entry fails gives way to the others).
ICMPv6 and ICMPv4 redirects (RFC 4861 §8, RFC 1122 §3.2.2.2) are
checked against the route table here and become host routes
(``redirect.Redirects``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import random
import struct
from collections.abc import Callable
from typing import Any, Protocol

from shardnet.common.addr import format_ip, format_mac, is_unicast, parse_ip
from shardnet.common.config import StackConfig
from shardnet.common.wire.arp import ArpView
from shardnet.common.wire.dhcp4 import CLIENT_PORT, SERVER_PORT, Dhcp4View
from shardnet.common.wire.dhcp6 import ALL_DHCP_SERVERS, Dhcp6View
from shardnet.common.wire.dhcp6 import CLIENT_PORT as CLIENT_PORT6
from shardnet.common.wire.dhcp6 import SERVER_PORT as SERVER_PORT6
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetView
from shardnet.common.wire.icmpv4 import ICMP_REDIR_HOSTTOS, Icmpv4View
from shardnet.common.wire.icmpv6 import ICMPV6_MLD_QUERY, ICMPV6_MLD_REPORT, message_bytes
from shardnet.common.wire.ipv4 import IPPROTO_IGMP, IPPROTO_UDP, Ipv4View
from shardnet.common.wire.ipv6 import (
    ALL_NODES,
    NH_HOPOPTS,
    NH_ICMPV6,
    Ipv6View,
    solicited_node_multicast,
)
from shardnet.common.wire.mld import MldQueryView, MldV1MessageView
from shardnet.common.wire.ndp import (
    NDP_HOP_LIMIT,
    NdpView,
    NeighborAdvertisement,
    NeighborSolicitation,
    Redirect,
    SourceLinkLayer,
    TargetLinkLayer,
    validate_addresses,
)

from .acd import (
    AcdAbandoned,
    AcdConflict,
    AcdDefend,
    AcdDefended,
    AcdMachine,
    AcdProbe,
    AcdReady,
)
from .actions import (
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
from .arp import ANNOUNCE_INTERVAL_S, ANNOUNCE_NUM, ArpHandler
from .datagram import Delivery
from .dhcp4 import Dhcp4Client, SendDhcp4, StoreLease
from .dhcp6 import Dhcp6Client, Dhcp6Refused, Dhcp6State, SendDhcp6
from .leasefile import LeaseFile
from .mld import SendMld
from .model import AddressKind, Nic, PrimaryBehavior
from .multicast import GroupControl
from .ndp import (
    DadResult,
    Dhcpv6Event,
    NdpConfig,
    NdpMachine,
    ProbeRouter,
    SendNdp,
    event_to_dict,
)
from .neighbour import NeighbourConfig, NeighbourTable, NudState
from .ops import NetOps
from .ratelimit import TokenBucket
from .redirect import Redirects
from .route import Route, RouteDecision
from .stack import NetStack, Resolver
from .state import LOOPBACK_MTU, LOOPBACK_NAME, NetError, NetOwner

# RFC 3810 §5 / RFC 2711: Hop-by-Hop header of MLD messages: next header
# ICMPv6, Router Alert (value 0: MLD), PadN to 8 bytes.
MLD_HOP_BY_HOP = bytes((58, 0, 5, 2, 0, 0, 1, 0))

log = logging.getLogger("shardnet.net")

LINK_NIC_ID = 1
IPV4_ANY = bytes(4)
IPV6_ANY = bytes(16)
_DHCP_PORTS = SERVER_PORT.to_bytes(2, "big") + CLIENT_PORT.to_bytes(2, "big")
_DHCP6_PORTS = SERVER_PORT6.to_bytes(2, "big") + CLIENT_PORT6.to_bytes(2, "big")


class _Timed(Protocol):
    def next_deadline(self) -> float | None: ...


# New neighbours shard 0 takes per second, and in a burst. Learning one (an
# NS, RS, RA, NA or ARP from a sender the tables do not know) costs about a
# millisecond of shard 0: the entry, its publication to every shard, NUD
# events, the answer. Past this rate such frames are dropped before any of
# that, and counted: a flood of ever new senders costs shard 0 a bounded
# share of its time and leaves it answering, while a real new peer retries
# (RFC 4861 §7.2.2, RFC 1122 §2.3.2.1: about every second) and gets through,
# and peers already known never wait.
NEW_SENDER_RATE_PER_S = 500.0
NEW_SENDER_BURST = 500


class ControlPlane(Resolver):
    def __init__(
        self,
        owner: NetOwner,
        stack: NetStack,
        clock: Callable[[], float],
        *,
        neighbour_config: NeighbourConfig | None = None,
        ndp_config: NdpConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.owner = owner
        self.stack = stack
        self.clock = clock
        self.neighbour_config = neighbour_config or NeighbourConfig()
        # One table per (NIC, family): ARP for IPv4, NS/NA for IPv6.
        self.v4: dict[int, NeighbourTable] = {}
        self.v6: dict[int, NeighbourTable] = {}
        self.arp: dict[int, ArpHandler] = {}
        # RFC 5227 conflict detection per Ethernet NIC, for the addresses
        # the ``acd`` setting names ("off", "dhcp" or "all").
        self.acd: dict[int, AcdMachine] = {}
        self.acd_mode = "dhcp"
        self.ops = NetOps(owner, self.neighbour_rows)
        self.ndp: dict[int, NdpMachine] = {}  # per Ethernet NIC
        self.ndp_config = ndp_config or NdpConfig()
        self.dhcp4: dict[int, Dhcp4Client] = {}  # --dhcp4: the link NIC's client
        self.lease_file: LeaseFile | None = None
        self.dhcp6: dict[int, Dhcp6Client] = {}  # --dhcp6 auto: the link NIC's client
        self.rng = rng or random.Random()
        # RFC 8981 §3.3.1 (RFC 4086): temporary IIDs must not be predictable
        # from the other random values the stack shows, so they come from
        # the system's generator unless a test fixes the sequence.
        self.iid_rng: random.Random = self.rng if rng is not None else random.SystemRandom()
        self._behaviors: dict[tuple[int, bytes], PrimaryBehavior] = {}  # asked with addr_add
        self._nud_seen: dict[int, dict[bytes, Any]] = {}  # last NUD states reported, per NIC
        # Gratuitous ARPs still to repeat: (due, NIC, address, sends left).
        self._announcements: list[tuple[float, int, bytes, int]] = []
        self.emit_event: Callable[[dict[str, Any]], None] = lambda event: None
        stack.resolver = self
        stack.ndp_hook = self.handle_ndp
        # Multicast groups (sockets' and the host's own): IGMP and MLD per NIC.
        self.groups = GroupControl(owner, stack, clock, self.apply, rng=self.rng)
        stack.transport_v4[IPPROTO_IGMP] = self.groups.handle_igmp
        self.redirects = Redirects()
        stack.redirect_hook_v4 = self.handle_redirect_v4
        self.new_senders = TokenBucket(NEW_SENDER_RATE_PER_S, NEW_SENDER_BURST)

    # --- the stack the configuration describes ------------------------------------
    def bootstrap(
        self, config: StackConfig, *, mac: bytes, mtu: int, link_as: tuple[str, str] | None = None
    ) -> None:
        """``link_as``: the link NIC's (name, kind) when the configuration
        names no device (the embedded stack's channel link)."""
        owner = self.owner
        self.acd_mode = config.acd
        name, kind = link_as or (config.link_name, config.link_kind)
        link = owner.create_nic(name, mac=mac, mtu=mtu, kind=kind)
        assert link.id == LINK_NIC_ID  # the first NIC: frames from the ring arrive on it
        point_to_point = kind == "tun"
        if not point_to_point:
            self._tables_for(link)
        lo = owner.create_nic(
            LOOPBACK_NAME, mac=bytes(6), mtu=LOOPBACK_MTU, loopback=True, kind="loopback"
        )
        owner.add_address(lo.id, parse_ip("127.0.0.1"), 8, origin="loopback")
        owner.add_address(lo.id, parse_ip("::1"), 128, origin="loopback")
        # NDP (RFC 4861/4862) for the link: its start generates the
        # link-local address (RFC 7217 opaque IID by default) and
        # runs DAD on it, solicits routers. MLD and IGMP run first: the
        # solicited-node joins before DAD are reported (RFC 4862 §5.4.2).
        # A point-to-point TUN has no link-layer addresses: no NDP machine
        # (no link-local, DAD, RS or SLAAC: RFC 4861 §1 leaves NDP to links
        # with addresses), no ARP, no IGMP/MLD; its addresses are permanent
        # at once and every next hop is the peer (NetView.next_hop_mac).
        if not point_to_point:
            secret = bytes.fromhex(config.secret) if config.secret else b""
            # A forwarding stack is a router (RFC 4861 §6.2): no RS, RAs ignored, NA with R.
            machine = self.ndp[link.id] = NdpMachine(
                link.id, link.name, mac, self.rng, self.ndp_config, secret_key=secret,
                link_mtu=mtu, forwarding=config.forwarding,
                reachability=self._probably_reachable(link.id), iid_rng=self.iid_rng,
            )  # fmt: skip
            self.groups.add_nic(link.id, self.ndp_config.mld(), machine.usable_link_local)
            self.apply(link.id, machine.start(self.clock()))
        # Replicated so every shard forwards (or not) like shard 0.
        owner.publish(owner.owner.set("settings", "stack", {"forwarding": config.forwarding}))
        for text in (*config.ipv4, *config.ipv6):
            address, _, plen = text.partition("/")
            self.add_address(link.id, parse_ip(address), int(plen))
        for gateway in (config.gateway4, config.gateway6):
            if gateway is not None:
                gw = parse_ip(gateway)
                owner.add_route(Route(bytes(len(gw)), 0, link.id, gw, 0, "static"))
        if config.dhcp4 and not point_to_point:
            # RFC 2131: the link's address, router and DNS servers from a
            # server; the lease remembered in the state directory (INIT-REBOOT).
            self.lease_file = LeaseFile(config.state_dir, name, mac)
            client = self.dhcp4[link.id] = Dhcp4Client(
                link.id, mac, self.rng, remembered=self.lease_file.load()
            )
            self.apply(link.id, client.start(self.clock()))
        if config.dhcp6 == "auto" and link.id in self.ndp:
            # RFC 8415, started by the RAs' M and O flags (RFC 4861 §4.2).
            client6 = self.dhcp6[link.id] = Dhcp6Client(link.id, mac, self.rng)
            self._apply6(link.id, client6.start(self.clock()))

    def handle_dhcp4(self, d: Delivery) -> bool:
        """UDP from a DHCP server's port to the client's (RFC 2131 §4.1):
        the NIC's client takes it (True), or it is an ordinary datagram."""
        return self._handle_dhcp(d, self.dhcp4.get(d.nic), _DHCP_PORTS, Dhcp4View, "dhcp")

    def handle_dhcp6(self, d: Delivery) -> bool:
        """UDP from a DHCPv6 server's port to the client's (RFC 8415 §7.2),
        likewise."""
        return self._handle_dhcp(d, self.dhcp6.get(d.nic), _DHCP6_PORTS, Dhcp6View, "dhcp6")

    def _handle_dhcp(
        self, d: Delivery, client: Dhcp4Client | Dhcp6Client | None, ports: bytes, view: Any,
        layer: str,
    ) -> bool:  # fmt: skip
        payload = d.payload
        if client is None or len(payload) < 8 or payload[0:4] != ports:
            return False
        counters = self.stack.counters
        try:
            msg = view.checked(payload[8 : (payload[4] << 8) | payload[5]]).message()
        except MalformedPacket as exc:
            counters.refuse(layer, exc.reason)
            return True
        result = client.handle(self.clock(), msg, d.src)
        if isinstance(result, Drop):
            counters.refuse(layer, result)
        elif isinstance(client, Dhcp6Client):
            self._apply6(d.nic, result)
        else:
            self.apply(d.nic, result)
        return True

    def stop_dhcp(self) -> bool:
        """At shutdown: every lease released (RFC 2131 §4.4.6, RFC 8415
        §18.2.7); True when a DHCPRELEASE was sent (it may wait for the
        server's MAC; a DHCPv6 Release goes to a multicast group)."""
        for nic_id, client6 in self.dhcp6.items():
            self._apply6(nic_id, client6.stop(self.clock()))
        released = False
        for nic_id, client in self.dhcp4.items():
            actions = client.stop(self.clock())
            released = released or any(isinstance(a, SendDhcp4) for a in actions)
            self.apply(nic_id, actions)
        return released

    def resolving_v4(self) -> bool:
        """An ARP resolution is under way (packets wait for it)."""
        return any(table.incomplete for table in self.v4.values())

    def add_address(self, nic_id: int, addr: bytes, prefix_len: int, **kw: Any) -> None:
        machine = self.ndp.get(nic_id)
        if len(addr) == 16 and machine is not None:
            # RFC 4862 §5.4: tentative until DAD succeeds.
            self.apply(
                nic_id,
                machine.add_address(self.clock(), addr, prefix_len, kw.get("origin", "static")),
            )
            return
        if self._probe_first(nic_id, addr, kw.get("origin", "static")):
            # RFC 5227 §2.1: tentative (unused, unanswered) until probed.
            self.owner.add_address(nic_id, addr, prefix_len, kind=AddressKind.TENTATIVE, **kw)
            self.apply(nic_id, self.acd[nic_id].probe(self.clock(), addr))
            return
        self.owner.add_address(nic_id, addr, prefix_len, **kw)
        self._announce(nic_id, addr)

    def _probe_first(self, nic_id: int, addr: bytes, origin: str) -> bool:
        """The ``acd`` setting asks for probing this IPv4 address."""
        if len(addr) != 4 or nic_id not in self.acd or self.acd_mode == "off":
            return False
        return self.acd_mode == "all" or origin == "dhcp"

    def _announce(self, nic_id: int, addr: bytes) -> None:
        """RFC 5227 §2.3/§3: announce a new IPv4 address with a gratuitous
        ARP, ANNOUNCE_NUM times ANNOUNCE_INTERVAL_S apart (the repeats are
        timers, dropped if the address goes first)."""
        arp = self.arp.get(nic_id)
        if len(addr) != 4 or arp is None:
            return
        self.stack.writer.write((arp.announce(addr),))
        if ANNOUNCE_NUM > 1:
            self._announcements.append(
                (self.clock() + ANNOUNCE_INTERVAL_S, nic_id, addr, ANNOUNCE_NUM - 1)
            )

    def _announce_due(self, now: float) -> None:
        pending, self._announcements = self._announcements, []
        for due, nic_id, addr, left in pending:
            if due > now:
                self._announcements.append((due, nic_id, addr, left))
                continue
            a = self.owner.view.local.get(addr)
            arp = self.arp.get(nic_id)
            if a is None or a.nic != nic_id or arp is None:
                continue  # the address went (or its NIC is down): nothing to announce
            self.stack.writer.write((arp.announce(addr),))
            if left > 1:
                self._announcements.append((now + ANNOUNCE_INTERVAL_S, nic_id, addr, left - 1))

    def _probably_reachable(self, nic_id: int) -> Callable[[bytes], bool]:
        """RFC 4861 §6.3.6: a router is reachable or probably reachable when
        its neighbour entry is in any state but INCOMPLETE."""
        table = self.v6[nic_id]

        def reachable(ip: bytes) -> bool:
            state = table.state(ip)
            return state is not None and state is not NudState.INCOMPLETE

        return reachable

    def _tables_for(self, nic: Nic) -> None:
        v4 = self.v4[nic.id] = NeighbourTable(self.neighbour_config)
        self.v6[nic.id] = NeighbourTable(self.neighbour_config)
        view = self.owner.view

        def is_ours(ip: bytes, nic_id: int = nic.id) -> bool:
            a = view.local.get(ip)
            return a is not None and a.nic == nic_id

        def source_for(ip: bytes, nic_id: int = nic.id) -> bytes | None:
            return self.stack.ipv4_source(nic_id, ip)

        self.arp[nic.id] = ArpHandler(v4, nic.mac, is_ours, source_for)
        self.acd[nic.id] = AcdMachine(nic.id, nic.mac, self.rng)

    # --- requests ------------------------------------------------------------------------
    def handle_request(self, op: str, args: dict[str, Any]) -> Any:
        if op in ("ndp_get", "ndp_set"):
            return self._ndp_config(op, args)
        if op == "forwarding":
            if "on" in args:
                self.set_forwarding(bool(args["on"]))
            return {"forwarding": self.stack.forwarding}
        if op == "groups":
            return self.groups.rows()
        if op == "routes":
            return self._route_rows(self.ops.handle(op, args))
        if op == "addrs":
            return self._addr_rows(self.ops.handle(op, args))
        if op == "nic_set":
            nic = self.owner.nic(str(args.get("name")))
            was = nic.enabled
            row = self.ops.handle(op, args)
            if bool(args.get("enabled", True)) != was:
                self._nic_enabled(nic.id, not was)
            return row
        if op == "reassembly_expired":
            self.stack.reassembly_expired(bytes(args["packet"]))
            return None
        if op in ("addr_add", "addr_del"):
            nic = self.owner.nic(str(args.get("nic")))
            text = str(args.get("address"))
            machine = self.ndp.get(nic.id)
            if ":" in text and machine is not None:  # IPv6: through NDP (DAD, MLD)
                addr = parse_ip(text.split("/")[0])
                if op == "addr_add":
                    self.ops.check_addr_add(args)
                    behavior = PrimaryBehavior(args.get("behavior", "can-be-primary"))
                    self._behaviors[(nic.id, addr)] = behavior  # for the AddAddress to come
                    plen = int(text.partition("/")[2])
                    self.apply(nic.id, machine.add_address(self.clock(), addr, plen))
                    return self.owner.address(nic.id, addr).to_row()
                self.owner.address(nic.id, addr)  # ENOENT-like error when it is not there
                self.apply(nic.id, machine.remove_address(self.clock(), addr))
                if f"{nic.id}/{format_ip(addr)}" in self.owner.view.addresses:
                    self.owner.remove_address(nic.id, addr)
                return None
            value = self.ops.handle(op, args)
            machine4 = self.acd.get(nic.id)
            if op == "addr_add":
                addr = parse_ip(value["addr"])
                if self._probe_first(nic.id, addr, "static") and machine4 is not None:
                    # RFC 5227 §2.1: tentative until probed (in the same turn
                    # as the addition: no packet sees it usable).
                    value = self.owner.set_address_kind(
                        nic.id, addr, AddressKind.TENTATIVE
                    ).to_row()
                    self.apply(nic.id, machine4.probe(self.clock(), addr))
                else:
                    self._announce(nic.id, addr)
            elif machine4 is not None:
                machine4.forget(parse_ip(text.split("/")[0]))
            return value
        return self.ops.handle(op, args)

    def _nic_enabled(self, nic_id: int, up: bool) -> None:
        """``ctl nic down``/``up``: NDP stops (routers, prefixes and SLAAC
        addresses learnt are dropped) and starts again as on a new
        attachment (RFC 4862 §5.3: every address through DAD again, router
        solicitations); IGMP/MLD go quiet and report every group again."""
        machine = self.ndp.get(nic_id)
        now = self.clock()
        if machine is not None:
            self.apply(nic_id, machine.start(now) if up else machine.stop(now))
        client = self.dhcp4.get(nic_id)
        if client is not None:  # RFC 2131 §3.2: INIT-REBOOT when the NIC comes back
            self.apply(nic_id, client.start(now) if up else client.stop(now, release=False))
        client6 = self.dhcp6.get(nic_id)
        if client6 is not None:  # RFC 8415 §18.2.12 would Confirm; this client solicits again
            self._apply6(nic_id, client6.start(now) if up else client6.stop(now, release=False))
        if not up:
            self.apply(nic_id, self.redirects.forget_nic(nic_id))
        self.groups.nic_enabled(nic_id, up)
        acd = self.acd.get(nic_id)
        if up and acd is not None:
            # RFC 5227 §2.1: probe again on a new attachment to a link.
            for addr in list(acd.entries):
                if f"{nic_id}/{format_ip(addr)}" in self.owner.view.addresses:
                    self.owner.set_address_kind(nic_id, addr, AddressKind.TENTATIVE)
                    self.apply(nic_id, acd.probe(now, addr))

    def set_forwarding(self, on: bool) -> None:
        """Router or host (RFC 4861 §6.2): every shard forwards from now on
        (the setting is replicated), and NDP turns router — discovered routers, prefixes
        and SLAAC addresses are invalidated with events, RAs ignored — or
        back to host (router solicitation again)."""
        self.stack.forwarding = on
        self.owner.publish(self.owner.owner.set("settings", "stack", {"forwarding": on}))
        for nic_id, machine in self.ndp.items():
            self.apply(nic_id, machine.set_forwarding(self.clock(), on))
        self._withdraw_redirects()

    def _ndp_config(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A NIC's NDP configuration, read or changed at run time."""
        nic = self.owner.nic(args.get("nic") or LINK_NIC_ID)
        machine = self.ndp.get(nic.id)
        if machine is None:
            raise NetError(errno.EOPNOTSUPP, f"{nic.name} runs no NDP")
        if op == "ndp_set":
            settings = {k: v for k, v in (args.get("settings") or {}).items()}
            try:
                config = NdpConfig.from_settings(settings, machine.config)
            except ValueError as exc:
                raise NetError(errno.EINVAL, str(exc)) from None
            self.apply(nic.id, machine.set_config(config, self.clock()))
            mld = self.groups.mld.get(nic.id)
            if mld is not None:
                mld.set_config(machine.config.mld())
            self._withdraw_redirects()
        return machine.config.as_settings()

    # --- the machines' actions (they never touch the tables themselves) ------------------
    def apply(self, nic_id: int, actions: list[Any]) -> None:
        owner, now = self.owner, self.clock()
        for act in actions:
            if isinstance(act, SendNdp):
                body = act.message.to_bytes(act.src, act.dst)
                self.stack.send_ipv6(
                    act.dst, NH_ICMPV6, body, src=act.src, nic_id=nic_id, hop_limit=NDP_HOP_LIMIT
                )
            elif isinstance(act, SendMld):
                # RFC 3810 §5: hop limit 1 and a Hop-by-Hop Router Alert (RFC 2711).
                body = MLD_HOP_BY_HOP + message_bytes(act.report, act.src, act.dst)
                self.stack.send_ipv6(
                    act.dst, NH_HOPOPTS, body, src=act.src, nic_id=nic_id, hop_limit=1
                )
            elif isinstance(act, SendDhcp4):
                # RFC 2131 §4.1: from port 68 to port 67; broadcast until bound.
                dgram = bytearray(8) + act.message.to_bytes()
                dgram[0:6] = struct.pack("!HHH", CLIENT_PORT, SERVER_PORT, len(dgram))
                self.stack.send_ipv4(
                    act.dst, IPPROTO_UDP, dgram, src=act.src, nic_id=nic_id, checksum_at=6
                )
            elif isinstance(act, SendDhcp6):
                self._send_dhcp6(nic_id, act)
            elif isinstance(act, Dhcp6Refused):
                self.stack.counters.refuse("dhcp6", act.reason)
            elif isinstance(act, StoreLease):
                if self.lease_file is not None:
                    self.lease_file.store(act.address, act.server)
            elif isinstance(act, JoinGroup | LeaveGroup):
                self.groups.host_join(nic_id, act.group, isinstance(act, JoinGroup))
            elif isinstance(act, AddAddress):
                probe = self._probe_first(nic_id, act.addr, act.origin)
                try:
                    owner.add_address(
                        nic_id, act.addr, act.prefix_len,
                        kind=AddressKind.TENTATIVE if probe else act.kind, origin=act.origin,
                        connected_route=act.connected_route,
                        behavior=self._behaviors.pop((nic_id, act.addr), PrimaryBehavior.CAN_BE_PRIMARY),
                    )  # fmt: skip
                except NetError as exc:
                    log.warning("could not add %s: %s", format_ip(act.addr), exc)
                else:
                    if probe:  # RFC 5227 §2.1 (RFC 2131 §4.4.1: a client should probe)
                        self.apply(nic_id, self.acd[nic_id].probe(now, act.addr))
                    else:
                        self._announce(nic_id, act.addr)  # an IPv4 one (DHCP): gratuitous ARP
            elif isinstance(act, AcdProbe | AcdReady | AcdDefend):
                self._acd_action(nic_id, act)
            elif isinstance(act, AcdConflict | AcdDefended | AcdAbandoned):
                self.emit_event(act.as_event())
                if not isinstance(act, AcdDefended):
                    self._acd_lost(nic_id, act.addr)
            elif isinstance(act, SetAddressKind):
                if f"{nic_id}/{format_ip(act.addr)}" in owner.view.addresses:
                    owner.set_address_kind(nic_id, act.addr, act.kind)
            elif isinstance(act, RemoveAddress):
                if f"{nic_id}/{format_ip(act.addr)}" in owner.view.addresses:
                    owner.remove_address(nic_id, act.addr)
                acd = self.acd.get(nic_id)
                if acd is not None:
                    acd.forget(act.addr)  # nothing left to probe or defend
            elif isinstance(act, AddRoute):
                owner.add_route(act.route)
            elif isinstance(act, RemoveRoute):
                with contextlib.suppress(NetError):
                    owner.remove_route(act.route)
            elif isinstance(act, SetNicParam):
                # RFC 4861 §6.3.4: MTU to the NIC, CurHopLimit to every shard's
                # IPv6 output, ReachableTime/RetransTimer to neighbour resolution.
                if act.name == "mtu":
                    owner.set_nic_mtu(nic_id, int(act.value))
                else:
                    owner.set_nic_param(nic_id, act.name, act.value)
                table = self.v6.get(nic_id)
                if table is not None and act.name == "reachable_time":
                    table.config = dataclasses.replace(table.config, reachable_s=float(act.value))
                elif table is not None and act.name == "retrans_timer":
                    table.config = dataclasses.replace(table.config, retrans_s=float(act.value))
            elif isinstance(act, ProbeRouter):
                table = self.v6.get(nic_id)
                if table is not None:  # sent by _after_neighbour_work
                    table.solicit_once(now, act.addr)
            elif isinstance(act, UpdateNeighbour):
                table = self.v6.get(nic_id)
                nic = owner.view.nics.get(nic_id)
                if table is not None and nic is not None:
                    self._send_queued(
                        nic,
                        act.mac,
                        table.learn(
                            now, act.ip, act.mac, solicited=False, create=True,
                            router=act.is_router,
                        ),
                    )  # fmt: skip
            else:  # an event (the NDPDispatcher callbacks, as records)
                self.emit_event(event_to_dict(act))
                self._dhcp6_follows(nic_id, act)
        self._after_neighbour_work()

    def _apply6(self, nic_id: int, actions: list[Any]) -> None:
        """The DHCPv6 client's actions: its addresses go on and off the NIC
        through the NDP machine, so that they go through DAD (RFC 4862 §5.4,
        RFC 8415 §18.2.10.1) and join their solicited-node groups like any
        other."""
        machine = self.ndp.get(nic_id)
        now = self.clock()
        out: list[Any] = []
        for act in actions:
            if isinstance(act, AddAddress) and machine is not None:
                try:
                    out += machine.add_address(now, act.addr, act.prefix_len, act.origin)
                except NetError as exc:
                    log.warning("could not add %s: %s", format_ip(act.addr), exc)
            elif isinstance(act, RemoveAddress) and machine is not None:
                out += machine.remove_address(now, act.addr)
            else:
                out.append(act)
        self.apply(nic_id, out)

    def _dhcp6_follows(self, nic_id: int, event: Any) -> None:
        """The DHCPv6 client acts on NDP's events: the RAs' M/O flags start
        it (RFC 4861 §4.2), a failed DAD on an assigned address is declined
        (RFC 8415 §18.2.8)."""
        client = self.dhcp6.get(nic_id)
        if client is None:
            return
        if isinstance(event, Dhcpv6Event):
            self._apply6(nic_id, client.configure(self.clock(), event.configuration))
        elif (
            isinstance(event, DadResult)
            and event.reason == "duplicate"
            and event.addr in client.addresses
        ):
            self._apply6(nic_id, client.decline(self.clock(), event.addr))

    def _send_dhcp6(self, nic_id: int, act: SendDhcp6) -> None:
        """RFC 8415 §13.1: from the link-local address, port 546, to
        All_DHCP_Relay_Agents_and_Servers port 547. Without a usable
        link-local address (still in DAD) nothing goes: the retransmission
        tries again."""
        machine = self.ndp.get(nic_id)
        src = machine.usable_link_local() if machine is not None else None
        if src is None:
            self.stack.counters.refuse("dhcp6", Drop.DHCP6_NO_SOURCE)
            return
        dgram = bytearray(8) + act.message.to_bytes()
        dgram[0:6] = struct.pack("!HHH", CLIENT_PORT6, SERVER_PORT6, len(dgram))
        self.stack.send_ipv6(
            ALL_DHCP_SERVERS, IPPROTO_UDP, dgram, src=src, nic_id=nic_id, checksum_at=6
        )

    def _acd_action(self, nic_id: int, act: AcdProbe | AcdReady | AcdDefend) -> None:
        arp = self.arp.get(nic_id)
        key = f"{nic_id}/{format_ip(act.addr)}"
        if arp is None or key not in self.owner.view.addresses:
            machine = self.acd.get(nic_id)
            if machine is not None:
                machine.forget(act.addr)  # the address went meanwhile
            return
        if isinstance(act, AcdProbe):
            # RFC 5227 §2.1.1: sender IP 0.0.0.0, target hardware address zero.
            self.stack.writer.write((arp.request(act.addr, IPV4_ANY),))
        elif isinstance(act, AcdReady):
            self.owner.set_address_kind(nic_id, act.addr, AddressKind.PERMANENT)
            self._announce(nic_id, act.addr)  # §2.3: ANNOUNCE_NUM announcements
        else:
            self.stack.writer.write((arp.announce(act.addr),))  # §2.4 (b): one defence

    def _acd_lost(self, nic_id: int, addr: bytes) -> None:
        """Another host has ``addr``: it leaves the NIC; a DHCP lease is
        declined (RFC 2131 §3.1 step 5) and the client starts over."""
        client = self.dhcp4.get(nic_id)
        lease = client.lease if client is not None else None
        if client is not None and lease is not None and lease.address == addr:
            self.apply(nic_id, client.decline(self.clock(), addr))
        if f"{nic_id}/{format_ip(addr)}" in self.owner.view.addresses:
            self.owner.remove_address(nic_id, addr)

    def _route_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``ctl routes``: a default router's route also says whether the
        router is reachable (or probably, RFC 4861 §6.3.6), its RFC 4191
        preference, and its rank (0: in use)."""
        now = self.clock()
        routers = {
            (nic_id, format_ip(info.addr)): info
            for nic_id, machine in self.ndp.items()
            for info in machine.router_info(now)
        }
        for row in rows:
            info = routers.get((row["nic"], row["gateway"]))
            if info is not None and row["origin"] == "ra" and row["prefix_len"] == 0:
                row["router"] = {
                    "preference": info.preference,
                    "reachable": info.reachable,
                    "rank": info.rank,
                    "expires_s": None if info.expires_s is None else round(info.expires_s, 1),
                }
        return rows

    def _addr_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``ctl addrs``: a DHCP address also shows its lease (client state,
        server, seconds to T1, T2 and expiry)."""
        now = self.clock()
        for row in rows:
            machine = self.acd.get(row["nic"])
            acd = machine.row(parse_ip(row["addr"])) if machine is not None else None
            if acd is not None:
                row["acd"] = acd  # RFC 5227: probing, or in use and defended
            client = self.dhcp4.get(row["nic"])
            lease = client.lease if client is not None else None
            if client is not None and lease is not None and row["origin"] == "dhcp":
                if row["addr"] == format_ip(lease.address):
                    row["dhcp4"] = client.row(now)
            client6 = self.dhcp6.get(row["nic"])
            if client6 is not None:
                addr = parse_ip(row["addr"])
                # RFC 8415: an assigned address shows its lease; stateless
                # configuration shows on the link-local address it was asked from.
                if addr in client6.addresses or (
                    row["origin"] == "linklocal"
                    and not client6.addresses
                    and client6.state is not Dhcp6State.IDLE
                ):
                    row["dhcp6"] = client6.row(now, addr)
        return rows

    def neighbour_rows(self) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        for family, tables in (("ipv4", self.v4), ("ipv6", self.v6)):
            for nic_id, table in sorted(tables.items()):
                nic = self.owner.view.nics.get(nic_id)
                for e in table.entries(now):
                    rows.append(
                        {
                            "nic": nic_id,
                            "nic_name": nic.name if nic else str(nic_id),
                            "family": family,
                            "ip": format_ip(e.ip),
                            "mac": format_mac(e.mac) if e.mac else None,
                            "state": e.state.value,
                            "age_s": round(e.age_s, 3),
                        }
                        # IsRouter is NDP's (RFC 4861 §7.2.5); ARP has none.
                        | ({"router": e.router} if family == "ipv6" else {})
                    )
        return rows

    # --- ARP (RFC 826) -------------------------------------------------------------------
    def handle_arp(self, eth: EthernetView, vnet: memoryview) -> None:
        nic = self.owner.view.nics.get(LINK_NIC_ID)
        arp = self.arp.get(LINK_NIC_ID)
        if nic is None or arp is None or not nic.enabled:
            return
        now = self.clock()
        payload = eth.payload
        sender = bytes(payload[14:18])  # RFC 826: the sender protocol address
        table = self.v4.get(LINK_NIC_ID)
        if (
            len(payload) >= 28
            and table is not None
            and sender not in table
            and sender != b"\0\0\0\0"  # an RFC 5227 probe: nothing is learnt from it
            and not self.new_senders.allow(now)
        ):
            self.stack.counters.refuse("neighbour", Drop.NEIGHBOUR_NEW_SENDER_OVER_RATE)
            return
        result = arp.handle(now, payload, unicast=eth.dst == nic.mac)
        machine = self.acd.get(LINK_NIC_ID)
        if machine is not None and machine.entries:
            # RFC 5227 §2.1.1/§2.4: the packet passed the codec's checks.
            _, _, _, _, op, sha, spa, _, tpa = ArpView(payload).fields()
            self.apply(LINK_NIC_ID, machine.handle_arp(now, op, sha, spa, tpa))
        for frame in result.frames:
            self.stack.writer.write((frame,))
        if result.mac is not None:
            self._send_queued(nic, result.mac, result.packets)
        self._after_neighbour_work()

    # --- NDP: neighbour solicitation and advertisement (RFC 4861 §7.2) --------------------
    def handle_ndp(self, ip: Ipv6View, nic_id: int, payload: memoryview) -> None:
        """NDP and MLD for shard 0: the NDP machine does DAD, router and
        prefix discovery and SLAAC, the NIC's MLD machine answers queries;
        answering NS and learning from NA for resolution happen here. Invalid messages raise MalformedPacket
        (counted by the ingress)."""
        machine = self.ndp.get(nic_id)
        kind = payload[0]
        mld = self.groups.mld.get(nic_id)
        if kind == ICMPV6_MLD_QUERY:
            if mld is not None:  # MLDv1 or MLDv2 by length (RFC 3810 §8.1)
                query = MldQueryView.checked(payload, hop_limit=ip.hop_limit).header()
                self.apply(nic_id, mld.handle_query(self.clock(), query))
            return
        if kind == ICMPV6_MLD_REPORT:  # another listener's MLDv1 report: suppression
            if mld is not None:
                report = MldV1MessageView.checked(payload, hop_limit=ip.hop_limit)
                mld.handle_report(self.clock(), report.multicast_address)
            return
        if not 133 <= kind <= 137:
            return  # MLDv2 reports and Done: nothing for a host to do
        src = ip.src
        known = self.v6.get(nic_id)
        if (
            known is not None
            and src not in known
            and src != IPV6_ANY  # DAD: nothing is learnt from it
            and src not in self.owner.view.local
            and not self.new_senders.allow(self.clock())
        ):
            self.stack.counters.refuse("neighbour", Drop.NEIGHBOUR_NEW_SENDER_OVER_RATE)
            return
        if machine is not None:
            self.apply(
                nic_id, machine.handle_ndp(self.clock(), ip.src, ip.dst, ip.hop_limit, payload)
            )
        view = NdpView.checked(payload, hop_limit=ip.hop_limit)  # checksum verified by the caller
        validate_addresses(view, ip.src, ip.dst)
        nic = self.owner.view.nics.get(nic_id)
        table = self.v6.get(nic_id)
        if nic is None or table is None:
            return
        now = self.clock()
        msg = view.header()
        if isinstance(msg, NeighborSolicitation):
            ours = self.owner.view.local.get(msg.target)
            if ours is None or ours.nic != nic_id:
                return  # not ours, or tentative (RFC 4862 §5.4.3: the NDP machine's DAD)
            slla = next((o.mac for o in msg.options if isinstance(o, SourceLinkLayer)), None)
            if ip.src == IPV6_ANY:
                dst, solicited = ALL_NODES, False  # RFC 4861 §7.2.4: a DAD probe
            else:
                dst, solicited = ip.src, True
                if slla is not None:  # RFC 4861 §7.2.3: create or update, STALE
                    self._send_queued(
                        nic, slla, table.learn(now, ip.src, slla, solicited=False, create=True)
                    )
            na = NeighborAdvertisement(
                router=machine is not None and machine.is_router,
                solicited=solicited,
                override=True,
                target=msg.target,
                options=[TargetLinkLayer(nic.mac)],
            )
            self.stack.send_ipv6(
                dst,
                NH_ICMPV6,
                na.to_bytes(msg.target, dst),
                src=msg.target,
                nic_id=nic_id,
                hop_limit=NDP_HOP_LIMIT,
            )
        elif isinstance(msg, NeighborAdvertisement):
            tlla = next((o.mac for o in msg.options if isinstance(o, TargetLinkLayer)), None)
            if is_unicast(msg.target):
                # RFC 4861 §7.2.5; without a TLLA (the answer to a unicast NS
                # may omit it, Linux's does) a solicited NA still confirms.
                packets = table.learn(
                    now,
                    msg.target,
                    tlla,
                    solicited=msg.solicited,
                    create=False,
                    override=msg.override,
                    router=msg.router,
                )
                if tlla is not None:
                    self._send_queued(nic, tlla, packets)
                if not msg.router and machine is not None:
                    # §7.2.5: IsRouter TRUE -> FALSE: out of the Default
                    # Router List (a no-op for a node that was no router).
                    self.apply(nic_id, machine.router_unreachable(now, msg.target))
        elif isinstance(msg, Redirect):
            self._redirect_v6(ip.src, nic, table, msg)
        self._after_neighbour_work()

    # --- redirects (RFC 4861 §8, RFC 1122 §3.2.2.2) ------------------------------------
    def _accepts_redirects(self, nic_id: int) -> bool:
        """RFC 4861 §8.2 / RFC 1812 §5.2.7.2: a router does not follow
        redirects; a host does unless ``accept_redirects`` is off."""
        machine = self.ndp.get(nic_id)
        config = machine.config if machine is not None else self.ndp_config
        return config.accept_redirects and not self.stack.forwarding

    def _withdraw_redirects(self) -> None:
        """Host routes are learnt from redirects only while a NIC follows
        them (RFC 4861 §8.3, RFC 1122 §3.2.2.2): when ``accept_redirects``
        goes off, or the stack starts forwarding (RFC 4861 §8.2, RFC 1812
        §5.2.7.2: a router ignores redirects), what they taught goes at
        once instead of steering traffic until it expires."""
        for nic_id in {route.nic for route in self.redirects.routes()}:
            if not self._accepts_redirects(nic_id):
                self.apply(nic_id, self.redirects.forget_nic(nic_id))

    def _first_hop(self, nic_id: int, dst: bytes) -> RouteDecision | None:
        view = self.owner.view
        try:
            return view.routes.resolve(dst, nic=nic_id, usable=view.nic_enabled)
        except OSError:
            return None

    def _redirect_v6(self, src: bytes, nic: Nic, table: NeighbourTable, msg: Redirect) -> None:
        """RFC 4861 §8.1 (the checks the codec could not make), §8.3."""
        now = self.clock()
        target, dst = msg.target, msg.destination
        ours = self.owner.view.local.get(target) is not None
        result = self.redirects.handle(
            now, nic=nic.id, sender=src, destination=dst, next_hop=target,
            current=self._first_hop(nic.id, dst),
            onlink=True,  # §8.1: the target is link-local or the destination itself
            ours=ours, accept=self._accepts_redirects(nic.id),
        )  # fmt: skip
        if isinstance(result, Drop):
            self.stack.counters.refuse("ndp", result)
            return
        # §8.3: a Target Link-Layer Address creates or updates the entry
        # (STALE); a target other than the destination is a router.
        tlla = next((o.mac for o in msg.options if isinstance(o, TargetLinkLayer)), None)
        router = True if target != dst else None
        if tlla is not None:
            self._send_queued(
                nic,
                tlla,
                table.learn(now, target, tlla, solicited=False, create=True, router=router),
            )
        self.apply(nic.id, list(result))

    def handle_redirect_v4(self, ip: Ipv4View, nic_id: int, msg: Icmpv4View) -> None:
        """RFC 1122 §3.2.2.2: a redirect names a new gateway for the
        destination of the quoted datagram; followed (as a host redirect,
        whatever its code) when it comes from the current first-hop gateway
        and the new one is on the network it arrived on."""
        if msg.code > ICMP_REDIR_HOSTTOS:  # RFC 792: codes 0-3 only
            self.stack.counters.refuse("icmpv4", Drop.ICMPV4_OTHER)
            return
        quoted = msg.quoted
        if len(quoted) < 20 or quoted[0] >> 4 != 4:
            self.stack.counters.refuse("icmpv4", Drop.ICMPV4_TRUNCATED)
            return
        dst = bytes(quoted[16:20])
        gateway = msg.gateway
        view = self.owner.view
        onlink_route = view.routes.lookup(gateway, nic=nic_id, usable=view.nic_enabled)
        result = self.redirects.handle(
            self.clock(), nic=nic_id, sender=ip.src, destination=dst, next_hop=gateway,
            current=self._first_hop(nic_id, dst),
            onlink=is_unicast(gateway) and gateway not in view.broadcast
            and onlink_route is not None and onlink_route.gateway is None,
            ours=gateway in view.local, accept=self._accepts_redirects(nic_id),
        )  # fmt: skip
        if isinstance(result, Drop):
            self.stack.counters.refuse("icmpv4", result)
            return
        self.apply(nic_id, list(result))

    # --- resolution (the output path's Resolver) -----------------------------------------
    def resolve(
        self, now: float, nic: Nic, ip: bytes, ethertype: int, packet: bytes
    ) -> bytes | None:
        table = (self.v4 if ethertype == ETHERTYPE_IPV4 else self.v6).get(nic.id)
        if table is None:
            return None
        before = table.state(ip)
        mac = table.resolve(now, ip, (ethertype, packet), len(packet))
        if mac is None:
            self._after_neighbour_work()
        elif ethertype == ETHERTYPE_IPV6 and table.state(ip) is not before:
            self._nud_events(nic.id, table)  # STALE -> DELAY on use
        return mac

    def confirm_reachable(self, nic_id: int, ip: bytes) -> None:
        """Upper-layer progress (TCP) confirms a neighbour (RFC 4861 §7.3.1).
        The peer may sit behind a gateway: confirming only what is cached."""
        table = (self.v4 if len(ip) == 4 else self.v6).get(nic_id)
        if table is not None:
            table.confirm(self.clock(), ip)

    def neighbour_used(self, nic_id: int, ip: bytes) -> None:
        """A shard sent to ``ip`` through its replica: a STALE entry goes to
        DELAY (RFC 4861 §7.3.3) and NUD finds out whether it still answers;
        a default router in use has the routers it stands in for probed
        (RFC 4191 §3.5, ``NdpMachine.router_used``)."""
        table = (self.v4 if len(ip) == 4 else self.v6).get(nic_id)
        if table is not None:
            now = self.clock()
            table.touch(now, ip)
            machine = self.ndp.get(nic_id) if len(ip) == 16 else None
            if machine is not None:  # RFC 4191 §3.5: better routers probed
                self.apply(nic_id, machine.router_used(now, ip))
            self._after_neighbour_work()

    def resolve_for(self, nic_id: int, ip: bytes) -> None:
        """Another shard lacks ``ip``'s MAC: resolve it; replication delivers
        the answer (its packets wait in that shard)."""
        tables = self.v4 if len(ip) == 4 else self.v6
        table = tables.get(nic_id)
        if table is None:
            return
        now = self.clock()
        if table.resolve(now, ip, None) is not None:
            table.touch(now, ip)
            # Known already: republish in case the replica missed it.
            mac = table.lookup(ip)
            if mac is not None:
                self.owner.set_neighbour(nic_id, ip, mac, republish=True)
        self._after_neighbour_work()

    def _send_queued(self, nic: Nic, mac: bytes, packets: list[Any]) -> None:
        for item in packets:
            if item is None:
                continue
            ethertype, packet = item
            self.stack.transmit(nic, mac, ethertype, packet)

    def _after_neighbour_work(self) -> None:
        """Send probes the tables asked for; publish what they learned."""
        for nic_id, arp in self.arp.items():
            for frame in arp.poll_transmit():
                self.stack.writer.write((frame,))
            for ip, mac in self.v4[nic_id].drain_changes():
                self.owner.set_neighbour(nic_id, ip, mac)
        for nic_id, table in self.v6.items():
            nic = self.owner.view.nics.get(nic_id)
            for probe in table.poll_probes():
                if nic is not None:
                    self._solicit(nic, probe.ip, probe.mac)
            for ip, mac in table.drain_changes():
                self.owner.set_neighbour(nic_id, ip, mac)
            self._nud_events(nic_id, table)

    def _nud_events(self, nic_id: int, table: NeighbourTable) -> None:
        """NUD state changes of IPv6 neighbours as ``nud_state``
        events (RFC 4861 §7.3.2 states; "removed" when an entry goes)."""
        seen = self._nud_seen.setdefault(nic_id, {})
        machine = self.ndp.get(nic_id)
        for ip, state in table.drain_nud_changes():
            if machine is not None:
                # RFC 4861 §6.3.6: default routers ranked by reachability.
                ranked = machine.neighbour_changed(self.clock(), ip, failed=state is None)
                if ranked:
                    self.apply(nic_id, ranked)
            old = seen.get(ip)
            if state is old:
                continue  # changed and changed back, or came and went, since the last look
            if state is None:
                del seen[ip]
            else:
                seen[ip] = state
            self.emit_event({
                "type": "nud_state", "nic": nic_id, "ip": format_ip(ip),
                "old": old.value if old else None, "new": state.value if state else "removed",
            })  # fmt: skip

    def _solicit(self, nic: Nic, target: bytes, unicast_mac: bytes | None) -> None:
        """RFC 4861 §7.2.2: NS to the solicited-node group (or unicast when
        re-probing), from one of our addresses, with our link-layer address."""
        src = self.stack.ipv6_source(nic.id, target)
        if src is None:
            return
        dst = target if unicast_mac is not None else solicited_node_multicast(target)
        ns = NeighborSolicitation(target=target, options=[SourceLinkLayer(nic.mac)])
        self.stack.send_ipv6(
            dst, NH_ICMPV6, ns.to_bytes(src, dst), src=src, nic_id=nic.id, hop_limit=NDP_HOP_LIMIT
        )

    # --- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        machines: tuple[_Timed, ...] = (
            *self.v4.values(),
            *self.v6.values(),
            *self.ndp.values(),
            *self.dhcp4.values(),
            *self.dhcp6.values(),
            *self.acd.values(),
            self.groups,
            self.redirects,
        )
        deadlines = [d for d in (m.next_deadline() for m in machines) if d is not None]
        deadlines += [a[0] for a in self._announcements]
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> None:
        for nic_id, machine in self.ndp.items():
            deadline = machine.next_deadline()
            if deadline is not None and deadline <= now:
                self.apply(nic_id, machine.handle_timeout(now))
        for nic_id, client in self.dhcp4.items():
            deadline = client.next_deadline()
            if deadline is not None and deadline <= now:
                self.apply(nic_id, client.handle_timeout(now))
        for nic_id, client6 in self.dhcp6.items():
            deadline = client6.next_deadline()
            if deadline is not None and deadline <= now:
                self._apply6(nic_id, client6.handle_timeout(now))
        for nic_id, acd in self.acd.items():
            deadline = acd.next_deadline()
            if deadline is not None and deadline <= now:
                self.apply(nic_id, acd.handle_timeout(now))
        self.groups.handle_timeout(now)
        redirect_deadline = self.redirects.next_deadline()
        if redirect_deadline is not None and redirect_deadline <= now:
            self.apply(LINK_NIC_ID, list(self.redirects.handle_timeout(now)))
        if self._announcements:
            self._announce_due(now)
        for table in (*self.v4.values(), *self.v6.values()):
            for failure in table.handle_timeout(now):
                for item in failure.packets:
                    if item is not None:
                        self.stack.unreachable(item[0], item[1])
        self._after_neighbour_work()
