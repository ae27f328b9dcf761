"""Output fragmentation: scapy's fragment/fragment6 produce the same bytes,
scapy's defragment/defragment6 put ours back together, options follow the
copy bit, DF and the MTU limits are enforced."""

from __future__ import annotations

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
from scapy.packet import Raw

from shardnet.common import checksum as csum
from shardnet.common.wire.errors import MalformedPacket
from shardnet.common.wire.ipv4 import Ipv4View
from shardnet.common.wire.ipv6 import Ipv6View, walk_extensions
from shardnet.dispatcher.reassembly import Reassembler, ReassemblyConfig
from shardnet.shards.net.fragment import (
    IPV4_MIN_MTU,
    FragmentationNeeded,
    fragment_ipv4,
    fragment_ipv6,
)

ETH_HEADER = bytes.fromhex("020000000002 020000000001 0800".replace(" ", ""))
ETH_HEADER6 = ETH_HEADER[:12] + b"\x86\xdd"
DATA = bytes(range(256)) * 16  # 4096 bytes


def udp4(size: int = len(DATA), **ip: object) -> bytes:
    return bytes(
        IP(src="198.18.0.1", dst="198.18.0.2", id=0x1234, **ip)
        / UDP(sport=5353, dport=53)
        / Raw((DATA * 17)[:size])
    )


def udp6(*ext: object, size: int = len(DATA)) -> bytes:
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for e in ext:
        pkt = pkt / e
    return bytes(pkt / UDP(sport=5353, dport=53) / Raw((DATA * 17)[:size]))


# --- IPv4 -----------------------------------------------------------------------


def test_ipv4_same_bytes_as_scapy() -> None:
    pkt = udp4()
    ours = fragment_ipv4(pkt, 1500)
    assert ours == [bytes(f) for f in fragment(IP(pkt), fragsize=1480)]
    assert [len(f) for f in ours] == [1500, 1500, 1164]


def test_ipv4_scapy_defragments_ours() -> None:
    pkt = udp4()
    frags = fragment_ipv4(pkt, 576)
    assert all(len(f) <= 576 for f in frags)
    whole = defragment([IP(f) for f in frags])
    assert len(whole) == 1 and bytes(whole[0]) == pkt


def test_ipv4_fragment_fields() -> None:
    frags = fragment_ipv4(udp4(), 1000)
    offset = 0
    for i, f in enumerate(frags):
        v = Ipv4View.checked(f)  # checksum verified
        assert v.ident == 0x1234
        assert v.frag_offset == offset
        assert v.mf == (i < len(frags) - 1)
        if v.mf:
            assert len(v.payload) % 8 == 0
        offset += len(v.payload)
        # scapy recomputes the same header checksum
        rebuilt = IP(f)
        del rebuilt.chksum
        assert IP(bytes(rebuilt)).chksum == v.checksum
    assert offset == len(udp4()) - 20


def test_ipv4_fits_is_returned_unchanged_even_with_df() -> None:
    pkt = udp4(100, flags="DF")
    assert fragment_ipv4(pkt, 1500) == [pkt]
    assert fragment_ipv4(memoryview(pkt + b"pad"), 1500) == [pkt]  # link padding cut


def test_ipv4_df_raises_fragmentation_needed_with_mtu() -> None:
    with pytest.raises(FragmentationNeeded) as exc:
        fragment_ipv4(udp4(flags="DF"), 1400)
    assert exc.value.mtu == 1400


def test_ipv4_mtu_below_68() -> None:
    with pytest.raises(ValueError):
        fragment_ipv4(udp4(), IPV4_MIN_MTU - 1)
    frags = fragment_ipv4(udp4(200), IPV4_MIN_MTU)
    assert all(len(f) <= IPV4_MIN_MTU for f in frags)


def test_ipv4_ident_override() -> None:
    frags = fragment_ipv4(udp4(), 1500, ident=0xBEEF)
    assert {Ipv4View.checked(f).ident for f in frags} == {0xBEEF}


def test_ipv4_options_copied_only_with_copy_bit() -> None:
    """RFC 791 §3.1: LSRR (131) has the copy bit, Record Route (7) not."""
    rr = IPOption_RR(routers=["198.18.0.9"])
    lsrr = IPOption_LSRR(routers=["198.18.0.7"])
    pkt = udp4(options=[rr, lsrr])
    frags = fragment_ipv4(pkt, 600)
    first = Ipv4View.checked(frags[0])
    assert bytes(first.options) == bytes(Ipv4View.checked(pkt).options)
    for f in frags[1:]:
        v = Ipv4View.checked(f)
        assert bytes(v.options) == bytes(lsrr) + b"\x00"  # padded to 4 with EOL
        assert v.header_len == 28
    whole = defragment([IP(f) for f in frags])
    assert bytes(whole[0]) == pkt


def test_ipv4_refragmenting_a_fragment_keeps_offsets_and_mf() -> None:
    """RFC 791 §3.2: a fragment cut again (when forwarding)."""
    pkt = udp4()
    first, second, third = fragment_ipv4(pkt, 1500)
    pieces = fragment_ipv4(second, 600)
    assert len(pieces) == 3
    views = [Ipv4View.checked(p) for p in pieces]
    assert views[0].frag_offset == 1480
    assert all(v.mf for v in views)  # the original fragment had MF
    last = fragment_ipv4(third, 600)
    assert not Ipv4View.checked(last[-1]).mf
    whole = defragment([IP(f) for f in [first, *pieces, *last]])
    assert bytes(whole[0]) == pkt


def test_ipv4_malformed_input_raises_malformed_packet() -> None:
    with pytest.raises(MalformedPacket):
        fragment_ipv4(b"\x45" + bytes(10), 1500)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 9000), mtu=st.integers(68, 9000), nopts=st.integers(0, 2))
def test_ipv4_reassembles_through_our_reassembler(size: int, mtu: int, nopts: int) -> None:
    opts = [IPOption_LSRR(routers=["198.18.0.7"]), IPOption_RR(routers=["198.18.0.9"])]
    pkt = udp4(size, options=opts[:nopts])
    frags = fragment_ipv4(pkt, mtu)
    assert all(len(f) <= mtu for f in frags)
    if len(frags) == 1:
        assert frags[0] == pkt
        return
    r = Reassembler(ReassemblyConfig(max_fragments=len(frags)))
    results = [r.push(0.0, ETH_HEADER + f) for f in reversed(frags)]
    assert results[:-1] == [None] * (len(frags) - 1)
    assert results[-1] == ETH_HEADER + pkt


# --- IPv6 -----------------------------------------------------------------------


def test_ipv6_same_bytes_as_scapy() -> None:
    ours = fragment_ipv6(udp6(IPv6ExtHdrHopByHop()), 1280, 5)
    model = IPv6(udp6(IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(id=5)))
    assert ours == [bytes(f) for f in fragment6(model, 1280)]


@pytest.mark.parametrize(
    ("ext", "unfrag"),
    [
        ((), 40),
        ((IPv6ExtHdrHopByHop(),), 48),
        ((IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()), 48),  # dst opts are fragmentable
        ((IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(segleft=0)), 64),
        ((IPv6ExtHdrRouting(segleft=0), IPv6ExtHdrDestOpt()), 48),
    ],
)
def test_ipv6_fragment_header_after_unfragmentable_part(ext: tuple, unfrag: int) -> None:
    pkt = udp6(*ext)
    frags = fragment_ipv6(pkt, 1400, 0xDEADBEEF)
    assert len(frags) > 1
    offset = 0
    for i, f in enumerate(frags):
        assert len(f) <= 1400
        v = Ipv6View.checked(f)
        chain = walk_extensions(v)
        # The Unfragmentable Part is copied; only Payload Length and the
        # Next Header naming the Fragment header change.
        expected = bytearray(pkt[:unfrag])
        expected[4:6] = (len(f) - 40).to_bytes(2, "big")
        expected[chain.headers[-2][1] if len(chain.headers) > 1 else 6] = 44
        assert f[:unfrag] == expected
        frag = chain.fragment
        assert frag is not None and frag.header_offset == unfrag
        assert frag.ident == 0xDEADBEEF
        assert frag.fragment_offset == offset
        assert frag.more_fragments == (i < len(frags) - 1)
        data = len(f) - unfrag - 8
        if frag.more_fragments:
            assert data % 8 == 0
        offset += data
    assert offset == len(pkt) - unfrag
    whole = defragment6([IPv6(f) for f in frags])
    assert bytes(whole) == pkt


def test_ipv6_fits_is_returned_unchanged() -> None:
    pkt = udp6(size=1000)
    assert fragment_ipv6(pkt, 1280, 1) == [pkt]


def test_ipv6_mtu_below_1280() -> None:
    with pytest.raises(ValueError):
        fragment_ipv6(udp6(), 1279, 1)


def test_ipv6_refuses_packet_with_fragment_header() -> None:
    with pytest.raises(ValueError):
        fragment_ipv6(udp6(IPv6ExtHdrFragment(id=1)), 1280, 1)


def test_ipv6_malformed_input_raises_malformed_packet() -> None:
    with pytest.raises(MalformedPacket):
        fragment_ipv6(b"\x60" + bytes(10), 1280, 1)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1300, 9000), mtu=st.integers(1280, 9000), ident=st.integers(0, 2**32 - 1))
def test_ipv6_reassembles_through_our_reassembler(size: int, mtu: int, ident: int) -> None:
    pkt = udp6(IPv6ExtHdrHopByHop(), size=size)
    frags = fragment_ipv6(pkt, mtu, ident)
    assert all(len(f) <= mtu for f in frags)
    if len(frags) == 1:
        assert frags[0] == pkt
        return
    r = Reassembler()
    results = [r.push(0.0, ETH_HEADER6 + f) for f in frags[1:] + frags[:1]]
    assert results[-1] == ETH_HEADER6 + pkt
    assert len(r) == 0 and r.held_bytes == 0


def test_ipv6_checksum_of_upper_layer_untouched() -> None:
    """The UDP checksum covers the whole datagram: valid once reassembled."""
    pkt = udp6(size=3000)
    whole = bytes(defragment6([IPv6(f) for f in fragment_ipv6(pkt, 1280, 9)]))
    v = Ipv6View.checked(whole)
    pseudo = csum.pseudo_header_v6(v.src, v.dst, 17, len(v.payload))
    assert csum.verify(v.payload, pseudo)
