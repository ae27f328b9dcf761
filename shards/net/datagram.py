"""A datagram as the network layer hands it on: ``Delivery`` to a transport
endpoint (input), ``Outgoing`` on its way to the link (output), and the
small per-datagram helpers both directions share (the transport checksum,
the multicast MAC, the GSO mark of a virtio-net header).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from shardnet.common.addr import is_ipv4_multicast
from shardnet.common.checksum import checksum
from shardnet.common.link_tx import BytesLike
from shardnet.common.wire.ipv4 import IPPROTO_UDP
from shardnet.common.wire.ipv6 import multicast_mac
from shardnet.common.wire.virtio import GSO_ECN

BROADCAST_MAC = b"\xff" * 6
ETH_HEADER = struct.Struct("!6s6sH")  # destination, source, ethertype

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


def is_super_frame(vnet: memoryview) -> bool:
    """The virtio-net header (possibly empty) marks a GSO super-frame."""
    return bool(vnet) and bool(vnet[1] & ~GSO_ECN)


def group_mac(group: bytes) -> bytes:
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
