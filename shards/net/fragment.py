"""Fragmentation on output (the shards): IPv4 (RFC 791 §3.2, §3.1 options)
and IPv6 (RFC 8200 §4.5).

Implemented:

* ``fragment_ipv4``: cuts a datagram into fragments whose data is a multiple
  of 8 bytes; the first fragment keeps every option, the others only the
  options whose copy bit is set (RFC 791 §3.1 "copied flag"), packed without
  the padding NOPs and padded to 4 bytes with EOL. A datagram that is itself a
  fragment (forwarding) is cut again: offsets add up and the last piece keeps
  the original MF (RFC 791 §3.2). DF set: ``FragmentationNeeded`` is raised
  and the caller answers ICMP Destination Unreachable code 4 with the MTU
  (RFC 1191 §4) -- or, for our own datagrams, lowers the path MTU.
* ``fragment_ipv6``: inserts a Fragment header after the Unfragmentable Part
  (the IPv6 header and the extension headers up to the last Hop-by-Hop or
  Routing header, RFC 8200 §4.5), patches the Next Header before it and each
  fragment's Payload Length. IPv6 is fragmented by the source only.

A datagram that fits in ``mtu`` comes back unchanged in a one-item list (no
atomic fragments, RFC 8021). Identification values are the caller's: RFC 7739
asks for unpredictable IPv6 ones, and RFC 6864 for IPv4 ones unique per
(source, destination, protocol) while fragments may be in flight.
Left out: jumbograms (RFC 2675); packets that already hold a Fragment header
are refused (ValueError).
"""

from __future__ import annotations

from shardnet.common.wire.ipv4 import Ipv4View, iter_options
from shardnet.common.wire.ipv6 import (
    IPV6_FRAGMENT_HEADER_LEN,
    IPV6_HEADER_LEN,
    IPV6_MIN_MTU,
    NH_FRAGMENT,
    PTR_NEXT_HEADER,
    Ipv6FragmentHeader,
    Ipv6View,
    fragment_data_len,
    walk_extensions,
)

IPV4_MIN_MTU = 68  # bytes, RFC 791 §3.2: a 60-byte header and 8 bytes of data
_COPY_BIT = 0x80  # RFC 791 §3.1: option type bit 0, "copied flag"


class FragmentationNeeded(Exception):
    """The datagram is larger than ``mtu`` and has DF set: answer ICMP
    Destination Unreachable, Fragmentation Needed (type 3 code 4) with
    ``mtu`` as the next-hop MTU (RFC 1191 §4)."""

    def __init__(self, mtu: int) -> None:
        super().__init__(f"fragmentation needed and DF set (mtu {mtu})")
        self.mtu = mtu


def fragment_ipv4(
    packet: bytes | bytearray | memoryview, mtu: int, ident: int | None = None
) -> list[bytes]:
    """The IPv4 datagram ``packet`` cut into fragments of at most ``mtu``
    bytes (IP packets, not frames). ``ident`` replaces the Identification of
    every fragment when given, else the datagram's own is kept. Raises
    ``FragmentationNeeded`` when DF is set and the datagram does not fit,
    ValueError for an MTU below 68 bytes, MalformedPacket for a bad datagram."""
    if mtu < IPV4_MIN_MTU:
        raise ValueError(f"IPv4 MTU {mtu} below {IPV4_MIN_MTU}")
    view = Ipv4View.checked(packet, verify_checksum=False)
    buf = view.buf
    if len(buf) <= mtu:
        return [bytes(buf)]
    if view.df:
        raise FragmentationNeeded(mtu)
    header = view.header()
    if ident is not None:
        header.ident = ident & 0xFFFF
    first_options = header.options
    base = header.frag_offset  # non-zero when cutting a fragment again
    last_mf = header.mf
    data = view.payload
    n = len(data)
    fragments: list[bytes] = []
    start = 0
    while start < n:
        hl = header.header_len
        size = (mtu - hl) & ~7  # RFC 791 §3.2: data in 8-byte blocks
        end = min(n, start + size)
        more = end < n
        header.mf = more or last_mf
        header.frag_offset = base + start
        header.total_length = hl + end - start
        out = bytearray(hl)
        header.emit(out)
        fragments.append(b"".join((out, data[start:end])))
        if start == 0 and first_options:
            header.options = _copied_options(first_options)
        start = end
    return fragments


def _copied_options(options: bytes) -> bytes:
    """The options of ``options`` with the copy bit set (RFC 791 §3.1), for
    the fragments after the first. The list was validated by the codec."""
    return b"".join(
        options[start:end] for kind, start, end in iter_options(options) if kind & _COPY_BIT
    )


def fragment_ipv6(packet: bytes | bytearray | memoryview, mtu: int, ident: int) -> list[bytes]:
    """The IPv6 packet ``packet`` cut into fragments of at most ``mtu`` bytes
    with Identification ``ident`` (RFC 8200 §4.5). ValueError for an MTU
    below 1280 (RFC 8200 §5), a packet that already holds a Fragment header
    or whose Unfragmentable Part leaves no room for data; MalformedPacket for
    a bad packet."""
    if mtu < IPV6_MIN_MTU:
        raise ValueError(f"IPv6 MTU {mtu} below {IPV6_MIN_MTU}")
    view = Ipv6View.checked(packet)
    buf = view.buf
    if len(buf) <= mtu:
        return [bytes(buf)]
    chain = walk_extensions(view)
    if chain.fragment is not None or any(nh == NH_FRAGMENT for nh, _ in chain.headers):
        raise ValueError("packet already holds a Fragment header")
    unfrag = chain.unfragmentable_len
    # The Next Header field naming the first header of the Fragmentable Part:
    # byte 0 of the last Unfragmentable extension header, or the fixed header's.
    pointer = PTR_NEXT_HEADER
    for _, off in chain.headers:
        if off < unfrag:
            pointer = off
    size = fragment_data_len(mtu, unfrag)
    if size < 8:
        raise ValueError(f"unfragmentable part of {unfrag} bytes leaves no room in mtu {mtu}")
    header = Ipv6View(buf).header()
    frag = Ipv6FragmentHeader(buf[pointer], ident=ident & 0xFFFFFFFF)
    data = buf[unfrag:]
    n = len(data)
    head = bytearray(buf[:unfrag])
    head[pointer] = NH_FRAGMENT
    fragments: list[bytes] = []
    start = 0
    while start < n:
        end = min(n, start + size)
        frag.fragment_offset = start
        frag.more_fragments = end < n
        header.payload_length = unfrag - IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN + end - start
        header.next_header = head[PTR_NEXT_HEADER]
        header.emit(head)
        fh = bytearray(IPV6_FRAGMENT_HEADER_LEN)
        frag.emit(fh)
        fragments.append(b"".join((head, fh, data[start:end])))
        start = end
    return fragments
