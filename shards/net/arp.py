"""ARP glue (RFC 826) between the wire codec and the neighbour table, sans-I/O.

Implements:
  * RFC 826 packet reception with the "merge" rule: the sender's entry is
    updated if present, and created only when we are the target; a request
    for one of our addresses gets a reply, unicast to the requester;
  * RFC 5227 §2.1.1: an ACD probe (sender IP 0.0.0.0) for one of our addresses
    gets our normal reply (target IP 0.0.0.0, as Linux sends it) and teaches
    nothing; §3 announcements (gratuitous ARP) to send when an address is
    added; an ARP from another MAC claiming one of our addresses is a
    conflict: counted and never learnt (probing and defence are
    ``acd.py``'s, fed by the control plane);
  * Linux's reachability rule (net/ipv4/arp.c arp_process): only a reply sent
    to our unicast MAC confirms reachability; requests and broadcast replies
    leave the entry STALE;
  * ARP requests (broadcast, or unicast to a known MAC) built from the
    table's probes.

Left out: proxy ARP, arp_ignore/arp_announce variants (the caller's
``is_ours`` predicate decides which addresses a NIC answers for), the Linux
``locktime`` against flapping replies, 802.1Q tags on the frames we emit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardnet.common.addr import (
    BROADCAST_MAC,
    IPV4_ANY,
    IPV4_BROADCAST,
    ZERO_MAC,
    is_ipv4_multicast,
    is_multicast_mac,
)
from shardnet.common.wire.arp import ARP_LEN, ARP_REPLY, ARP_REQUEST, ArpHeader, ArpView
from shardnet.common.wire.ethernet import (
    ETH_HEADER_LEN,
    ETH_MIN_FRAME,
    ETHERTYPE_ARP,
    EthernetHeader,
)

from .neighbour import NeighbourTable

# RFC 5227 §1.1: announcements to send when an address is claimed, and the
# time between them (the caller schedules the repeats).
ANNOUNCE_NUM = 2
ANNOUNCE_INTERVAL_S = 2.0

_FRAME_LEN = max(ETH_HEADER_LEN + ARP_LEN, ETH_MIN_FRAME)  # padded to the Ethernet minimum


@dataclass(slots=True)
class ArpStats:
    requests_in: int = 0
    replies_in: int = 0
    replies_out: int = 0  # answers to requests for our addresses
    requests_out: int = 0  # resolutions and announcements
    acd_probes_in: int = 0  # sender IP 0.0.0.0 (RFC 5227 probes)
    conflicts: int = 0  # another MAC claims one of our addresses
    bad_sender: int = 0  # broadcast/multicast sender MAC, or unusable sender/target IP
    own: int = 0  # our own frames looped back


@dataclass(slots=True)
class ArpResult:
    """What one received ARP packet produced."""

    frames: list[bytes] = field(default_factory=list)  # to send now (Ethernet frames)
    ip: bytes | None = None  # the neighbour that became resolvable, with ...
    mac: bytes | None = None  # ... its MAC, and ...
    packets: list[Any] = field(default_factory=list)  # ... what was queued for it


def _unusable_ip(ip: bytes) -> bool:
    # Linux arp_process drops ARP naming multicast or loopback addresses; the
    # limited broadcast is no neighbour either.
    return is_ipv4_multicast(ip) or ip[0] == 127 or ip == IPV4_BROADCAST


class ArpHandler:
    """The ARP side of one Ethernet NIC.

    ``is_ours(ip)``: the IPv4 address is assigned to this NIC (answered for,
    and a conflict when another MAC claims it). ``source_for(target)``: the
    sender IP of a request resolving ``target`` (None: 0.0.0.0).
    """

    __slots__ = ("table", "mac", "is_ours", "source_for", "stats")

    def __init__(
        self,
        table: NeighbourTable,
        mac: bytes,
        is_ours: Callable[[bytes], bool],
        source_for: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.table = table
        self.mac = mac
        self.is_ours = is_ours
        self.source_for = source_for
        self.stats = ArpStats()

    def handle(
        self, now: float, payload: bytes | bytearray | memoryview, *, unicast: bool = True
    ) -> ArpResult:
        """One received ARP packet (the Ethernet payload). ``unicast``: the
        Ethernet destination was our MAC (not broadcast). Raises
        MalformedPacket for a bad packet (the caller counts it)."""
        _, _, _, _, op, sha, spa, _tha, tpa = ArpView.checked(payload).fields()
        stats = self.stats
        result = ArpResult()
        if op == ARP_REQUEST:
            stats.requests_in += 1
        else:
            stats.replies_in += 1
        if sha == self.mac:
            stats.own += 1
            return result
        if is_multicast_mac(sha) or sha == ZERO_MAC or _unusable_ip(tpa):
            stats.bad_sender += 1
            return result
        is_ours = self.is_ours
        target_is_us = is_ours(tpa)
        if spa == IPV4_ANY:
            # RFC 5227 §2.1.1: a probe; answer if it is for one of our
            # addresses (our normal reply), learn nothing.
            stats.acd_probes_in += 1
            if op == ARP_REQUEST and target_is_us:
                result.frames.append(self._reply(tpa, sha, spa))
            return result
        if _unusable_ip(spa):
            stats.bad_sender += 1
            return result
        if is_ours(spa):
            # Someone else uses our address (RFC 5227 §2.4 conflict): never
            # learn it, never answer it.
            stats.conflicts += 1
            return result
        # RFC 826 merge: update the sender if known, add it if we are the
        # target. Only a unicast reply confirms reachability (Linux).
        packets = self.table.learn(
            now, spa, sha, solicited=op == ARP_REPLY and unicast, create=target_is_us
        )
        if packets:
            result.ip, result.mac, result.packets = spa, sha, packets
        if op == ARP_REQUEST and target_is_us:
            result.frames.append(self._reply(tpa, sha, spa))
        return result

    def poll_transmit(self) -> list[bytes]:
        """ARP requests for the table's pending probes."""
        probes = self.table.poll_probes()
        if not probes:
            return []
        source_for = self.source_for
        frames = []
        for p in probes:
            src = source_for(p.ip) if source_for is not None else None
            frames.append(self.request(p.ip, src or IPV4_ANY, unicast_mac=p.mac))
        return frames

    # --- builders ----------------------------------------------------------------------
    def request(self, ip: bytes, src_ip: bytes, *, unicast_mac: bytes | None = None) -> bytes:
        """Who has ``ip``? Tell ``src_ip``: broadcast, or unicast to a MAC
        being re-verified. Target hardware address zero (RFC 5227 §2.1.1)."""
        self.stats.requests_out += 1
        dst = unicast_mac if unicast_mac is not None else BROADCAST_MAC
        return self._frame(dst, ArpHeader(ARP_REQUEST, self.mac, src_ip, ZERO_MAC, ip))

    def announce(self, addr: bytes) -> bytes:
        """Gratuitous ARP for ``addr`` (RFC 5227 §3 announcement): a broadcast
        request with sender IP = target IP = ``addr``. Send it ANNOUNCE_NUM
        times ANNOUNCE_INTERVAL_S apart when an address is added."""
        self.stats.requests_out += 1
        return self._frame(BROADCAST_MAC, ArpHeader(ARP_REQUEST, self.mac, addr, ZERO_MAC, addr))

    def _reply(self, our_ip: bytes, to_mac: bytes, to_ip: bytes) -> bytes:
        # RFC 826: swap the fields, put our address in, reply to the requester.
        self.stats.replies_out += 1
        return self._frame(to_mac, ArpHeader(ARP_REPLY, self.mac, our_ip, to_mac, to_ip))

    def _frame(self, dst: bytes, arp: ArpHeader) -> bytes:
        buf = bytearray(_FRAME_LEN)
        n = EthernetHeader(dst, self.mac, ETHERTYPE_ARP).emit(buf)
        arp.emit(buf, n)
        return bytes(buf)
