"""Symmetric flow hash, shard selection and shard-aware ephemeral ports.

The dispatcher sends every TCP/UDP frame to shard ``flow_hash(...) % N``
(DESIGN.md "Classification"). The hash is *symmetric*: both directions of a
flow give the same value, so a shard that opens a connection can choose a
local port whose flow hashes back to itself (``pick_port``), as multi-core
user-space stacks do with a symmetric NIC RSS key. It is also deterministic
across processes and runs (``zlib.crc32``, never the salted built-in
``hash()``), so the dispatcher and every shard agree whatever their
``PYTHONHASHSEED``.

The hash is CRC-32 (``zlib.crc32``, seeded with the protocol number) over
``min(ep_a, ep_b) + max(ep_a, ep_b)``, where an endpoint is its address bytes
followed by its port as 16 bits, packed by one precompiled ``struct.Struct``.
Ordering the two endpoints makes it symmetric.

Measured on the project machine (2 vCPU, Python 3.11, other jobs running),
best of 5, ns per call, both directions averaged:

| candidate                                                 | IPv4 | IPv6 |
|-----------------------------------------------------------|------|------|
| crc32 over min/max-ordered endpoints, one ``Struct.pack`` | 335  | 390  |
| the same, ``bytes`` concatenation instead of ``pack``     | 430  | 490  |
| symmetric Toeplitz (key 0x6d5a repeated), XOR-folded      | 450  | 495  |
| 64-bit multiply-mix of the ordered endpoints as ints      | 735  | 815  |

``pick_port`` for one shard of 4 takes about 1.5 µs (four candidates on average).

The Toeplitz row is already its fastest form: with a key of period 16 bits
the Toeplitz hash depends only on the XOR of all 16-bit words of the input,
so it takes two table lookups after folding the addresses (measured here: a byte-table
Toeplitz at 497 ns and crc32 at 1,044 ns, both slower than the forms above). That same property is
its weakness: only 16 bits of entropy, and a flow with equal ports (NTP
123 <-> 123, or an ICMP echo hashed as identifier <-> identifier) loses its
ports altogether. CRC-32 is faster here and keeps all input bits.

ICMP echo (DESIGN.md): pass the identifier as both ports; the pair is then
the same in both directions.

``pick_port`` implements the search of RFC 6056 §3.3.3 (Algorithm 3,
sequential from an offset) with one more test per candidate: the flow must
hash to the caller's shard. It uses no randomness: the caller derives
``start`` from a keyed hash of the destination, or a random number, as
RFC 6056 §3.3.3-§3.3.5 suggest, and passes it in (DESIGN.md "Sans-I/O core").
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable

# Linux net.ipv4.ip_local_port_range default (RFC 6056 §3.2 recommends
# 1024-65535; Linux keeps the upper ports for servers).
EPHEMERAL_LO = 32768
EPHEMERAL_HI = 60999

# One Struct per address family: endpoints are (address, port).
_ENDPOINTS = {
    4: struct.Struct("!4sH4sH"),
    16: struct.Struct("!16sH16sH"),
}


def flow_hash(proto: int, a_addr: bytes, a_port: int, b_addr: bytes, b_port: int) -> int:
    """A 32-bit hash of the flow, the same for (a, b) and (b, a).

    ``a_addr`` and ``b_addr`` are raw ``bytes`` of one family (4 or 16 bytes;
    another length raises KeyError: a programming error). Ports are 0..65535.
    """
    if a_addr > b_addr or (a_addr == b_addr and a_port > b_port):
        a_addr, a_port, b_addr, b_port = b_addr, b_port, a_addr, a_port
    return zlib.crc32(_ENDPOINTS[len(a_addr)].pack(a_addr, a_port, b_addr, b_port), proto)


def shard_for(
    proto: int, a_addr: bytes, a_port: int, b_addr: bytes, b_port: int, nshards: int
) -> int:
    """The shard (0..nshards-1) that owns the flow, in either direction."""
    return flow_hash(proto, a_addr, a_port, b_addr, b_port) % nshards


def pick_port(
    proto: int,
    local_addr: bytes,
    remote_addr: bytes,
    remote_port: int,
    shard: int,
    nshards: int,
    *,
    lo: int = EPHEMERAL_LO,
    hi: int = EPHEMERAL_HI,
    start: int,
    in_use: Callable[[int], bool] | None = None,
) -> int:
    """A local port in ``lo..hi`` (inclusive) whose flow to
    ``remote_addr:remote_port`` hashes to ``shard``, and that ``in_use`` does
    not reject.

    The search starts at ``start`` if it lies in the range (otherwise at
    ``lo + (start - lo) % (hi - lo + 1)``) and goes up, wrapping around once
    (RFC 6056 §3.3.3). About one candidate in ``nshards`` hashes to the
    shard, so the hash is tested before ``in_use``.

    Raises ValueError for bad arguments (shard or range) and
    ``OSError(EADDRNOTAVAIL)`` when every port of the range is taken or
    hashes elsewhere, as connect(2) does when no ephemeral port is left.
    """
    if nshards < 1 or not 0 <= shard < nshards:
        raise ValueError(f"shard {shard} of {nshards}")
    if not 0 < lo <= hi <= 0xFFFF:
        raise ValueError(f"port range {lo}-{hi}")
    count = hi - lo + 1
    offset = (start - lo) % count
    pack = _ENDPOINTS[len(local_addr)].pack
    crc32 = zlib.crc32
    # The endpoint order depends only on the addresses unless they are equal,
    # so flow_hash is inlined here with the comparison hoisted out of the loop.
    local_first = local_addr < remote_addr
    same = local_addr == remote_addr
    for i in range(count):
        port = lo + (offset + i) % count
        if same:
            local_first = port <= remote_port
        if local_first:
            h = crc32(pack(local_addr, port, remote_addr, remote_port), proto)
        else:
            h = crc32(pack(remote_addr, remote_port, local_addr, port), proto)
        if h % nshards == shard and (in_use is None or not in_use(port)):
            return port
    raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
