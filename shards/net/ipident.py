"""IPv4 identification values (RFC 6864, RFC 7739 §5).

One global counter, as before, tells anyone who receives two datagrams how
many the stack sent in between to everybody, and lets an off-path attacker
predict the next value to a victim (RFC 7739 §5.1); one counter per shard
could also hand two shards' datagrams to the same destination the same
value. As Linux (``ip_idents_reserve``) and gVisor do, a keyed hash of
(source, destination, protocol) picks one of ``IDENT_BUCKETS`` counters,
each starting at a secret offset: values to one destination advance one by
one, unrelated to those to another. Every shard derives the same hash key
and offsets from the stack's secret, and shard ``i`` of ``n`` hands out the
values that are ``i`` modulo ``n`` from each counter, so no two shards give
one destination the same value at the same time.
"""

from __future__ import annotations

import hashlib
import os
import zlib

IDENT_BUCKETS = 2048  # Linux IP_IDENTS_SZ


class IdentGenerator:
    __slots__ = ("_seed", "_offsets", "_counts", "_shard", "_step")

    def __init__(self, key: bytes, shard: int = 0, nshards: int = 1) -> None:
        """``key``: the stack's secret, the same in every shard (empty: a
        random one, for a stack of one shard)."""
        digest = hashlib.blake2s(b"ipv4 identification", key=(key or os.urandom(16))[:32]).digest()
        self._seed = int.from_bytes(digest[:4], "big")
        stream = hashlib.shake_128(digest).digest(2 * IDENT_BUCKETS)
        self._offsets = [int.from_bytes(stream[i : i + 2], "big") for i in range(0, len(stream), 2)]
        self._counts = [0] * IDENT_BUCKETS
        self._shard = shard
        self._step = max(nshards, 1)

    def next(self, src: bytes, dst: bytes, protocol: int) -> int:
        bucket = zlib.crc32(src + dst + bytes((protocol,)), self._seed) & (IDENT_BUCKETS - 1)
        k = self._counts[bucket]
        self._counts[bucket] = k + 1
        return (self._offsets[bucket] + k * self._step + self._shard) & 0xFFFF
