"""IPv6 for one shard (RFC 8200, RFC 4291): input, the IPv6 half of the
output path, source selection and forwarding.

Input: the codec validates; a multicast source (RFC 4291 §2.7) or ::1 on the
wire (§2.5.3) is dropped, as is a packet from one of our own addresses, to
a group the host is not in (all-nodes and the solicited-node groups of our
addresses are always joined), or, unless forwarding, for another host.
Extension headers are walked (RFC 8200 §4; a bad one answered with
Parameter Problem when the rules allow, RFC 4443 §3.4); ICMPv6 goes to
``icmp.py``; only NDP may use a tentative address (RFC 4862 §5.4); UDP
needs its checksum (RFC 8200 §8.1); an unclaimed UDP datagram gets port
unreachable, another unclaimed next header Parameter Problem code 1.

Output: the route (multicast and link-local need the NIC, not a route),
the source by RFC 6724 §5, the hop limit from the RA's CurHopLimit (RFC
4861 §6.3.4) or 64, the header, then the stack's one output path
(``NetStack.emit``).

Forwarding (``--forwarding``, RFC 8200 §3, RFC 4443 §3): link-local never
forwarded (RFC 4291 §2.5.6), hop limit decremented, time exceeded, no route
and packet too big answered (never fragmented on the way, RFC 8200 §5).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from shardnet.common.addr import is_ipv6_link_local, is_ipv6_multicast
from shardnet.common.checksum import fold, pseudo_header_v6
from shardnet.common.link_tx import BytesLike
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import ETHERTYPE_IPV6, EthernetView
from shardnet.common.wire.icmpv6 import (
    ICMPV6_DST_UNREACH,
    ICMPV6_PACKET_TOO_BIG,
    ICMPV6_PARAM_PROBLEM,
    ICMPV6_TIME_EXCEEDED,
    PARAM_UNRECOGNIZED_NEXT_HEADER,
    UNREACH_PORT,
)
from shardnet.common.wire.ipv4 import IPPROTO_TCP, IPPROTO_UDP
from shardnet.common.wire.ipv6 import (
    ALL_NODES,
    NH_ICMPV6,
    NH_NONE,
    Ipv6Header,
    Ipv6OptionHint,
    Ipv6View,
    walk_extensions,
)
from shardnet.common.wire.tcp import TcpView
from shardnet.common.wire.udp import UdpView

from ..counters import NetEvent
from .datagram import Delivery, Outgoing, is_super_frame
from .model import AddressKind, Nic, PrimaryBehavior
from .path import Path
from .route import needs_route
from .srcaddr import SourceCandidate, select_source

if TYPE_CHECKING:
    from .icmp import Icmp
    from .stack import NetStack

# IPv6's fixed header, as a remembered path sends it.
_IPV6_HEAD = struct.Struct("!IHBB16s16s")
IPV6_LOOPBACK = bytes(15) + b"\x01"


class Ipv6:
    """The IPv6 layer of ``stack``, answering through ``icmp``."""

    def __init__(self, stack: NetStack, icmp: Icmp) -> None:
        self.stack = stack
        self.icmp = icmp
        self.view = stack.view
        self.counters = stack.counters
        self.clock = stack.clock
        self.paths = stack.paths
        self.transports = stack.transport_v6
        self.link_nic = stack.link_nic

    # --- input (RFC 8200, RFC 4291) ----------------------------------------------------
    def handle_looped(self, eth: EthernetView, vnet: memoryview) -> None:
        """A datagram this stack sent to itself (loopback): see ``handle_ipv6``."""
        self.handle(eth, vnet, True)

    def handle(self, eth: EthernetView, vnet: memoryview, looped: bool = False) -> None:
        trusted = looped or (bool(vnet) and bool(vnet[0] & 0x03))
        ip = Ipv6View.checked(eth.payload)
        src, dst = ip.src, ip.dst
        view = self.view
        local = view.local.get(dst)
        if is_ipv6_multicast(src):  # RFC 4291 §2.7
            self.counters.refuse("ipv6", Drop.IPV6_BAD_SOURCE)
            return
        if looped:
            nic = local.nic if local is not None else self.link_nic
            self.counters.events[NetEvent.IPV6_LOOPED_IN] += 1
        else:
            nic = self.link_nic
            if src == IPV6_LOOPBACK or dst == IPV6_LOOPBACK:
                # RFC 4291 §2.5.3: ::1 is never sent outside a node; received
                # on a link, it is dropped.
                self.counters.refuse("ipv6", Drop.IPV6_MARTIAN)
                return
            if src in view.local:
                self.counters.refuse("ipv6", Drop.IPV6_SRC_IS_LOCAL)
                return
        multicast = is_ipv6_multicast(dst)
        if (
            local is None
            and not multicast
            and dst not in view.tentative
            and not self.stack.promiscuous
        ):
            if self.stack.forwarding:
                self._forward(ip, nic, vnet)
            else:
                self.counters.refuse("ipv6", Drop.IPV6_NOT_FOR_US)
            return
        if multicast and not self._joined(nic, dst):
            self.counters.refuse("ipv6", Drop.IPV6_MULTICAST_NOT_JOINED)
            return
        try:
            chain = walk_extensions(ip)
        except MalformedPacket as exc:
            hint = exc.icmp
            if hint is not None and (
                not multicast or (isinstance(hint, Ipv6OptionHint) and hint.multicast_ok)
            ):
                self.icmp.error_v6_raw(
                    ip, nic, ICMPV6_PARAM_PROBLEM, hint.code, hint.pointer, multicast=False
                )
            raise
        if chain.fragment is not None:
            self.counters.refuse("ipv6", Drop.IPV6_FRAGMENT_UNREASSEMBLED)
            return
        proto = chain.upper_protocol
        payload = ip.upper_payload(chain)
        if proto == NH_ICMPV6:
            self.icmp.handle_v6(ip, nic, payload, trusted, multicast)
            return
        if dst in view.tentative:  # RFC 4862 §5.4: only NDP may use a tentative address
            self.counters.refuse("ipv6", Drop.IPV6_TO_TENTATIVE)
            return
        if proto == NH_NONE:
            return
        if proto == IPPROTO_UDP or proto == IPPROTO_TCP:
            pseudo = None if trusted else pseudo_header_v6(src, dst, proto, len(payload))
            if proto == IPPROTO_UDP:
                UdpView.checked(payload, pseudo=pseudo, require_checksum=True)  # RFC 8200 §8.1
            else:
                TcpView.checked(payload, pseudo=pseudo)
        delivery = Delivery(
            nic, src, dst, proto, ip.traffic_class, ip.hop_limit, payload, multicast, ip.buf,
            looped,
        )  # fmt: skip
        hook = self.transports.get(proto)
        if hook is not None and hook(delivery):
            return
        if proto == IPPROTO_UDP:
            self.icmp.error_v6(delivery, ICMPV6_DST_UNREACH, UNREACH_PORT)
        elif proto != IPPROTO_TCP:
            # RFC 8200 §4: unrecognized next header -> Parameter Problem code 1.
            self.icmp.error_v6(
                delivery,
                ICMPV6_PARAM_PROBLEM,
                PARAM_UNRECOGNIZED_NEXT_HEADER,
                chain.next_header_pointer,
            )
        self.counters.unhandled += 1

    def _joined(self, nic: int, group: bytes) -> bool:
        """All-nodes and the solicited-node groups of our addresses
        (tentative included, for DAD) are joined on every NIC; sockets'
        groups on the NIC they joined them on."""
        view = self.view
        return group == ALL_NODES or group in view.solicited_groups or (nic, group) in view.groups

    # --- output ------------------------------------------------------------------------
    def send(
        self,
        dst: bytes,
        next_header: int,
        payload: bytes | bytearray | memoryview,
        *,
        src: bytes | None = None,
        nic_id: int | None = None,
        hop_limit: int | None = None,
        traffic_class: int = 0,
        checksum_at: int | None = None,
        multicast_loop: bool = False,
        data: BytesLike = b"",
        gso_size: int = 0,
    ) -> bool:
        """As ``send_ipv4``; ``hop_limit`` None: the RA's CurHopLimit or the
        stack's ``default_hop_limit`` (the [ip] table)."""
        key = (dst, src, nic_id)
        path = self.paths.get(key)
        if path is not None and self._send_path(
            path, dst, next_header, payload, hop_limit, traffic_class, checksum_at, data, gso_size
        ):
            return True
        view = self.view
        route = None
        nic: Nic | None = None
        if dst in view.local or dst in view.tentative:
            # As in send_ipv4 (loopback). A tentative address is not ours yet
            # (RFC 4862 §5.4): nothing is looped to it.
            if self.stack.loop_back is None or dst not in view.local:
                self.counters.refuse("ipv6", Drop.IPV6_LOCAL_NOT_LOOPED)
                return False
            if src is None:
                src = dst
        else:
            if nic_id is None or needs_route(dst):
                route = view.routes.lookup(dst, nic=nic_id, usable=view.nic_enabled)
                if route is not None:
                    nic_id = route.nic
                elif nic_id is None and is_ipv6_multicast(dst):
                    nic_id = self.link_nic  # as IPv4 multicast without a route
                else:
                    self.counters.refuse("ipv6", Drop.IPV6_NO_ROUTE)
                    return False
            nic = view.nics.get(nic_id)
            if nic is None or not nic.enabled:
                self.counters.refuse("ipv6", Drop.IPV6_NIC_DOWN)
                return False
            if nic.loopback and self.stack.loop_back is None:
                self.counters.refuse(
                    "loopback", Drop.LOOPBACK_NOT_LOOPED
                )  # no link and no neighbours
                return False
        if src is None:
            assert nic is not None  # a local destination has its source
            src = self.source(nic.id, dst)
            if src is None:
                self.counters.refuse("ipv6", Drop.IPV6_NO_SOURCE)
                return False
        multicast = is_ipv6_multicast(dst)
        next_hop = (
            route.gateway
            if route is not None and route.gateway is not None and not multicast
            else dst
        )
        # RFC 4861 §6.3.4: CurHopLimit from the RA, else the default.
        learnt = nic.params.get("cur_hop_limit") if nic is not None else None
        default_hop_limit = learnt or self.stack.ip_config.default_hop_limit
        if hop_limit is None:
            hop_limit = default_hop_limit
        if nic is not None and not multicast and not nic.loopback:
            self.paths.remember(key, nic, src, dst, next_hop, ETHERTYPE_IPV6, default_hop_limit)
        head = bytearray(40 + len(payload))
        plen = len(payload) + len(data)
        Ipv6Header(src, dst, next_header, hop_limit, traffic_class, 0, plen).emit(head)
        head[40:] = payload
        pseudo = pseudo_header_v6(src, dst, next_header, plen) if checksum_at is not None else 0
        return self.stack.emit(
            Outgoing(ETHERTYPE_IPV6, head, 40, data, next_header, checksum_at, pseudo, gso_size),
            nic, next_hop, dst, multicast, multicast_loop,
        )  # fmt: skip

    def _send_path(
        self,
        path: Path,
        dst: bytes,
        next_header: int,
        payload: bytes | bytearray | memoryview,
        hop_limit: int | None,
        traffic_class: int,
        checksum_at: int | None,
        data: BytesLike,
        gso_size: int,
    ) -> bool:
        """``send_ipv6`` along a known path (see ``_send_path_v4``)."""
        stack = self.stack
        if path.reported is not stack.used_epoch:
            path.reported = stack.used_epoch
            stack.note_used(path.hop)
        nic = path.nic
        plen = len(payload) + len(data)
        mtu = self.stack.path_mtu(nic, dst)
        fits = 40 + plen <= mtu
        if not fits and not (gso_size and self.stack.tx_offload):
            return False
        head = bytearray(40 + len(payload))
        _IPV6_HEAD.pack_into(
            head, 0, 0x60000000 | (traffic_class << 20), plen, next_header,
            path.hop_limit if hop_limit is None else hop_limit, path.src, dst,
        )  # fmt: skip
        head[40:] = payload
        # RFC 8200 §8.1: the 32-bit upper-layer length and the next header.
        pseudo = fold(path.addr_sum + plen + next_header) if checksum_at is not None else 0
        out = Outgoing(ETHERTYPE_IPV6, head, 40, data, next_header, checksum_at, pseudo, gso_size)
        self.stack.write(path.eth, out, fits)
        return True

    def source(self, nic_id: int, dst: bytes) -> bytes | None:
        """RFC 6724 §5 among the NIC's usable IPv6 addresses (never tentative)."""
        return self.stack.cached_source(nic_id, dst, self._choose_source)

    def _choose_source(self, nic_id: int, dst: bytes) -> bytes | None:
        cands = [
            SourceCandidate(
                a.addr,
                a.prefix_len,
                a.nic,
                deprecated=a.kind is AddressKind.DEPRECATED,
                temporary=a.origin == "temporary",
                position=a.position,
            )
            for a in self.view.addresses_of(nic_id, 16)
            if a.usable and a.behavior is not PrimaryBehavior.NEVER_PRIMARY
        ]
        # RFC 6724 rule 7 as Linux's use_tempaddr: temporary addresses
        # (RFC 8981) are preferred only with 2; with 1 they exist but the
        # stable ones are chosen.
        nic = self.view.nics.get(nic_id)
        prefer = nic is not None and nic.params.get("use_tempaddr") == 2
        chosen = select_source(dst, cands, out_nic=nic_id, prefer_temporary=prefer)
        return chosen.addr if chosen is not None else None

    # --- forwarding (--forwarding): RFC 8200 §3, RFC 4443 §3 -----------------------------
    def _forward(self, ip: Ipv6View, in_nic: int, vnet: memoryview) -> None:
        src, dst = ip.src, ip.dst
        d = Delivery(
            in_nic,
            src,
            dst,
            ip.next_header,
            ip.traffic_class,
            ip.hop_limit,
            ip.payload,
            False,
            ip.buf,
        )
        if is_ipv6_link_local(src) or is_ipv6_link_local(dst) or src == bytes(16):
            self.counters.refuse(
                "ipv6", Drop.FORWARD_LINK_LOCAL
            )  # RFC 4291 §2.5.6: never forwarded
            return
        if ip.hop_limit <= 1:  # RFC 8200 §3, RFC 4443 §3.3
            self.icmp.error_v6(d, ICMPV6_TIME_EXCEEDED, 0)
            self.counters.refuse("ipv6", Drop.FORWARD_TTL_EXCEEDED)
            return
        route = self.view.routes.lookup(dst, usable=self.view.nic_enabled)
        nic = self.view.nics.get(route.nic) if route is not None else None
        if route is None or nic is None or nic.loopback:
            self.icmp.error_v6(d, ICMPV6_DST_UNREACH, 0)  # no route
            self.counters.refuse("ipv6", Drop.FORWARD_NO_ROUTE)
            return
        mtu = self.stack.path_mtu(nic, dst)
        if len(ip.buf) > mtu and not is_super_frame(vnet):  # never fragmented (RFC 8200 §5)
            self.icmp.error_v6(d, ICMPV6_PACKET_TOO_BIG, 0, mtu)
            return
        packet = bytearray(ip.buf)
        packet[7] -= 1  # hop limit
        self.counters.events[NetEvent.FORWARDED_V6] += 1
        if self.stack.forward_offloaded(nic, route.gateway or dst, ETHERTYPE_IPV6, packet, vnet):
            return
        self.stack.to_link(nic, route.gateway or dst, ETHERTYPE_IPV6, bytes(packet), False)
