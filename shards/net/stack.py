"""The network layer of one shard: IPv4 (``ipv4.py``) and IPv6
(``ipv6.py``) in and out, ICMP (``icmp.py``), and the one output path both
families end in.

``NetStack`` holds what the layers share — the replicated tables
(``NetView``), the shard's counters, the link writer, the Path MTU cache,
the transport hooks (``transport_v4`` / ``transport_v6``: TCP, UDP; negative
keys take ICMP errors) — and is what the shard and the transports call:
``handle_ipv4`` / ``handle_ipv6`` for frames, ``send_ipv4`` / ``send_ipv6``
to send, ``ipv4_source`` / ``ipv6_source`` (these are the family layers'
own methods, bound once). Checksums the link vouched for (virtio-net
``NEEDS_CSUM`` or ``DATA_VALID``) are not verified again.

A unicast destination already sent to takes its remembered path
(``path.py``: NIC, source, Ethernet header; dropped when any table
changes): the family packs its header at once and writes it, with no
route, source or neighbour lookup. Otherwise the datagram takes the output
path (``emit``): one for ourselves is looped, a multicast one copied to our
own members (IP_MULTICAST_LOOP), a TCP super-segment left to the link when
it offloads segmentation (or cut here), one over the MTU fragmented (RFC
791, RFC 8200 §4.5), and the next hop's MAC found: shard 0 resolves with ARP /
NS through its ``Resolver``; another shard uses its replica of the
neighbour table and asks shard 0 to resolve what it lacks, queueing a few
packets meanwhile (RFC 4861 §7.2.2). Headers and payload go to the link as
separate parts, the transport checksum left to the link when it offloads.

Loopback routing (RFC 1122 §3.2.1.3): a datagram for one of our own addresses,
or routed over a loopback NIC, never touches the wire. It is built as an
Ethernet frame (our link MAC both ways), unfragmented, and handed to
``loop_back``, which the runtime wires to the shard's uplink ring: the
dispatcher classifies it like a wire frame and the owning shard's ingress
gives it to ``handle_looped_ipv4`` / ``handle_looped_ipv6``, which accept a
local (or 127/8, ::1) source and trust its checksums. Without ``loop_back``
(unit tests) such datagrams are dropped and counted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardnet.common.checksum import ones_sum
from shardnet.common.ipconfig import IpConfig
from shardnet.common.link_tx import FrameWriter
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4
from shardnet.common.wire.icmpv4 import Icmpv4View
from shardnet.common.wire.ipv4 import IPPROTO_TCP, IPPROTO_UDP, Ipv4View
from shardnet.common.wire.ipv6 import Ipv6View
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
from .datagram import ETH_HEADER, Outgoing, TransportHook, group_mac, is_super_frame
from .fragment import FragmentationNeeded, fragment_ipv4, fragment_ipv6
from .gso import segment_tcp
from .icmp import Icmp
from .ipv4 import Ipv4
from .ipv6 import Ipv6
from .model import Nic
from .neighbour import NeighbourConfig, Unresolved
from .path import PathCache
from .pmtu import PmtuCache
from .ratelimit import TokenBucket
from .state import NetView

_U16 = struct.Struct("!H")
ETH_HLEN = 14  # bytes of Ethernet header before the IP header
SOURCE_CACHE_SIZE = 4096  # (NIC, destination) source choices remembered
# What a non-zero shard holds while shard 0 resolves a next hop: per
# neighbour, bytes as shard 0's own table (Linux unres_qlen_bytes); at most
# as many neighbours as shard 0 resolves at once (the oldest gives way).
PENDING_BYTES_PER_NEIGHBOUR = NeighbourConfig().max_queue_bytes
PENDING_NEIGHBOURS = NeighbourConfig().max_incomplete
PENDING_TIMEOUT_S = 3.5  # > 3 resolution attempts 1 s apart (RFC 4861 §7.2.2, RFC 1122 §2.3.2.1)


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
        ip_config: IpConfig | None = None,
        link_nic: int = 1,
        loop_back: Callable[[bytes | bytearray], bool] | None = None,
        forwarding: bool = False,
        tx_offload: bool = False,
        nshards: int = 1,
        ident_key: bytes = b"",
    ) -> None:
        # The link completes TCP checksums and cuts TCP super-segments (the
        # virtio-net header's NEEDS_CSUM and GSO, ``common/wire/virtio.py``).
        self.tx_offload = tx_offload
        # --forwarding: route packets that are not for us (RFC 1812 / RFC 8200).
        self.forwarding = forwarding
        # --relay: every unicast destination is ours (gVisor's promiscuous
        # mode): datagrams to any address reach the transports, which answer
        # from that address (a relay terminates flows for whole networks).
        self.promiscuous = False
        self.shard = shard
        self.nshards = nshards
        self.ident_key = ident_key  # the stack's secret: IPv4 identification (ipident.py)
        self.view = view
        self.writer = writer
        self.counters = counters
        self.clock = clock
        self.resolver = resolver  # shard 0 only
        self.ask_resolve = ask_resolve  # other shards: ask shard 0
        # Loopback: a frame for ourselves, back through the dispatcher; False if dropped.
        self.loop_back = loop_back
        self.pmtu = PmtuCache()
        # Remembered paths (route, source, next hop) of unicast destinations.
        self.paths = PathCache(view)
        self.transport_v4: dict[int, TransportHook] = {}
        self.transport_v6: dict[int, TransportHook] = {}
        self._frag_ident = shard << 24  # IPv6 fragment identification (RFC 8200 §4.5)
        self._pending: dict[tuple[int, bytes], _Waiting] = {}
        # Source addresses chosen (ipv4_source/ipv6_source: 7 and 21 µs), by
        # (NIC, destination), valid while the view's addresses are unchanged.
        self._source_cache: dict[tuple[int, bytes | None], bytes | None] = {}
        self._source_gen = -1
        # Frames from the ring arrive on the link's NIC (one link per process).
        self.link_nic = link_nic
        # Next hops used to send since the last report to shard 0's
        # neighbour tables (RFC 4861 §7.3.3: sending to a STALE entry starts
        # NUD): gathered per packet at the cost of a set lookup, reported
        # once a USE_REPORT_INTERVAL_S by ``report_used``.
        self.report_used: Callable[[int, bytes], None] | None = None
        self.used_hops: set[tuple[int, bytes]] = set()
        self.used_epoch = object()  # a new one at every report (``path.Path.reported``)
        self._used_report_at = 0.0
        self._last_report = -USE_REPORT_INTERVAL_S
        # Called when a deadline may have moved (the shard re-arms its timer).
        self.deadline_changed: Callable[[], None] = lambda: None
        # Shard 0's NDP machine takes NS/NA/RS/RA/Redirect/MLD.
        self.ndp_hook: Callable[[Ipv6View, int, memoryview], None] | None = None
        # --relay-icmp relay: echo requests to addresses not ours are sent on
        # (src, dst, identifier, sequence, data); False: answer it here.
        self.echo_hook: Callable[[bytes, bytes, int, int, bytes], bool] | None = None
        # Shard 0's control plane follows ICMPv4 redirects (it owns the routes).
        self.redirect_hook_v4: Callable[[Ipv4View, int, Icmpv4View], None] | None = None
        # The [ip] table: default TTL / hop limit, the ICMP error rate.
        self.ip_config = ip_config or IpConfig()
        self.icmp = Icmp(self, (self.ip_config.icmp_rate_per_s, self.ip_config.icmp_burst))
        self.ipv4 = Ipv4(self, self.icmp)
        self.ipv6 = Ipv6(self, self.icmp)
        # The entry points, bound once: a call costs what a method of this
        # class would (the TCP data path goes through them).
        self.handle_ipv4 = self.ipv4.handle
        self.handle_looped_ipv4 = self.ipv4.handle_looped
        self.handle_ipv6 = self.ipv6.handle
        self.handle_looped_ipv6 = self.ipv6.handle_looped
        self.send_ipv4 = self.ipv4.send
        self.send_ipv6 = self.ipv6.send
        self.ipv4_source = self.ipv4.source
        self.ipv6_source = self.ipv6.source
        self.reassembly_expired = self.icmp.reassembly_expired
        self.unreachable = self.icmp.unreachable

    # --- the output path ---------------------------------------------------------------
    def set_ip_config(self, config: IpConfig) -> None:
        """New [ip] settings (``ctl ip --set``): datagrams sent from now on
        use them; the ICMP bucket starts again full at the new rate."""
        self.ip_config = config
        self.icmp.bucket = TokenBucket(config.icmp_rate_per_s, config.icmp_burst)
        self.paths.clear()  # they remember the hop limit

    def cached_source(
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

    def emit(
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
            mtu = self.path_mtu(nic, dst)
        if nic is not None and mtu and not (multicast_loop and group):
            fits = total <= mtu
            if fits or (out.gso_size and self.tx_offload):
                if group:
                    mac: bytes | None = group_mac(next_hop)
                else:
                    hop = (nic.id, next_hop)
                    mac = self.view.next_hop_mac(nic, next_hop)
                    if mac is not None and hop not in self.used_hops:
                        self.note_used(hop)
                if mac is not None:
                    self.write(ETH_HEADER.pack(mac, nic.mac, out.ethertype), out, fits)
                    return True
        # segment_tcp computes each segment's checksum: none over the whole
        cut = bool(out.gso_size) and out.protocol == IPPROTO_TCP and total > mtu > 0
        packet = out.joined(checksum=not cut)
        ethertype = out.ethertype
        if nic is None or nic.loopback:  # never on the wire, whole, never fragmented
            return self.loop(ethertype, packet)
        if multicast_loop and (nic.id, dst) in self.view.groups:
            self.loop(ethertype, packet)  # a copy for our own members
        if total <= mtu:
            self.to_link(nic, next_hop, ethertype, bytes(packet), group)
            return True
        if cut:
            for segment in segment_tcp(packet, out.gso_size):
                self.to_link(nic, next_hop, ethertype, bytes(segment), group)
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
            self.to_link(nic, next_hop, ethertype, piece, group)
        return True

    def path_mtu(self, nic: Nic, dst: bytes) -> int:
        """The MTU towards ``dst`` out of ``nic``: the link's, or less where
        a Packet Too Big / Fragmentation Needed taught a smaller one (RFC 8201,
        RFC 1191)."""
        if not len(self.pmtu):
            return nic.mtu
        return self.pmtu.mtu(self.clock(), dst, nic.mtu)

    def write(self, eth: bytes, out: Outgoing, fits: bool) -> None:
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

    def loop(self, ethertype: int, packet: bytes | bytearray) -> bool:
        """Loopback: one datagram for ourselves, as an Ethernet frame (our link
        MAC both ways), back through the dispatcher."""
        loop_back = self.loop_back
        assert loop_back is not None  # the callers checked
        link = self.view.nics.get(self.link_nic)
        mac = link.mac if link is not None else bytes(6)
        frame = bytearray(14 + len(packet))
        ETH_HEADER.pack_into(frame, 0, mac, mac, ethertype)
        frame[14:] = packet
        if loop_back(frame):
            self.counters.events[NetEvent.LOOPED_OUT] += 1
            return True
        self.counters.refuse("loopback", Drop.LOOP_BACK_DROPPED)  # the uplink ring is full
        return False

    def forward_offloaded(
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
        mac = self.view.next_hop_mac(nic, next_hop)
        if self.tx_offload and mac is not None:
            self.writer.write((ETH_HEADER.pack(mac, nic.mac, ethertype), packet), hdr)
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
            self.to_link(nic, next_hop, ethertype, bytes(piece), False)
        return True

    def to_link(
        self, nic: Nic, next_hop: bytes, ethertype: int, packet: bytes, group: bool
    ) -> None:
        if nic.loopback:  # no link and no neighbours: send_* loop these
            self.counters.refuse("loopback", Drop.LOOPBACK_NOT_LOOPED)
            return
        mac: bytes | None
        if group:
            mac = group_mac(next_hop)
        else:
            hop = (nic.id, next_hop)
            mac = self.view.next_hop_mac(nic, next_hop)
            if mac is None:
                mac = self._resolve(nic, next_hop, ethertype, packet)
                if mac is None:
                    return
            elif hop not in self.used_hops:
                self.note_used(hop)
        self.transmit(nic, mac, ethertype, packet)

    def transmit(self, nic: Nic, dst_mac: bytes, ethertype: int, packet: bytes | bytearray) -> None:
        self.writer.write((ETH_HEADER.pack(dst_mac, nic.mac, ethertype), packet))

    # --- next hops that the replica does not know yet --------------------------------------
    def _resolve(self, nic: Nic, ip: bytes, ethertype: int, packet: bytes) -> bytes | None:
        if self.resolver is not None:
            mac = self.resolver.resolve(self.clock(), nic, ip, ethertype, packet)
            if mac is None:
                self.deadline_changed()  # the resolver's probes and give-up time
            return mac
        key = (nic.id, ip)
        waiting = self._pending.get(key)
        if waiting is not None:
            self._hold(waiting, ethertype, packet)
            return None
        if len(self._pending) >= PENDING_NEIGHBOURS:
            oldest = next(iter(self._pending))  # insertion order: the oldest first
            for _ in range(len(self._pending.pop(oldest).queue)):
                self.counters.refuse("neighbour", Drop.NEIGHBOUR_QUEUE_OVERFLOW)
        # Queue before asking: the answer may come back within the call (an
        # in-process link) and release the queue at once.
        waiting = self._pending[key] = _Waiting(
            self.clock(), Unresolved(PENDING_BYTES_PER_NEIGHBOUR)
        )
        self._hold(waiting, ethertype, packet)
        self.deadline_changed()
        if self.ask_resolve is not None:
            self.ask_resolve(nic.id, ip)
        return None

    def _hold(self, waiting: _Waiting, ethertype: int, packet: bytes) -> None:
        for _ in range(waiting.queue.push((ethertype, packet), len(packet))):
            self.counters.refuse("neighbour", Drop.NEIGHBOUR_QUEUE_OVERFLOW)

    def neighbours_changed(self) -> None:
        """The replica's neighbour table changed: send what waited for it."""
        for key in [k for k in self._pending if k in self.view.neighbours]:
            queue = self._pending.pop(key).queue.packets()
            nic = self.view.nics.get(key[0])
            if nic is None:
                continue
            mac = self.view.neighbours[key]
            for ethertype, packet in queue:
                self.transmit(nic, mac, ethertype, packet)

    def note_used(self, hop: tuple[int, bytes]) -> None:
        """``hop`` (NIC id, next hop) was used to send; the first one since
        the last report arms the report's timer. Not on a point-to-point
        TUN: its next hop is a placeholder, with no neighbour entry for NUD
        to confirm (RFC 4861 §7.3: NUD is for links with link-layer
        addresses)."""
        if self.report_used is None:
            return
        nic = self.view.nics.get(hop[0])
        if nic is not None and nic.kind == "tun":
            return
        if not self.used_hops:
            # At once after a quiet spell (a STALE entry's DELAY starts with
            # its first use, RFC 4861 §7.3.3), else a second after the last.
            self._used_report_at = max(self.clock(), self._last_report + USE_REPORT_INTERVAL_S)
            self.used_hops.add(hop)
            self.deadline_changed()
        else:
            self.used_hops.add(hop)

    def next_deadline(self) -> float | None:
        report = self._used_report_at if self.used_hops else None
        if not self._pending:
            return report
        due = min(w.since for w in self._pending.values()) + PENDING_TIMEOUT_S
        return due if report is None else min(due, report)

    def handle_timeout(self, now: float) -> None:
        if self.used_hops and now >= self._used_report_at and self.report_used is not None:
            hops, self.used_hops = self.used_hops, set()
            self._last_report = now
            self.used_epoch = object()
            for nic_id, ip in hops:
                self.report_used(nic_id, ip)
        for key in [k for k, w in self._pending.items() if now - w.since >= PENDING_TIMEOUT_S]:
            for ethertype, packet in self._pending.pop(key).queue.packets():
                self.icmp.unreachable(ethertype, packet)


USE_REPORT_INTERVAL_S = 1.0  # next hops used, told to shard 0's NUD this often


@dataclass(slots=True)
class _Waiting:
    """Packets for a next hop shard 0 is resolving, and since when."""

    since: float
    queue: Unresolved


class Resolver:
    """Shard 0's next-hop resolution (ARP for IPv4, NS/NA for IPv6) as the
    output path sees it; implemented in ``control.py``."""

    def resolve(
        self, now: float, nic: Nic, ip: bytes, ethertype: int, packet: bytes
    ) -> bytes | None:
        raise NotImplementedError
