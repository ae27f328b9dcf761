"""NDP codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptRouteInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6NDOptUnknown,
    IPv6,
)

from shardnet.common.addr import IPV6_ANY, parse_ip
from shardnet.common.wire import ndp
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.icmpv6 import icmpv6_pseudo
from shardnet.common.wire.ipv6 import solicited_node_multicast
from shardnet.common.wire.ndp import (
    NDP_INFINITE_LIFETIME,
    DnsSearchList,
    Mtu,
    NdpView,
    NeighborAdvertisement,
    NeighborSolicitation,
    Nonce,
    PrefixInformation,
    RecursiveDns,
    Redirect,
    RedirectedHeader,
    RouteInformation,
    RouterAdvertisement,
    RouterSolicitation,
    SourceLinkLayer,
    TargetLinkLayer,
    UnknownOption,
)

from .helpers import assert_drop, dissect_icmpv6, ip_payload

SRC, DST = parse_ip("fe80::1"), parse_ip("ff02::1")
MAC1, MAC2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def pseudo(data: bytes | bytearray, src: bytes = SRC, dst: bytes = DST) -> int:
    return icmpv6_pseudo(src, dst, len(data))


def scapy_bytes(layer, src: str = "fe80::1", dst: str = "ff02::1") -> bytes:  # noqa: ANN001
    return ip_payload(IPv6(src=src, dst=dst, hlim=255) / layer)


# Golden messages from scapy inside IPv6(src="fe80::1", dst="ff02::1", hlim=255):
# ICMPv6ND_RS()/ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")
GOLDEN_RS = bytes.fromhex("85007a2d000000000101020000000001")
# ICMPv6ND_RA(chlim=64, M=1, prf=0, routerlifetime=1800, reachabletime=30000,
# retranstimer=1000) / SrcLLAddr / MTU(1500) / PrefixInfo(2001:db8:1::/64, L, A,
# 86400, 14400) / RDNSS(600, [2001:db8::53]) / DNSSL(600, ["example.com"])
GOLDEN_RA = bytes.fromhex(
    "86007ae04080070800007530000003e8"
    "0101020000000001"
    "05010000000005dc"
    "030440c000015180000038400000000020010db8000100000000000000000000"
    "190300000000025820010db8000000000000000000000053"
    "1f03000000000258076578616d706c6503636f6d00000000"
)
# ICMPv6ND_NS(tgt="2001:db8::2")/ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")
GOLDEN_NS = bytes.fromhex("87004a620000000020010db80000000000000000000000020101020000000001")
# ICMPv6ND_NA(R=1, S=1, O=0, tgt="2001:db8::2")/ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")
GOLDEN_NA = bytes.fromhex("88008860c000000020010db80000000000000000000000020201020000000002")
# ICMPv6ND_Redirect(tgt="fe80::2", dst="2001:db8::9")/ICMPv6NDOptDstLLAddr(lladdr=MAC2)
GOLDEN_REDIRECT = bytes.fromhex(
    "890048c700000000fe800000000000000000000000000002"
    "20010db8000000000000000000000009"
    "0201020000000002"
)

RA_OPTIONS: list[ndp.NdpOption] = [
    SourceLinkLayer(MAC1),
    Mtu(1500),
    PrefixInformation(64, True, True, 86400, 14400, parse_ip("2001:db8:1::")),
    RecursiveDns(600, (parse_ip("2001:db8::53"),)),
    DnsSearchList(600, ("example.com",)),
]
MESSAGES: list[tuple[bytes, ndp.NdpMessage]] = [
    (GOLDEN_RS, RouterSolicitation([SourceLinkLayer(MAC1)], 0x7A2D)),
    (GOLDEN_RA, RouterAdvertisement(64, 0x80, 1800, 30000, 1000, list(RA_OPTIONS), 0x7AE0)),
    (GOLDEN_NS, NeighborSolicitation(parse_ip("2001:db8::2"), [SourceLinkLayer(MAC1)], 0x4A62)),
    (
        GOLDEN_NA,
        NeighborAdvertisement(
            True, True, False, parse_ip("2001:db8::2"), [TargetLinkLayer(MAC2)], 0x8860
        ),
    ),
    (
        GOLDEN_REDIRECT,
        Redirect(parse_ip("fe80::2"), parse_ip("2001:db8::9"), [TargetLinkLayer(MAC2)], 0x48C7),
    ),
]
IDS = ["rs", "ra", "ns", "na", "redirect"]


def test_deconstruct_ra() -> None:
    v = NdpView.checked(GOLDEN_RA, pseudo=pseudo(GOLDEN_RA), hop_limit=255)
    assert (v.type, v.code, v.checksum) == (134, 0, 0x7AE0)
    assert v.fields() == (134, 0, 0x7AE0, 64, 0x80, 1800, 30000, 1000)
    assert v.options_offset == 16 and len(v.options_buf) == len(GOLDEN_RA) - 16
    assert v.target is None and v.destination is None
    assert list(v.options()) == RA_OPTIONS
    h = v.header()
    assert isinstance(h, RouterAdvertisement)
    assert h.managed and not h.other


def test_deconstruct_ns_na_redirect() -> None:
    ns = NdpView.checked(GOLDEN_NS, pseudo=pseudo(GOLDEN_NS), hop_limit=255)
    assert ns.target == parse_ip("2001:db8::2") and ns.destination is None
    assert ns.fields() == (135, 0, 0x4A62, parse_ip("2001:db8::2"))
    na = NdpView.checked(GOLDEN_NA, pseudo=pseudo(GOLDEN_NA))
    assert na.fields() == (136, 0, 0x8860, 0xC0, parse_ip("2001:db8::2"))
    rd = NdpView.checked(GOLDEN_REDIRECT, pseudo=pseudo(GOLDEN_REDIRECT))
    assert (rd.target, rd.destination) == (parse_ip("fe80::2"), parse_ip("2001:db8::9"))
    rs = NdpView.checked(GOLDEN_RS, pseudo=pseudo(GOLDEN_RS))
    assert rs.fields() == (133, 0, 0x7A2D) and rs.target is None


@pytest.mark.parametrize(("golden", "msg"), MESSAGES, ids=IDS)
def test_construct(golden: bytes, msg: ndp.NdpMessage) -> None:
    msg.checksum = 0
    buf = bytearray(msg.length)
    assert msg.emit(buf, pseudo=pseudo(golden)) == len(golden)
    assert bytes(buf) == golden
    assert msg.checksum == int.from_bytes(golden[2:4], "big")
    assert msg.to_bytes(SRC, DST) == golden


@pytest.mark.parametrize(("golden", "msg"), MESSAGES, ids=IDS)
def test_parse(golden: bytes, msg: ndp.NdpMessage) -> None:
    assert ndp.parse(golden, pseudo=pseudo(golden), hop_limit=255) == msg
    assert type(msg).parse(golden, pseudo=pseudo(golden)) == msg


@pytest.mark.parametrize(("golden", "msg"), MESSAGES, ids=IDS)
def test_emit(golden: bytes, msg: ndp.NdpMessage) -> None:
    buf = bytearray(len(golden) + 6)
    assert msg.emit(buf, 3) == len(golden)  # checksum as stored
    assert bytes(buf[3 : 3 + len(golden)]) == golden


def test_parse_as_wrong_type() -> None:
    assert_drop(Drop.NDP_BAD_TYPE, "ndp", RouterAdvertisement.parse, GOLDEN_NS)


def test_infinite_lifetime_and_flags() -> None:
    assert NDP_INFINITE_LIFETIME == 0xFFFFFFFF
    ra = RouterAdvertisement(flags=0x40)
    assert ra.other and not ra.managed
    pi = PrefixInformation(64, True, False, NDP_INFINITE_LIFETIME, 0, parse_ip("2001:db8::"))
    assert "valid infinity" in pi.summary()


def test_summaries() -> None:
    assert ndp.parse(GOLDEN_NS, pseudo=None).summary() == (
        "NDP neighbor solicitation who has 2001:db8::2 [slla 02:00:00:00:00:01]"
    )
    assert ndp.parse(GOLDEN_NA, pseudo=None).summary() == (
        "NDP neighbor advertisement tgt is 2001:db8::2 flags [R S] [tlla 02:00:00:00:00:02]"
    )
    assert NdpView.checked(GOLDEN_RA, pseudo=None).summary() == (
        "NDP router advertisement hop limit 64 flags [M] router lifetime 1800s"
        " reachable 30000ms retrans 1000ms [slla 02:00:00:00:00:01, mtu 1500,"
        " prefix 2001:db8:1::/64 [LA] valid 86400s pref 14400s,"
        " rdnss [2001:db8::53] lifetime 600s, dnssl [example.com] lifetime 600s]"
    )
    assert ndp.parse(GOLDEN_RS, pseudo=None).summary() == (
        "NDP router solicitation [slla 02:00:00:00:00:01]"
    )
    assert ndp.parse(GOLDEN_REDIRECT, pseudo=None).summary() == (
        "NDP redirect 2001:db8::9 to fe80::2 [tlla 02:00:00:00:00:02]"
    )


# --------------------------------------------------------------------------- options


def ra_with(*opts: bytes, body: bytes = bytes(12)) -> bytes:
    """An RA (no checksum) carrying raw option bytes."""
    return b"\x86\x00\x00\x00" + body + b"".join(opts)


def test_unknown_and_long_link_layer_options() -> None:
    data = ra_with(
        bytes([99, 1]) + b"abcdef",
        bytes([1, 2]) + MAC1 + bytes(8),  # longer SLLA (non-Ethernet): first 6 bytes read
    )
    assert list(NdpView.checked(data, pseudo=None).options()) == [
        UnknownOption(99, b"abcdef"),
        SourceLinkLayer(MAC1),
    ]


def test_nonce_for_dad() -> None:
    """RFC 7527 enhanced DAD: NS from :: with a nonce and no SLLA."""
    ns = NeighborSolicitation(parse_ip("2001:db8::2"), [Nonce(b"\x01\x02\x03\x04\x05\x06")])
    group = solicited_node_multicast(ns.target)
    data = ns.to_bytes(IPV6_ANY, group)
    assert data[24:] == bytes([14, 1, 1, 2, 3, 4, 5, 6])
    v = NdpView.checked(data, pseudo=pseudo(data, IPV6_ANY, group))
    assert v.header() == ns
    ndp.validate_addresses(v, IPV6_ANY, group)
    with pytest.raises(ValueError):
        Nonce(b"12345").emit(bytearray(8))


def test_redirected_header_option() -> None:
    rd = Redirect(parse_ip("fe80::2"), parse_ip("2001:db8::9"), [RedirectedHeader(b"x" * 40)])
    data = rd.to_bytes(SRC, parse_ip("2001:db8::7"))
    assert data[40:48] == bytes([4, 6, 0, 0, 0, 0, 0, 0])
    assert ndp.parse(data, pseudo=None) == rd


def test_dnssl_several_names_and_trailing_dot() -> None:
    opt = DnsSearchList(NDP_INFINITE_LIFETIME, ("a.example", "b-2.example.", "x"))
    buf = bytearray(opt.length)
    assert opt.emit(buf) == len(buf) and len(buf) % 8 == 0
    parsed = list(NdpView.checked(ra_with(bytes(buf)), pseudo=None).options())
    assert parsed == [DnsSearchList(NDP_INFINITE_LIFETIME, ("a.example", "b-2.example", "x"))]
    for bad in ("a..b", "a b.c", "x" * 64, ".".join(["abcdefgh"] * 30)):
        with pytest.raises(ValueError):
            DnsSearchList(1, (bad,)).emit(bytearray(512))


# --------------------------------------------------------------------------- drops

RDNSS_HDR = bytes([25, 3, 0, 0, 0, 0, 0, 60])


def dnssl(names: bytes) -> bytes:
    body = names + bytes(-len(names) % 8)
    return bytes([31, 1 + len(body) // 8, 0, 0, 0, 0, 0, 60]) + body


PI = bytes.fromhex("030440c000015180000038400000000020010db8000100000000000000000000")

DROPS: list[tuple[str, bytes, dict, Drop]] = [
    ("short", GOLDEN_RS[:3], {}, Drop.NDP_TRUNCATED),
    ("not-ndp", b"\x80\x00\x00\x00\x00\x00\x00\x00", {}, Drop.NDP_BAD_TYPE),
    ("checksum", GOLDEN_RA[:-1] + b"\x01", {"pseudo": pseudo(GOLDEN_RA)}, Drop.ICMPV6_BAD_CHECKSUM),
    ("hop-limit-64", GOLDEN_RA, {"hop_limit": 64}, Drop.NDP_BAD_HOP_LIMIT),
    ("code-1", b"\x86\x01" + GOLDEN_RA[2:], {}, Drop.NDP_BAD_CODE),
    ("ra-11-byte-body", GOLDEN_RA[:15], {}, Drop.NDP_TRUNCATED),
    ("rs-short", GOLDEN_RS[:7], {}, Drop.NDP_TRUNCATED),
    ("ns-short", GOLDEN_NS[:23], {}, Drop.NDP_TRUNCATED),
    ("na-short", GOLDEN_NA[:23], {}, Drop.NDP_TRUNCATED),
    ("redirect-short", GOLDEN_REDIRECT[:39], {}, Drop.NDP_TRUNCATED),
    (
        "ns-multicast-target",
        GOLDEN_NS[:8] + parse_ip("ff02::1") + GOLDEN_NS[24:],
        {},
        Drop.NDP_BAD_TARGET,
    ),
    (
        "na-multicast-target",
        GOLDEN_NA[:8] + parse_ip("ff02::1") + GOLDEN_NA[24:],
        {},
        Drop.NDP_BAD_TARGET,
    ),
    (
        "redirect-multicast-destination",
        GOLDEN_REDIRECT[:24] + parse_ip("ff05::1") + GOLDEN_REDIRECT[40:],
        {},
        Drop.NDP_BAD_TARGET,
    ),
    (
        "redirect-global-target-not-destination",
        GOLDEN_REDIRECT[:8] + parse_ip("2001:db8::8") + GOLDEN_REDIRECT[24:],
        {},
        Drop.NDP_BAD_TARGET,
    ),
    ("zero-length-option", ra_with(bytes([1, 0]) + MAC1), {}, Drop.NDP_ZERO_LENGTH_OPTION),
    ("option-one-byte", ra_with(b"\x01"), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("option-past-end", ra_with(bytes([1, 2]) + MAC1), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("truncated-pi", ra_with(PI[:24]), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("pi-length-3", ra_with(b"\x03\x03" + PI[2:24]), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("pi-length-5", ra_with(b"\x03\x05" + PI[2:] + bytes(8)), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("mtu-length-2", ra_with(bytes([5, 2]) + bytes(14)), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("rdnss-too-small", ra_with(bytes([25, 1, 0, 0, 0, 0, 0, 60])), {}, Drop.NDP_BAD_OPTION_LENGTH),
    (
        "rdnss-cuts-off-address",
        ra_with(bytes([25, 4]) + RDNSS_HDR[2:] + parse_ip("2001:db8::53") + bytes(8)),
        {},
        Drop.NDP_BAD_OPTION_LENGTH,
    ),
    ("rdnss-multicast", ra_with(RDNSS_HDR + parse_ip("ff02::1")), {}, Drop.NDP_BAD_OPTION_BODY),
    ("rdnss-unspecified", ra_with(RDNSS_HDR + bytes(16)), {}, Drop.NDP_BAD_OPTION_BODY),
    ("dnssl-length-1", ra_with(bytes([31, 1, 0, 0, 0, 0, 0, 60])), {}, Drop.NDP_BAD_OPTION_LENGTH),
    ("dnssl-no-names", ra_with(dnssl(bytes(8))), {}, Drop.NDP_BAD_OPTION_BODY),
    ("dnssl-label-past-end", ra_with(dnssl(b"\x09example")), {}, Drop.NDP_BAD_OPTION_BODY),
    ("dnssl-unterminated", ra_with(dnssl(b"\x07example")), {}, Drop.NDP_BAD_OPTION_BODY),
    ("dnssl-pointer", ra_with(dnssl(b"\x01a\xc0\x0c")), {}, Drop.NDP_BAD_OPTION_BODY),
    ("dnssl-bad-char", ra_with(dnssl(b"\x03a_b\x00")), {}, Drop.NDP_BAD_OPTION_BODY),
    (
        "dnssl-name-too-long",
        ra_with(dnssl((b"\x3f" + b"a" * 63) * 5 + b"\x00")),
        {},
        Drop.NDP_BAD_OPTION_BODY,
    ),
]


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"), [d[1:] for d in DROPS], ids=[d[0] for d in DROPS]
)
def test_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "ndp", NdpView.checked, data, **kwargs)


def test_valid_ra_variants_accepted() -> None:
    """The controls of RFC 4861 §6.1.2: payload of exactly 12 bytes, options OK."""
    NdpView.checked(ra_with(), pseudo=None, hop_limit=255)
    NdpView.checked(GOLDEN_RA, pseudo=None, hop_limit=255)
    NdpView.checked(ra_with(dnssl(b"\x01a\x00")), pseudo=None)


def test_validate_ra_source() -> None:
    ndp.validate_ra_source(parse_ip("fe80::1"))
    assert_drop(Drop.NDP_BAD_SOURCE, "ndp", ndp.validate_ra_source, parse_ip("2001:db8::1"))


@pytest.mark.parametrize(
    ("data", "src", "dst", "reason"),
    [
        (GOLDEN_RA, "2001:db8::1", "ff02::1", Drop.NDP_BAD_SOURCE),
        (GOLDEN_REDIRECT, "2001:db8::1", "2001:db8::7", Drop.NDP_BAD_SOURCE),
        (GOLDEN_RS, "::", "ff02::2", Drop.NDP_BAD_SOURCE),  # §6.1.1 SLLA from ::
        (GOLDEN_NS, "::", "ff02::1:ff00:2", Drop.NDP_BAD_SOURCE),  # §7.1.1 SLLA from ::
        (
            NeighborSolicitation(parse_ip("2001:db8::2")).to_bytes(),
            "::",
            "2001:db8::2",
            Drop.NDP_BAD_DESTINATION,
        ),
        (GOLDEN_NA, "fe80::1", "ff02::1", Drop.NDP_BAD_DESTINATION),  # §7.1.2 S with multicast
        (GOLDEN_RA, "fe80::1", "ff02::1", None),
        (GOLDEN_NS, "fe80::1", "ff02::1:ff00:2", None),
        (GOLDEN_NA, "fe80::1", "fe80::2", None),
        (RouterSolicitation().to_bytes(), "::", "ff02::2", None),
    ],
)
def test_validate_addresses(data: bytes, src: str, dst: str, reason: Drop | None) -> None:
    v = NdpView.checked(data, pseudo=None)
    if reason is None:
        ndp.validate_addresses(v, parse_ip(src), parse_ip(dst))
        return
    assert_drop(reason, "ndp", ndp.validate_addresses, v, parse_ip(src), parse_ip(dst))


# --------------------------------------------------------------------------- scapy oracle


def test_scapy_built_ra_parses() -> None:
    data = scapy_bytes(
        ICMPv6ND_RA(chlim=255, M=0, O=1, prf=0, routerlifetime=0, reachabletime=1, retranstimer=2)
        / ICMPv6NDOptPrefixInfo(prefixlen=48, L=1, A=0, prefix="2001:db8:5::")
        / ICMPv6NDOptRDNSS(lifetime=0, dns=["2001:db8::1", "fe80::53"])
        / ICMPv6NDOptDNSSL(searchlist=["corp.example.org", "lab.example"])
        / ICMPv6NDOptMTU(mtu=9000)
        / ICMPv6NDOptUnknown(type=200, len=1, data=b"zzzzzz")
        / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:09")
    )
    h = ndp.parse(data, pseudo=pseudo(data), hop_limit=255)
    assert h == RouterAdvertisement(
        255,
        0x40,
        0,
        1,
        2,
        [
            PrefixInformation(
                48,
                True,
                False,
                NDP_INFINITE_LIFETIME,
                NDP_INFINITE_LIFETIME,
                parse_ip("2001:db8:5::"),
            ),
            RecursiveDns(0, (parse_ip("2001:db8::1"), parse_ip("fe80::53"))),
            DnsSearchList(NDP_INFINITE_LIFETIME, ("corp.example.org", "lab.example")),
            Mtu(9000),
            UnknownOption(200, b"zzzzzz"),
            SourceLinkLayer(bytes.fromhex("020000000009")),
        ],
        h.checksum,
    )
    assert h.other and not h.managed


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (ICMPv6ND_RS(), RouterSolicitation()),
        (
            ICMPv6ND_NS(tgt="fe80::2") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"),
            NeighborSolicitation(parse_ip("fe80::2"), [SourceLinkLayer(MAC1)]),
        ),
        (
            ICMPv6ND_NA(R=0, S=0, O=1, tgt="2001:db8::2"),
            NeighborAdvertisement(False, False, True, parse_ip("2001:db8::2")),
        ),
        (
            ICMPv6ND_Redirect(tgt="2001:db8::9", dst="2001:db8::9"),
            Redirect(parse_ip("2001:db8::9"), parse_ip("2001:db8::9")),
        ),
    ],
)
def test_scapy_built_messages_parse(layer, expected: ndp.NdpMessage) -> None:  # noqa: ANN001
    data = scapy_bytes(layer)
    h = ndp.parse(data, pseudo=pseudo(data), hop_limit=255)
    expected.checksum = h.checksum
    assert h == expected


def scapy_dissect(data: bytes, dst: str = "ff02::1") -> IPv6:
    return dissect_icmpv6(data, "fe80::1", dst, hlim=255)


def test_emitted_ra_dissects_in_scapy() -> None:
    ra = RouterAdvertisement(
        64,
        0xC0,
        1800,
        0,
        0,
        [
            PrefixInformation(64, True, True, 3600, 1800, parse_ip("2001:db8:7::")),
            Mtu(1280),
            RecursiveDns(300, (parse_ip("2001:db8::53"), parse_ip("2001:db8::54"))),
            DnsSearchList(300, ("example.com", "test.example")),
            SourceLinkLayer(MAC1),
        ],
    )
    pkt = scapy_dissect(ra.to_bytes(SRC, DST))
    r = pkt[ICMPv6ND_RA]
    assert (r.chlim, r.M, r.O, r.routerlifetime) == (64, 1, 1, 1800)
    pi = pkt[ICMPv6NDOptPrefixInfo]
    assert (pi.prefixlen, pi.L, pi.A, pi.validlifetime, pi.prefix) == (
        64,
        1,
        1,
        3600,
        "2001:db8:7::",
    )
    assert pkt[ICMPv6NDOptMTU].mtu == 1280
    assert pkt[ICMPv6NDOptRDNSS].dns == ["2001:db8::53", "2001:db8::54"]
    assert pkt[ICMPv6NDOptDNSSL].searchlist == ["example.com.", "test.example."]
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"


def test_emitted_ns_na_rs_redirect_dissect_in_scapy() -> None:
    pkt = scapy_dissect(RouterSolicitation([SourceLinkLayer(MAC1)]).to_bytes(SRC, DST))
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"
    pkt = scapy_dissect(NeighborSolicitation(parse_ip("2001:db8::2")).to_bytes(SRC, DST))
    assert pkt[ICMPv6ND_NS].tgt == "2001:db8::2"
    na = NeighborAdvertisement(True, False, True, parse_ip("2001:db8::2"), [TargetLinkLayer(MAC2)])
    pkt = scapy_dissect(na.to_bytes(SRC, DST))
    assert (pkt[ICMPv6ND_NA].R, pkt[ICMPv6ND_NA].S, pkt[ICMPv6ND_NA].O) == (1, 0, 1)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:02"
    rd = Redirect(parse_ip("fe80::2"), parse_ip("2001:db8::9"))
    pkt = scapy_dissect(rd.to_bytes(SRC, DST))
    assert (pkt[ICMPv6ND_Redirect].tgt, pkt[ICMPv6ND_Redirect].dst) == ("fe80::2", "2001:db8::9")


@pytest.mark.parametrize(
    ("prf", "want"),
    [(1, ndp.PREF_HIGH), (0, ndp.PREF_MEDIUM), (3, ndp.PREF_LOW), (2, ndp.PREF_MEDIUM)],
)
def test_scapy_ra_preference_and_route_information(prf: int, want: int) -> None:
    """RFC 4191 §2.2: Prf 01 high, 00 medium, 11 low, 10 (reserved) medium
    in the RA header; an RIO with Prf 10 is ignored (§2.3); RIO of each
    Length, scapy as the oracle."""
    data = scapy_bytes(
        ICMPv6ND_RA(prf=prf, routerlifetime=1800)
        / ICMPv6NDOptRouteInfo(plen=0, prf=prf, rtlifetime=60, len=1)
        / ICMPv6NDOptRouteInfo(plen=48, prf=1, rtlifetime=600, prefix="2001:db8:5::", len=2)
        / ICMPv6NDOptRouteInfo(
            plen=96, prf=3, rtlifetime=NDP_INFINITE_LIFETIME, prefix="2001:db8:6::7:0:0", len=3
        )
    )
    h = ndp.parse(data, pseudo=pseudo(data), hop_limit=255)
    assert isinstance(h, RouterAdvertisement) and h.preference == want
    first = (
        UnknownOption(ndp.OPT_ROUTE_INFORMATION, bytes((0, 0x10, 0, 0, 0, 60)))
        if prf == 2
        else RouteInformation(0, want, 60, bytes(16))
    )
    assert h.options == [
        first,
        RouteInformation(48, ndp.PREF_HIGH, 600, parse_ip("2001:db8:5::")),
        RouteInformation(96, ndp.PREF_LOW, NDP_INFINITE_LIFETIME, parse_ip("2001:db8:6::7:0:0")),
    ]


def test_emitted_route_information_dissects_in_scapy() -> None:
    ra = RouterAdvertisement(
        64, ndp.encode_preference(ndp.PREF_LOW), 600, 0, 0,
        [RouteInformation(56, ndp.PREF_HIGH, 300, parse_ip("2001:db8:9::"))],
    )  # fmt: skip
    pkt = scapy_dissect(ra.to_bytes(SRC, DST))
    assert pkt[ICMPv6ND_RA].prf == 3
    rio = pkt[ICMPv6NDOptRouteInfo]
    assert (rio.len, rio.plen, rio.prf, rio.rtlifetime, rio.prefix) == (
        2, 56, 1, 300, "2001:db8:9::",
    )  # fmt: skip


@pytest.mark.parametrize(("units", "plen"), [(1, 1), (2, 65), (4, 0), (3, 129)])
def test_route_information_inconsistent_length_is_ignored(units: int, plen: int) -> None:
    """RFC 4191 §3.1: an RIO whose Length does not fit its Prefix Length is
    ignored; the RA stays valid."""
    rio = bytes((24, units, plen, 0)) + (60).to_bytes(4, "big") + bytes(8 * units - 8)
    h = ndp.parse(ra_with(rio))
    assert isinstance(h, RouterAdvertisement)
    assert h.options == [UnknownOption(24, rio[2:])]


# --------------------------------------------------------------------------- hypothesis

addr16 = st.binary(min_size=16, max_size=16)
unicast = addr16.filter(lambda a: a[0] != 0xFF and a != bytes(16))
not_multicast = addr16.filter(lambda a: a[0] != 0xFF)
u32 = st.integers(0, 0xFFFFFFFF)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
options = st.lists(
    st.one_of(
        st.builds(SourceLinkLayer, st.binary(min_size=6, max_size=6)),
        st.builds(TargetLinkLayer, st.binary(min_size=6, max_size=6)),
        st.builds(
            PrefixInformation, st.integers(0, 255), st.booleans(), st.booleans(), u32, u32, addr16
        ),
        st.builds(Mtu, u32),
        st.builds(
            Nonce,
            st.integers(0, 2).flatmap(lambda k: st.binary(min_size=6 + 8 * k, max_size=6 + 8 * k)),
        ),
        st.builds(RecursiveDns, u32, st.lists(unicast, min_size=1, max_size=3).map(tuple)),
        st.builds(DnsSearchList, u32, st.lists(domain, min_size=1, max_size=3).map(tuple)),
        st.builds(
            RedirectedHeader,
            st.integers(0, 3).flatmap(lambda k: st.binary(min_size=8 * k, max_size=8 * k)),
        ),
        st.integers(0, 128).flatmap(
            lambda plen: st.builds(
                RouteInformation,
                st.just(plen),
                st.sampled_from((-1, 0, 1)),
                u32,
                # bits past the prefix length zero (they are not on the wire)
                addr16.map(
                    lambda a, p=plen: (
                        (int.from_bytes(a, "big") >> (128 - p) << (128 - p)).to_bytes(16, "big")
                        if p
                        else bytes(16)
                    )
                ),
            )
        ),
        st.builds(
            UnknownOption,
            st.integers(0, 255).filter(lambda t: t not in (1, 2, 3, 4, 5, 14, 24, 25, 31)),
            st.integers(0, 2).flatmap(lambda k: st.binary(min_size=6 + 8 * k, max_size=6 + 8 * k)),
        ),
    ),
    max_size=4,
)
link_local = st.binary(min_size=14, max_size=14).map(lambda b: b"\xfe\x80" + b)
redirect = st.one_of(
    st.builds(Redirect, link_local, not_multicast, options),
    not_multicast.flatmap(lambda d: st.builds(Redirect, st.just(d), st.just(d), options)),
)
messages = st.one_of(
    st.builds(RouterSolicitation, options),
    st.builds(
        RouterAdvertisement,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
        u32,
        u32,
        options,
    ),
    st.builds(NeighborSolicitation, not_multicast, options),
    st.builds(
        NeighborAdvertisement, st.booleans(), st.booleans(), st.booleans(), not_multicast, options
    ),
    redirect,
)


@given(messages)
def test_roundtrip(msg: ndp.NdpMessage) -> None:
    data = msg.to_bytes(SRC, DST)
    assert len(data) == msg.length
    assert ndp.parse(data, pseudo=pseudo(data), hop_limit=255) == msg


def check_all(v: NdpView) -> None:
    _ = (v.fields(), v.target, v.destination, v.options_buf, v.checksum)
    list(v.options())
    v.header().summary()
    v.summary()


@given(st.binary(max_size=96))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        v = NdpView.checked(data, pseudo=pseudo(data), hop_limit=255)
    except MalformedPacket:
        return
    check_all(v)


@given(st.integers(133, 137), st.binary(max_size=120))
def test_arbitrary_ndp_bodies_raise_only_malformed(kind: int, rest: bytes) -> None:
    data = bytes([kind, 0]) + rest
    try:
        v = NdpView.checked(data, pseudo=None)
    except MalformedPacket:
        return
    check_all(v)
    try:
        ndp.validate_addresses(v, SRC, DST)
    except MalformedPacket:
        pass


@given(
    st.integers(133, 137),
    st.binary(max_size=40),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5), st.binary(max_size=40)), max_size=4),
)
def test_option_shaped_bytes_raise_only_malformed(kind: int, fixed: bytes, opts: list) -> None:
    """Bytes that look like options (type, small length, body) reach the
    per-option checks far more often than uniform noise."""
    body = {133: 4, 134: 12, 135: 20, 136: 20, 137: 36}[kind]
    fixed = (fixed + bytes(body))[:body]
    if kind == 137:
        fixed = fixed[:4] + parse_ip("fe80::2") + fixed[20:]
    data = bytes([kind, 0, 0, 0]) + fixed + b"".join(bytes([t, n]) + b for t, n, b in opts)
    try:
        v = NdpView.checked(data, pseudo=None)
    except MalformedPacket:
        return
    check_all(v)
