"""Path MTU cache (RFC 8201, RFC 1191) with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import parse_ip
from shardnet.shards.net.pmtu import PLATEAUS, PmtuCache, PmtuConfig, plateau_below

D6, D6B = parse_ip("2001:db8::1"), parse_ip("2001:db8::2")
D4, D4B = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, s: float) -> float:
        self.now += s
        return self.now


def test_unknown_destination_uses_link_mtu() -> None:
    c = PmtuCache()
    assert c.mtu(0.0, D6, 1500) == 1500
    assert c.get(0.0, D6) is None and len(c) == 0


def test_packet_too_big_lowers_and_link_mtu_still_bounds() -> None:
    clk, c = Clock(), PmtuCache()
    assert c.update(clk.now, D6, 1400, link_mtu=1500) == 1400
    assert c.mtu(clk.now, D6, 1500) == 1400
    assert c.mtu(clk.now, D6, 1300) == 1300  # the link got smaller since
    assert c.mtu(clk.now, D6B, 1500) == 1500  # per destination


def test_increase_is_ignored() -> None:
    """RFC 8201 §4: a Packet Too Big never raises the estimate."""
    clk, c = Clock(), PmtuCache()
    c.update(clk.now, D6, 1400)
    assert c.update(clk.now, D6, 1450) is None
    assert c.mtu(clk.now, D6, 9000) == 1400
    assert (
        c.update(clk.now, D6B, 1500, link_mtu=1500) is None
    )  # not below the link: nothing learned
    assert c.update(clk.now, D6B, 9000, link_mtu=1500) is None
    assert len(c) == 1


def test_ipv6_floor_1280() -> None:
    """RFC 8201 §4: never below the IPv6 minimum link MTU."""
    clk, c = Clock(), PmtuCache()
    assert c.update(clk.now, D6, 576, link_mtu=1500) == 1280
    assert c.mtu(clk.now, D6, 1500) == 1280
    assert c.update(clk.now, D6, 1000) is None  # already at the floor


def test_ipv4_floor_68() -> None:
    """RFC 791 / RFC 1191 §3: 68 octets is the IPv4 minimum."""
    clk, c = Clock(), PmtuCache()
    assert c.update(clk.now, D4, 20, link_mtu=1500) == 68
    assert c.mtu(clk.now, D4, 1500) == 68


def test_ipv4_floor_is_configurable() -> None:
    c = PmtuCache(PmtuConfig(ipv4_min_mtu=552))
    assert c.update(0.0, D4, 300, link_mtu=1500) == 552


@pytest.mark.parametrize(
    ("original_len", "expected"),
    [(1500, 1492), (1492, 1006), (4000, 2002), (65535, 32000), (300, 296), (100, 68), (69, 68)],
)
def test_ipv4_frag_needed_with_mtu_0_uses_plateau(original_len: int, expected: int) -> None:
    """RFC 1191 §5/§7: an old router sends next-hop MTU 0; take the plateau
    below the quoted datagram's total length."""
    c = PmtuCache()
    assert c.update(0.0, D4, 0, original_len=original_len) == expected
    assert c.mtu(0.0, D4, 65535) == expected


def test_ipv4_plateau_without_quoted_length_uses_current_estimate() -> None:
    c = PmtuCache()
    assert c.update(0.0, D4, 0) is None  # nothing to go from
    assert c.update(0.0, D4, 0, link_mtu=1500) == 1492
    assert c.update(0.0, D4, 0) == 1006  # from the cached 1492, next plateau down


def test_plateau_table() -> None:
    assert PLATEAUS[0] == 65535 and PLATEAUS[-1] == 68
    assert plateau_below(68) == 68 and plateau_below(2003) == 2002 and plateau_below(2002) == 1492


def test_expiry_after_ten_minutes() -> None:
    """RFC 8201 §4: estimates age out (10 minutes recommended)."""
    clk, c = Clock(), PmtuCache()
    c.update(clk.now, D6, 1400)
    clk.advance(599.9)
    assert c.mtu(clk.now, D6, 1500) == 1400
    clk.advance(0.1)
    assert c.mtu(clk.now, D6, 1500) == 1500
    assert len(c) == 0
    # after expiry, a new report learns again even if higher than the old estimate
    assert c.update(clk.now, D6, 1450, link_mtu=1500) == 1450


def test_expiry_is_configurable_and_same_report_refreshes() -> None:
    clk, c = Clock(), PmtuCache(PmtuConfig(expiry_s=5.0))
    c.update(clk.now, D6, 1400)
    clk.advance(4.0)
    assert c.update(clk.now, D6, 1400) is None  # same value: kept longer
    clk.advance(4.0)
    assert c.get(clk.now, D6) == 1400
    clk.advance(1.0)
    assert c.get(clk.now, D6) is None
    assert c.update(clk.now, D6, 1400) == 1400  # expired entry is gone: learned anew


def test_timers() -> None:
    clk, c = Clock(), PmtuCache(PmtuConfig(expiry_s=10.0))
    assert c.next_deadline() is None
    c.update(clk.now, D6, 1400)
    t0 = clk.now
    clk.advance(3.0)
    c.update(clk.now, D4, 1400)
    assert c.next_deadline() == t0 + 10.0
    clk.advance(2.0)
    c.update(clk.now, D6, 1400)  # refresh: the old deadline is stale
    assert c.next_deadline() == t0 + 13.0  # D4's
    assert c.handle_timeout(t0 + 12.9) == []
    assert c.handle_timeout(t0 + 13.0) == [D4]
    assert c.next_deadline() == t0 + 15.0
    assert c.handle_timeout(t0 + 100.0) == [D6]
    assert c.next_deadline() is None and len(c) == 0


def test_forget_and_clear() -> None:
    c = PmtuCache()
    c.update(0.0, D6, 1400)
    c.update(0.0, D4, 1400)
    assert c.forget(memoryview(D6)) and not c.forget(D6)
    assert c.next_deadline() == 600.0  # D4 only
    c.clear()
    assert len(c) == 0 and c.next_deadline() is None


def test_lru_bound() -> None:
    c = PmtuCache(PmtuConfig(max_entries=3))
    dsts = [parse_ip(f"2001:db8::{i}") for i in range(1, 5)]
    for d in dsts[:3]:
        c.update(0.0, d, 1400)
    assert c.mtu(0.0, dsts[0], 1500) == 1400  # used: now the most recent
    c.update(0.0, dsts[3], 1400)
    assert len(c) == 3
    assert c.get(0.0, dsts[1]) is None  # the least recently used went
    assert all(c.get(0.0, d) == 1400 for d in (dsts[0], dsts[2], dsts[3]))


def test_heap_stays_bounded() -> None:
    c = PmtuCache(PmtuConfig(max_entries=4))
    for i in range(2000):
        c.update(float(i), parse_ip(f"2001:db8::{i % 50:x}"), 1400)
    assert len(c) == 4 and len(c._heap) <= 2 * 4 + 65


def test_entries() -> None:
    c = PmtuCache()
    c.update(0.0, D6, 1400)
    assert c.entries(100.0) == [(D6, 1400, 500.0)]
    assert c.entries(600.0) == []


@given(
    st.lists(
        st.tuples(
            st.floats(0, 400),  # time step
            st.sampled_from([D6, D6B, D4, D4B]),
            st.integers(0, 70000),  # reported MTU
            st.none() | st.integers(20, 65535),  # quoted length
        ),
        max_size=30,
    ),
    st.sampled_from([1280, 1500, 9000, 65535]),
)
def test_estimate_is_bounded_and_never_raised_by_reports(
    steps: list[tuple[float, bytes, int, int | None]], link: int
) -> None:
    clk, c = Clock(), PmtuCache()
    for step, dst, mtu, olen in steps:
        before = c.mtu(clk.advance(step), dst, link)
        c.update(clk.now, dst, mtu, original_len=olen, link_mtu=link)
        after = c.mtu(clk.now, dst, link)
        floor = 68 if len(dst) == 4 else 1280
        assert min(floor, link) <= after <= before <= link
