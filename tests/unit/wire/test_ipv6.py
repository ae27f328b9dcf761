"""IPv6 codec and extension header walker: golden bytes, every Drop reason,
scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
    defragment6,
    fragment6,
)
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from shardnet.common.addr import (
    ipv6_multicast_scope,
    is_ipv4_mapped,
    is_ipv6_link_local,
    is_ipv6_multicast,
    parse_ip,
)
from shardnet.common.wire.errors import Drop, IcmpHint, IcmpHintKind, MalformedPacket
from shardnet.common.wire.ipv6 import (
    IPV6_FRAGMENT_HEADER_LEN,
    IPV6_HEADER_LEN,
    IPV6_MAX_EXTENSIONS,
    IPV6_MIN_MTU,
    NH_AH,
    NH_DSTOPTS,
    NH_ESP,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_NONE,
    NH_ROUTING,
    NH_UDP,
    Ipv6Chain,
    Ipv6Fragment,
    Ipv6FragmentHeader,
    Ipv6Header,
    Ipv6OptionHint,
    Ipv6View,
    fragment_data_len,
    link_local_from_mac,
    modified_eui64,
    multicast_mac,
    solicited_node_multicast,
    walk_extensions,
)

from .helpers import assert_drop, scapy_checksum

S, D = "2001:db8::1", "2001:db8::2"
SRC, DST = parse_ip(S), parse_ip(D)
# IPv6(src=S, dst=D, tc=0xb9, fl=0x12345, hlim=64) / UDP(5353, 53) / b"hi", from scapy.
GOLDEN = bytes.fromhex(
    "6b912345000a1140"
    "20010db8000000000000000000000001"
    "20010db8000000000000000000000002"
    "14e90035000a26de6869"
)
GOLDEN_HEADER = Ipv6Header(SRC, DST, NH_UDP, 64, 0xB9, 0x12345, 10)
# IPv6(src=S, dst=D) / HopByHop(RouterAlert) / DestOpt / Routing(type 0, segleft 0,
# [2001:db8::3]) / Fragment(atomic, id 0xabcdef01) / ICMPv6EchoRequest(7, 1, b"ping").
GOLDEN_CHAIN = bytes.fromhex(
    "60000000003c0040"
    "20010db8000000000000000000000001"
    "20010db8000000000000000000000002"
    "3c00050200000100"  # 40: hop-by-hop, router alert 0 (MLD), PadN
    "2b00010400000000"  # 48: destination options, PadN
    "2c02000000000000"  # 56: routing type 0, segments left 0
    "20010db8000000000000000000000003"
    "3a000000abcdef01"  # 80: fragment, offset 0, M 0
    "8000456b0007000170696e67"  # 88: ICMPv6 echo request
)


def walk(data: bytes) -> Ipv6Chain:
    return walk_extensions(Ipv6View.checked(data))


def walk_drop(reason: Drop, data: bytes) -> MalformedPacket:
    return assert_drop(reason, "ipv6", walk, data)


# --- fixed header -----------------------------------------------------------


def test_deconstruct() -> None:
    v = Ipv6View.checked(GOLDEN)
    assert (v.version, v.traffic_class, v.dscp, v.ecn, v.flow_label) == (6, 0xB9, 0x2E, 1, 0x12345)
    assert (v.payload_length, v.next_header, v.hop_limit) == (10, NH_UDP, 64)
    assert (v.src, v.dst) == (SRC, DST)
    assert bytes(v.payload) == GOLDEN[40:]
    assert v.fields() == (0x6B912345, 10, NH_UDP, 64, SRC, DST)


def test_construct() -> None:
    buf = bytearray(GOLDEN)
    buf[:40] = bytes(40)
    assert GOLDEN_HEADER.emit(buf) == IPV6_HEADER_LEN
    assert bytes(buf) == GOLDEN
    assert (GOLDEN_HEADER.dscp, GOLDEN_HEADER.ecn) == (0x2E, 1)


def test_parse() -> None:
    assert Ipv6Header.parse(GOLDEN) == GOLDEN_HEADER


def test_emit() -> None:
    buf = bytearray(44)
    assert GOLDEN_HEADER.emit(buf, 2) == 40
    assert bytes(buf[2:42]) == GOLDEN[:40]


def test_trailing_padding_is_cut() -> None:
    v = Ipv6View.checked(GOLDEN + bytes(8))
    assert len(v.buf) == len(GOLDEN)
    assert bytes(v.payload) == GOLDEN[40:]


def test_summary() -> None:
    assert GOLDEN_HEADER.summary() == (
        "IP6 2001:db8::1 > 2001:db8::2 hlim 64 len 10 next 17 tc 0xb9 flow 0x12345"
    )
    assert Ipv6View.checked(GOLDEN_CHAIN).summary() == (
        "IP6 2001:db8::1 > 2001:db8::2 hlim 64 len 60 next 0"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOLDEN[:39], Drop.IPV6_TRUNCATED),
        (b"\x4b" + GOLDEN[1:], Drop.IPV6_BAD_VERSION),
        (GOLDEN[:4] + b"\x00\x0b" + GOLDEN[6:], Drop.IPV6_BAD_PAYLOAD_LENGTH),
        # RFC 2675 jumbogram: payload length 0 and hop-by-hop options.
        (GOLDEN_CHAIN[:4] + b"\x00\x00" + GOLDEN_CHAIN[6:], Drop.IPV6_BAD_PAYLOAD_LENGTH),
    ],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "ipv6", Ipv6View.checked, data)


def test_scapy_built_parses() -> None:
    pkt = IPv6(src=S, dst="fe80::1", tc=0x2C, fl=0xABCDE, hlim=255) / UDP(sport=1, dport=2) / b"x"
    h = Ipv6Header.parse(bytes(pkt))
    assert h == Ipv6Header(SRC, parse_ip("fe80::1"), NH_UDP, 255, 0x2C, 0xABCDE, 9)


def test_emitted_dissects_in_scapy() -> None:
    payload = bytes(IPv6(src=S, dst=D) / UDP(sport=4000, dport=7) / b"payload!")[40:]
    buf = bytearray(40 + len(payload))
    buf[40:] = payload
    Ipv6Header(SRC, DST, NH_UDP, 17, 0x2E << 2 | 2, 0xFEDCB, len(payload)).emit(buf)
    pkt = IPv6(bytes(buf))
    assert (pkt.src, pkt.dst, pkt.nh, pkt.hlim, pkt.tc, pkt.fl, pkt.plen) == (
        S,
        D,
        17,
        17,
        0xBA,
        0xFEDCB,
        16,
    )
    assert pkt[UDP].chksum == scapy_checksum(pkt, UDP)


# --- extension header walker ------------------------------------------------


def test_walk_golden_chain() -> None:
    assert (
        bytes(
            IPv6(src=S, dst=D)
            / IPv6ExtHdrHopByHop(options=[RouterAlert()])
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting(addresses=["2001:db8::3"], segleft=0)
            / IPv6ExtHdrFragment(id=0xABCDEF01, offset=0, m=0)
            / ICMPv6EchoRequest(id=7, seq=1, data=b"ping")
        )
        == GOLDEN_CHAIN
    )
    v = Ipv6View.checked(GOLDEN_CHAIN)
    chain = walk_extensions(v)
    assert chain == Ipv6Chain(
        upper_protocol=NH_ICMPV6,
        upper_offset=88,
        next_header_pointer=80,
        unfragmentable_len=80,
        fragment=Ipv6Fragment(0, False, 0xABCDEF01, 80, NH_ICMPV6),
        routing_seen=True,
        router_alert=0,
        headers=[(NH_HOPOPTS, 40), (NH_DSTOPTS, 48), (NH_ROUTING, 56), (NH_FRAGMENT, 80)],
    )
    assert chain.fragment is not None and chain.fragment.atomic  # RFC 6946
    assert bytes(v.upper_payload(chain)) == GOLDEN_CHAIN[88:]


def test_walk_no_extensions() -> None:
    assert walk(GOLDEN) == Ipv6Chain(NH_UDP, 40, 6)


@pytest.mark.parametrize("nh", [NH_ESP, NH_AH, NH_NONE, 135, 253])
def test_unknown_or_unwalked_next_header_is_the_upper_layer(nh: int) -> None:
    chain = walk(bytes(IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt(nh=nh) / (b"\0" * 16)))
    assert (chain.upper_protocol, chain.upper_offset, chain.next_header_pointer) == (nh, 48, 40)


def test_unfragmentable_part_without_fragment_header() -> None:
    # RFC 8200 §4.5: hop-by-hop, destination options before routing, routing;
    # destination options after routing are fragmentable.
    pkt = (
        IPv6(src=S, dst=D)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=["2001:db8::3"], segleft=0)
        / IPv6ExtHdrDestOpt()
        / UDP()
    )
    chain = walk(bytes(pkt))
    assert chain.unfragmentable_len == 80
    assert (chain.upper_protocol, chain.upper_offset, chain.fragment) == (NH_UDP, 88, None)


def test_skipped_options() -> None:
    # action 00 unknown option and PadN are skipped.
    opts = [HBHOptUnknown(otype=0x1E, optdata=b"abc"), PadN(optdata=b"\0")]
    chain = walk(bytes(IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt(options=opts) / UDP()))
    assert chain.upper_protocol == NH_UDP


def test_routing_with_segments_left_zero_is_ignored() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrRouting(type=5, segleft=0) / UDP()
    chain = walk(bytes(pkt))
    assert (chain.upper_protocol, chain.routing_seen) == (NH_UDP, True)


def test_hop_by_hop_not_first() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP()
    exc = walk_drop(Drop.IPV6_HOP_BY_HOP_NOT_FIRST, bytes(pkt))
    # RFC 8200 §4.3: Parameter Problem code 1 pointing at the Next Header of the destination options.
    assert exc.icmp == IcmpHint(IcmpHintKind.UNRECOGNIZED_NEXT_HEADER, 1, 40)


@pytest.mark.parametrize(
    ("otype", "hint"),
    [
        (0x41, None),  # 01: discard silently
        (0x81, Ipv6OptionHint(IcmpHintKind.PARAMETER_PROBLEM, 2, 42, 2)),  # 10
        (0xC1, Ipv6OptionHint(IcmpHintKind.PARAMETER_PROBLEM, 2, 42, 3)),  # 11
    ],
)
def test_unrecognized_option_actions(otype: int, hint: Ipv6OptionHint | None) -> None:
    opts = [HBHOptUnknown(otype=otype, optdata=b"ab")]
    exc = walk_drop(
        Drop.IPV6_BAD_OPTION, bytes(IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop(options=opts) / UDP())
    )
    assert exc.icmp == hint
    if isinstance(exc.icmp, Ipv6OptionHint):
        assert exc.icmp.multicast_ok is (otype >> 6 == 2)  # RFC 4443 §2.4 (e.3)


def test_unrecognized_option_pointer_in_destination_options() -> None:
    opts = [PadN(optdata=b"\0\0"), HBHOptUnknown(otype=0xC9, optdata=b"x" * 16)]  # Home Address
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt(options=opts) / UDP()
    exc = walk_drop(Drop.IPV6_BAD_OPTION, bytes(pkt))
    assert exc.icmp == Ipv6OptionHint(IcmpHintKind.PARAMETER_PROBLEM, 2, 48 + 2 + 4, 3)


@pytest.mark.parametrize(
    "options",
    [
        bytes.fromhex("010500000000"),  # PadN overruns the header
        bytes.fromhex("000000000001"),  # type byte without a length at the end
        bytes.fromhex("050300000000"),  # router alert of length 3
    ],
)
def test_malformed_options(options: bytes) -> None:
    raw = bytes(IPv6(src=S, dst=D, nh=0, plen=8) / (b"\x3b\x00" + options))
    exc = walk_drop(Drop.IPV6_BAD_OPTION, raw)
    assert exc.icmp is None


def test_routing_type0() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrRouting(addresses=["2001:db8::3"]) / UDP()
    exc = walk_drop(Drop.IPV6_ROUTING_TYPE0, bytes(pkt))  # RFC 5095
    assert exc.icmp == IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, 0, 42)


def test_unknown_routing_type_with_segments_left() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(type=5, segleft=1) / UDP()
    exc = walk_drop(Drop.IPV6_BAD_ROUTING, bytes(pkt))
    assert exc.icmp == IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, 0, 50)


def test_fragment_not_multiple_of_8() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrFragment(m=1, id=1) / (b"x" * 13)
    exc = walk_drop(Drop.IPV6_BAD_FRAGMENT, bytes(pkt))
    assert exc.icmp == IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, 0, 4)  # payload length


def test_fragment_beyond_65535() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrFragment(offset=8190, m=0, id=1) / (b"x" * 24)
    exc = walk_drop(Drop.IPV6_BAD_FRAGMENT, bytes(pkt))  # 8190 * 8 + 24 = 65544
    assert exc.icmp == IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, 0, 42)  # fragment offset
    ok = IPv6(src=S, dst=D) / IPv6ExtHdrFragment(offset=8190, m=0, id=1) / (b"x" * 15)
    assert walk(bytes(ok)).fragment == Ipv6Fragment(65520, False, 1, 40, 59)


@pytest.mark.parametrize(
    "data",
    [
        bytes(IPv6(src=S, dst=D, nh=NH_DSTOPTS, plen=7) / (b"\x11" + bytes(6))),
        bytes(IPv6(src=S, dst=D, nh=NH_DSTOPTS, plen=8) / (b"\x11\x01" + bytes(6))),
        bytes(IPv6(src=S, dst=D, nh=NH_FRAGMENT, plen=4) / (b"\x11\x00\x00\x00")),
        bytes(IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop(nh=NH_ROUTING) / (b"\x11\x00")),
    ],
)
def test_truncated_extension(data: bytes) -> None:
    walk_drop(Drop.IPV6_EXT_TRUNCATED, data)


def test_too_many_extensions() -> None:
    pkt = IPv6(src=S, dst=D)
    for _ in range(IPV6_MAX_EXTENSIONS):
        pkt = pkt / IPv6ExtHdrDestOpt()
    assert walk(bytes(pkt / UDP())).upper_offset == 40 + 8 * IPV6_MAX_EXTENSIONS
    walk_drop(Drop.IPV6_TOO_MANY_EXTENSIONS, bytes(pkt / IPv6ExtHdrDestOpt() / UDP()))


def test_scapy_fragments_walk() -> None:
    orig = (
        (IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=0x1234))
        / UDP(sport=1, dport=2)
        / (bytes(range(256)) * 12)
    )
    frags = fragment6(orig, 1280)
    assert len(frags) > 2
    for frag in frags:
        raw = bytes(frag)
        chain = walk(raw)
        fh = frag[IPv6ExtHdrFragment]
        assert chain.fragment == Ipv6Fragment(fh.offset * 8, bool(fh.m), 0x1234, 48, NH_UDP)
        assert not chain.fragment.atomic
        assert (chain.upper_protocol, chain.upper_offset, chain.unfragmentable_len) == (17, 56, 48)
        assert chain.headers == [(NH_HOPOPTS, 40), (NH_FRAGMENT, 48)]


def test_our_fragments_reassemble_in_scapy() -> None:
    """Output fragmentation with Ipv6Header and Ipv6FragmentHeader (RFC 8200 §4.5)."""
    whole = bytes(IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / UDP(sport=9, dport=9) / (b"z" * 3000))
    unfrag = walk(whole).unfragmentable_len
    assert unfrag == 48
    step = fragment_data_len(IPV6_MIN_MTU, unfrag)
    assert step == 1224
    data = whole[unfrag:]
    pieces = []
    for off in range(0, len(data), step):
        chunk = data[off : off + step]
        buf = bytearray(unfrag + IPV6_FRAGMENT_HEADER_LEN + len(chunk))
        buf[:unfrag] = whole[:unfrag]
        buf[40] = NH_FRAGMENT  # the hop-by-hop header now names the fragment header
        more = off + step < len(data)
        Ipv6FragmentHeader(NH_UDP, off, more, 0xCAFE).emit(buf, unfrag)
        buf[unfrag + 8 :] = chunk
        Ipv6Header(SRC, DST, NH_HOPOPTS, payload_length=len(buf) - 40).emit(buf)
        assert len(buf) <= IPV6_MIN_MTU
        assert walk(bytes(buf)).fragment == Ipv6Fragment(off, more, 0xCAFE, 48, NH_UDP)
        pieces.append(IPv6(bytes(buf)))
    assert bytes(defragment6(pieces)[UDP]) == whole[48:]


def test_fragment_header_codec() -> None:
    raw = bytes(IPv6ExtHdrFragment(nh=6, offset=185, m=1, id=0x01020304, res1=0xFF, res2=3))
    h = Ipv6FragmentHeader.parse(raw)
    assert h == Ipv6FragmentHeader(6, 1480, True, 0x01020304)  # reserved fields ignored
    buf = bytearray(8)
    assert h.emit(buf) == IPV6_FRAGMENT_HEADER_LEN
    assert bytes(buf) == bytes(IPv6ExtHdrFragment(nh=6, offset=185, m=1, id=0x01020304))
    assert h.summary() == "frag id 0x01020304 off 1480 more next 6"
    assert_drop(Drop.IPV6_EXT_TRUNCATED, "ipv6", Ipv6FragmentHeader.parse, raw[:7])


def test_upper_layer_of_scapy_chain_with_tcp() -> None:
    pkt = IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 10)]) / TCP()
    chain = walk(bytes(pkt))
    assert (chain.upper_protocol, chain.upper_offset) == (6, 40 + len(pkt[IPv6ExtHdrDestOpt]) - 20)


# --- addresses --------------------------------------------------------------

MAC = bytes.fromhex("020203040506")


def test_modified_eui64() -> None:
    iid = modified_eui64(MAC)
    assert iid == bytes([0, 2, 3, 0xFF, 0xFE, 4, 5, 6])  # RFC 4291 App. A
    assert iid == bytes.fromhex(in6_mactoifaceid("02:02:03:04:05:06").replace(":", ""))
    assert link_local_from_mac(MAC) == parse_ip("fe80::2:3ff:fe04:506")
    with pytest.raises(ValueError):
        modified_eui64(MAC[:5])


def test_multicast_helpers() -> None:
    addr = parse_ip("2001:db8::1:2345:6789")
    sn = solicited_node_multicast(addr)
    assert sn == parse_ip("ff02::1:ff45:6789") == in6_getnsma(addr)
    assert multicast_mac(sn) == bytes.fromhex(in6_getnsmac(sn).replace(":", ""))
    assert multicast_mac(parse_ip("ff02::1")) == bytes.fromhex("333300000001")
    assert ipv6_multicast_scope(sn) == 2


def test_scope_helpers() -> None:
    """The address predicates of common/addr.py on IPv6 addresses."""
    assert is_ipv6_link_local(parse_ip("fe80::1")) and is_ipv6_link_local(parse_ip("febf::1"))
    assert not is_ipv6_link_local(parse_ip("fec0::1")) and not is_ipv6_link_local(SRC)
    assert is_ipv6_multicast(parse_ip("ff02::1")) and not is_ipv6_multicast(SRC)
    assert is_ipv4_mapped(parse_ip("::ffff:198.18.0.1"))
    assert not is_ipv4_mapped(parse_ip("::198.18.0.1")) and not is_ipv4_mapped(SRC)


# --- hypothesis -------------------------------------------------------------

addresses = st.binary(min_size=16, max_size=16)
headers = st.builds(
    Ipv6Header,
    src=addresses,
    dst=addresses,
    next_header=st.integers(1, 255),
    hop_limit=st.integers(0, 255),
    traffic_class=st.integers(0, 255),
    flow_label=st.integers(0, 0xFFFFF),
    payload_length=st.just(0),
)


@given(headers)
def test_roundtrip(h: Ipv6Header) -> None:
    buf = bytearray(IPV6_HEADER_LEN)
    h.emit(buf)
    assert Ipv6Header.parse(buf) == h


frag_headers = st.builds(
    Ipv6FragmentHeader,
    next_header=st.integers(0, 255),
    fragment_offset=st.integers(0, 8191).map(lambda x: x * 8),
    more_fragments=st.booleans(),
    ident=st.integers(0, 0xFFFFFFFF),
)


@given(frag_headers)
def test_fragment_header_roundtrip(h: Ipv6FragmentHeader) -> None:
    buf = bytearray(8)
    h.emit(buf)
    assert Ipv6FragmentHeader.parse(buf) == h


def _exercise(data: bytes) -> None:
    try:
        v = Ipv6View.checked(data)
        chain = walk_extensions(v)
    except MalformedPacket:
        return
    v.header().summary()
    v.fields()
    _ = (v.dscp, v.ecn, v.flow_label, v.src, v.dst, v.payload, v.upper_payload(chain))
    assert IPV6_HEADER_LEN <= chain.upper_offset <= len(v.buf)


@given(st.binary(max_size=128))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    _exercise(data)


# A plausible fixed header naming an extension header, then random bytes.
@given(
    st.sampled_from([NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS]),
    st.lists(
        st.tuples(
            st.sampled_from([NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS, 17, 58, 59]),
            st.integers(0, 3),
            st.binary(min_size=6, max_size=6),
        ),
        max_size=20,
    ),
    st.binary(max_size=64),
)
def test_arbitrary_chains_raise_only_malformed(
    first: int, exts: list[tuple[int, int, bytes]], tail: bytes
) -> None:
    body = b"".join(bytes([nh, 0]) + rest for nh, _, rest in exts) + tail
    body = bytearray(body)
    # Make Hdr Ext Len small so the walk goes on through the random headers.
    for i, (_, size, _) in enumerate(exts):
        body[i * 8 + 1] = size if size < 2 else 0
    buf = bytearray(40 + len(body))
    Ipv6Header(SRC, DST, first, payload_length=len(body)).emit(buf)
    buf[40:] = body
    _exercise(bytes(buf))
