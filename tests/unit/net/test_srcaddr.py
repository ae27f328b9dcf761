"""RFC 6724 source address selection (a test per rule, gVisor's cases,
IPv4), the policy table, scopes, and destination ordering (§6)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import parse_ip
from shardnet.shards.net.srcaddr import (
    DEFAULT_POLICY,
    SCOPE_GLOBAL,
    SCOPE_LINK_LOCAL,
    SCOPE_SITE_LOCAL,
    PolicyTable,
    SourceCandidate,
    common_prefix_len,
    ipv4_scope,
    ipv6_scope,
    scope,
    select_source,
    sort_destinations,
)

ip = parse_ip


def cand(
    text: str, pos: int = 0, *, nic: int = 1, plen: int | None = None, **flags: bool
) -> SourceCandidate:
    a = ip(text)
    if plen is None:
        plen = 24 if len(a) == 4 else 64
    return SourceCandidate(a, plen, nic, position=pos, **flags)


def pick(dst: str, cands: list[SourceCandidate], **kw: object) -> str | None:
    c = select_source(ip(dst), cands, **kw)
    return None if c is None else str(ipaddr(c.addr))


def ipaddr(b: bytes) -> object:
    import ipaddress

    return ipaddress.ip_address(b)


# --- scopes and policy ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("fe80::1", SCOPE_LINK_LOCAL),
        ("febf:ffff::1", SCOPE_LINK_LOCAL),
        ("::1", SCOPE_LINK_LOCAL),  # RFC 6724 §3.1, RFC 4007 §4
        ("fec0::1", SCOPE_SITE_LOCAL),
        ("fd00::1", SCOPE_GLOBAL),
        ("fc00::1", SCOPE_GLOBAL),
        ("2001:db8::1", SCOPE_GLOBAL),
        ("ff01::1", 0x1),
        ("ff02::1", 0x2),
        ("ff05::2", 0x5),
        ("ff08::2", 0x8),
        ("ff0e::101", 0xE),
        ("::ffff:169.254.0.1", SCOPE_LINK_LOCAL),
        ("::ffff:198.18.0.1", SCOPE_GLOBAL),
    ],
)
def test_ipv6_scope(addr: str, expected: int) -> None:
    assert ipv6_scope(ip(addr)) == expected == scope(ip(addr))


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1", SCOPE_LINK_LOCAL),
        ("127.255.0.9", SCOPE_LINK_LOCAL),
        ("169.254.7.7", SCOPE_LINK_LOCAL),
        ("169.253.7.7", SCOPE_GLOBAL),
        ("198.18.0.1", SCOPE_GLOBAL),
        ("10.0.0.1", SCOPE_GLOBAL),  # RFC 6724 §3.2: private addresses are global
        ("224.0.0.251", SCOPE_LINK_LOCAL),
        ("239.1.1.1", SCOPE_GLOBAL),
    ],
)
def test_ipv4_scope(addr: str, expected: int) -> None:
    assert ipv4_scope(ip(addr)) == expected == scope(ip(addr))


def test_ula_has_global_scope_rfc6724_fixes_checklist_b3_quirk() -> None:
    """gVisor gave unique-local addresses (fc00::/7) a scope of
    their own between link-local and global. RFC 6724 §3.1 gives ULAs global
    scope and tells them apart through the policy table (label 13, rule 6).

    Observable difference: for a site-local multicast destination (scope 5)
    with a ULA listed first and a global address second, a "ULA is a smaller
    scope" rule 2 would pick the ULA (the smallest scope >= the destination's);
    RFC 6724 ties them on scope and rule 6 picks the global address, whose
    label (1) matches ff05::/16's."""
    assert ipv6_scope(ip("fd00::1")) == ipv6_scope(ip("2001:db8::1")) == SCOPE_GLOBAL
    cands = [cand("fd00::1", 0), cand("2001:db8::1", 1)]
    assert pick("ff05::1:3", cands) == "2001:db8::1"


@pytest.mark.parametrize(
    ("addr", "prec", "label"),
    [
        ("::1", 50, 0),
        ("2001:db8::1", 40, 1),
        ("::ffff:198.18.0.1", 35, 4),
        ("198.18.0.1", 35, 4),  # IPv4 looked up as IPv4-mapped
        ("2002:c612::1", 30, 2),
        ("2001::1", 5, 5),
        ("2001:0:ffff::1", 5, 5),
        ("fd00::1", 3, 13),
        ("fc00::1", 3, 13),
        ("::198.18.0.1", 1, 3),
        ("fec0::1", 1, 11),
        ("3ffe::1", 1, 12),
        ("fe80::1", 40, 1),
        ("ff02::1", 40, 1),
    ],
)
def test_default_policy_table(addr: str, prec: int, label: int) -> None:
    """RFC 6724 §2.1."""
    assert DEFAULT_POLICY.lookup(ip(addr)) == (prec, label)
    assert DEFAULT_POLICY.precedence(ip(addr)) == prec and DEFAULT_POLICY.label(ip(addr)) == label


def test_policy_table_without_default_row() -> None:
    t = PolicyTable.from_text([("2001:db8::/32", 7, 9)])
    assert t.lookup(ip("2001:db8::1")) == (7, 9)
    assert t.lookup(ip("fd00::1")) == (0, 0)
    with pytest.raises(ValueError):
        PolicyTable.from_text([("198.18.0.0/15", 1, 1)])


def test_common_prefix_len() -> None:
    assert common_prefix_len(ip("fe80::1"), ip("fe80::2")) == 126
    assert common_prefix_len(ip("2001:db8::1"), ip("2001:db8::1")) == 128
    assert common_prefix_len(ip("198.18.0.1"), ip("198.19.0.1")) == 15


# --- one test per rule of RFC 6724 §5 ---------------------------------------------------------
def test_rule1_same_address_beats_every_later_rule() -> None:
    # The destination itself, deprecated and last, still wins over a better-looking address.
    cands = [cand("2001:db8::1", 0), cand("2001:db8::2", 5, deprecated=True, nic=2)]
    assert pick("2001:db8::2", cands, out_nic=1) == "2001:db8::2"


@pytest.mark.parametrize(
    ("dst", "order", "expected"),
    [
        ("2001:db8:9::1", ["fe80::1", "2001:db8::1"], "2001:db8::1"),  # scope(D) global
        ("fe80::9", ["2001:db8::1", "fe80::1"], "fe80::1"),  # smallest scope >= scope(D)
        ("ff02::1", ["2001:db8::1", "fe80::1"], "fe80::1"),
        ("ff05::2", ["fe80::1", "2001:db8::1"], "2001:db8::1"),
        ("ff05::2", ["2001:db8::1", "fec0::1"], "fec0::1"),  # site scope matches exactly
        ("2001:db8:9::1", ["fe80::1", "fec0::1"], "fec0::1"),  # both too small: the larger
        ("ff01::1", ["2001:db8::1", "fe80::1"], "fe80::1"),  # all above: the smaller
    ],
)
def test_rule2_appropriate_scope(dst: str, order: list[str], expected: str) -> None:
    cands = [cand(a, i) for i, a in enumerate(order)]
    assert pick(dst, cands) == expected


def test_rule3_avoid_deprecated() -> None:
    cands = [cand("2001:db8:1::1", 0, deprecated=True), cand("2001:db8:2::1", 1)]
    assert pick("2001:db8:1::9", cands) == "2001:db8:2::1"  # even against rule 8
    assert pick("2001:db8:1::9", cands[:1]) == "2001:db8:1::1"  # used if it is all there is


def test_rule4_prefer_home_address() -> None:
    cands = [cand("2001:db8:1::1", 0), cand("2001:db8:2::1", 1, home=True)]
    assert pick("2001:db8:1::9", cands) == "2001:db8:2::1"


def test_rule5_prefer_outgoing_interface() -> None:
    cands = [cand("2001:db8:1::1", 0, nic=1), cand("2001:db8:2::1", 1, nic=2)]
    assert pick("2001:db8:1::9", cands, out_nic=2) == "2001:db8:2::1"
    assert pick("2001:db8:1::9", cands) == "2001:db8:1::1"  # no out_nic: rule 5 is moot


def test_rule6_prefer_matching_label() -> None:
    # dst label 1; 2002:db8::1 (6to4, label 2) shares 14 bits with it, 3000::1 (label 1) only 3:
    # rule 6 decides before rule 8 would.
    cands = [cand("2002:db8::1", 0), cand("3000:db8::1", 1)]
    assert pick("2001:db8::9", cands) == "3000:db8::1"
    # ULA destination: the ULA source (label 13) over the global one, both global scope.
    assert pick("fd00:1::9", [cand("2001:db8::1", 0), cand("fd00:2::1", 1)]) == "fd00:2::1"


def test_rule7_prefer_temporary_by_default_and_reversible() -> None:
    """RFC 6724 §5 rule 7: temporary preferred by default; the application can
    reverse it (RFC 5014 IPV6_PREFER_SRC_PUBLIC) with prefer_temporary=False."""
    cands = [cand("2001:db8::1", 0), cand("2001:db8::abcd", 1, temporary=True)]
    assert pick("2001:db8:1::9", cands) == "2001:db8::abcd"
    assert pick("2001:db8:1::9", cands, prefer_temporary=False) == "2001:db8::1"


def test_rule8_longest_matching_prefix() -> None:
    cands = [cand("2001:db8:9::1", 0), cand("2001:db8:1:3::1", 1)]
    assert pick("2001:db8:1:2::1", cands) == "2001:db8:1:3::1"


def test_rule8_common_prefix_stops_at_the_candidates_prefix_length() -> None:
    """RFC 6724 §2.2: CommonPrefixLen(S, D) only up to S's prefix length."""
    cands = [cand("2001:db8:9::1", 0, plen=32), cand("2001:db8:1:3::1", 1, plen=32)]
    assert pick("2001:db8:1:2::1", cands) == "2001:db8:9::1"  # both 32: position decides


def test_rule8_not_for_ipv4() -> None:
    cands = [cand("198.19.255.1", 0, plen=16), cand("198.18.0.2", 1)]
    assert pick("198.18.0.1", cands) == "198.19.255.1"


def test_final_tie_is_position_not_input_order() -> None:
    cands = [cand("2001:db8::2", 7), cand("2001:db8::1", 3)]
    assert pick("2001:db8:1::9", cands) == "2001:db8::1"
    assert pick("2001:db8:1::9", cands[::-1]) == "2001:db8::1"


def test_tentative_never_chosen() -> None:
    """RFC 4862 §5.4 (gVisor used them until 2020-06)."""
    cands = [cand("2001:db8::1", 0, tentative=True), cand("fe80::1", 1)]
    assert pick("2001:db8::1", cands) == "fe80::1"  # not even the same address
    assert pick("2001:db8::1", cands[:1]) is None


def test_other_family_is_not_a_candidate() -> None:
    assert pick("2001:db8::1", [cand("198.18.0.1")]) is None
    assert pick("198.18.0.1", [cand("2001:db8::1")]) is None
    assert pick("198.18.0.1", []) is None


# --- gVisor TestIPv6SourceAddressSelectionScopeAndSameAddress -----------------------
LL1, LL2 = "fe80::1", "fe80::2"
ULA1, ULA2 = "fd00::1", "fd00::2"
G1, G2 = "2001:db8::1", "2001:db8::2"
LL_MCAST = "ff02::1"


@pytest.mark.parametrize(
    ("name", "nic_addrs", "dst", "expected"),
    [
        ("Same Global most preferred (last address)", [LL1, ULA1, G1], G1, G1),
        ("Same Global most preferred (first address)", [G1, LL1, ULA1], G1, G1),
        ("Same Link Local most preferred (last address)", [G1, ULA1, LL1], LL1, LL1),
        ("Same Link Local most preferred (first address)", [LL1, ULA1, G1], LL1, LL1),
        ("Same Unique Local most preferred (last address)", [ULA1, G1, LL1], ULA1, ULA1),
        ("Same Unique Local most preferred (first address)", [G1, LL1, ULA1], ULA1, ULA1),
        ("Global most preferred (last address)", [LL1, ULA1, G1], G2, G1),
        ("Global most preferred (first address)", [G1, LL1, ULA1], G2, G1),
        ("Link Local most preferred (last address)", [G1, ULA1, LL1], LL2, LL1),
        ("Link Local most preferred (first address)", [LL1, ULA1, G1], LL2, LL1),
        ("Link Local for link local multicast (last address)", [G1, ULA1, LL1], LL_MCAST, LL1),
        ("Link Local for link local multicast (first address)", [LL1, ULA1, G1], LL_MCAST, LL1),
        ("Unique Local most preferred (last address)", [ULA1, G1, LL1], ULA2, ULA1),
        ("Unique Local most preferred (first address)", [G1, LL1, ULA1], ULA2, ULA1),
        ("Unique Local for Global", [LL1, ULA1, ULA2], G2, ULA1),
        ("Link Local for Global", [LL1, LL2], G2, LL1),
        ("Link Local for Unique Local", [LL1, LL2], ULA2, LL1),
    ],
)
def test_checklist_b3(name: str, nic_addrs: list[str], dst: str, expected: str) -> None:
    cands = [cand(a, i) for i, a in enumerate(nic_addrs)]
    assert pick(dst, cands) == str(ipaddr(ip(expected))), name
    random.Random(name).shuffle(cands)  # the primary list order is `position`, not input order
    assert pick(dst, cands) == str(ipaddr(ip(expected))), name


# --- IPv4 --------------------------------------------------------------------------------------
def test_ipv4_first_non_deprecated_primary_never_tentative() -> None:
    cands = [
        cand("198.18.0.3", -1, tentative=True),
        cand("198.18.0.1", 0, deprecated=True),
        cand("198.18.0.2", 1),
        cand("198.18.0.4", 2),
    ]
    assert pick("198.18.1.1", cands) == "198.18.0.2"
    assert pick("198.18.1.1", cands[:2]) == "198.18.0.1"  # only deprecated: still used
    assert pick("198.18.1.1", cands[:1]) is None


def test_ipv4_mapped_destination_is_an_ipv4_destination() -> None:
    assert pick("::ffff:198.18.1.1", [cand("2001:db8::1"), cand("198.18.0.2")]) == "198.18.0.2"


def test_ipv4_rules_2_and_5() -> None:
    cands = [cand("169.254.0.1", 0), cand("198.18.0.1", 1, nic=2), cand("198.18.0.9", 2, nic=3)]
    assert pick("198.18.1.1", cands) == "198.18.0.1"  # rule 2: global for a global destination
    assert pick("169.254.9.9", cands) == "169.254.0.1"
    assert pick("198.18.1.1", cands, out_nic=3) == "198.18.0.9"


# --- hypothesis: against a pairwise transcription of RFC 6724 §5 ------------------------------------
POOL6 = [
    "fe80::1", "fe80::2", "fd00::1", "fd00:1::1", "fec0::1", "2001:db8::1", "2001:db8::2",
    "2001:db8:1::1", "2002:db8::1", "2001::1", "::1", "2001:db8:1:2::3",
]  # fmt: skip
POOL4 = ["198.18.0.1", "198.18.0.2", "198.19.0.1", "169.254.0.1", "127.0.0.1"]
DSTS = (
    POOL6
    + POOL4
    + [
        "ff02::1",
        "ff05::1",
        "ff0e::1",
        "2001:db8:1::9",
        "fd00::9",
        "198.18.7.7",
        "::ffff:198.18.0.1",
    ]
)


def rfc_prefers(
    a: SourceCandidate, b: SourceCandidate, dst: bytes, out_nic: int | None, temp: bool
) -> int:
    """-1 if RFC 6724 §5 prefers a, 1 if b, 0 if no rule decides (text order)."""
    if a.addr != b.addr:
        if a.addr == dst:
            return -1
        if b.addr == dst:
            return 1
    sa, sb, sd = scope(a.addr), scope(b.addr), scope(dst)
    if sa < sb:
        return 1 if sa < sd else -1
    if sb < sa:
        return -1 if sb < sd else 1
    if a.deprecated != b.deprecated:
        return 1 if a.deprecated else -1
    if a.home != b.home:
        return -1 if a.home else 1
    if out_nic is not None and (a.nic == out_nic) != (b.nic == out_nic):
        return -1 if a.nic == out_nic else 1
    ld = DEFAULT_POLICY.label(dst)
    la, lb = DEFAULT_POLICY.label(a.addr) == ld, DEFAULT_POLICY.label(b.addr) == ld
    if la != lb:
        return -1 if la else 1
    if a.temporary != b.temporary:
        return -1 if a.temporary == temp else 1
    if len(dst) == 16:
        ca = min(common_prefix_len(a.addr, dst), a.prefix_len)
        cb = min(common_prefix_len(b.addr, dst), b.prefix_len)
        if ca != cb:
            return -1 if ca > cb else 1
    if a.position != b.position:
        return -1 if a.position < b.position else 1
    return 0


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[SourceCandidate]:
    addrs = draw(st.lists(st.sampled_from(POOL6 + POOL4), max_size=8, unique=True))
    return [
        SourceCandidate(
            ip(a),
            draw(st.sampled_from([16, 32, 48, 64, 128] if ":" in a else [8, 16, 24, 32])),
            draw(st.integers(1, 3)),
            deprecated=draw(st.booleans()),
            tentative=draw(st.booleans()),
            temporary=draw(st.booleans()),
            home=draw(st.booleans()),
            position=draw(st.integers(0, 4)),
        )
        for a in addrs
    ]


@given(
    candidate_lists(),
    st.sampled_from(DSTS),
    st.none() | st.integers(1, 3),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_selection_properties(
    cands: list[SourceCandidate], dst_text: str, out_nic: int | None, temp: bool, rnd: random.Random
) -> None:
    dst = ip(dst_text)
    kw = {"out_nic": out_nic, "prefer_temporary": temp}
    got = select_source(dst, cands, **kw)
    d = dst[12:] if dst[:12] == b"\x00" * 10 + b"\xff\xff" else dst
    eligible = [c for c in cands if not c.tentative and len(c.addr) == len(d)]
    if not eligible:
        assert got is None
        return
    assert got in eligible and not got.tentative
    # No eligible candidate is strictly better by the RFC's pairwise rules.
    assert all(rfc_prefers(c, got, d, out_nic, temp) >= 0 for c in eligible)
    shuffled = cands[:]
    rnd.shuffle(shuffled)
    assert select_source(dst, shuffled, **kw) == got


# --- RFC 6724 §6 destination ordering --------------------------------------------------------
def sources(table: dict[str, SourceCandidate | None]):
    return lambda d: table.get(str(ipaddr(d)))


def test_sort_destinations_prefers_ipv6_then_usable() -> None:
    dsts = [ip("198.18.9.9"), ip("2001:db8:9::9"), ip("2001:db8:8::8")]
    src = sources({"198.18.9.9": cand("198.18.0.1"), "2001:db8:9::9": cand("2001:db8::1")})
    # rule 1 puts the unreachable one last; rule 6: precedence 40 (::/0) beats 35 (IPv4)
    assert sort_destinations(dsts, src) == [dsts[1], dsts[0], dsts[2]]


def test_sort_destinations_rules_2_3_8_9() -> None:
    g1, g2, ll = ip("2001:db8:1::1"), ip("2001:db8:ffff::1"), ip("fe80::9")
    src = sources(
        {
            "2001:db8:1::1": cand("2001:db8:1::2", plen=48),
            "2001:db8:ffff::1": cand("2001:db8:1::2", plen=48),
            "fe80::9": cand("fe80::1"),
        }
    )
    # rule 8 (smaller scope) puts the link-local first; rule 9 (longest prefix) orders the globals
    assert sort_destinations([g2, g1, ll], src) == [ll, g1, g2]
    # rule 2: a destination whose source has another scope goes after
    src2 = sources({"2001:db8:1::1": cand("fe80::1"), "2001:db8:ffff::1": cand("2001:db8::5")})
    assert sort_destinations([g1, g2], src2) == [g2, g1]
    # rule 3: a deprecated source goes after
    src3 = sources(
        {
            "2001:db8:1::1": cand("2001:db8:1::2", deprecated=True),
            "2001:db8:ffff::1": cand("2001:db8::5"),
        }
    )
    assert sort_destinations([g1, g2], src3) == [g2, g1]


def test_sort_destinations_is_stable_for_ties() -> None:
    a, b = ip("198.18.0.9"), ip("198.18.0.8")
    src = sources({"198.18.0.9": cand("198.18.0.1"), "198.18.0.8": cand("198.18.0.1")})
    assert sort_destinations([a, b], src) == [a, b]
    assert sort_destinations([b, a], src) == [b, a]


def test_summary() -> None:
    c = cand("2001:db8::1", 2, temporary=True)
    assert c.summary() == "2001:db8::1/64 nic 1 pos 2 temporary"
