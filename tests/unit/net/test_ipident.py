"""IPv4 identification values (``shards/net/ipident.py``, RFC 6864 and
RFC 7739 §5): per destination, unpredictable across destinations, never the
same from two shards to one destination."""

from __future__ import annotations

from itertools import pairwise

from shardnet.common.addr import parse_ip
from shardnet.shards.net.ipident import IdentGenerator

SRC = parse_ip("198.18.0.2")
A, B = parse_ip("198.18.0.1"), parse_ip("198.18.0.3")
KEY = bytes(range(16))


def test_values_to_one_destination_advance_by_one_unrelated_to_another() -> None:
    g = IdentGenerator(KEY)
    to_a = [g.next(SRC, A, 17) for _ in range(3)]
    to_b = [g.next(SRC, B, 17) for _ in range(3)]
    assert [(y - x) & 0xFFFF for x, y in pairwise(to_a)] == [1, 1]
    assert [(y - x) & 0xFFFF for x, y in pairwise(to_b)] == [1, 1]
    assert (to_b[0] - to_a[-1]) & 0xFFFF != 1  # not one counter for everybody


def test_the_key_decides_the_values() -> None:
    assert IdentGenerator(KEY).next(SRC, A, 6) == IdentGenerator(KEY).next(SRC, A, 6)
    assert IdentGenerator(KEY).next(SRC, A, 6) != IdentGenerator(bytes(16)).next(SRC, A, 6)


def test_two_shards_never_give_one_destination_the_same_value() -> None:
    shards = [IdentGenerator(KEY, shard=i, nshards=2) for i in range(2)]
    seen: set[int] = set()
    for _ in range(16384):  # a quarter of the space each, interleaved
        for g in shards:
            value = g.next(SRC, A, 17)
            assert value not in seen
            seen.add(value)
