"""Which shard a frame belongs to (DESIGN.md "Classification").

``classify(frame, nshards)`` is a pure function over the Ethernet frame. It
reads only the fields it needs with fixed offsets (no full parse: the shard
validates everything), and nothing in a frame can make it raise:

| frame | shard |
|---|---|
| TCP or UDP over IPv4/IPv6 | symmetric hash of (addresses, ports, protocol) |
| UDP from port 67 to port 68 over IPv4 (a DHCP reply, RFC 2131 §4.1) | 0 (the DHCP client) |
| UDP from port 547 to port 546 over IPv6 (a DHCPv6 reply, RFC 8415 §7.2) | 0 (the DHCPv6 client) |
| ICMP error | hash of the flow quoted in the error |
| ICMP echo | hash of (addresses, identifier) |
| IP fragment | ``FRAGMENT``: the dispatcher reassembles, then classifies again |
| ARP, NDP, MLD, ICMPv4 redirect, VLAN-tagged, short, malformed, anything unknown | 0 |
"""

from __future__ import annotations

import struct

from shardnet.common.flowhash import shard_for
from shardnet.common.wire.icmpv4 import quoted_flow as quoted_flow_v4
from shardnet.common.wire.icmpv6 import quoted_flow as quoted_flow_v6

FRAGMENT = -1  # an IP fragment: reassemble before choosing a shard

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58
_ICMPV4_ERRORS = frozenset((3, 4, 11, 12))  # RFC 792; a redirect (5) is shard 0's
_ICMPV4_ECHO = frozenset((0, 8))
_ICMPV6_ECHO = frozenset((128, 129))
# IPv6 extension headers walked to find the upper layer (RFC 8200 §4.1);
# the fragment header (44) ends the walk with FRAGMENT.
_EXT_HEADERS = frozenset((0, 43, 60))
_MAX_EXT_HEADERS = 8
_PORTS = struct.Struct("!HH")
# Upper layers that carry flows (``control_plane``): the IPv6 fragment
# header (44) and the routing and destination-options headers lead to one;
# a hop-by-hop header (0) is in front of MLD.
_FLOW_PROTOCOLS_V4 = frozenset((_TCP, _UDP, _ICMP))
_FLOW_NEXT_HEADERS_V6 = frozenset((_TCP, _UDP, 43, 44, 60))


def classify(frame: bytes | bytearray | memoryview, nshards: int) -> int:
    """The shard (0..nshards-1) for ``frame``, or ``FRAGMENT``."""
    # Even with one shard the walk runs: fragments must be found (FRAGMENT)
    # to be reassembled before the shard sees them.
    if len(frame) < 14:
        return 0
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == _ETHERTYPE_IPV4:
        return _classify_v4(frame, 14, nshards)
    if ethertype == _ETHERTYPE_IPV6:
        return _classify_v6(frame, 14, nshards)
    return 0  # ARP, VLAN-tagged, unknown: the control plane decides


def _classify_v4(frame: bytes | bytearray | memoryview, ip: int, nshards: int) -> int:
    if len(frame) < ip + 20 or frame[ip] >> 4 != 4:
        return 0
    ihl = (frame[ip] & 0x0F) * 4
    l4 = ip + ihl
    if ihl < 20 or len(frame) < l4:
        return 0
    if ((frame[ip + 6] & 0x3F) | frame[ip + 7]) != 0:  # MF set or offset != 0
        return FRAGMENT
    proto = frame[ip + 9]
    src = bytes(frame[ip + 12 : ip + 16])
    dst = bytes(frame[ip + 16 : ip + 20])
    if proto == _TCP or proto == _UDP:
        if len(frame) < l4 + 4:
            return 0
        sport, dport = _PORTS.unpack_from(frame, l4)
        if sport == 67 and dport == 68 and proto == _UDP:
            return 0  # DHCP server to client: shard 0 owns the client
        return shard_for(proto, src, sport, dst, dport, nshards)
    if proto == _ICMP and len(frame) >= l4 + 8:
        icmp_type = frame[l4]
        if icmp_type in _ICMPV4_ECHO:
            ident = (frame[l4 + 4] << 8) | frame[l4 + 5]
            return shard_for(_ICMP, src, ident, dst, ident, nshards)
        if icmp_type in _ICMPV4_ERRORS:
            flow = quoted_flow_v4(frame[l4 + 8 :])
            if flow is not None:
                return shard_for(flow[0], flow[1], flow[3], flow[2], flow[4], nshards)
    return 0


def _classify_v6(frame: bytes | bytearray | memoryview, ip: int, nshards: int) -> int:
    if len(frame) < ip + 40 or frame[ip] >> 4 != 6:
        return 0
    src = bytes(frame[ip + 8 : ip + 24])
    dst = bytes(frame[ip + 24 : ip + 40])
    next_header = frame[ip + 6]
    l4 = ip + 40
    for _ in range(_MAX_EXT_HEADERS):
        if next_header == 44:
            return FRAGMENT
        if next_header not in _EXT_HEADERS:
            break
        if len(frame) < l4 + 8:
            return 0
        next_header = frame[l4]
        l4 += (frame[l4 + 1] + 1) * 8
    else:
        return 0
    if next_header == _TCP or next_header == _UDP:
        if len(frame) < l4 + 4:
            return 0
        sport, dport = _PORTS.unpack_from(frame, l4)
        if sport == 547 and dport == 546 and next_header == _UDP:
            return 0  # DHCPv6 server to client: shard 0 owns the client
        return shard_for(next_header, src, sport, dst, dport, nshards)
    if next_header == _ICMPV6 and len(frame) >= l4 + 8:
        icmp_type = frame[l4]
        if icmp_type in _ICMPV6_ECHO:
            ident = (frame[l4 + 4] << 8) | frame[l4 + 5]
            return shard_for(_ICMPV6, src, ident, dst, ident, nshards)
        if icmp_type < 128:  # RFC 4443 §2.1: types 0-127 are errors
            flow = quoted_flow_v6(frame[l4 + 8 :])
            if flow is not None:
                return shard_for(flow[0], flow[1], flow[3], flow[2], flow[4], nshards)
    return 0  # NDP, MLD, unknown upper layers: shard 0


def control_plane(frame: bytes | bytearray | memoryview) -> bool:
    """Whether ``frame`` is control-plane work rather than a flow's traffic:
    ARP, neighbour discovery (RFC 4861 types 133-137), MLD and IGMP, any
    other ethertype or upper layer the stack has no flow for, and short or
    malformed frames. TCP, UDP, ICMP echo and errors, and fragments are
    flows'. Reads at most three bytes at fixed offsets; never raises."""
    n = len(frame)
    if n < 14 + 20:
        return True
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == _ETHERTYPE_IPV4:
        return frame[23] not in _FLOW_PROTOCOLS_V4
    if ethertype == _ETHERTYPE_IPV6 and n >= 14 + 40 + 1:
        next_header = frame[20]
        if next_header == _ICMPV6:
            # MLD (130-132, 143), NDP (133-137) and the other link-local
            # messages between them (router renumbering, node information).
            return 130 <= frame[54] <= 143
        return next_header not in _FLOW_NEXT_HEADERS_V6
    return True


def bare_syn(frame: bytes | bytearray | memoryview) -> bool:
    """A TCP segment with SYN and without ACK (a connection request), over
    IPv4 or over IPv6 without extension headers: what a SYN flood is made
    of. Reads four bytes at fixed offsets; never raises."""
    n = len(frame)
    if n < 14 + 40:
        return False
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == _ETHERTYPE_IPV4:
        if frame[23] != _TCP:
            return False
        flags_at = 14 + (frame[14] & 0x0F) * 4 + 13
    elif ethertype == _ETHERTYPE_IPV6:
        if frame[20] != _TCP:
            return False
        flags_at = 14 + 40 + 13
    else:
        return False
    return flags_at < n and frame[flags_at] & 0x12 == 0x02
