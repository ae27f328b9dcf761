"""The network layer of one shard: IPv4 and IPv6 in, ICMP answers, and the
output path (route, source, fragmentation, next hop, link).

Input follows RFC 1122 §3.2.1 and RFC 8200: validate (the codecs), drop
what is not for us, drop packets whose source is one of our addresses (CERT
CA-96.21), then deliver by protocol. Transports register a hook per
protocol number in ``transport_v4`` / ``transport_v6`` (TCP, UDP; negative
keys take ICMP errors); until one claims a datagram, UDP gets ICMP port
unreachable and unknown protocols ICMP protocol unreachable / Parameter
Problem. Checksums the link vouched for (virtio-net ``NEEDS_CSUM`` or
``DATA_VALID``) are not verified again.

Output: route lookup (longest prefix, metric), source selection (RFC 6724
for IPv6; the NIC's first primary address for IPv4), headers and payload
written to the link as separate parts with the transport checksum and TCP
segmentation left to the link when it offloads them, fragmentation to the
link MTU, and the next hop's MAC: shard 0 resolves with ARP / NS through its
``Resolver``; another shard uses its replica of the neighbour table and asks
shard 0 to resolve what it lacks, queueing a few packets meanwhile.

Loopback routing (RFC 1122 §3.2.1.3): a datagram for one of our own addresses,
or routed over a loopback NIC, never touches the wire. It is built as an
Ethernet frame (our link MAC both ways), unfragmented, and handed to
``loop_back``, which the runtime wires to the shard's uplink ring: the
dispatcher classifies it like a wire frame and the owning shard's ingress
gives it to ``handle_looped_ipv4`` / ``handle_looped_ipv6``, which accept a
local (or 127/8, ::1) source and trust its checksums. Without ``loop_back``
(unit tests) such datagrams are dropped and counted.

ICMP errors are never sent about an ICMP error, a datagram sent to a
broadcast or multicast address, a non-initial fragment, or from a
non-unicast source (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)), and are
rate-limited by a token bucket (1000/s, burst 50).
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardnet.common.addr import (
    IPV4_ANY,
    IPV4_BROADCAST,
    IPV6_ANY,
    is_ipv4_multicast,
    is_ipv6_link_local,
    is_ipv6_multicast,
    is_unicast,
)
from shardnet.common.checksum import (
    checksum,
    fold,
    ones_sum,
    pseudo_header_v4,
    pseudo_header_v6,
    update16,
)
from shardnet.common.link_tx import BytesLike, FrameWriter
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetView
from shardnet.common.wire.icmpv4 import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_ERROR_TYPES,
    ICMP_EXC_FRAGTIME,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    ICMP_PORT_UNREACH,
    ICMP_PROT_UNREACH,
    ICMP_TIME_EXCEEDED,
    Icmpv4Header,
    Icmpv4View,
    build_icmpv4_error,
)
from shardnet.common.wire.icmpv6 import (
    ICMPV6_DST_UNREACH,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    ICMPV6_PARAM_PROBLEM,
    ICMPV6_TIME_EXCEEDED,
    PARAM_UNRECOGNIZED_NEXT_HEADER,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_ADDRESS,
    UNREACH_PORT,
    Icmpv6View,
    build_echo_reply,
    build_icmpv6_error,
)
from shardnet.common.wire.igmp import ALL_SYSTEMS
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, Ipv4View
from shardnet.common.wire.ipv6 import (
    ALL_NODES,
    NH_ICMPV6,
    NH_NONE,
    Ipv6Header,
    Ipv6OptionHint,
    Ipv6View,
    multicast_mac,
    walk_extensions,
)
from shardnet.common.wire.tcp import TcpView
from shardnet.common.wire.udp import UdpView
from shardnet.common.wire.virtio import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    VirtioNetHeader,
    VirtioNetView,
)

from ..counters import NetEvent, ShardCounters
from .fragment import FragmentationNeeded, fragment_ipv4, fragment_ipv6
from .gso import segment_tcp
from .model import Address, AddressKind, Nic, PrimaryBehavior, network_of
from .path import Path, PathCache
from .pmtu import PmtuCache
from .ratelimit import TokenBucket
from .route import Route, needs_route
from .srcaddr import SourceCandidate, select_source
from .state import NetView

log = logging.getLogger("shardnet.net")

_ETH = struct.Struct("!6s6sH")
# The IPv4 header without options, and IPv6's fixed header, as a path sends them.
_IPV4_HEAD = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEAD = struct.Struct("!IHBB16s16s")
_IPV4_DF = 0x4000  # RFC 791 flags: Don't Fragment
_U16 = struct.Struct("!H")
ETH_HLEN = 14  # bytes of Ethernet header before the IP header
BROADCAST_MAC = b"\xff" * 6
IPV6_LOOPBACK = bytes(15) + b"\x01"
_IPV4_LOOPBACK = b"\x7f\0\0\x01"
DEFAULT_TTL = 64  # RFC 1700 / Linux ip_default_ttl
SOURCE_CACHE_SIZE = 4096  # (NIC, destination) source choices remembered
DEFAULT_HOP_LIMIT = 64  # RFC 4861 §6.3.2 default until an RA says otherwise
PENDING_PER_NEIGHBOUR = 3  # packets a non-zero shard holds while shard 0 resolves
PENDING_TIMEOUT_S = 3.5  # > 3 resolution attempts 1 s apart (RFC 4861 §7.2.2, RFC 1122 §2.3.2.1)

# (view-checked packet) -> True if a transport endpoint took it.
TransportHook = Callable[["Delivery"], bool]


@dataclass(slots=True)
class Delivery:
    """A datagram for a transport endpoint: who sent it, to whom, on which
    NIC, what the IP header said (TOS / traffic class, for IP_RECVTOS), and
    the transport header and payload (valid only during the call: the
    frame's buffer is reused)."""

    nic: int
    src: bytes
    dst: bytes
    protocol: int
    tos: int
    ttl: int
    payload: memoryview
    broadcast: bool  # sent to a broadcast or multicast address
    packet: memoryview  # the whole IP datagram, for ICMP errors quoting it
    looped: bool = False  # sent by this stack to itself (loopback), not from the wire


@dataclass(slots=True)
class Outgoing:
    """One datagram on its way out: the IP header (``hlen`` bytes) and the
    transport header (or the whole payload) in ``head``, then ``data``
    (the caller's buffer). The transport checksum at ``checksum_at`` of the
    transport header is not filled in yet; ``pseudo`` is its
    pseudo-header sum."""

    ethertype: int
    head: bytearray
    hlen: int
    data: BytesLike
    protocol: int
    checksum_at: int | None
    pseudo: int
    gso_size: int  # > 0: a TCP super-segment of segments of that many bytes

    def joined(self, *, checksum: bool = True) -> bytearray:
        """The whole packet, its transport checksum computed (``checksum``)."""
        packet = self.head + self.data if self.data else self.head
        if checksum and self.checksum_at is not None:
            fill_checksum(
                memoryview(packet)[self.hlen :], self.checksum_at, self.pseudo, self.protocol
            )
        return packet


class NetStack:
    def __init__(
        self,
        *,
        shard: int,
        view: NetView,
        writer: FrameWriter,
        counters: ShardCounters,
        clock: Callable[[], float],
        resolver: Resolver | None = None,
        ask_resolve: Callable[[int, bytes], None] | None = None,
        icmp_rate: tuple[float, int] = (1000.0, 50),
        link_nic: int = 1,
        loop_back: Callable[[bytes | bytearray], bool] | None = None,
        forwarding: bool = False,
        tx_offload: bool = False,
    ) -> None:
        # The link completes TCP checksums and cuts TCP super-segments (the
        # virtio-net header's NEEDS_CSUM and GSO, ``common/wire/virtio.py``).
        self.tx_offload = tx_offload
        # --forwarding: route packets that are not for us (RFC 1812 / RFC 8200).
        self.forwarding = forwarding
        self.shard = shard
        self.view = view
        self.writer = writer
        self.counters = counters
        self.clock = clock
        self.resolver = resolver  # shard 0 only
        self.ask_resolve = ask_resolve  # other shards: ask shard 0
        # Loopback: a frame for ourselves, back through the dispatcher; False if dropped.
        self.loop_back = loop_back
        self.icmp_bucket = TokenBucket(*icmp_rate)
        self.pmtu = PmtuCache()
        self.paths = PathCache(view)
        self.transport_v4: dict[int, TransportHook] = {}
        self.transport_v6: dict[int, TransportHook] = {}
        self._ident = (shard << 12) & 0xFFFF  # IPv4 ident, different starts per shard
        self._frag_ident = shard << 24
        self._pending: dict[tuple[int, bytes], tuple[float, deque[tuple[int, bytes]]]] = {}
        # Source addresses chosen (ipv4_source/ipv6_source: 7 and 21 µs), by
        # (NIC, destination), valid while the view's addresses are unchanged.
        self._source_cache: dict[tuple[int, bytes | None], bytes | None] = {}
        self._source_gen = -1
        # Frames from the ring arrive on the link's NIC (one link per process).
        self.link_nic = link_nic
        # Called when a deadline may have moved (the shard re-arms its timer).
        self.deadline_changed: Callable[[], None] = lambda: None
        # Shard 0's NDP machine takes NS/NA/RS/RA/Redirect/MLD.
        self.ndp_hook: Callable[[Ipv6View, int, memoryview], None] | None = None

    # --- input: IPv4 (RFC 791, RFC 1122 §3.2.1) ----------------------------------------
    def handle_looped_ipv4(self, eth: EthernetView, vnet: memoryview) -> None:
        """A datagram this stack sent to itself (loopback): see ``handle_ipv4``."""
        self.handle_ipv4(eth, vnet, True)

    def handle_ipv4(self, eth: EthernetView, vnet: memoryview, looped: bool = False) -> None:
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
            nic = self._nic_for_frame()
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
        if local is None and not broadcast:
            if self.forwarding:
                self._forward_v4(ip, nic, vnet)
            else:
                self.counters.refuse("ipv4", Drop.IPV4_NOT_FOR_US)
            return
        if ip.is_fragment:  # the dispatcher reassembles; one left here is malformed
            self.counters.refuse("ipv4", Drop.IPV4_FRAGMENT_UNREASSEMBLED)
            return
        proto = ip.protocol
        payload = ip.payload
        if proto == IPPROTO_ICMP:
            self._icmpv4_in(ip, nic, payload, trusted, broadcast)
            return
        if proto == IPPROTO_UDP or proto == IPPROTO_TCP:
            pseudo = None if trusted else pseudo_header_v4(src, dst, proto, len(payload))
            if proto == IPPROTO_UDP:
                UdpView.checked(payload, pseudo=pseudo)
            else:
                TcpView.checked(payload, pseudo=pseudo)
        hook = self.transport_v4.get(proto)
        delivery = Delivery(
            nic, src, dst, proto, ip.tos, ip.ttl, payload, broadcast, ip.buf, looped
        )
        if hook is not None and hook(delivery):
            return
        if proto == IPPROTO_UDP:
            self.icmpv4_error(delivery, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH)
        elif proto != IPPROTO_TCP:  # TCP answers closed ports with RST (TCP issue)
            self.icmpv4_error(delivery, ICMP_DEST_UNREACH, ICMP_PROT_UNREACH)  # RFC 1122 §3.2.2.1
        self.counters.unhandled += 1

    def _icmpv4_in(
        self, ip: Ipv4View, nic: int, payload: memoryview, trusted: bool, broadcast: bool
    ) -> None:
        msg = Icmpv4View.checked(payload, verify_checksum=not trusted)
        if msg.type == ICMP_ECHO_REQUEST:
            if broadcast:  # Linux icmp_echo_ignore_broadcasts=1 (smurf amplification)
                self.counters.refuse("icmpv4", Drop.ICMPV4_ECHO_BROADCAST_IGNORED)
                return
            if ip.src == IPV4_ANY:  # nobody to answer (a reply would go to 0.0.0.0)
                self.counters.refuse("icmpv4", Drop.ICMPV4_ECHO_UNSPECIFIED_SOURCE)
                return
            reply = bytearray(payload)
            Icmpv4Header(ICMP_ECHO_REPLY, 0, 0, msg.rest).emit(reply)  # RFC 792: same id, seq, data
            self.send_ipv4(ip.src, IPPROTO_ICMP, reply, src=ip.dst, tos=ip.tos)
            self.counters.events[NetEvent.ICMPV4_ECHO_REPLIES] += 1
            return
        if msg.is_error:
            hook = self.transport_v4.get(-IPPROTO_ICMP)  # ICMP errors for transport endpoints
            if msg.type == ICMP_DEST_UNREACH and msg.code == ICMP_FRAG_NEEDED:
                quoted = msg.quoted
                if len(quoted) >= 20:
                    # RFC 1191 §5: a next-hop MTU of 0 is guessed from the
                    # quoted total length.
                    self.pmtu.update(
                        self.clock(),
                        bytes(quoted[16:20]),
                        msg.next_hop_mtu,
                        original_len=(quoted[2] << 8) | quoted[3],
                    )
            if hook is not None:
                hook(
                    Delivery(
                        nic,
                        ip.src,
                        ip.dst,
                        IPPROTO_ICMP,
                        ip.tos,
                        ip.ttl,
                        payload,
                        broadcast,
                        ip.buf,
                    )
                )
            return
        self.counters.refuse("icmpv4", Drop.ICMPV4_OTHER)

    # --- input: IPv6 (RFC 8200, RFC 4443) -----------------------------------------------
    def handle_looped_ipv6(self, eth: EthernetView, vnet: memoryview) -> None:
        """A datagram this stack sent to itself (loopback): see ``handle_ipv6``."""
        self.handle_ipv6(eth, vnet, True)

    def handle_ipv6(self, eth: EthernetView, vnet: memoryview, looped: bool = False) -> None:
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
            nic = self._nic_for_frame()
            if src == IPV6_LOOPBACK or dst == IPV6_LOOPBACK:
                # RFC 4291 §2.5.3: ::1 is never sent outside a node; received
                # on a link, it is dropped.
                self.counters.refuse("ipv6", Drop.IPV6_MARTIAN)
                return
            if src in view.local:
                self.counters.refuse("ipv6", Drop.IPV6_SRC_IS_LOCAL)
                return
        multicast = is_ipv6_multicast(dst)
        if local is None and not multicast and dst not in view.tentative:
            if self.forwarding:
                self._forward_v6(ip, nic, vnet)
            else:
                self.counters.refuse("ipv6", Drop.IPV6_NOT_FOR_US)
            return
        if multicast and not self._joined_v6(nic, dst):
            self.counters.refuse("ipv6", Drop.IPV6_MULTICAST_NOT_JOINED)
            return
        try:
            chain = walk_extensions(ip)
        except MalformedPacket as exc:
            hint = exc.icmp
            if hint is not None and (
                not multicast or (isinstance(hint, Ipv6OptionHint) and hint.multicast_ok)
            ):
                self.icmpv6_error_raw(
                    ip, nic, ICMPV6_PARAM_PROBLEM, hint.code, hint.pointer, multicast=False
                )
            raise
        if chain.fragment is not None:
            self.counters.refuse("ipv6", Drop.IPV6_FRAGMENT_UNREASSEMBLED)
            return
        proto = chain.upper_protocol
        payload = ip.upper_payload(chain)
        if proto == NH_ICMPV6:
            self._icmpv6_in(ip, nic, payload, trusted, local is None)
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
        hook = self.transport_v6.get(proto)
        if hook is not None and hook(delivery):
            return
        if proto == IPPROTO_UDP:
            self.icmpv6_error(delivery, ICMPV6_DST_UNREACH, UNREACH_PORT)
        elif proto != IPPROTO_TCP:
            # RFC 8200 §4: unrecognized next header -> Parameter Problem code 1.
            self.icmpv6_error(
                delivery,
                ICMPV6_PARAM_PROBLEM,
                PARAM_UNRECOGNIZED_NEXT_HEADER,
                chain.next_header_pointer,
            )
        self.counters.unhandled += 1

    def _joined_v6(self, nic: int, group: bytes) -> bool:
        """All-nodes and the solicited-node groups of our addresses
        (tentative included, for DAD) are joined on every NIC; sockets'
        groups on the NIC they joined them on."""
        view = self.view
        return group == ALL_NODES or group in view.solicited_groups or (nic, group) in view.groups

    def _icmpv6_in(
        self, ip: Ipv6View, nic: int, payload: memoryview, trusted: bool, multicast: bool
    ) -> None:
        pseudo = None if trusted else pseudo_header_v6(ip.src, ip.dst, NH_ICMPV6, len(payload))
        msg = Icmpv6View.checked(payload, pseudo=pseudo)
        t = msg.type
        if t == ICMPV6_ECHO_REQUEST:
            if ip.dst in self.view.tentative:
                return
            if ip.src == IPV6_ANY:  # nobody to answer (a reply would go to ::)
                self.counters.refuse("icmpv6", Drop.ICMPV6_ECHO_UNSPECIFIED_SOURCE)
                return
            # RFC 4443 §4.1/§2.2: answer from the address the request was
            # sent to, or a chosen one when it went to a multicast group. The
            # checksum is filled in by send_ipv6 once the source is known.
            reply = build_echo_reply(msg.ident, msg.seq, msg.data, src=bytes(16), dst=bytes(16))
            self.send_ipv6(
                ip.src,
                NH_ICMPV6,
                reply,
                src=None if multicast else ip.dst,
                nic_id=nic,
                traffic_class=ip.traffic_class,
                checksum_at=2,
            )
            self.counters.events[NetEvent.ICMPV6_ECHO_REPLIES] += 1
            return
        if 133 <= t <= 137 or t in (130, 131, 132, 143):
            ndp = self.ndp_hook
            if ndp is not None:
                ndp(ip, nic, payload)
            else:
                self.counters.refuse("icmpv6", Drop.ICMPV6_NDP_NOT_HERE)
            return
        if t < 128:
            if t == ICMPV6_PACKET_TOO_BIG:
                quoted = msg.quoted
                if len(quoted) >= 40:
                    self.pmtu.update(self.clock(), bytes(quoted[24:40]), msg.mtu)
            hook = self.transport_v6.get(-NH_ICMPV6)
            if hook is not None:
                hook(
                    Delivery(
                        nic,
                        ip.src,
                        ip.dst,
                        NH_ICMPV6,
                        ip.traffic_class,
                        ip.hop_limit,
                        payload,
                        multicast,
                        ip.buf,
                    )
                )
            return
        self.counters.refuse("icmpv6", Drop.ICMPV6_OTHER)

    def _nic_for_frame(self) -> int:
        """The NIC a frame arrived on: the stack has one link per process."""
        return self.link_nic

    # --- ICMP errors -------------------------------------------------------------------------
    def _may_send_error(self, d: Delivery) -> bool:
        if d.broadcast or not is_unicast(d.src):
            return False
        if not self.icmp_bucket.allow(self.clock()):
            self.counters.refuse("icmp", Drop.ICMP_RATE_LIMITED)
            return False
        return True

    def icmpv4_error(self, d: Delivery, type_: int, code: int, rest: int = 0) -> None:
        if d.protocol == IPPROTO_ICMP:  # never about an ICMP error (RFC 1122 §3.2.2)
            if len(d.payload) < 1 or d.payload[0] in ICMP_ERROR_TYPES:
                return
        if not self._may_send_error(d):
            return
        msg = build_icmpv4_error(type_, code, d.packet, rest=rest)
        self.send_ipv4(d.src, IPPROTO_ICMP, msg, src=d.dst if d.dst in self.view.local else None)
        self.counters.icmp_errors[(4, type_, code)] += 1

    def icmpv6_error(self, d: Delivery, type_: int, code: int, rest: int = 0) -> None:
        if d.protocol == NH_ICMPV6 and (len(d.payload) < 1 or d.payload[0] < 128):
            return  # RFC 4443 §2.4 (e.1)
        if not self._may_send_error(d):
            return
        src = d.dst if d.dst in self.view.local else None
        body = build_icmpv6_error(type_, code, d.packet, src=bytes(16), dst=bytes(16), rest=rest)
        self.send_ipv6(d.src, NH_ICMPV6, body, src=src, nic_id=d.nic, checksum_at=2)
        self.counters.icmp_errors[(6, type_, code)] += 1

    def icmpv6_error_raw(
        self, ip: Ipv6View, nic: int, type_: int, code: int, rest: int, *, multicast: bool
    ) -> None:
        d = Delivery(
            nic,
            ip.src,
            ip.dst,
            ip.next_header,
            ip.traffic_class,
            ip.hop_limit,
            ip.payload,
            multicast,
            ip.buf,
        )
        self.icmpv6_error(d, type_, code, rest)

    # --- output ----------------------------------------------------------------------------
    def send_ipv4(
        self,
        dst: bytes,
        proto: int,
        payload: bytes | bytearray | memoryview,
        *,
        src: bytes | None = None,
        nic_id: int | None = None,
        ttl: int = DEFAULT_TTL,
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
        Returns False (and counts why) when it cannot be sent."""
        key = (dst, src, nic_id)
        if not options:
            path = self.paths.get(key)
            if path is not None and self._send_path_v4(
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
            if self.loop_back is None or dst not in view.local:
                self.counters.refuse("ipv4", Drop.IPV4_LOCAL_NOT_LOOPED)
                return False
            if src is None:
                src = dst
        else:
            broadcast = dst == IPV4_BROADCAST or is_ipv4_multicast(dst) or dst in view.broadcast
            out = self._ipv4_out(dst, nic_id)
            if out is None:
                return False
            nic, route = out
        if nic is not None and nic.loopback and self.loop_back is None:
            self.counters.refuse("loopback", Drop.LOOPBACK_NOT_LOOPED)  # no link and no neighbours
            return False
        if src is None:
            assert nic is not None  # a local destination has its source
            # The source on the next hop's subnet: the gateway's, or the
            # destination's for an on-link one.
            gateway = route.gateway if route is not None else None
            src = self.ipv4_source(nic.id, gateway or dst)
            if src is None:
                self.counters.refuse("ipv4", Drop.IPV4_NO_SOURCE)
                return False
        next_hop = (
            route.gateway
            if route is not None and route.gateway is not None and not broadcast
            else dst
        )
        if nic is not None and not broadcast and not options and not nic.loopback:
            mac = view.neighbours.get((nic.id, next_hop))
            if mac is not None:
                self.paths.put(key, Path(nic, src, _ETH.pack(mac, nic.mac, ETHERTYPE_IPV4), 0,
                                         int.from_bytes(src + dst, "big") % 0xFFFF))  # fmt: skip
        hlen = 20 + ((len(options) + 3) & ~3)
        head = bytearray(hlen + len(payload))
        length = len(head) + len(data)
        self._ident = (self._ident + 1) & 0xFFFF
        Ipv4Header(
            src, dst, proto, ttl=ttl, tos=tos, ident=self._ident, df=df, total_length=length,
            options=options,
        ).emit(head)  # fmt: skip
        head[hlen:] = payload
        pseudo = pseudo_header_v4(src, dst, proto, length - hlen) if checksum_at is not None else 0
        return self._emit(
            Outgoing(ETHERTYPE_IPV4, head, hlen, data, proto, checksum_at, pseudo, gso_size),
            nic, next_hop, dst, broadcast, multicast_loop,
        )  # fmt: skip

    def _send_path_v4(
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
        nic = path.nic
        length = 20 + len(payload) + len(data)
        mtu = nic.mtu
        if len(self.pmtu):
            mtu = min(mtu, self.pmtu.mtu(self.clock(), dst, mtu))
        fits = length <= mtu
        if not fits and not (gso_size and self.tx_offload):
            return False
        ident = self._ident = (self._ident + 1) & 0xFFFF
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
        self._write(path.eth, out, fits)
        return True

    def _send_path_v6(
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
        nic = path.nic
        plen = len(payload) + len(data)
        mtu = nic.mtu
        if len(self.pmtu):
            mtu = min(mtu, self.pmtu.mtu(self.clock(), dst, mtu))
        fits = 40 + plen <= mtu
        if not fits and not (gso_size and self.tx_offload):
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
        self._write(path.eth, out, fits)
        return True

    def _ipv4_out(self, dst: bytes, nic_id: int | None) -> tuple[Nic, Route | None] | None:
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

    def _source(
        self,
        nic_id: int,
        dst: bytes | None,
        choose: Callable[[int, Any], bytes | None],
    ) -> bytes | None:
        """``choose(nic_id, dst)``, remembered while the NICs and addresses
        stay the same (``NetView.generation``)."""
        cache = self._source_cache
        if self._source_gen != self.view.generation:
            cache.clear()
            self._source_gen = self.view.generation
        key = (nic_id, dst)
        if key in cache:
            return cache[key]
        if len(cache) >= SOURCE_CACHE_SIZE:
            cache.clear()  # bounded: many destinations cost a recomputation now and then
        src = cache[key] = choose(nic_id, dst)
        return src

    def ipv4_source(self, nic_id: int, dst: bytes | None = None) -> bytes | None:
        """The NIC's first usable primary IPv4 address, preferring one on
        ``dst``'s subnet (as Linux's inet_select_addr does), deprecated last."""
        return self._source(nic_id, dst, self._choose_ipv4_source)

    def _choose_ipv4_source(self, nic_id: int, dst: bytes | None) -> bytes | None:
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

    def send_ipv6(
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
        """As ``send_ipv4``; ``hop_limit`` None: the RA's CurHopLimit or 64."""
        key = (dst, src, nic_id)
        path = self.paths.get(key)
        if path is not None and self._send_path_v6(
            path, dst, next_header, payload, hop_limit, traffic_class, checksum_at, data, gso_size
        ):
            return True
        view = self.view
        route = None
        nic: Nic | None = None
        if dst in view.local or dst in view.tentative:
            # As in send_ipv4 (loopback). A tentative address is not ours yet
            # (RFC 4862 §5.4): nothing is looped to it.
            if self.loop_back is None or dst not in view.local:
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
            if nic.loopback and self.loop_back is None:
                self.counters.refuse(
                    "loopback", Drop.LOOPBACK_NOT_LOOPED
                )  # no link and no neighbours
                return False
        if src is None:
            assert nic is not None  # a local destination has its source
            src = self.ipv6_source(nic.id, dst)
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
        default_hop_limit = learnt or DEFAULT_HOP_LIMIT
        if hop_limit is None:
            hop_limit = default_hop_limit
        if nic is not None and not multicast and not nic.loopback:
            mac = view.neighbours.get((nic.id, next_hop))
            if mac is not None:
                self.paths.put(key, Path(nic, src, _ETH.pack(mac, nic.mac, ETHERTYPE_IPV6),
                                         default_hop_limit, int.from_bytes(src + dst, "big") % 0xFFFF))  # fmt: skip
        head = bytearray(40 + len(payload))
        plen = len(payload) + len(data)
        Ipv6Header(src, dst, next_header, hop_limit, traffic_class, 0, plen).emit(head)
        head[40:] = payload
        pseudo = pseudo_header_v6(src, dst, next_header, plen) if checksum_at is not None else 0
        return self._emit(
            Outgoing(ETHERTYPE_IPV6, head, 40, data, next_header, checksum_at, pseudo, gso_size),
            nic, next_hop, dst, multicast, multicast_loop,
        )  # fmt: skip

    def _emit(
        self,
        out: Outgoing,
        nic: Nic | None,
        next_hop: bytes,
        dst: bytes,
        group: bool,
        multicast_loop: bool,
    ) -> bool:
        """The last step of ``send_ipv4``/``send_ipv6``. The common case —
        a unicast datagram to a known neighbour that fits the MTU, or a TCP
        super-segment the link will cut — is written as it is: the headers
        and the caller's ``data`` as separate parts of one ``writev``, the
        transport checksum left to the link (virtio-net ``NEEDS_CSUM``) or
        summed in place, never joined into a new buffer. Everything else
        (looped to ourselves, a multicast copy for our own members, a next
        hop to resolve, fragmentation) takes the whole packet."""
        total = len(out.head) + len(out.data)
        mtu = 0
        if nic is not None and not nic.loopback:
            mtu = min(nic.mtu, self.pmtu.mtu(self.clock(), dst, nic.mtu))
        if nic is not None and mtu and not (multicast_loop and group):
            fits = total <= mtu
            if fits or (out.gso_size and self.tx_offload):
                if group:
                    mac: bytes | None = _group_mac(next_hop)
                else:
                    mac = self.view.neighbours.get((nic.id, next_hop))
                if mac is not None:
                    self._write(_ETH.pack(mac, nic.mac, out.ethertype), out, fits)
                    return True
        # segment_tcp computes each segment's checksum: none over the whole
        cut = bool(out.gso_size) and out.protocol == IPPROTO_TCP and total > mtu > 0
        packet = out.joined(checksum=not cut)
        ethertype = out.ethertype
        if nic is None or nic.loopback:  # never on the wire, whole, never fragmented
            return self._loop(ethertype, packet)
        if multicast_loop and (nic.id, dst) in self.view.groups:
            self._loop(ethertype, packet)  # a copy for our own members
        if total <= mtu:
            self._to_link(nic, next_hop, ethertype, bytes(packet), group)
            return True
        if cut:
            for segment in segment_tcp(packet, out.gso_size):
                self._to_link(nic, next_hop, ethertype, bytes(segment), group)
            return True
        pieces: list[bytes]
        if ethertype == ETHERTYPE_IPV4:
            try:
                pieces = fragment_ipv4(packet, mtu)
            except FragmentationNeeded:
                self.counters.refuse("ipv4", Drop.IPV4_DF_TOO_BIG)
                return False
        else:
            self._frag_ident = (self._frag_ident + 1) & 0xFFFFFFFF
            pieces = fragment_ipv6(packet, mtu, self._frag_ident)
        for piece in pieces:
            self._to_link(nic, next_hop, ethertype, piece, group)
        return True

    def _write(self, eth: bytes, out: Outgoing, fits: bool) -> None:
        """``out`` to the link in parts. With the link's offloads (TCP only:
        Linux completes a UDP checksum of 0 as 0, which IPv6 forbids) the
        checksum field holds the pseudo-header sum and the link adds the
        rest (virtio 1.2 §5.1.6.2); a packet over the MTU is a super-segment
        the link cuts into ``gso_size``-byte segments."""
        head, at = out.head, out.checksum_at
        vnet = None
        if at is not None:
            field = out.hlen + at
            if self.tx_offload and out.protocol == IPPROTO_TCP:
                _U16.pack_into(head, field, out.pseudo)
                vnet = VirtioNetHeader(F_NEEDS_CSUM, csum_start=ETH_HLEN + out.hlen, csum_offset=at)
                if not fits:
                    vnet.gso_type = GSO_TCPV4 if out.ethertype == ETHERTYPE_IPV4 else GSO_TCPV6
                    vnet.gso_size = out.gso_size
                    vnet.hdr_len = ETH_HLEN + len(head)
            else:
                head[field : field + 2] = b"\0\0"
                value = ~ones_sum(out.data, ones_sum(memoryview(head)[out.hlen :], out.pseudo))
                value &= 0xFFFF
                if value == 0 and out.protocol == IPPROTO_UDP:
                    value = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
                _U16.pack_into(head, field, value)
        if out.data:
            self.writer.write((eth, head, out.data), vnet)
        else:
            self.writer.write((eth, head), vnet)

    def ipv6_source(self, nic_id: int, dst: bytes) -> bytes | None:
        """RFC 6724 §5 among the NIC's usable IPv6 addresses (never tentative)."""
        return self._source(nic_id, dst, self._choose_ipv6_source)

    def _choose_ipv6_source(self, nic_id: int, dst: bytes) -> bytes | None:
        cands = [
            SourceCandidate(
                a.addr,
                a.prefix_len,
                a.nic,
                deprecated=a.kind is AddressKind.DEPRECATED,
                position=a.position,
            )
            for a in self.view.addresses_of(nic_id, 16)
            if a.usable and a.behavior is not PrimaryBehavior.NEVER_PRIMARY
        ]
        chosen = select_source(dst, cands, out_nic=nic_id)
        return chosen.addr if chosen is not None else None

    def _loop(self, ethertype: int, packet: bytes | bytearray) -> bool:
        """Loopback: one datagram for ourselves, as an Ethernet frame (our link
        MAC both ways), back through the dispatcher."""
        loop_back = self.loop_back
        assert loop_back is not None  # the callers checked
        link = self.view.nics.get(self.link_nic)
        mac = link.mac if link is not None else bytes(6)
        frame = bytearray(14 + len(packet))
        _ETH.pack_into(frame, 0, mac, mac, ethertype)
        frame[14:] = packet
        if loop_back(frame):
            self.counters.events[NetEvent.LOOPED_OUT] += 1
            return True
        self.counters.refuse("loopback", Drop.LOOP_BACK_DROPPED)  # the uplink ring is full
        return False

    # --- forwarding (--forwarding): RFC 1812 §5.2-5.3, RFC 8200 §3, RFC 4443 §3 ---------
    def _forward_v4(self, ip: Ipv4View, in_nic: int, vnet: memoryview) -> None:
        src, dst = ip.src, ip.dst
        d = Delivery(in_nic, src, dst, ip.protocol, ip.tos, ip.ttl, ip.payload, False, ip.buf)
        if src[:2] == b"\xa9\xfe" or dst[:2] == b"\xa9\xfe":  # RFC 3927 §7: link-local stays
            self.counters.refuse("ipv4", Drop.FORWARD_LINK_LOCAL)
            return
        if ip.ttl <= 1:  # RFC 1812 §5.3.1
            self.icmpv4_error(d, ICMP_TIME_EXCEEDED, 0)
            self.counters.refuse("ipv4", Drop.FORWARD_TTL_EXCEEDED)
            return
        route = self.view.routes.lookup(dst, usable=self.view.nic_enabled)
        nic = self.view.nics.get(route.nic) if route is not None else None
        if route is None or nic is None or nic.loopback:
            self.icmpv4_error(d, ICMP_DEST_UNREACH, 0)  # net unreachable
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
        mtu = min(nic.mtu, self.pmtu.mtu(self.clock(), dst, nic.mtu))
        self.counters.events[NetEvent.FORWARDED_V4] += 1
        if self._forward_offloaded(nic, next_hop, ETHERTYPE_IPV4, packet, vnet):
            return
        if len(packet) <= mtu:
            self._to_link(nic, next_hop, ETHERTYPE_IPV4, bytes(packet), False)
            return
        try:
            pieces = fragment_ipv4(packet, mtu)
        except FragmentationNeeded:
            self.icmpv4_error(d, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu)  # RFC 1191 §4
            return
        for piece in pieces:
            self._to_link(nic, next_hop, ETHERTYPE_IPV4, piece, False)

    def _forward_v6(self, ip: Ipv6View, in_nic: int, vnet: memoryview) -> None:
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
            self.icmpv6_error(d, ICMPV6_TIME_EXCEEDED, 0)
            self.counters.refuse("ipv6", Drop.FORWARD_TTL_EXCEEDED)
            return
        route = self.view.routes.lookup(dst, usable=self.view.nic_enabled)
        nic = self.view.nics.get(route.nic) if route is not None else None
        if route is None or nic is None or nic.loopback:
            self.icmpv6_error(d, ICMPV6_DST_UNREACH, 0)  # no route
            self.counters.refuse("ipv6", Drop.FORWARD_NO_ROUTE)
            return
        mtu = min(nic.mtu, self.pmtu.mtu(self.clock(), dst, nic.mtu))
        if len(ip.buf) > mtu and not is_super_frame(vnet):  # never fragmented (RFC 8200 §5)
            self.icmpv6_error(d, ICMPV6_PACKET_TOO_BIG, 0, mtu)
            return
        packet = bytearray(ip.buf)
        packet[7] -= 1  # hop limit
        self.counters.events[NetEvent.FORWARDED_V6] += 1
        if self._forward_offloaded(nic, route.gateway or dst, ETHERTYPE_IPV6, packet, vnet):
            return
        self._to_link(nic, route.gateway or dst, ETHERTYPE_IPV6, bytes(packet), False)

    def _forward_offloaded(
        self, nic: Nic, next_hop: bytes, ethertype: int, packet: bytearray, vnet: memoryview
    ) -> bool:
        """A forwarded packet whose sender left its checksum to the link
        (``NEEDS_CSUM``) or that is a GRO super-frame goes on with the same
        virtio-net header when the link offloads and the next hop is known;
        otherwise its checksum is completed and a super-frame cut here.
        False: a plain packet, for the caller to send."""
        if not vnet or not (vnet[0] & F_NEEDS_CSUM or is_super_frame(vnet)):
            return False
        hdr = VirtioNetView(vnet, len(vnet)).header()
        hdr.flags &= ~F_DATA_VALID
        mac = self.view.neighbours.get((nic.id, next_hop))
        if self.tx_offload and mac is not None:
            self.writer.write((_ETH.pack(mac, nic.mac, ethertype), packet), hdr)
            return True
        if hdr.flags & F_NEEDS_CSUM:
            # virtio 1.2 §5.1.6.2: the field holds the pseudo-header sum; the
            # checksum is the complement of the sum from csum_start on.
            start = hdr.csum_start - ETH_HLEN
            _U16.pack_into(
                packet, start + hdr.csum_offset, ~ones_sum(memoryview(packet)[start:]) & 0xFFFF
            )
        base = hdr.gso_type & ~GSO_ECN
        if base == GSO_TCPV4 or base == GSO_TCPV6:
            pieces: list[bytearray] = segment_tcp(packet, hdr.gso_size)
        else:
            pieces = [packet]
        for piece in pieces:
            self._to_link(nic, next_hop, ethertype, bytes(piece), False)
        return True

    def _to_link(
        self, nic: Nic, next_hop: bytes, ethertype: int, packet: bytes, group: bool
    ) -> None:
        if nic.loopback:  # no link and no neighbours: send_* loop these
            self.counters.refuse("loopback", Drop.LOOPBACK_NOT_LOOPED)
            return
        mac: bytes | None
        if group:
            mac = _group_mac(next_hop)
        else:
            mac = self.view.neighbours.get((nic.id, next_hop))
            if mac is None:
                mac = self._resolve(nic, next_hop, ethertype, packet)
                if mac is None:
                    return
        self.transmit(nic, mac, ethertype, packet)

    def transmit(self, nic: Nic, dst_mac: bytes, ethertype: int, packet: bytes | bytearray) -> None:
        self.writer.write((_ETH.pack(dst_mac, nic.mac, ethertype), packet))

    # --- next hops that the replica does not know yet --------------------------------------
    def _resolve(self, nic: Nic, ip: bytes, ethertype: int, packet: bytes) -> bytes | None:
        if self.resolver is not None:
            mac = self.resolver.resolve(self.clock(), nic, ip, ethertype, packet)
            if mac is None:
                self.deadline_changed()  # the resolver's probes and give-up time
            return mac
        key = (nic.id, ip)
        now = self.clock()
        entry = self._pending.get(key)
        if entry is not None:
            if len(entry[1]) == PENDING_PER_NEIGHBOUR:
                self.counters.refuse(
                    "neighbour", Drop.NEIGHBOUR_QUEUE_OVERFLOW
                )  # the oldest waiting packet goes
            entry[1].append((ethertype, packet))
            return None
        # Queue before asking: the answer may come back within the call (an
        # in-process link) and release the queue at once.
        queue: deque[tuple[int, bytes]] = deque(maxlen=PENDING_PER_NEIGHBOUR)
        queue.append((ethertype, packet))
        self._pending[key] = (now, queue)
        self.deadline_changed()
        if self.ask_resolve is not None:
            self.ask_resolve(nic.id, ip)
        return None

    def neighbours_changed(self) -> None:
        """The replica's neighbour table changed: send what waited for it."""
        for key in [k for k in self._pending if k in self.view.neighbours]:
            _, queue = self._pending.pop(key)
            nic = self.view.nics.get(key[0])
            if nic is None:
                continue
            mac = self.view.neighbours[key]
            for ethertype, packet in queue:
                self.transmit(nic, mac, ethertype, packet)

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(t for t, _ in self._pending.values()) + PENDING_TIMEOUT_S

    def handle_timeout(self, now: float) -> None:
        for key in [k for k, (t, _) in self._pending.items() if now - t >= PENDING_TIMEOUT_S]:
            _, queue = self._pending.pop(key)
            for ethertype, packet in queue:
                self.unreachable(ethertype, packet)

    def reassembly_expired(self, first_fragment: bytes) -> None:
        """The dispatcher gave up on a datagram whose first fragment arrived:
        ICMP time exceeded, fragment reassembly (RFC 792 code 1, RFC 8200 §4.5)."""
        view = memoryview(first_fragment)
        try:
            if first_fragment[:1] and first_fragment[0] >> 4 == 4:
                ip = Ipv4View.checked(view)
                local = ip.dst in self.view.local
                d = Delivery(
                    self.link_nic,
                    ip.src,
                    ip.dst,
                    ip.protocol,
                    ip.tos,
                    ip.ttl,
                    ip.payload,
                    not local,
                    ip.buf,
                )
                self.icmpv4_error(d, ICMP_TIME_EXCEEDED, ICMP_EXC_FRAGTIME)
            else:
                ip6 = Ipv6View.checked(view)
                local = ip6.dst in self.view.local
                # The upper protocol follows the Fragment header: an ICMPv6
                # error in the first fragment gets no error (RFC 4443 §2.4 (e)).
                chain = walk_extensions(ip6)
                d = Delivery(
                    self.link_nic,
                    ip6.src,
                    ip6.dst,
                    chain.upper_protocol,
                    ip6.traffic_class,
                    ip6.hop_limit,
                    ip6.upper_payload(chain),
                    not local,
                    ip6.buf,
                )
                self.icmpv6_error(d, ICMPV6_TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY)
        except MalformedPacket:
            self.counters.refuse("reassembly", Drop.REASSEMBLY_EXPIRED_MALFORMED)

    def unreachable(self, ethertype: int, packet: bytes) -> None:
        """A packet whose next hop could not be resolved: counted and dropped.
        Its sender is told (RFC 1122 §2.3.2.2: host unreachable; RFC 4861
        §7.2.2: address unreachable) unless it is us: a local endpoint learns
        it from its transport (retransmission timeouts, EHOSTUNREACH), never
        from an ICMP error sent to ourselves. No error about a non-initial
        fragment (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)) either."""
        self.counters.refuse("neighbour", Drop.NEIGHBOUR_UNRESOLVED)
        view = memoryview(packet)
        try:
            if ethertype == ETHERTYPE_IPV4:
                ip = Ipv4View.checked(view)
                if ip.src in self.view.local or ip.frag_offset:
                    return
                d = Delivery(
                    self.link_nic,
                    ip.src,
                    ip.dst,
                    ip.protocol,
                    ip.tos,
                    ip.ttl,
                    ip.payload,
                    False,
                    ip.buf,
                )
                self.icmpv4_error(d, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH)
            else:
                ip6 = Ipv6View.checked(view)
                if ip6.src in self.view.local:
                    return
                chain = walk_extensions(ip6)
                if chain.fragment is not None and chain.fragment.fragment_offset:
                    return
                d = Delivery(
                    self.link_nic,
                    ip6.src,
                    ip6.dst,
                    chain.upper_protocol,
                    ip6.traffic_class,
                    ip6.hop_limit,
                    ip6.upper_payload(chain),
                    False,
                    ip6.buf,
                )
                self.icmpv6_error(d, ICMPV6_DST_UNREACH, UNREACH_ADDRESS)
        except MalformedPacket:
            return


def is_super_frame(vnet: memoryview) -> bool:
    """The virtio-net header (possibly empty) marks a GSO super-frame."""
    return bool(vnet) and bool(vnet[1] & ~GSO_ECN)


def _group_mac(group: bytes) -> bytes:
    """The Ethernet address of a multicast group (RFC 1112 §6.4, RFC 2464
    §7) or of a broadcast address."""
    if len(group) == 16:
        return multicast_mac(group)
    if is_ipv4_multicast(group):
        return b"\x01\x00\x5e" + bytes([group[1] & 0x7F]) + group[2:4]
    return BROADCAST_MAC


def fill_checksum(body: bytearray | memoryview, at: int, pseudo: int, proto: int) -> None:
    """Write the transport checksum at offset ``at`` of ``body`` (RFC 768,
    RFC 9293 §3.1, RFC 4443 §2.3); a UDP checksum that computes to 0 is sent
    as 0xFFFF (RFC 768)."""
    body[at : at + 2] = b"\0\0"
    value = checksum(body, pseudo)
    if value == 0 and proto == IPPROTO_UDP:
        value = 0xFFFF
    body[at] = value >> 8
    body[at + 1] = value & 0xFF


class Resolver:
    """Shard 0's next-hop resolution (ARP for IPv4, NS/NA for IPv6) as the
    output path sees it; implemented in ``control.py``."""

    def resolve(
        self, now: float, nic: Nic, ip: bytes, ethertype: int, packet: bytes
    ) -> bytes | None:
        raise NotImplementedError
