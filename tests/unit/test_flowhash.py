"""Flow hash: known values, symmetry, spread over shards, pick_port."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import zlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.flowhash import (
    EPHEMERAL_HI,
    EPHEMERAL_LO,
    flow_hash,
    pick_port,
    shard_for,
)

TCP, UDP = 6, 17
A4, B4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")
# Fixed values: CRC-32 seeded with the protocol over the ordered endpoints.
# A change here changes which shard owns every flow: dispatcher and shards of
# different versions would disagree.
KNOWN_V4 = 0x43CA1F20  # TCP 198.18.0.1:40000 <-> 198.18.0.2:80
KNOWN_V6 = 0xF13D6A70  # UDP [2001:db8::1]:5353 <-> [2001:db8::2]:53

ports = st.integers(0, 0xFFFF)
v4 = st.binary(min_size=4, max_size=4)
v6 = st.binary(min_size=16, max_size=16)
# Endpoints of one family, the two addresses often equal.
pairs = st.one_of(
    st.tuples(v4, v4),
    st.tuples(v6, v6),
    v4.map(lambda a: (a, a)),
    v6.map(lambda a: (a, a)),
)


def test_known_values() -> None:
    assert flow_hash(TCP, A4, 40000, B4, 80) == KNOWN_V4
    assert flow_hash(TCP, B4, 80, A4, 40000) == KNOWN_V4
    assert flow_hash(UDP, A6, 5353, B6, 53) == KNOWN_V6
    assert flow_hash(UDP, B6, 53, A6, 5353) == KNOWN_V6


def test_definition() -> None:
    # The documented definition, written out with bytes concatenation.
    lo, hi = A4 + (40000).to_bytes(2, "big"), B4 + (80).to_bytes(2, "big")
    assert flow_hash(TCP, A4, 40000, B4, 80) == zlib.crc32(lo + hi, TCP)


@pytest.mark.parametrize("seed", ["0", "1", "12345", "random"])
def test_deterministic_across_processes(seed: str) -> None:
    code = (
        "from shardnet.common.flowhash import flow_hash;"
        f"print(flow_hash(6, {A4!r}, 40000, {B4!r}, 80), flow_hash(17, {A6!r}, 5353, {B6!r}, 53))"
    )
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [int(x) for x in out] == [KNOWN_V4, KNOWN_V6]


@given(proto=st.integers(0, 255), addrs=pairs, a_port=ports, b_port=ports)
def test_symmetric(proto: int, addrs: tuple[bytes, bytes], a_port: int, b_port: int) -> None:
    a, b = addrs
    h = flow_hash(proto, a, a_port, b, b_port)
    assert h == flow_hash(proto, b, b_port, a, a_port)
    assert 0 <= h <= 0xFFFFFFFF
    for n in (1, 2, 3, 4, 7):
        assert shard_for(proto, a, a_port, b, b_port, n) == shard_for(
            proto, b, b_port, a, a_port, n
        )


def test_endpoints_not_interchangeable() -> None:
    # Symmetric in the endpoints, not in the fields: swapping only the ports
    # (or only the addresses) is another flow.
    h = flow_hash(TCP, A4, 40000, B4, 80)
    assert flow_hash(TCP, A4, 80, B4, 40000) != h
    assert flow_hash(TCP, B4, 40000, A4, 80) != h
    assert flow_hash(UDP, A4, 40000, B4, 80) != h
    # Equal ports do not cancel out (they would with an XOR-based hash).
    assert len({flow_hash(1, A4, ident, B4, ident) for ident in range(64)}) == 64


def _spread(flows: list[tuple[int, bytes, int, bytes, int]], n: int) -> Counter[int]:
    return Counter(shard_for(*f, n) for f in flows)


@pytest.mark.parametrize("nshards", [2, 3, 4])
def test_random_flows_spread_evenly(nshards: int) -> None:
    rng = random.Random(1)
    flows = []
    for i in range(8000):
        size = 4 if i % 2 else 16
        prefix = b"\xc6\x12" if size == 4 else bytes.fromhex("20010db8")
        a = prefix + rng.randbytes(size - len(prefix))
        b = prefix + rng.randbytes(size - len(prefix))
        flows.append((rng.choice((TCP, UDP)), a, rng.randrange(1, 65536), b, rng.randrange(65536)))
    counts = _spread(flows, nshards)
    expected = len(flows) / nshards
    assert set(counts) == set(range(nshards))
    for c in counts.values():
        assert abs(c - expected) < 0.06 * expected, counts


@pytest.mark.parametrize("nshards", [2, 4])
@pytest.mark.parametrize(("server", "client"), [(A4, B4), (A6, B6)])
def test_sequential_client_ports_spread_evenly(nshards: int, server: bytes, client: bytes) -> None:
    # The common case: one server port, one client, consecutive ephemeral ports.
    flows = [(TCP, client, p, server, 443) for p in range(EPHEMERAL_LO, EPHEMERAL_LO + 4000)]
    counts = _spread(flows, nshards)
    expected = len(flows) / nshards
    for c in counts.values():
        assert abs(c - expected) < 0.06 * expected, counts


@pytest.mark.parametrize("nshards", [2, 4])
def test_many_clients_one_server_port_spread_evenly(nshards: int) -> None:
    flows = [(TCP, A4, 80, bytes([198, 19, i >> 8, i & 0xFF]), 50000) for i in range(4000)]
    counts = _spread(flows, nshards)
    for c in counts.values():
        assert abs(c - 4000 / nshards) < 0.06 * 4000 / nshards, counts


@given(
    proto=st.sampled_from([TCP, UDP]),
    addrs=pairs,
    remote_port=ports,
    nshards=st.integers(1, 8),
    data=st.data(),
)
def test_pick_port_hashes_to_shard(
    proto: int, addrs: tuple[bytes, bytes], remote_port: int, nshards: int, data: st.DataObject
) -> None:
    local, remote = addrs
    shard = data.draw(st.integers(0, nshards - 1))
    start = data.draw(st.integers(-(2**20), 2**20))
    port = pick_port(proto, local, remote, remote_port, shard, nshards, start=start)
    assert EPHEMERAL_LO <= port <= EPHEMERAL_HI
    assert shard_for(proto, local, port, remote, remote_port, nshards) == shard
    # and from the other direction, as the dispatcher sees the reply
    assert shard_for(proto, remote, remote_port, local, port, nshards) == shard


def test_pick_port_searches_up_from_start() -> None:
    # One shard: every port fits, so the first free one from start wins.
    assert pick_port(TCP, A4, B4, 80, 0, 1, start=40000) == 40000
    taken = {40000, 40001}
    assert pick_port(TCP, A4, B4, 80, 0, 1, start=40000, in_use=taken.__contains__) == 40002
    # Wraps around at hi.
    assert pick_port(TCP, A4, B4, 80, 0, 1, start=EPHEMERAL_HI) == EPHEMERAL_HI
    taken = {EPHEMERAL_HI}
    got = pick_port(TCP, A4, B4, 80, 0, 1, start=EPHEMERAL_HI, in_use=taken.__contains__)
    assert got == EPHEMERAL_LO
    # A start outside the range is reduced into it.
    span = EPHEMERAL_HI - EPHEMERAL_LO + 1
    assert pick_port(TCP, A4, B4, 80, 0, 1, start=EPHEMERAL_LO + 5 + 3 * span) == EPHEMERAL_LO + 5


def test_pick_port_is_the_first_match_from_start() -> None:
    start = 50000
    expected = next(
        p for p in range(start, EPHEMERAL_HI + 1) if shard_for(TCP, A6, p, B6, 443, 4) == 3
    )
    assert pick_port(TCP, A6, B6, 443, 3, 4, start=start) == expected


def test_pick_port_skips_in_use() -> None:
    seen: list[int] = []

    def in_use(port: int) -> bool:
        seen.append(port)
        return len(seen) < 5  # the first four candidates are taken

    port = pick_port(UDP, A4, B4, 53, 1, 2, start=33000, in_use=in_use)
    assert port == seen[-1] and len(seen) == 5
    # in_use is asked only about ports that hash to the shard
    assert all(shard_for(UDP, A4, p, B4, 53, 2) == 1 for p in seen)
    assert seen == sorted(seen)


def test_pick_port_custom_range() -> None:
    port = pick_port(TCP, A4, B4, 80, 2, 3, lo=1024, hi=1100, start=0)
    assert 1024 <= port <= 1100
    assert shard_for(TCP, A4, port, B4, 80, 3) == 2


def test_pick_port_exhausted_raises_eaddrnotavail() -> None:
    with pytest.raises(OSError) as exc:
        pick_port(TCP, A4, B4, 80, 0, 2, start=0, in_use=lambda port: True)
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_pick_port_no_port_hashes_to_shard() -> None:
    # A one-port range whose single flow belongs to the other shard.
    port = 40000
    other = 1 - shard_for(TCP, A4, port, B4, 80, 2)
    with pytest.raises(OSError) as exc:
        pick_port(TCP, A4, B4, 80, other, 2, lo=port, hi=port, start=port)
    assert exc.value.errno == errno.EADDRNOTAVAIL
    assert pick_port(TCP, A4, B4, 80, 1 - other, 2, lo=port, hi=port, start=0) == port


def test_pick_port_every_free_port_of_a_shard_is_reachable() -> None:
    # Take ports one after another: exactly the ports hashing to the shard
    # come out, each once, then EADDRNOTAVAIL.
    lo, hi = 40000, 40199
    mine = {p for p in range(lo, hi + 1) if shard_for(TCP, A4, p, B4, 80, 2) == 0}
    taken: set[int] = set()
    for _ in mine:
        taken.add(
            pick_port(TCP, A4, B4, 80, 0, 2, lo=lo, hi=hi, start=lo, in_use=taken.__contains__)
        )
    assert taken == mine
    with pytest.raises(OSError):
        pick_port(TCP, A4, B4, 80, 0, 2, lo=lo, hi=hi, start=lo, in_use=taken.__contains__)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shard": 2, "nshards": 2},
        {"shard": -1, "nshards": 2},
        {"shard": 0, "nshards": 0},
        {"shard": 0, "nshards": 1, "lo": 0},
        {"shard": 0, "nshards": 1, "lo": 100, "hi": 99},
        {"shard": 0, "nshards": 1, "hi": 65536},
    ],
)
def test_pick_port_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        pick_port(TCP, A4, B4, 80, start=0, **kwargs)
