"""Internet checksum (RFC 1071), pseudo-headers (RFC 768, RFC 9293 §3.1,
RFC 8200 §8.1) and incremental update (RFC 1624).

Sums are kept *unfolded* as plain ints until the end: the one's-complement sum
of a byte string equals ``int.from_bytes(data, "big") % 0xFFFF`` (with 0 and
0xFFFF equivalent), so adding partial sums is ordinary integer addition.

Measured on the project machine (2 vCPU, Python 3.11, ns per call):

| bytes  | int.from_bytes % 0xFFFF | numpy >u2 sum |
|--------|-------------------------|---------------|
| 60     | ~490                    | ~3,480        |
| 1500   | ~4,000                  | ~4,100        |
| 65536  | ~151,000                | ~17,000       |

so buffers up to ``_NUMPY_FROM`` bytes take the integer path and larger ones
numpy. The data path normally leaves checksums to the kernel through the TAP's
virtio-net header; this module serves everything else.
"""

from __future__ import annotations

import struct

import numpy as np

_NUMPY_FROM = 2048
_PSEUDO_V4 = struct.Struct("!4s4sxBH")


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement sum of ``data`` as 16-bit big-endian words, plus
    ``initial``, folded to 16 bits (0..0xFFFF). An odd length is padded with a
    zero byte (RFC 1071 §4.1)."""
    n = len(data)
    if n >= _NUMPY_FROM:
        even = n & ~1
        total = int(np.frombuffer(data, dtype=">u2", count=even // 2).sum(dtype=np.uint64))
        if n & 1:
            total += data[n - 1] << 8
    elif n & 1:
        total = int.from_bytes(data, "big") << 8
    else:
        total = int.from_bytes(data, "big")
    # Not reduced here: fold() must see whether the sum is zero or only a
    # multiple of 0xFFFF (which folds to 0xFFFF, not 0).
    return fold(total + initial)


def fold(total: int) -> int:
    """Fold a wide sum into 16 bits with end-around carry. A non-zero sum that
    is a multiple of 0xFFFF folds to 0xFFFF (one's-complement "negative zero"
    is never produced for non-zero input), zero stays zero."""
    if total == 0:
        return 0
    r = total % 0xFFFF
    return r if r else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to put in a checksum field: the complement of the sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True if ``data`` (checksum field included) sums to 0xFFFF."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_header_v4(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """Folded sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768)."""
    return ones_sum(_PSEUDO_V4.pack(src, dst, protocol, length))


def pseudo_header_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Folded sum of the IPv6 pseudo-header (RFC 8200 §8.1): the 32-bit
    upper-layer length and the next header after three zero bytes."""
    return ones_sum(src + dst + length.to_bytes(4, "big") + next_header.to_bytes(4, "big"))


def pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The v4 or v6 pseudo-header sum, chosen by the address length."""
    if len(src) == 4:
        return pseudo_header_v4(src, dst, protocol, length)
    return pseudo_header_v6(src, dst, protocol, length)


def update16(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one changed 16-bit word."""
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def update_bytes(old_checksum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 update for a changed even-length, word-aligned field (an
    address, a port pair): HC' = ~(~HC + ~m + m') summed over the words."""
    total = (~old_checksum & 0xFFFF) + (~ones_sum(old) & 0xFFFF) + ones_sum(new)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
