"""IPv4 for one shard (RFC 791, RFC 1122 §3.2.1): input, the IPv4 half of
the output path, source selection and forwarding.

Input follows RFC 1122 §3.2.1: the codec validates; then packets from 127/8
on the wire (martians), from one of our own addresses (CERT CA-96.21) or
from a broadcast or multicast source are dropped, as are packets for a
group the host is not in (RFC 1112 §7.2) and, unless forwarding, for
another host; the rest goes to ICMP (``icmp.py``) or to the transport hook
registered for its protocol (UDP and TCP checksums verified first, unless
the link vouched for them). UDP that no endpoint claims gets ICMP port
unreachable; another unclaimed protocol, protocol unreachable (RFC 1122
§3.2.2.1).

Output: the route (longest prefix, metric; limited broadcast and multicast
go out of the link without one, as Linux does), the source (the NIC's
first usable primary address, preferring one on the next hop's subnet, as
Linux's inet_select_addr), the header (one identification counter per
shard), then the stack's one output path (``NetStack.emit``: next hop,
fragmentation, the link).

Forwarding (``--forwarding``, RFC 1812 §5.2-5.3): TTL decremented with an
incremental checksum update (RFC 1624), link-local (169.254/16, RFC 3927
§7) never forwarded, time exceeded and net unreachable answered,
fragmented to the next link's MTU or answered with fragmentation needed
(RFC 1191 §4).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from shardnet.common.addr import IPV4_BROADCAST, is_ipv4_multicast, is_unicast
from shardnet.common.checksum import fold, pseudo_header_v4, update16
from shardnet.common.link_tx import BytesLike
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4, EthernetView
from shardnet.common.wire.icmpv4 import (
    ICMP_DEST_UNREACH,
    ICMP_FRAG_NEEDED,
    ICMP_PORT_UNREACH,
    ICMP_PROT_UNREACH,
    ICMP_TIME_EXCEEDED,
)
from shardnet.common.wire.igmp import ALL_SYSTEMS
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, Ipv4View
from shardnet.common.wire.tcp import TcpView
from shardnet.common.wire.udp import UdpView

from ..counters import NetEvent
from .datagram import Delivery, Outgoing
from .fragment import FragmentationNeeded, fragment_ipv4
from .ipident import IdentGenerator
from .model import Address, AddressKind, Nic, PrimaryBehavior, network_of
from .path import Path
from .route import Route, needs_route

if TYPE_CHECKING:
    from .icmp import Icmp
    from .stack import NetStack

# The IPv4 header without options, as a remembered path sends it.
_IPV4_HEAD = struct.Struct("!BBHHHBBH4s4s")
_IPV4_DF = 0x4000  # RFC 791 flags: Don't Fragment
_IPV4_LOOPBACK = b"\x7f\0\0\x01"


class Ipv4:
    """The IPv4 layer of ``stack``, answering through ``icmp``."""

    def __init__(self, stack: NetStack, icmp: Icmp) -> None:
        self.stack = stack
        self.icmp = icmp
        # What never changes after the stack is built, read without a hop.
        self.view = stack.view
        self.counters = stack.counters
        self.clock = stack.clock
        self.paths = stack.paths
        self.transports = stack.transport_v4
        # Frames from the ring arrive on the link's NIC (one link per process).
        self.link_nic = stack.link_nic
        self.idents = IdentGenerator(stack.ident_key, stack.shard, stack.nshards)

    # --- input (RFC 791, RFC 1122 §3.2.1) ----------------------------------------------
    def handle_looped(self, eth: EthernetView, vnet: memoryview) -> None:
        """A datagram this stack sent to itself (loopback): see ``handle_ipv4``."""
        self.handle(eth, vnet, True)

    def handle(self, eth: EthernetView, vnet: memoryview, looped: bool = False) -> None:
        # Looped: built by us, never on a wire; its checksums are ours.
        trusted = looped or (bool(vnet) and bool(vnet[0] & 0x03))
        ip = Ipv4View.checked(eth.payload)
        src, dst = ip.src, ip.dst
        view = self.view
        local = view.local.get(dst)
        if looped:
            if local is None and dst[0] == 127:
                # RFC 1122 §3.2.1.3 (g): all of 127/8 is this host (as Linux's
                # local route); delivered as to 127.0.0.1.
                local = view.local.get(_IPV4_LOOPBACK)
            nic = local.nic if local is not None else self.link_nic
            self.counters.events[NetEvent.IPV4_LOOPED_IN] += 1
        else:
            nic = self.link_nic
            if src[0] == 127 or dst[0] == 127:
                # RFC 1122 §3.2.1.3 (g): 127/8 never appears on a network (Linux
                # drops these martians); answering would send 127.0.0.1 out.
                self.counters.refuse("ipv4", Drop.IPV4_MARTIAN)
                return
            if src in view.local:  # CERT CA-96.21: a spoof of our own address
                self.counters.refuse("ipv4", Drop.IPV4_SRC_IS_LOCAL)
                return
        # RFC 1122 §3.2.1.3: never a broadcast (limited or subnet-directed) or
        # multicast source.
        if not (is_unicast(src) or src == b"\0\0\0\0") or src in view.broadcast:
            self.counters.refuse("ipv4", Drop.IPV4_BAD_SOURCE)
            return
        multicast = is_ipv4_multicast(dst)
        broadcast = multicast or dst == IPV4_BROADCAST or dst in view.broadcast
        if multicast and dst != ALL_SYSTEMS and (nic, dst) not in view.groups:
            # RFC 1112 §7.2: only the groups this host belongs to (all-systems always).
            self.counters.refuse("ipv4", Drop.IPV4_MULTICAST_NOT_JOINED)
            return
        if local is None and not broadcast and not self.stack.promiscuous:
            if self.stack.forwarding:
                self._forward(ip, nic, vnet)
            else:
                self.counters.refuse("ipv4", Drop.IPV4_NOT_FOR_US)
            return
        if ip.is_fragment:  # the dispatcher reassembles; one left here is malformed
            self.counters.refuse("ipv4", Drop.IPV4_FRAGMENT_UNREASSEMBLED)
            return
        proto = ip.protocol
        payload = ip.payload
        if proto == IPPROTO_ICMP:
            self.icmp.handle_v4(ip, nic, payload, trusted, broadcast)
            return
        if proto == IPPROTO_UDP or proto == IPPROTO_TCP:
            pseudo = None if trusted else pseudo_header_v4(src, dst, proto, len(payload))
            if proto == IPPROTO_UDP:
                UdpView.checked(payload, pseudo=pseudo)
            else:
                TcpView.checked(payload, pseudo=pseudo)
        hook = self.transports.get(proto)
        delivery = Delivery(
            nic, src, dst, proto, ip.tos, ip.ttl, payload, broadcast, ip.buf, looped
        )
        if hook is not None and hook(delivery):
            return
        if proto == IPPROTO_UDP:
            self.icmp.error_v4(delivery, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH)
        elif proto != IPPROTO_TCP:  # TCP answers closed ports with RST (TCP issue)
            self.icmp.error_v4(delivery, ICMP_DEST_UNREACH, ICMP_PROT_UNREACH)  # RFC 1122 §3.2.2.1
        self.counters.unhandled += 1

    # --- output ------------------------------------------------------------------------
    def send(
        self,
        dst: bytes,
        proto: int,
        payload: bytes | bytearray | memoryview,
        *,
        src: bytes | None = None,
        nic_id: int | None = None,
        ttl: int | None = None,
        tos: int = 0,
        df: bool = False,
        checksum_at: int | None = None,
        options: bytes = b"",
        multicast_loop: bool = False,
        data: BytesLike = b"",
        gso_size: int = 0,
    ) -> bool:
        """Route, pick a source, build, fragment and send one datagram.
        ``checksum_at``: the offset of the transport checksum in
        ``payload``, filled in once the source is chosen. ``options``: raw
        IP options (IGMP's Router Alert). ``multicast_loop``: a datagram to
        a group this host joined is also delivered here (IP_MULTICAST_LOOP).
        ``data``: more payload after ``payload``, written from the caller's
        buffer without a copy when it can be. ``gso_size``: a TCP
        super-segment, to be cut into segments of that many bytes of
        ``data`` (by the link when it offloads, else here).
        Returns False (and counts why) when it cannot be sent. ``ttl``
        None: the stack's ``default_ttl`` (the [ip] table)."""
        if ttl is None:
            ttl = self.stack.ip_config.default_ttl
        key = (dst, src, nic_id)
        if not options:
            path = self.paths.get(key)
            if path is not None and self._send_path(
                path, dst, proto, payload, ttl, tos, df, checksum_at, data, gso_size
            ):
                return True
        view = self.view
        route = None
        nic: Nic | None = None
        broadcast = False
        if dst in view.local or dst in view.tentative:
            # RFC 1122 §3.2.1.3: never on the wire (and never ARP for ourselves):
            # looped back, from the destination itself unless told otherwise
            # (as Linux's local routes say).
            if self.stack.loop_back is None or dst not in view.local:
                self.counters.refuse("ipv4", Drop.IPV4_LOCAL_NOT_LOOPED)
                return False
            if src is None:
                src = dst
        else:
            broadcast = dst == IPV4_BROADCAST or is_ipv4_multicast(dst) or dst in view.broadcast
            out = self._out(dst, nic_id)
            if out is None:
                return False
            nic, route = out
        if nic is not None and nic.loopback and self.stack.loop_back is None:
            self.counters.refuse("loopback", Drop.LOOPBACK_NOT_LOOPED)  # no link and no neighbours
            return False
        if src is None:
            assert nic is not None  # a local destination has its source
            # The source on the next hop's subnet: the gateway's, or the
            # destination's for an on-link one.
            gateway = route.gateway if route is not None else None
            src = self.source(nic.id, gateway or dst)
            if src is None:
                self.counters.refuse("ipv4", Drop.IPV4_NO_SOURCE)
                return False
        next_hop = (
            route.gateway
            if route is not None and route.gateway is not None and not broadcast
            else dst
        )
        if nic is not None and not broadcast and not options and not nic.loopback:
            self.paths.remember(key, nic, src, dst, next_hop, ETHERTYPE_IPV4, 0)
        hlen = 20 + ((len(options) + 3) & ~3)
        head = bytearray(hlen + len(payload))
        length = len(head) + len(data)
        ident = self.idents.next(src, dst, proto)
        Ipv4Header(
            src, dst, proto, ttl=ttl, tos=tos, ident=ident, df=df, total_length=length,
            options=options,
        ).emit(head)  # fmt: skip
        head[hlen:] = payload
        pseudo = pseudo_header_v4(src, dst, proto, length - hlen) if checksum_at is not None else 0
        return self.stack.emit(
            Outgoing(ETHERTYPE_IPV4, head, hlen, data, proto, checksum_at, pseudo, gso_size),
            nic, next_hop, dst, broadcast, multicast_loop,
        )  # fmt: skip

    def _send_path(
        self,
        path: Path,
        dst: bytes,
        proto: int,
        payload: bytes | bytearray | memoryview,
        ttl: int,
        tos: int,
        df: bool,
        checksum_at: int | None,
        data: BytesLike,
        gso_size: int,
    ) -> bool:
        """``send_ipv4`` along a known path: the header packed at once, its
        checksum from the path's address sum. False when the datagram needs
        more than the path knows (fragmentation): the caller takes the full
        way."""
        stack = self.stack
        if path.reported is not stack.used_epoch:
            path.reported = stack.used_epoch
            stack.note_used(path.hop)
        nic = path.nic
        length = 20 + len(payload) + len(data)
        mtu = self.stack.path_mtu(nic, dst)
        fits = length <= mtu
        if not fits and not (gso_size and self.stack.tx_offload):
            return False
        ident = self.idents.next(path.src, dst, proto)
        flags = _IPV4_DF if df else 0
        proto_ttl = (ttl << 8) | proto
        total = path.addr_sum + (0x4500 | tos) + length + ident + flags + proto_ttl
        head = bytearray(20 + len(payload))
        _IPV4_HEAD.pack_into(
            head, 0, 0x45, tos, length, ident, flags, ttl, proto, ~fold(total) & 0xFFFF,
            path.src, dst,
        )  # fmt: skip
        head[20:] = payload
        pseudo = fold(path.addr_sum + proto + length - 20) if checksum_at is not None else 0
        out = Outgoing(ETHERTYPE_IPV4, head, 20, data, proto, checksum_at, pseudo, gso_size)
        self.stack.write(path.eth, out, fits)
        return True

    def _out(self, dst: bytes, nic_id: int | None) -> tuple[Nic, Route | None] | None:
        """The NIC a datagram to ``dst`` leaves by and the route chosen (None
        when the NIC was given and no route is needed); None (counted) when
        there is none."""
        view = self.view
        route = None
        if nic_id is None or needs_route(dst):
            route = view.routes.lookup(dst, nic=nic_id, usable=view.nic_enabled)
            if route is None and not needs_route(dst) and nic_id is None:
                # Limited broadcast or multicast with no route: the link (Linux
                # sends those without a route when the socket names no NIC).
                nic_id = self.link_nic
            elif route is None:
                self.counters.refuse("ipv4", Drop.IPV4_NO_ROUTE)
                return None
            else:
                nic_id = route.nic
        nic = view.nics.get(nic_id)
        if nic is None or not nic.enabled:
            self.counters.refuse("ipv4", Drop.IPV4_NIC_DOWN)
            return None
        return nic, route

    def source(self, nic_id: int, dst: bytes | None = None) -> bytes | None:
        """The NIC's first usable primary IPv4 address, preferring one on
        ``dst``'s subnet (as Linux's inet_select_addr does), deprecated last."""
        return self.stack.cached_source(nic_id, dst, self._choose_source)

    def _choose_source(self, nic_id: int, dst: bytes | None) -> bytes | None:
        cands = [
            a
            for a in self.view.addresses_of(nic_id, 4)
            if a.usable and a.behavior is not PrimaryBehavior.NEVER_PRIMARY
        ]

        def rank(a: Address) -> tuple[bool, bool, int]:
            off_subnet = dst is None or network_of(dst, a.prefix_len) != network_of(
                a.addr, a.prefix_len
            )
            return (a.kind is AddressKind.DEPRECATED, off_subnet, a.position)

        return min(cands, key=rank).addr if cands else None

    # --- forwarding (--forwarding): RFC 1812 §5.2-5.3 ------------------------------------
    def _forward(self, ip: Ipv4View, in_nic: int, vnet: memoryview) -> None:
        src, dst = ip.src, ip.dst
        d = Delivery(in_nic, src, dst, ip.protocol, ip.tos, ip.ttl, ip.payload, False, ip.buf)
        if src[:2] == b"\xa9\xfe" or dst[:2] == b"\xa9\xfe":  # RFC 3927 §7: link-local stays
            self.counters.refuse("ipv4", Drop.FORWARD_LINK_LOCAL)
            return
        if ip.ttl <= 1:  # RFC 1812 §5.3.1
            self.icmp.error_v4(d, ICMP_TIME_EXCEEDED, 0)
            self.counters.refuse("ipv4", Drop.FORWARD_TTL_EXCEEDED)
            return
        route = self.view.routes.lookup(dst, usable=self.view.nic_enabled)
        nic = self.view.nics.get(route.nic) if route is not None else None
        if route is None or nic is None or nic.loopback:
            self.icmp.error_v4(d, ICMP_DEST_UNREACH, 0)  # net unreachable
            self.counters.refuse("ipv4", Drop.FORWARD_NO_ROUTE)
            return
        packet = bytearray(ip.buf)
        packet[8] -= 1  # TTL, and the header checksum by RFC 1624
        checksum = update16(
            (packet[10] << 8) | packet[11],
            (ip.ttl << 8) | packet[9],
            ((ip.ttl - 1) << 8) | packet[9],
        )
        packet[10], packet[11] = checksum >> 8, checksum & 0xFF
        next_hop = route.gateway or dst
        mtu = self.stack.path_mtu(nic, dst)
        self.counters.events[NetEvent.FORWARDED_V4] += 1
        if self.stack.forward_offloaded(nic, next_hop, ETHERTYPE_IPV4, packet, vnet):
            return
        if len(packet) <= mtu:
            self.stack.to_link(nic, next_hop, ETHERTYPE_IPV4, bytes(packet), False)
            return
        try:
            pieces = fragment_ipv4(packet, mtu)
        except FragmentationNeeded:
            self.icmp.error_v4(d, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu)  # RFC 1191 §4
            return
        for piece in pieces:
            self.stack.to_link(nic, next_hop, ETHERTYPE_IPV4, piece, False)
