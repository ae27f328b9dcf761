"""The sender's SACK scoreboard, RFC 6675 (with RFC 2018 blocks), over
sequence numbers modulo 2**32.

Sans-I/O, no timers: ``recovery.SackRecovery`` feeds each ACK's SACK blocks to
:meth:`Scoreboard.update` and asks :meth:`Scoreboard.next_to_retransmit`
(NextSeg rule 1) and :meth:`Scoreboard.pipe` (SetPipe) during recovery.

Representation: SACKed ranges are kept as *unwrapped* integers (the wire
sequence number plus a multiple of 2**32, counted from the first SND.UNA
seen), in two sorted parallel lists of starts and ends, disjoint and not
touching. Lookups are ``bisect`` on plain ints, so wrap-around costs nothing.
Wire numbers go in and come out; nothing outside sees the unwrapped form.

Defences (a hostile or broken peer must not grow memory or CPU): a block
with left >= right (in sequence space) is ignored; one entirely below
SND.UNA is ignored; with ``snd_nxt`` given
a block reaching beyond SND.NXT is ignored (it SACKs data never sent;
Linux tcp_is_sackblock_valid); at most ``max_ranges`` ranges are kept: a
new range above all of them is refused, otherwise the highest is forgotten
(forgetting SACK information is always safe: the data is retransmitted
again at worst, RFC 2018 §8's reneging rules keep the data buffered).

Implemented: RFC 6675 §3 (scoreboard), §4 IsLost, NextSeg rule (1) (the
endpoint sends new data, rule (2); rules (3) and (4), the rescue
retransmission, are left out), SetPipe.
RFC 2883 D-SACK blocks are recognised by ``recovery.take_sack`` (RFC 2883
§4) and never reach the scoreboard.
Limits: IsLost counts SACKed *ranges* as "discontiguous SACKed sequences"
and SACKed bytes against (DupThresh - 1) * SMSS; segment boundaries inside a
range are not known (three contiguous small segments make one range).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence, Set

from shardnet.common.seqnum import SEQ_MASK

MAX_RANGES = 128  # ranges kept; Linux's receiver sends at most 4 blocks per ACK (RFC 2018 §3)
DUPTHRESH = 3  # RFC 6675 §2, RFC 5681 §3.2
DEFAULT_MSS = 536  # bytes, RFC 9293 §3.7.1 (only for pipe() called without an mss)
_HALF = 1 << 31


class Scoreboard:
    """What the peer has SACKed above SND.UNA (RFC 6675 §3)."""

    __slots__ = (
        "max_ranges",
        "_init",
        "_una",
        "_base",
        "_starts",
        "_ends",
        "_suffix",
        "_sacked",
        "refused",
        "_mss",
    )

    def __init__(self, max_ranges: int = MAX_RANGES) -> None:
        if max_ranges < 1:
            raise ValueError("max_ranges must be >= 1")
        self.max_ranges = max_ranges
        self._init = False
        self._una = 0  # wire SND.UNA at the last update
        self._base = 0  # its unwrapped value
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._suffix: list[int] | None = None  # _suffix[k] = SACKed bytes in ranges k..
        self._sacked = 0
        self.refused = 0  # ranges refused or forgotten because of max_ranges
        self._mss = DEFAULT_MSS  # for pipe() called without one

    # ------------------------------------------------------------ helpers

    def _abs(self, seq: int) -> int:
        return self._base + (((seq - self._una + _HALF) & SEQ_MASK) - _HALF)

    def _sfx(self) -> list[int]:
        s = self._suffix
        if s is None:
            starts = self._starts
            ends = self._ends
            n = len(starts)
            s = [0] * (n + 1)
            acc = 0
            for k in range(n - 1, -1, -1):
                acc += ends[k] - starts[k]
                s[k] = acc
            self._suffix = s
        return s

    def _prune(self) -> None:
        """Forget what SND.UNA has passed."""
        base = self._base
        starts = self._starts
        ends = self._ends
        if not starts or starts[0] >= base:
            return
        i = bisect_right(ends, base)
        if i:
            self._sacked -= sum(ends[k] - starts[k] for k in range(i))
            del starts[:i]
            del ends[:i]
        if starts and starts[0] < base:
            self._sacked -= base - starts[0]
            starts[0] = base
        self._suffix = None

    def _add(self, lo: int, hi: int) -> int:
        starts = self._starts
        ends = self._ends
        i = bisect_left(ends, lo)  # first range ending at or after lo (touching merges)
        j = bisect_right(starts, hi, i)  # ranges i..j-1 start at or before hi
        if i == j:
            n = len(starts)
            if n >= self.max_ranges:
                self.refused += 1
                if i == n:
                    return 0
                self._sacked -= ends[-1] - starts[-1]
                starts.pop()
                ends.pop()
            starts.insert(i, lo)
            ends.insert(i, hi)
            self._sacked += hi - lo
            self._suffix = None
            return hi - lo
        covered = 0
        for k in range(i, j):
            covered += ends[k] - starts[k]
        s0 = starts[i]
        e1 = ends[j - 1]
        nlo = lo if lo < s0 else s0
        nhi = hi if hi > e1 else e1
        added = nhi - nlo - covered
        if j - i == 1:
            starts[i] = nlo
            ends[i] = nhi
        else:
            starts[i:j] = [nlo]
            ends[i:j] = [nhi]
        if added or j - i > 1:
            self._sacked += added
            self._suffix = None
        return added

    # -------------------------------------------------------------- input

    def update(
        self, snd_una: int, blocks: Sequence[tuple[int, int]], snd_nxt: int | None = None
    ) -> int:
        """Take one ACK: SND.UNA after it and its SACK blocks (left, right)
        as on the wire (right = one past the last SACKed octet). Returns the
        bytes newly SACKed (before any ``max_ranges`` forgetting)."""
        if not self._init:
            self._init = True
            self._una = snd_una
            self._base = snd_una
        else:
            d = ((snd_una - self._una + _HALF) & SEQ_MASK) - _HALF
            if d > 0:
                self._base += d
                self._una = snd_una
                self._prune()
        if not blocks:
            return 0
        base = self._base
        una = self._una
        if snd_nxt is None:
            top = base + _HALF  # no block may reach further than half the space
        else:
            top = base + (((snd_nxt - una + _HALF) & SEQ_MASK) - _HALF)
        newly = 0
        for left, right in blocks:
            length = (right - left) & SEQ_MASK
            lo = base + (((left - una + _HALF) & SEQ_MASK) - _HALF)
            hi = lo + length
            if length == 0 or length >= _HALF:
                continue  # malformed: left >= right in sequence space
            if hi <= base or hi > top:
                continue  # stale (below SND.UNA) or SACKs data never sent
            if lo < base:
                lo = base
            newly += self._add(lo, hi)
        return newly

    def clear(self) -> None:
        """Forget all SACK information (RFC 6675 §5.1 after an RTO; RFC 2018
        §8 reneging)."""
        self._starts.clear()
        self._ends.clear()
        self._sacked = 0
        self._suffix = None

    # ------------------------------------------------------------ queries

    def is_sacked(self, seq: int) -> bool:
        starts = self._starts
        if not starts:
            return False
        a = self._abs(seq)
        i = bisect_right(starts, a) - 1
        return i >= 0 and a < self._ends[i]

    def sacked_in(self, lo: int, hi: int) -> int:
        """Octets of [lo, hi) (wire sequence numbers) SACKed."""
        starts = self._starts
        if not starts:
            return 0
        a = self._abs(lo)
        b = a + ((hi - lo) & SEQ_MASK)
        ends = self._ends
        i = bisect_right(ends, a)
        total = 0
        n = len(starts)
        while i < n and starts[i] < b:
            s0 = starts[i] if starts[i] > a else a
            e0 = ends[i] if ends[i] < b else b
            total += e0 - s0
            i += 1
        return total

    def first_unsacked(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The lowest run of octets in [lo, hi) not SACKed, as wire
        (start, end); None when all of it is."""
        a = self._abs(lo)
        b = a + ((hi - lo) & SEQ_MASK)
        starts = self._starts
        ends = self._ends
        i = bisect_right(ends, a)
        if i < len(starts) and starts[i] <= a:
            a = ends[i]  # lo is inside a SACKed range: skip past it
            i += 1
        if a >= b:
            return None
        end = starts[i] if i < len(starts) and starts[i] < b else b
        return a & SEQ_MASK, end & SEQ_MASK

    def is_lost(self, seq: int, mss: int, dupthresh: int = DUPTHRESH) -> bool:
        """RFC 6675 §4 IsLost(SeqNum): DupThresh discontiguous SACKed
        sequences above ``seq``, or more than (DupThresh - 1) * SMSS bytes
        SACKed above it."""
        self._mss = mss
        starts = self._starts
        n = len(starts)
        if not n:
            return False
        a = self._abs(seq)
        i = bisect_right(starts, a)
        nbytes = self._sfx()[i]
        count = n - i
        if i:
            e = self._ends[i - 1]
            if e > a + 1:  # seq itself is SACKed: octets above it in its range
                nbytes += e - a - 1
                count += 1
        return count >= dupthresh or nbytes > (dupthresh - 1) * mss

    def next_to_retransmit(
        self,
        snd_una: int,
        snd_nxt: int,
        mss: int,
        dupthresh: int = DUPTHRESH,
        retransmitted: Set[int] = frozenset(),
        *,
        high_rxt: int | None = None,
    ) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg rule (1): the lowest unSACKed, lost segment
        below the highest SACKed octet that was not retransmitted, as
        (seq, length) with length <= ``mss`` (a segment never covers SACKed
        data). Segments are cut from each hole's start in ``mss`` steps;
        ``retransmitted`` holds the wire start sequence numbers already
        resent in this episode, ``high_rxt`` (HighRxt, the highest octet
        retransmitted) may be given instead or as well: S2 > HighRxt."""
        starts = self._starts
        n = len(starts)
        if not n or mss < 1:
            return None
        ends = self._ends
        sfx = self._sfx()
        self._mss = mss
        thr = (dupthresh - 1) * mss
        base = self._abs(snd_una)
        top = self._abs(snd_nxt)
        hr = None if high_rxt is None else self._abs(high_rxt)
        prev = base
        for k in range(n):
            s0 = starts[k]
            if s0 > top:
                s0 = top
            if s0 > prev:
                # every octet of this hole has the same SACKed data above it
                if not (n - k >= dupthresh or sfx[k] > thr):
                    return None  # and holes higher up are lost even less
                s = prev
                if hr is not None and s <= hr:
                    # jump past HighRxt on the hole's own mss grid
                    s += ((hr - s) // mss + 1) * mss
                while s < s0:
                    w = s & SEQ_MASK
                    if w not in retransmitted:
                        return w, (mss if s0 - s > mss else s0 - s)
                    s += mss
            e0 = ends[k]
            if e0 > prev:
                prev = e0
        return None

    def pipe(
        self,
        snd_una: int,
        snd_nxt: int,
        retransmitted: Set[int],
        mss: int | None = None,
        dupthresh: int = DUPTHRESH,
    ) -> int:
        """RFC 6675 §4 SetPipe, in bytes: every unSACKed octet in
        [SND.UNA, SND.NXT) counts once if not IsLost, and once more if it was
        retransmitted (``retransmitted``: start sequence numbers of resent
        segments of at most ``mss`` bytes, each clipped to its hole).
        ``mss`` None: the last one given to ``next_to_retransmit`` or
        ``is_lost`` (536, RFC 9293 §3.7.1, before any)."""
        if mss is None:
            mss = self._mss
        base = self._abs(snd_una)
        top = self._abs(snd_nxt)
        if top <= base:
            return 0
        starts = self._starts
        ends = self._ends
        n = len(starts)
        total = 0
        prev = base
        if n:
            sfx = self._sfx()
            thr = (dupthresh - 1) * mss
            for k in range(n):
                s0 = starts[k]
                if s0 >= top:
                    break
                if s0 > prev and not (n - k >= dupthresh or sfx[k] > thr):
                    total += s0 - prev
                e0 = ends[k]
                if e0 > prev:
                    prev = e0
        if top > prev:
            total += top - prev  # above the highest SACK: never lost
        if retransmitted:
            for r in retransmitted:
                a = self._abs(r)
                if a < base or a >= top:
                    continue
                i = bisect_right(starts, a)
                if i and ends[i - 1] > a:
                    continue  # SACKed since
                end = starts[i] if i < n else top
                if end > top:
                    end = top
                seg_end = a + mss
                total += (seg_end if seg_end < end else end) - a
        return total

    # ---------------------------------------------------------- accessors

    @property
    def highest_sacked(self) -> int | None:
        """One past the highest SACKed octet (the right edge of the highest
        range, a wire sequence number), None when nothing is SACKed. RFC
        6675's HighSACK is this minus one."""
        ends = self._ends
        return ends[-1] & SEQ_MASK if ends else None

    @property
    def sacked_bytes(self) -> int:
        """Octets above SND.UNA currently SACKed."""
        return self._sacked

    def ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges as wire (left, right), lowest first."""
        return [(s & SEQ_MASK, e & SEQ_MASK) for s, e in zip(self._starts, self._ends, strict=True)]

    @property
    def n_ranges(self) -> int:
        """How many disjoint ranges are kept (no ``__len__``: an empty
        scoreboard must stay truthy)."""
        return len(self._starts)
