"""Software segmentation of a TCP super-segment (what a NIC's TSO does).

The TCP endpoint sends up to 64 KiB per segment when the link segments for
it (the virtio-net header's ``GSO_TCPV4``/``GSO_TCPV6``). When such a
packet cannot go to the link that way — its next hop is still being
resolved and it waits in a queue as plain bytes — it is cut here into
segments of ``gso_size`` payload bytes, as Linux's ``tcp_gso_segment``
does: every piece repeats the IP and TCP headers (options included); the
sequence number advances by the payload before it; FIN and PSH stay on the
last piece only, CWR on the first only (RFC 3168 §6.1.2); each IPv4 piece
gets the next identification (RFC 6864 §4.1 allows any value for atomic
datagrams; Linux increments) and every checksum is computed.

IPv6 packets built by this stack carry no extension headers, so the TCP
header follows the fixed header.
"""

from __future__ import annotations

import struct

from shardnet.common.checksum import checksum, pseudo_header_v4, pseudo_header_v6
from shardnet.common.wire.tcp import CWR, FIN, PSH

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
IPPROTO_TCP = 6


def segment_tcp(packet: bytes | bytearray, gso_size: int) -> list[bytearray]:
    """Cut the IPv4 or IPv6 TCP packet ``packet`` (checksums not needed)
    into pieces of at most ``gso_size`` payload bytes, checksums computed."""
    if gso_size <= 0:
        raise ValueError(f"gso_size must be positive, not {gso_size}")
    v4 = packet[0] >> 4 == 4
    ihl = (packet[0] & 0x0F) * 4 if v4 else 40
    thl = (packet[ihl + 12] >> 4) * 4
    head = ihl + thl
    data = memoryview(packet)[head:]
    seq = _U32.unpack_from(packet, ihl + 4)[0]
    flags = packet[ihl + 13]
    ident = _U16.unpack_from(packet, 4)[0] if v4 else 0
    src, dst = (bytes(packet[12:16]), bytes(packet[16:20])) if v4 else (
        bytes(packet[8:24]), bytes(packet[24:40]))  # fmt: skip
    pieces = []
    count = max(1, -(-len(data) // gso_size))
    for i in range(count):
        chunk = data[i * gso_size : (i + 1) * gso_size]
        piece = bytearray(head + len(chunk))
        piece[:head] = packet[:head]
        piece[head:] = chunk
        last = i == count - 1
        f = flags
        if not last:
            f &= ~(FIN | PSH)
        if i:
            f &= ~CWR
        piece[ihl + 13] = f
        _U32.pack_into(piece, ihl + 4, (seq + i * gso_size) & 0xFFFFFFFF)
        tcp_len = thl + len(chunk)
        if v4:
            _U16.pack_into(piece, 2, len(piece))
            _U16.pack_into(piece, 4, (ident + i) & 0xFFFF)
            piece[10:12] = b"\0\0"
            _U16.pack_into(piece, 10, checksum(memoryview(piece)[:ihl]))
            pseudo = pseudo_header_v4(src, dst, IPPROTO_TCP, tcp_len)
        else:
            _U16.pack_into(piece, 4, tcp_len)
            pseudo = pseudo_header_v6(src, dst, IPPROTO_TCP, tcp_len)
        piece[ihl + 16 : ihl + 18] = b"\0\0"
        _U16.pack_into(piece, ihl + 16, checksum(memoryview(piece)[ihl:], pseudo))
        pieces.append(piece)
    return pieces
