"""Reassembly in the dispatcher: scapy's fragments come back whole (and as
scapy's defragment puts them together), overlaps, duplicates, timeouts on a
fake clock, every limit, atomic fragments, ECN, and garbage never raises."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, IPOption_LSRR, IPOption_RR, defragment, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    defragment6,
    fragment6,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from shardnet.common.addr import parse_ip
from shardnet.common.classify import FRAGMENT, classify
from shardnet.common.wire.ethernet import ETH_HEADER_LEN
from shardnet.common.wire.ipv4 import Ipv4Header, Ipv4View
from shardnet.common.wire.ipv6 import (
    NH_FRAGMENT,
    Ipv6FragmentHeader,
    Ipv6Header,
    Ipv6View,
    walk_extensions,
)
from shardnet.dispatcher.reassembly import (
    TIMEOUT_V4_S,
    TIMEOUT_V6_S,
    Expired,
    Reassembler,
    ReassemblyConfig,
)

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
SRC4, DST4 = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
SRC6, DST6 = parse_ip("2001:db8::1"), parse_ip("2001:db8::2")
ETH4 = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800))
ETH6 = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x86DD))
DATA = bytes(range(256)) * 16  # 4096 bytes


class Clock:
    """A fake clock: tests move time by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# --- frame builders ------------------------------------------------------------


def udp4(size: int = len(DATA), **ip: object) -> IP:
    ip.setdefault("id", 0x4242)
    return (
        IP(src="198.18.0.1", dst="198.18.0.2", **ip) / UDP(sport=5353, dport=53) / Raw(DATA[:size])
    )


def udp6(*ext: object, size: int = len(DATA), fragment_id: int | None = None) -> IPv6:
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for e in ext:
        pkt = pkt / e
    if fragment_id is not None:
        pkt = pkt / IPv6ExtHdrFragment(id=fragment_id)
    return pkt / UDP(sport=5353, dport=53) / Raw(DATA[:size])


def frames4(pkt: IP, fragsize: int = 1480) -> list[bytes]:
    return [ETH4 + bytes(f) for f in fragment(pkt, fragsize=fragsize)]


def frames6(pkt: IPv6, mtu: int = 1280) -> list[bytes]:
    return [ETH6 + bytes(f) for f in fragment6(pkt, mtu)]


def frag4(
    offset: int,
    data: bytes,
    more: bool,
    *,
    ident: int = 7,
    protocol: int = 17,
    tos: int = 0,
    options: bytes = b"",
) -> bytes:
    """A hand-made IPv4 fragment frame (our codec; checksum computed)."""
    h = Ipv4Header(
        SRC4, DST4, protocol, ident=ident, mf=more, frag_offset=offset, tos=tos, options=options
    )
    h.total_length = h.header_len + len(data)
    buf = bytearray(ETH_HEADER_LEN + h.total_length)
    buf[:ETH_HEADER_LEN] = ETH4
    h.emit(buf, ETH_HEADER_LEN)
    buf[ETH_HEADER_LEN + h.header_len :] = data
    return bytes(buf)


def frag6(
    offset: int,
    data: bytes,
    more: bool,
    *,
    ident: int = 7,
    next_header: int = 17,
    traffic_class: int = 0,
) -> bytes:
    """A hand-made IPv6 fragment frame: fixed header, Fragment header, data."""
    buf = bytearray(ETH_HEADER_LEN + 48 + len(data))
    buf[:ETH_HEADER_LEN] = ETH6
    Ipv6Header(
        SRC6, DST6, NH_FRAGMENT, traffic_class=traffic_class, payload_length=8 + len(data)
    ).emit(buf, ETH_HEADER_LEN)
    Ipv6FragmentHeader(next_header, offset, more, ident).emit(buf, ETH_HEADER_LEN + 40)
    buf[ETH_HEADER_LEN + 48 :] = data
    return bytes(buf)


def push_all(r: Reassembler, frames: list[bytes], now: float = 0.0) -> list[bytes]:
    return [out for f in frames if (out := r.push(now, memoryview(f))) is not None]


def assert_empty(r: Reassembler) -> None:
    assert len(r) == 0 and r.held_bytes == 0 and r.next_deadline() is None


# --- IPv4 against scapy ---------------------------------------------------------


@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled", "last_first"])
def test_v4_scapy_fragments_reassemble(order: str) -> None:
    pkt = udp4()
    frames = frames4(pkt, 512)
    if order == "reversed":
        frames.reverse()
    elif order == "shuffled":
        random.Random(4).shuffle(frames)
    elif order == "last_first":
        frames = frames[-1:] + frames[:-1]
    r = Reassembler()
    assert [f for f in frames if classify(f, 4) != FRAGMENT] == []
    out = push_all(r, frames)
    assert out == [ETH4 + bytes(pkt)]
    assert classify(out[0], 4) != FRAGMENT  # the dispatcher can now hash it
    assert_empty(r)
    assert not r.drops


def test_v4_matches_scapy_defragment() -> None:
    """Header from the first fragment (options included), MF/offset cleared,
    checksum recomputed: the same bytes as scapy's defragment."""
    pkt = udp4(3000, options=[IPOption_LSRR(routers=["198.18.0.7"])], tos=0x10)
    frames = frames4(pkt, 1000)
    out = push_all(Reassembler(), frames[::-1])
    whole = defragment([IP(f[ETH_HEADER_LEN:]) for f in frames])
    assert len(out) == 1 and out[0][ETH_HEADER_LEN:] == bytes(whole[0])
    v = Ipv4View.checked(out[0][ETH_HEADER_LEN:])  # checksum verified
    assert (v.mf, v.frag_offset, v.total_length, v.tos) == (False, 0, len(bytes(pkt)), 0x10)


def test_v4_first_fragment_options_win() -> None:
    """RFC 791: non-first fragments carry only the copied options; the
    reassembled header is the first fragment's."""
    rr = bytes(IPOption_RR(routers=["198.18.0.9"])) + b"\x00"
    first = frag4(0, DATA[:16], True, options=rr)
    last = frag4(16, DATA[16:40], False)
    out = push_all(Reassembler(), [last, first])
    assert len(out) == 1
    v = Ipv4View.checked(out[0][ETH_HEADER_LEN:])
    assert bytes(v.options) == rr and bytes(v.payload) == DATA[:40]


def test_v4_dont_fragment_bit_of_first_kept() -> None:
    pkt = udp4(3000)
    frames = frames4(pkt, 1480)
    out = push_all(Reassembler(), frames)
    assert Ipv4View.checked(out[0][ETH_HEADER_LEN:]).df is False


def test_v4_key_includes_protocol() -> None:
    r = Reassembler()
    assert r.push(0.0, frag4(0, DATA[:8], True, protocol=17)) is None
    assert r.push(0.0, frag4(8, DATA[8:16], False, protocol=6)) is None
    assert len(r) == 2
    out = r.push(0.0, frag4(8, DATA[8:16], False, protocol=17))
    assert out is not None and Ipv4View.checked(out[ETH_HEADER_LEN:]).protocol == 17
    assert len(r) == 1


def test_vlan_tagged_frame_keeps_its_tag() -> None:
    pkt = udp4(2000)
    tag = bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=42, type=0x0800))
    frames = [tag + bytes(f) for f in fragment(pkt, fragsize=600)]
    out = push_all(Reassembler(), frames[::-1])
    assert out == [tag + bytes(pkt)]
    assert Ether(out[0])[Dot1Q].vlan == 42


def test_link_padding_is_cut() -> None:
    r = Reassembler()
    r.push(0.0, frag4(0, DATA[:8], True))
    small = frag4(8, DATA[8:12], False)
    padded = small + bytes(60 - len(small))
    out = r.push(0.0, padded)
    assert out is not None and Ipv4View.checked(out[ETH_HEADER_LEN:]).total_length == 32
    assert len(out) == ETH_HEADER_LEN + 32


# --- IPv6 against scapy ---------------------------------------------------------


@pytest.mark.parametrize(
    "ext",
    [
        (),
        (IPv6ExtHdrHopByHop(),),
        (IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(segleft=0)),
        (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()),  # dest opts behind the fragment header
    ],
)
@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled"])
def test_v6_scapy_fragments_reassemble(ext: tuple, order: str) -> None:
    # Unfragmentable: Hop-by-Hop and Routing; Destination Options after them
    # go with the fragmentable part (scapy puts the Fragment header where we say).
    unfrag = [e for e in ext if not isinstance(e, IPv6ExtHdrDestOpt)]
    after = [e for e in ext if isinstance(e, IPv6ExtHdrDestOpt)]
    model = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for e in unfrag:
        model = model / e
    model = model / IPv6ExtHdrFragment(id=0xABCD)
    for e in after:
        model = model / e
    model = model / UDP(sport=5353, dport=53) / Raw(DATA)
    frames = frames6(model)
    if order == "reversed":
        frames.reverse()
    elif order == "shuffled":
        random.Random(6).shuffle(frames)
    r = Reassembler()
    out = push_all(r, frames)
    expected = bytes(udp6(*unfrag, *after))
    assert out == [ETH6 + expected]
    assert bytes(defragment6([IPv6(f[ETH_HEADER_LEN:]) for f in frames])) == expected
    v = Ipv6View.checked(out[0][ETH_HEADER_LEN:])
    chain = walk_extensions(v)
    assert chain.fragment is None and chain.upper_protocol == 17
    assert classify(out[0], 4) != FRAGMENT
    assert_empty(r)


def test_v6_atomic_fragment_returned_at_once_without_fragment_header() -> None:
    """RFC 6946 §4: processed in isolation, even with a datagram of the same
    identification in progress."""
    r = Reassembler()
    r.push(0.0, frag6(0, DATA[:16], True, ident=99))
    atomic = ETH6 + bytes(udp6(IPv6ExtHdrHopByHop(), size=100, fragment_id=99))
    out = r.push(0.0, atomic)
    assert out == ETH6 + bytes(udp6(IPv6ExtHdrHopByHop(), size=100))
    assert len(r) == 1  # the other datagram is untouched


def test_v6_two_fragment_headers_are_malformed() -> None:
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=1)
    pkt = pkt / IPv6ExtHdrFragment(id=2, m=1) / Raw(DATA[:16])
    r = Reassembler()
    assert r.push(0.0, ETH6 + bytes(pkt)) is None
    assert r.drops["malformed"] == 1


def test_v6_first_fragment_without_upper_header_is_dropped() -> None:
    """RFC 8200 §4.5 / RFC 7112 §5: 8 bytes cannot hold a TCP header."""
    r = Reassembler()
    assert r.push(0.0, frag6(0, DATA[:8], True, next_header=6)) is None
    assert r.drops["incomplete_chain"] == 1
    assert_empty(r)
    # A Destination Options header longer than the fragment: same.
    dst_opts = bytes([17, 2]) + bytes(6)  # claims 24 bytes
    assert r.push(0.0, frag6(0, dst_opts + DATA[:8], True, next_header=60)) is None
    assert r.drops["incomplete_chain"] == 2


# --- duplicates and overlaps ----------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_exact_duplicates_are_harmless(version: int) -> None:
    frames = frames4(udp4(), 1000) if version == 4 else frames6(udp6(fragment_id=3))
    r = Reassembler()
    out = push_all(r, [frames[0], frames[0], frames[1], frames[1], *frames[2:]])
    assert len(out) == 1
    assert r.drops["duplicate"] == 2


@pytest.mark.parametrize("version", [4, 6])
def test_partial_overlap_drops_the_datagram(version: int) -> None:
    """RFC 5722 §4 for IPv6; the same policy for IPv4 (Linux since CVE-2018-5391)."""
    make = frag4 if version == 4 else frag6
    r = Reassembler()
    assert r.push(0.0, make(0, DATA[:16], True)) is None
    assert r.push(0.0, make(8, DATA[8:24], True)) is None
    assert r.drops["overlap"] == 1
    assert_empty(r)
    # What follows starts a new datagram and cannot complete without a first.
    assert r.push(0.0, make(16, DATA[16:24], False)) is None
    assert len(r) == 1


def test_v6_same_range_other_bytes_is_an_overlap() -> None:
    r = Reassembler()
    r.push(0.0, frag6(0, DATA[:16], True))
    r.push(0.0, frag6(0, bytes(16), True))
    assert r.drops["overlap"] == 1
    assert_empty(r)


def test_v6_contained_fragment_is_an_overlap() -> None:
    """RFC 5722 §4: any overlap but an exact duplicate discards the datagram."""
    r = Reassembler()
    r.push(0.0, frag6(8, DATA[8:32], True))
    r.push(0.0, frag6(16, DATA[16:24], True))  # same bytes, inside: still an overlap
    assert r.drops["overlap"] == 1
    assert_empty(r)


@pytest.mark.parametrize(
    ("offset", "data"),
    [
        (16, DATA[16:24]),  # inside one fragment, same bytes
        (0, bytes(16)),  # the same range, other bytes
        (8, bytes(24)),  # across two adjacent fragments, other bytes
    ],
)
def test_v4_fragment_inside_data_held_is_a_duplicate_and_the_first_bytes_stay(
    offset: int, data: bytes
) -> None:
    """RFC 791 allows overlaps: as Linux, a fragment wholly inside data
    already held is dropped alone and the datagram completes with the bytes
    that came first."""
    r = Reassembler()
    assert r.push(0.0, frag4(0, DATA[:16], True)) is None
    assert r.push(0.0, frag4(16, DATA[16:32], True)) is None
    assert r.push(0.0, frag4(offset, data, True)) is None
    assert r.drops["duplicate"] == 1 and r.drops["overlap"] == 0
    whole = r.push(0.0, frag4(32, DATA[32:40], False))
    assert whole is not None and bytes(whole)[-40:] == DATA[:40]
    assert_empty(r)


def test_v4_fragment_over_a_hole_is_an_overlap() -> None:
    r = Reassembler()
    r.push(0.0, frag4(0, DATA[:8], True))
    r.push(0.0, frag4(16, DATA[16:24], True))
    r.push(0.0, frag4(0, DATA[:24], True))  # covers the hole at [8, 16) and both sides
    assert r.drops["overlap"] == 1
    assert_empty(r)


def test_v6_fragments_owed_a_parameter_problem_are_flagged_refused() -> None:
    """RFC 8200 §4.5: a non-last fragment whose length is not a multiple of
    8, or one reaching past 65,535 bytes, is dropped and answered; the
    caller hands it to a shard that sends the error."""
    r = Reassembler()
    assert r.push(0.0, frag6(0, DATA[:12], True)) is None
    assert r.refused
    assert r.push(0.0, frag6(65528, DATA[:16], False)) is None
    assert r.refused
    assert r.push(0.0, frag6(0, DATA[:16], True)) is None
    assert not r.refused  # queued: nothing owed
    assert r.push(0.0, frag4(0, DATA[:12], True)) is None
    assert not r.refused  # IPv4: dropped silently (RFC 791 has no such error)


def test_overlap_with_the_previous_fragment() -> None:
    r = Reassembler()
    r.push(0.0, frag4(16, DATA[16:32], True))
    r.push(0.0, frag4(0, DATA[:24], True))  # runs into [16, 32)
    assert r.drops["overlap"] == 1
    assert_empty(r)


def test_adjacent_fragments_do_not_overlap() -> None:
    r = Reassembler()
    out = push_all(
        r, [frag4(8, DATA[8:16], True), frag4(16, DATA[16:20], False), frag4(0, DATA[:8], True)]
    )
    assert len(out) == 1 and bytes(Ipv4View.checked(out[0][14:]).payload) == DATA[:20]


# --- lengths ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_non_last_fragment_not_multiple_of_8(version: int) -> None:
    make = frag4 if version == 4 else frag6
    r = Reassembler()
    assert r.push(0.0, make(0, DATA[:13], True)) is None
    assert r.drops["bad_length"] == 1
    assert_empty(r)


@pytest.mark.parametrize("version", [4, 6])
def test_empty_fragment_dropped(version: int) -> None:
    make = frag4 if version == 4 else frag6
    r = Reassembler()
    assert r.push(0.0, make(8, b"", False)) is None
    assert r.push(0.0, make(8, b"", True)) is None
    assert r.drops["bad_length"] == 2
    assert_empty(r)


@pytest.mark.parametrize("version", [4, 6])
def test_inconsistent_ends_drop_the_datagram(version: int) -> None:
    make = frag4 if version == 4 else frag6
    r = Reassembler()
    r.push(0.0, make(16, DATA[16:20], False))
    r.push(0.0, make(16, DATA[16:28], False))  # another end
    assert r.drops["bad_length"] == 1
    assert_empty(r)
    r.push(0.0, make(16, DATA[16:20], False))
    r.push(0.0, make(24, DATA[24:32], True))  # beyond the end
    assert r.drops["bad_length"] == 2
    assert_empty(r)
    r.push(0.0, make(24, DATA[24:32], True))
    r.push(0.0, make(16, DATA[16:20], False))  # an end before data held
    assert r.drops["bad_length"] == 3
    assert_empty(r)


def test_v4_beyond_65535_is_too_big() -> None:
    """The ping of death: offset + length past the largest datagram."""
    r = Reassembler()
    assert r.push(0.0, frag4(65528, DATA[:16], False)) is None
    assert r.drops["too_big"] == 1
    assert_empty(r)


def test_v6_beyond_65535_is_too_big() -> None:
    r = Reassembler()
    assert r.push(0.0, frag6(65528, DATA[:16], False)) is None
    assert r.drops["too_big"] == 1
    assert_empty(r)


@pytest.mark.parametrize("version", [4, 6])
def test_configured_largest_datagram(version: int) -> None:
    cfg = ReassemblyConfig(max_datagram_v4=1000, max_payload_v6=1000)
    make = frag4 if version == 4 else frag6
    r = Reassembler(cfg)
    assert r.push(0.0, make(1000, DATA[:16], False)) is None
    assert r.drops["too_big"] == 1
    assert_empty(r)
    # Below the limit it works.
    assert push_all(r, [make(0, DATA[:256], True), make(256, DATA[256:512], False)])


# --- time -------------------------------------------------------------------------


def test_timeouts_30s_v4_and_60s_v6_with_first_fragment_quoted() -> None:
    clock = Clock()
    r = Reassembler()
    first4 = frag4(0, DATA[:16], True, ident=0x1111)
    first6 = frag6(0, DATA[:16], True, ident=0x22222222)
    r.push(clock.now, first4)
    r.push(clock.advance(5), first6)
    r.push(clock.advance(1), frag4(16, DATA[16:24], True, ident=0x1111))  # no timer restart
    assert r.next_deadline() == 1000.0 + TIMEOUT_V4_S
    assert r.handle_timeout(1000.0 + TIMEOUT_V4_S - 0.001) == []
    expired = r.handle_timeout(1000.0 + TIMEOUT_V4_S)
    assert expired == [
        Expired(4, SRC4, DST4, 0x1111, 17, first4[ETH_HEADER_LEN:], ETH4),
    ]
    assert "198.18.0.1 > 198.18.0.2" in expired[0].summary()
    assert r.next_deadline() == 1005.0 + TIMEOUT_V6_S
    (e6,) = r.handle_timeout(2000.0)
    assert e6 == Expired(6, SRC6, DST6, 0x22222222, None, first6[ETH_HEADER_LEN:], ETH6)
    assert r.drops["timeout"] == 2
    assert_empty(r)


def test_expired_without_first_fragment_has_no_quote() -> None:
    """RFC 792 / RFC 8200 §4.5: time exceeded only if the first fragment came."""
    r = Reassembler()
    r.push(0.0, frag6(8, DATA[8:16], False))
    r.push(0.0, frag4(8, DATA[8:16], False))
    expired = r.handle_timeout(100.0)
    assert {e.version for e in expired} == {4, 6}
    assert all(e.first_fragment is None and e.link_header is None for e in expired)


def test_timeouts_are_configurable() -> None:
    r = Reassembler(ReassemblyConfig(timeout_v4=0.5, timeout_v6=0.25))
    r.push(10.0, frag4(0, DATA[:8], True))
    r.push(10.0, frag6(0, DATA[:8], True))
    assert r.next_deadline() == 10.25
    assert [e.version for e in r.handle_timeout(10.25)] == [6]
    assert [e.version for e in r.handle_timeout(10.5)] == [4]


def test_completed_datagram_leaves_no_deadline() -> None:
    r = Reassembler()
    push_all(r, frames4(udp4(), 1480), now=5.0)
    assert r.next_deadline() is None
    assert r.handle_timeout(1e9) == []


def test_bad_config_refused() -> None:
    with pytest.raises(ValueError):
        ReassemblyConfig(timeout_v4=0)
    with pytest.raises(ValueError):
        ReassemblyConfig(max_bytes=0)


# --- limits -----------------------------------------------------------------------


def test_too_many_fragments_drops_the_datagram() -> None:
    r = Reassembler(ReassemblyConfig(max_fragments=3))
    frames = frames4(udp4(), 512)  # 9 fragments
    assert push_all(r, frames) == []
    # Fragments 1-3 queue, the 4th abandons the datagram; 5-7 start a new
    # one (no first fragment), the 8th abandons it; the 9th starts another.
    assert r.drops["too_many_fragments"] == 2
    assert len(r) == 1


def test_too_many_datagrams_evicts_the_oldest() -> None:
    clock = Clock()
    r = Reassembler(ReassemblyConfig(max_datagrams=2))
    for ident in (1, 2, 3):
        r.push(clock.advance(1), frag4(0, DATA[:8], True, ident=ident))
    assert len(r) == 2 and r.drops["too_many_datagrams"] == 1
    assert r.push(clock.now, frag4(8, DATA[8:16], False, ident=1)) is None  # 1 is gone
    assert r.drops["too_many_datagrams"] == 2  # ... and its last fragment evicted 2
    assert r.push(clock.now, frag4(8, DATA[8:16], False, ident=3)) is not None


def test_v6_is_evicted_when_older() -> None:
    clock = Clock()
    r = Reassembler(ReassemblyConfig(max_datagrams=2))
    r.push(clock.advance(1), frag6(0, DATA[:8], True, ident=1))
    r.push(clock.advance(1), frag4(0, DATA[:8], True, ident=1))
    r.push(clock.advance(1), frag4(0, DATA[:8], True, ident=2))
    assert r.next_deadline() == clock.now - 1 + TIMEOUT_V4_S  # the IPv6 one is gone
    assert [e.version for e in r.handle_timeout(clock.now + 100)] == [4, 4]


def test_memory_limit_evicts_the_oldest() -> None:
    clock = Clock()
    # Each datagram: 3 fragments (1480, 1480, 1144 bytes), 64 bytes overhead
    # each, and 34 bytes of headers: 4330 bytes; two first fragments and a
    # second one (4700) do not fit in 4500.
    cfg = ReassemblyConfig(max_bytes=4500)
    r = Reassembler(cfg)
    a = frames4(udp4(), 1480)
    b = frames4(udp4(id=0x4343), 1480)
    r.push(clock.advance(1), a[0])
    r.push(clock.advance(1), b[0])
    assert len(r) == 2
    r.push(clock.advance(1), b[1])  # needs room: A goes
    assert r.drops["memory"] == 1 and len(r) == 1
    assert r.held_bytes <= cfg.max_bytes
    assert r.push(clock.now, b[2]) == ETH4 + bytes(udp4(id=0x4343))
    assert_empty(r)


def test_datagram_larger_than_memory_is_dropped() -> None:
    cfg = ReassemblyConfig(max_bytes=2000)
    r = Reassembler(cfg)
    frames = frames4(udp4(), 1480)
    assert push_all(r, frames) == []
    assert r.drops["memory"] >= 1
    assert r.held_bytes <= cfg.max_bytes


def test_held_bytes_account_data_headers_and_overhead() -> None:
    r = Reassembler(ReassemblyConfig(overhead_per_fragment=100))
    r.push(0.0, frag4(0, DATA[:16], True))
    assert r.held_bytes == 16 + 100 + ETH_HEADER_LEN + 20
    r.push(0.0, frag4(24, DATA[24:32], True))
    assert r.held_bytes == 16 + 100 + ETH_HEADER_LEN + 20 + 8 + 100
    r.push(0.0, frag4(16, DATA[16:24], True))  # not complete: no last fragment
    assert r.push(0.0, frag4(32, DATA[32:33], False)) is not None
    assert_empty(r)


# --- ECN (RFC 3168 §5.3) -----------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_ce_in_one_fragment_marks_the_datagram(version: int) -> None:
    r = Reassembler()
    if version == 4:
        out = push_all(r, [frag4(0, DATA[:8], True, tos=2), frag4(8, DATA[8:9], False, tos=3)])
        assert Ipv4View.checked(out[0][14:]).ecn == 3
    else:
        out = push_all(
            r,
            [
                frag6(0, DATA[:8], True, traffic_class=1),
                frag6(8, DATA[8:9], False, traffic_class=3),
            ],
        )
        assert Ipv6View.checked(out[0][14:]).ecn == 3


@pytest.mark.parametrize("version", [4, 6])
def test_not_ect_mixed_with_ect_is_dropped(version: int) -> None:
    r = Reassembler()
    if version == 4:
        out = push_all(r, [frag4(0, DATA[:8], True, tos=0), frag4(8, DATA[8:9], False, tos=2)])
    else:
        out = push_all(
            r,
            [
                frag6(0, DATA[:8], True, traffic_class=0),
                frag6(8, DATA[8:9], False, traffic_class=2),
            ],
        )
    assert out == [] and r.drops["ecn"] == 1
    assert_empty(r)


# --- what is not a fragment ------------------------------------------------------


def test_not_a_fragment_and_not_ip() -> None:
    r = Reassembler()
    assert r.push(0.0, ETH4 + bytes(udp4(100))) is None
    assert r.push(0.0, ETH6 + bytes(udp6(size=100))) is None
    assert r.drops["not_fragment"] == 2
    arp = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0806)) + bytes(28)
    assert r.push(0.0, arp) is None
    assert r.drops["not_ip"] == 1


def test_malformed_counted_with_the_codec_reason() -> None:
    r = Reassembler()
    bad = bytearray(frag4(0, DATA[:8], True))
    bad[ETH_HEADER_LEN + 10] ^= 0xFF  # header checksum
    assert r.push(0.0, bytes(bad)) is None
    assert r.drops["ipv4_bad_checksum"] == 1
    assert r.push(0.0, b"\x00" * 5) is None
    assert r.drops["eth_truncated"] == 1
    # With the link vouching for the checksum it is accepted.
    r2 = Reassembler(ReassemblyConfig(verify_checksum=False))
    assert r2.push(0.0, bytes(bad)) is None and len(r2) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    r = Reassembler()
    for prefix in (b"", ETH4, ETH6):
        r.push(0.0, prefix + data)
    assert r.held_bytes <= r.config.max_bytes


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_fragments_never_raise(data: st.DataObject) -> None:
    frames = frames4(udp4(600), 200)[:2] + frames6(udp6(IPv6ExtHdrHopByHop(), size=1400))[:2]
    r = Reassembler()
    for f in frames:
        buf = bytearray(f)
        for _ in range(data.draw(st.integers(0, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(buf)))
        out = r.push(0.0, bytes(buf[:cut]))
        assert out is None or isinstance(out, bytes)


# --- memory stays bounded whatever arrives -----------------------------------------

_STREAM_CFG = ReassemblyConfig(
    max_fragments=5, max_datagrams=4, max_bytes=3000, timeout_v4=2.0, timeout_v6=3.0
)

_fragment = st.tuples(
    st.sampled_from([4, 6]),
    st.integers(0, 5),  # ident
    st.integers(0, 40),  # offset in 8-byte units
    st.integers(0, 90),  # length in 8-byte units
    st.integers(0, 7),  # extra bytes (a bad length unless last)
    st.booleans(),  # more fragments
    st.integers(0, 3),  # ECN codepoint
    st.floats(0, 1.0),  # time step
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_fragment, max_size=60))
def test_random_fragment_streams_stay_within_limits(stream: list[tuple]) -> None:
    r = Reassembler(_STREAM_CFG)
    now = 0.0
    for version, ident, off8, len8, extra, more, ecn, step in stream:
        now += step
        r.handle_timeout(now)
        data = DATA[: len8 * 8 + extra]
        if version == 4:
            frame = frag4(off8 * 8, data, more, ident=ident, tos=ecn)
        else:
            frame = frag6(off8 * 8, data, more, ident=ident, traffic_class=ecn)
        out = r.push(now, frame)
        assert r.held_bytes <= _STREAM_CFG.max_bytes
        assert len(r) <= _STREAM_CFG.max_datagrams
        if out is not None:  # whatever completes is a well-formed packet
            ip = out[ETH_HEADER_LEN:]
            if version == 4:
                v = Ipv4View.checked(ip)
                assert not v.is_fragment
            else:
                assert walk_extensions(Ipv6View.checked(ip)).fragment is None
    r.handle_timeout(now + 10)
    assert_empty(r)
