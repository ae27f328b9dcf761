"""RFC 6675 scoreboard: the RFC 2018 §5 example ACK streams as the sender sees
them, RFC 2883 D-SACK blocks (taken as plain SACKs), wrap-around, hostile
input, and a brute-force model (per-octet definitions of the RFC) under
hypothesis."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.common.seqnum import SEQ_MASK
from shardnet.shards.tcp.sack import MAX_RANGES, Scoreboard

MSS = 500  # RFC 2018 §5's examples: 500-byte segments from 5000 to 9000
# Offsets: plain, across the 2**32 wrap, and with 5000 landing just below it.
OFFSETS = [0, (1 << 32) - 6000, (1 << 32) - 5001, (1 << 31) + 12345]


def w(x: int, off: int) -> int:
    return (x + off) & SEQ_MASK


def blocks(off: int, *pairs: tuple[int, int]) -> list[tuple[int, int]]:
    return [(w(a, off), w(b, off)) for a, b in pairs]


@pytest.mark.parametrize("off", OFFSETS)
def test_rfc2018_case2_first_segment_dropped(off: int) -> None:
    # RFC 2018 §5 case 2: 5000-5499 lost, the other seven arrive: every ACK
    # is 5000 with SACK 5500-6000, 5500-6500, ..., 5500-9000.
    sb = Scoreboard()
    una, nxt = w(5000, off), w(9000, off)
    news = []
    lost_after = []
    for right in range(6000, 9001, 500):
        news.append(sb.update(una, blocks(off, (5500, right)), nxt))
        lost_after.append(sb.is_lost(una, MSS))
    assert news == [500] * 7
    assert sb.ranges() == blocks(off, (5500, 9000))
    assert sb.sacked_bytes == 3500
    assert sb.highest_sacked == w(9000, off)
    # IsLost: more than (3 - 1) * 500 bytes SACKed above: the third dup ACK
    assert lost_after == [False, False, True, True, True, True, True]
    assert sb.is_sacked(w(5500, off)) and sb.is_sacked(w(8999, off))
    assert not sb.is_sacked(w(5499, off)) and not sb.is_sacked(w(9000, off))
    # NextSeg rule (1): the hole
    assert sb.next_to_retransmit(una, nxt, MSS) == (una, 500)
    assert sb.next_to_retransmit(una, nxt, MSS, retransmitted={una}) is None
    # SetPipe: nothing unSACKed but the lost hole: 0, plus its retransmission
    assert sb.pipe(una, nxt, set(), MSS) == 0
    assert sb.pipe(una, nxt, {una}, MSS) == 500
    # the retransmission is ACKed: the cumulative ACK jumps, all is forgotten
    assert sb.update(nxt, []) == 0
    assert sb.ranges() == [] and sb.sacked_bytes == 0 and sb.highest_sacked is None


def case3(sb: Scoreboard, off: int) -> tuple[int, int]:
    # RFC 2018 §5 case 3: the 2nd, 4th, 6th and 8th segments are dropped.
    una, nxt = w(5500, off), w(9000, off)
    assert sb.update(una, [], nxt) == 0
    assert sb.update(una, blocks(off, (6000, 6500)), nxt) == 500
    assert sb.update(una, blocks(off, (7000, 7500), (6000, 6500)), nxt) == 500
    assert sb.update(una, blocks(off, (8000, 8500), (7000, 7500), (6000, 6500)), nxt) == 500
    return una, nxt


@pytest.mark.parametrize("off", OFFSETS)
def test_rfc2018_case3_alternate_segments_dropped(off: int) -> None:
    sb = Scoreboard()
    una, nxt = case3(sb, off)
    assert sb.ranges() == blocks(off, (6000, 6500), (7000, 7500), (8000, 8500))
    # IsLost: three discontiguous SACKed sequences above 5500; two above 6500
    assert sb.is_lost(w(5500, off), MSS)
    assert not sb.is_lost(w(6500, off), MSS)
    assert not sb.is_lost(w(7500, off), MSS)
    # with DupThresh 2 the second hole is lost too
    assert sb.is_lost(w(6500, off), MSS, dupthresh=2)
    assert sb.next_to_retransmit(una, nxt, MSS) == (w(5500, off), 500)
    assert sb.next_to_retransmit(una, nxt, MSS, 3, {w(5500, off)}) is None
    assert sb.next_to_retransmit(una, nxt, MSS, 2, {w(5500, off)}) == (w(6500, off), 500)
    assert sb.next_to_retransmit(una, nxt, MSS, 2, high_rxt=w(5999, off)) == (w(6500, off), 500)
    # SetPipe: holes 6500 and 7500 are not lost (500 each), 8500-9000 above
    # the highest SACK is in flight (500): 1500; the retransmission adds 500
    assert sb.pipe(una, nxt, set(), MSS) == 1500
    assert sb.pipe(una, nxt, {w(5500, off)}, MSS) == 2000
    # the 4th segment arrives out of order: 6000-7500 merges
    assert sb.update(una, blocks(off, (6000, 7500), (8000, 8500)), nxt) == 500
    assert sb.ranges() == blocks(off, (6000, 7500), (8000, 8500))
    assert sb.is_lost(w(5500, off), MSS)  # 2000 bytes above > 1000
    # then the 2nd: ACK 7500, SACK 8000-8500
    assert sb.update(w(7500, off), blocks(off, (8000, 8500)), nxt) == 0
    assert sb.ranges() == blocks(off, (8000, 8500))
    assert sb.sacked_bytes == 500
    assert not sb.is_lost(w(7500, off), MSS)


@pytest.mark.parametrize("off", OFFSETS)
def test_dsack_below_the_cumulative_ack_adds_nothing(off: int) -> None:
    # RFC 2883 §4.1.1: ACKs lost, 3000-3499 retransmitted, the receiver
    # reports the duplicate: ACK 4000, SACK 3000-3500. D-SACK is not
    # interpreted; the block is below SND.UNA and SACKs nothing.
    sb = Scoreboard()
    new = sb.update(w(4000, off), blocks(off, (3000, 3500)), w(5000, off))
    assert new == 0
    assert sb.ranges() == []


@pytest.mark.parametrize("off", OFFSETS)
def test_dsack_with_sack_blocks_counts_only_the_new_octets(off: int) -> None:
    # RFC 2883 §4.1.2: duplicate 3000-3499 below the ACK, then the usual
    # blocks: ACK 4000, SACK 3000-3500, 4500-5000
    sb = Scoreboard()
    new = sb.update(w(4000, off), blocks(off, (3000, 3500), (4500, 5000)), w(6000, off))
    assert new == 500
    assert sb.ranges() == blocks(off, (4500, 5000))
    # RFC 2883 §4.1.3's shape: a duplicate of an out-of-order segment, the
    # first block inside the second: only 5000-5500 is new
    new = sb.update(w(4000, off), blocks(off, (4500, 5000), (4500, 5500)), w(6000, off))
    assert new == 500
    assert sb.ranges() == blocks(off, (4500, 5500))
    # an ordinary first block that is not inside the second is a SACK
    new = sb.update(w(4000, off), blocks(off, (5600, 5700), (4500, 5500)), w(6000, off))
    assert new == 100


def test_merging_overlaps_and_adjacent_blocks() -> None:
    sb = Scoreboard()
    sb.update(1000, [(2000, 2100), (2200, 2300), (2400, 2500)])
    assert sb.n_ranges == 3
    # one block bridging all three counts only the gaps
    assert sb.update(1000, [(1950, 2550)]) == 600 - 300
    assert sb.ranges() == [(1950, 2550)]
    # adjacent on both sides merges into one range
    assert sb.update(1000, [(2550, 2600), (1900, 1950)]) == 100
    assert sb.ranges() == [(1900, 2600)]
    # a repeat adds nothing
    assert sb.update(1000, [(1900, 2600)]) == 0
    assert sb.sacked_bytes == 700


def test_cumulative_ack_inside_a_range_trims_it() -> None:
    sb = Scoreboard()
    sb.update(1000, [(2000, 3000), (4000, 5000)])
    sb.update(2500, [])
    assert sb.ranges() == [(2500, 3000), (4000, 5000)]
    assert sb.sacked_bytes == 1500
    sb.update(4500, [])
    assert sb.ranges() == [(4500, 5000)] and sb.sacked_bytes == 500
    # a block straddling SND.UNA is clipped to it
    sb.update(4500, [(6000, 6100), (4000, 4800)])
    assert sb.ranges() == [(4500, 5000), (6000, 6100)]
    # SND.UNA going backwards (an old ACK) changes nothing
    sb.update(4000, [])
    assert sb.ranges() == [(4500, 5000), (6000, 6100)]


def test_hostile_blocks_are_ignored() -> None:
    sb = Scoreboard()
    una, nxt = 10_000, 20_000
    bad = [
        (15_000, 15_000),  # empty
        (16_000, 15_000),  # left > right
        (15_000, (15_000 + (1 << 31)) & SEQ_MASK),  # half the sequence space
        (5_000, 6_000),  # below SND.UNA (not the first block)
        (19_000, 21_000),  # beyond SND.NXT: SACKs data never sent
        (30_000, 31_000),
    ]
    assert sb.update(una, [(11_000, 11_500), *bad], nxt) == 500
    assert sb.ranges() == [(11_000, 11_500)]
    # without snd_nxt the half-space bound still holds
    far = (una + (1 << 31) + 10) & SEQ_MASK
    assert sb.update(una, [(11_000, 11_500), (far, far + 10)]) == 0


def test_memory_is_bounded_against_a_flood_of_disjoint_blocks() -> None:
    sb = Scoreboard(max_ranges=16)
    una = 1000
    t0 = time.perf_counter()
    for i in range(20_000):
        a = una + 10 + 20 * i
        sb.update(una, [(a, a + 10)], una + 1_000_000)
    assert time.perf_counter() - t0 < 2.0
    assert sb.n_ranges == 16
    assert sb.refused >= 20_000 - 16
    # what is kept is the lowest (the part that matters for NextSeg)
    assert sb.ranges()[0] == (1010, 1020)
    assert sb.sacked_bytes == 16 * 10
    # a lower range pushes the highest out
    sb.update(una, [(1001, 1005)], una + 1_000_000)
    assert sb.n_ranges == 16 and sb.ranges()[0] == (1001, 1005)
    assert sb.sacked_bytes == 16 * 10 - 10 + 4
    assert MAX_RANGES >= 64
    with pytest.raises(ValueError):
        Scoreboard(max_ranges=0)


def test_clear_forgets_everything_but_snd_una() -> None:
    sb = Scoreboard()
    sb.update(1000, [(2000, 3000)])
    sb.clear()
    assert sb.ranges() == [] and sb.sacked_bytes == 0 and not sb.is_sacked(2500)
    assert sb.update(1000, [(2000, 3000)]) == 1000


def test_empty_scoreboard_queries() -> None:
    sb = Scoreboard()
    assert not sb.is_sacked(5) and not sb.is_lost(5, MSS)
    assert sb.next_to_retransmit(0, 1000, MSS) is None
    assert sb.pipe(0, 1000, set(), MSS) == 1000
    assert sb.pipe(0, 1000, {0}, MSS) == 1500  # a retransmission counts twice
    assert sb.pipe(1000, 1000, set(), MSS) == 0
    assert sb.highest_sacked is None


def test_pipe_without_mss_uses_the_last_one() -> None:
    sb = Scoreboard()
    sb.update(0, [(1000, 3000)], 4000)
    assert sb.pipe(0, 4000, {0}) == 1000 + 536  # RFC 9293 default before any
    sb.is_lost(0, 400)
    assert sb.pipe(0, 4000, {0}) == 1000 + 400


def test_next_segment_is_cut_at_the_sacked_data_and_by_mss() -> None:
    sb = Scoreboard()
    sb.update(0, [(1200, 1300), (1400, 1500), (1600, 1700)], 2000)
    # hole 0-1200 (lost: three ranges above) in 500-byte pieces
    assert sb.next_to_retransmit(0, 2000, MSS) == (0, 500)
    assert sb.next_to_retransmit(0, 2000, MSS, 3, {0, 500}) == (1000, 200)
    assert sb.next_to_retransmit(0, 2000, MSS, 3, {0, 500, 1000}) is None
    assert sb.next_to_retransmit(0, 2000, MSS, 3, high_rxt=999) == (1000, 200)


# ------------------------------------------------------------ brute force


class Model:
    """RFC 6675 by the letter, one octet at a time (offsets from SND.UNA)."""

    def __init__(self) -> None:
        self.sacked: set[int] = set()

    def add(self, lo: int, hi: int) -> int:
        new = set(range(lo, hi)) - self.sacked
        self.sacked |= new
        return len(new)

    def runs_above(self, o: int) -> int:
        return sum(1 for x in self.sacked if x > o and (x - 1 not in self.sacked or x - 1 == o))

    def is_lost(self, o: int, mss: int, dt: int) -> bool:
        above = sum(1 for x in self.sacked if x > o)
        return self.runs_above(o) >= dt or above > (dt - 1) * mss

    def pipe(self, nxt: int, retx: set[int], mss: int, dt: int) -> int:
        total = 0
        for o in range(nxt):
            if o in self.sacked:
                continue
            if not self.is_lost(o, mss, dt):
                total += 1
        for r in retx:
            o = r
            while o < nxt and o < r + mss and o not in self.sacked:
                total += 1
                o += 1
        return total

    def next_seg(self, nxt: int, retx: set[int], mss: int, dt: int) -> tuple[int, int] | None:
        if not self.sacked:
            return None
        high = max(self.sacked)
        o = 0
        while o < high:
            if o in self.sacked:
                o += 1
                continue
            end = o
            while end not in self.sacked:
                end += 1
            for s in range(o, end, mss):
                if s not in retx and self.is_lost(s, mss, dt):
                    return s, min(mss, end - s)
            o = end
        return None


_block = st.tuples(st.integers(0, 120), st.integers(1, 40)).map(lambda p: (p[0], p[0] + p[1]))


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(OFFSETS),
    st.lists(st.lists(_block, max_size=4), max_size=8),
    st.integers(5, 30),
    st.integers(1, 4),
    st.sets(st.integers(0, 150), max_size=6),
)
def test_matches_the_per_octet_definitions(
    off: int, acks: list[list[tuple[int, int]]], mss: int, dt: int, retx: set[int]
) -> None:
    nxt = 160
    sb = Scoreboard()
    model = Model()
    una_w, nxt_w = w(0, off), w(nxt, off)
    for bl in acks:
        # a D-SACK (RFC 2883 §4: a first block inside the second) is taken
        # as a SACK: its octets are inside the second block's anyway
        got = sb.update(una_w, [(w(a + 1, off), w(b + 1, off)) for a, b in bl], nxt_w)
        want = sum(model.add(a + 1, b + 1) for a, b in bl if b + 1 <= nxt)
        assert got == want
    assert sb.sacked_bytes == len(model.sacked)
    for o in range(0, nxt + 2):
        assert sb.is_sacked(w(o, off)) == (o in model.sacked), o
        if o not in model.sacked:
            assert sb.is_lost(w(o, off), mss, dt) == model.is_lost(o, mss, dt), o
    retx_w = {w(r, off) for r in retx if r not in model.sacked}
    retx_m = {r for r in retx if r not in model.sacked}
    assert sb.pipe(una_w, nxt_w, retx_w, mss, dt) == model.pipe(nxt, retx_m, mss, dt)
    got_seg = sb.next_to_retransmit(una_w, nxt_w, mss, dt, retx_w)
    want_seg = model.next_seg(nxt, retx_m, mss, dt)
    assert got_seg == (None if want_seg is None else (w(want_seg[0], off), want_seg[1]))
    # the ranges are disjoint, sorted, not touching
    rs = [((a - off) & SEQ_MASK, (b - off) & SEQ_MASK) for a, b in sb.ranges()]
    for (a0, b0), (a1, b1) in zip(rs, rs[1:], strict=False):
        assert a0 < b0 < a1 < b1


@given(
    st.integers(0, SEQ_MASK),
    st.lists(st.lists(st.tuples(st.integers(0, SEQ_MASK), st.integers(0, SEQ_MASK)), max_size=5)),
)
def test_arbitrary_blocks_never_break_it(una: int, acks: list[list[tuple[int, int]]]) -> None:
    sb = Scoreboard(max_ranges=8)
    for bl in acks:
        sb.update(una, bl)
        assert sb.n_ranges <= 8
        assert 0 <= sb.sacked_bytes
        sb.is_lost(una, 1000)
        sb.next_to_retransmit(una, (una + 100_000) & SEQ_MASK, 1000)
        sb.pipe(una, (una + 100_000) & SEQ_MASK, {una}, 1000)
        una = (una + 1000) & SEQ_MASK
