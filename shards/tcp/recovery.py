"""TCP loss recovery: what was sent and when, and what to resend.

Two parts, both sans-I/O (``now`` is passed in):

* ``SentLedger``: the sent, unacknowledged sequence space as entries of
  (start, end, transmit time, retransmitted?), as gVisor's ``writeList``
  and aioquic's ``sent_packets``. It gives RTT samples when timestamps are
  off, one per round trip and by Karn's rule (RFC 6298 §3: none from data
  that was retransmitted), and is where RACK (RFC 8985) will read
  transmit times.
* ``LossRecovery``: the recovery episode after duplicate ACKs. Two
  implementations: ``NewRenoRecovery`` (RFC 5681 §3.2 fast retransmit,
  RFC 6582 partial ACKs) without SACK, ``SackRecovery`` (RFC 6675:
  scoreboard, IsLost, SetPipe, NextSeg rule (1)) with it. Congestion
  control is not here (``cc.py``): the endpoint calls both.

Cost on the common path: one ledger entry per burst of new data (the
segments of one ``poll_transmit``, a super-segment each when the link does
TSO, share one entry as they share one transmit time); an ACK trims or pops
entries in place and allocates nothing. Entries are split only when a
retransmission covers part of one.

Left out: RACK-TLP (RFC 8985), D-SACK (RFC 2883) and undo (RFC 3708), PRR
(RFC 6937), the RFC 6675 rescue retransmission (NextSeg rule 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

from shardnet.common.seqnum import SEQ_MASK, seq_geq, seq_gt, seq_leq, seq_lt, seq_sub

from .sack import Scoreboard

_NO_RTX: frozenset[int] = frozenset()
_COMPACT = 64  # acknowledged entries kept at the head of the ledger before one compaction


# ------------------------------------------------------------------- ledger


@dataclass(slots=True)
class Sent:
    """Sequence numbers [seq, end) that left at ``sent_at`` (seconds, the
    shard clock), in one segment or in a burst sent at the same instant."""

    seq: int
    end: int
    sent_at: float
    retransmitted: bool


class SentLedger:
    """The sent and unacknowledged sequence space, lowest first, entries
    contiguous. Covers [SND.UNA, SND.MAX) once data has been sent."""

    __slots__ = ("_entries", "_head", "_rtt_after")

    def __init__(self) -> None:
        self._entries: list[Sent] = []
        self._head = 0  # entries before it are acknowledged (compacted in batches)
        self._rtt_after: int | None = None  # SND.MAX at the last RTT sample

    def on_transmit(self, now: float, seq: int, end: int) -> None:
        """[seq, end) left at ``now``: new data above the ledger's top is
        recorded (merged into the last entry when sent at the same instant),
        data below it is marked retransmitted with the new time."""
        if seq == end:
            return  # nothing that takes sequence space (an ACK alone)
        ents = self._entries
        if len(ents) == self._head:
            ents.append(Sent(seq, end, now, False))
            return
        last = ents[-1]
        top = last.end
        if seq_geq(seq, top):
            if seq == top and last.sent_at == now and not last.retransmitted:
                last.end = end
            else:
                ents.append(Sent(seq, end, now, False))
            return
        if seq_gt(end, top):
            ents.append(Sent(top, end, now, False))
            end = top
        self._mark_retransmitted(now, seq, end)

    def _mark_retransmitted(self, now: float, seq: int, end: int) -> None:
        """Split entries so that [seq, end) is whole entries, then stamp them."""
        ents = self._entries
        i = self._find(seq)
        if i < 0:
            return
        e = ents[i]
        if seq_gt(seq, e.seq):  # keep the part before ``seq`` as it was
            ents.insert(i + 1, Sent(seq, e.end, e.sent_at, e.retransmitted))
            e.end = seq
            i += 1
        while i < len(ents):
            e = ents[i]
            if seq_leq(end, e.seq):
                break
            if seq_lt(end, e.end):  # keep the part after ``end`` as it was
                ents.insert(i + 1, Sent(end, e.end, e.sent_at, e.retransmitted))
                e.end = end
            e.sent_at = now
            e.retransmitted = True
            i += 1

    def _find(self, seq: int) -> int:
        """Index of the entry holding ``seq``, -1 if none (binary search on
        distances from the first entry, so wrap-around does not matter)."""
        ents = self._entries
        lo, hi = self._head, len(ents)
        if lo == hi:
            return -1
        base = ents[lo].seq
        off = seq_sub(seq, base)
        if off < 0 or off >= seq_sub(ents[-1].end, base):
            return -1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if seq_sub(ents[mid].seq, base) <= off:
                lo = mid
            else:
                hi = mid
        return lo

    def on_ack(self, now: float, ack: int) -> float | None:
        """SND.UNA moved to ``ack``: forget what it covers. Returns an RTT
        sample, ``now`` minus the transmit time of the newest data
        acknowledged, or None: if any acknowledged data was retransmitted
        (RFC 6298 §3, Karn; as Linux tcp_clean_rtx_queue), or if the ACK does
        not go past SND.MAX of the previous sample (one sample per round
        trip, as gVisor's RTTMeasureSeqNum: RFC 6298's gains are meant for
        that rate, RFC 7323 Appendix G)."""
        ents = self._entries
        i = self._head
        n = len(ents)
        if i == n:
            return None
        e = ents[i]
        if (ack - e.seq) & SEQ_MASK < (e.end - e.seq) & SEQ_MASK:
            # The common case: the ACK falls inside the oldest entry (a
            # burst or super-segment acknowledged a few segments at a time).
            if ack == e.seq:
                return None
            e.seq = ack
            if e.retransmitted:
                return None
            return self._sample(now, ack, e.sent_at)
        sent_at = -1.0
        clean = True
        while i < n:
            e = ents[i]
            partly = False
            if seq_gt(e.end, ack):
                if not seq_gt(ack, e.seq):
                    break
                e.seq = ack  # partly acknowledged: the rest stays
                partly = True
            else:
                i += 1
            sent_at = e.sent_at
            if e.retransmitted:
                clean = False
            if partly:
                break
        top = ents[-1].end
        if i == n:
            ents.clear()
            i = 0
        elif i >= _COMPACT and 2 * i >= n:
            del ents[:i]
            i = 0
        self._head = i
        if sent_at < 0.0 or not clean:
            return None
        return self._sample(now, ack, sent_at, top)

    def _sample(self, now: float, ack: int, sent_at: float, top: int | None = None) -> float | None:
        after = self._rtt_after
        if after is not None and not seq_gt(ack, after):
            return None
        self._rtt_after = self._entries[-1].end if top is None else top
        return now - sent_at


# ------------------------------------------------------------- recovery


class LossRecovery(Protocol):
    """A recovery episode's state and decisions; the endpoint sends what
    ``next_retransmission`` names and drives the congestion control."""

    in_recovery: bool
    rtx_queue: list[int]  # sequence numbers to resend before anything else

    def take_sack(self, una: int, blocks: Sequence[tuple[int, int]], snd_max: int) -> int: ...

    def on_dup_ack(self) -> None: ...

    def should_enter(self, snd_una: int, snd_max: int, newly_sacked: int, mss: int,
                     dupthresh: int) -> bool: ...  # fmt: skip

    def enter(self, snd_una: int, snd_max: int) -> None: ...

    def on_new_ack(self, ack: int, data: int, mss: int) -> bool: ...

    def on_rto(self, snd_max: int) -> None: ...

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, mss: int) -> int: ...

    def next_retransmission(
        self, snd_una: int, snd_max: int, cwnd: int, mss: int, dupthresh: int
    ) -> tuple[int, int] | None: ...

    def on_retransmitted(self, seq: int) -> None: ...


class NewRenoRecovery:
    """RFC 5681 §3.2 fast retransmit and fast recovery with RFC 6582's
    partial-ACK rule, for connections without SACK."""

    __slots__ = ("in_recovery", "recover", "dupacks", "rtx_queue")

    def __init__(self, iss: int) -> None:
        self.in_recovery = False
        self.recover = iss
        self.dupacks = 0
        self.rtx_queue: list[int] = []

    def take_sack(self, una: int, blocks: Sequence[tuple[int, int]], snd_max: int) -> int:
        return 0  # SACK not in use: blocks are not read

    def on_dup_ack(self) -> None:
        self.dupacks += 1

    def should_enter(
        self, snd_una: int, snd_max: int, newly_sacked: int, mss: int, dupthresh: int
    ) -> bool:
        """RFC 5681 §3.2 step 2 with RFC 6582 §3.2 step 2: ``dupthresh``
        duplicate ACKs, data outstanding, and SND.UNA at or past "recover"
        (no second episode for losses of the same window)."""
        return (
            not self.in_recovery
            and seq_lt(snd_una, snd_max)
            and seq_geq(snd_una, self.recover)
            and self._loss_detected(snd_una, newly_sacked, mss, dupthresh)
        )

    def _loss_detected(self, snd_una: int, newly_sacked: int, mss: int, dupthresh: int) -> bool:
        return self.dupacks >= dupthresh

    def enter(self, snd_una: int, snd_max: int) -> None:
        """RFC 5681 §3.2 step 3, RFC 6582 §3.2 step 3: remember SND.MAX as
        "recover" and retransmit the segment at SND.UNA."""
        self.in_recovery = True
        self.recover = snd_max
        self._queue(snd_una)

    def _queue(self, seq: int) -> None:
        if seq not in self.rtx_queue:
            self.rtx_queue.append(seq)

    def on_new_ack(self, ack: int, data: int, mss: int) -> bool:
        """SND.UNA advanced to ``ack`` (``data`` bytes of data). True when it
        was the full ACK that ends the episode (RFC 6582 §3.2 step 3)."""
        if self.rtx_queue:
            self.rtx_queue = [q for q in self.rtx_queue if seq_geq(q, ack)]
        if not self.in_recovery:
            self.dupacks = 0
            return False
        if seq_geq(ack, self.recover):
            self._exit()
            return True
        self._partial_ack(ack, data, mss)
        return False

    def _exit(self) -> None:
        self.in_recovery = False
        self.dupacks = 0

    def _partial_ack(self, ack: int, data: int, mss: int) -> None:
        """RFC 6582 §3.2 step 5: retransmit the next hole now; the segments
        the ACK covered no longer count as having left the network."""
        self.dupacks = max(0, self.dupacks - data // max(mss, 1) + 1)
        self._queue(ack)

    def on_rto(self, snd_max: int) -> None:
        """RFC 6582 §4 after a timeout: "recover" = SND.MAX, the episode
        ends (go-back-N from SND.UNA follows)."""
        self.in_recovery = False
        self.dupacks = 0
        self.rtx_queue.clear()
        self.recover = snd_max

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, mss: int) -> int:
        """RFC 5681 §3.2 step 4: the flight less the segments the duplicate
        ACKs report as having left the network."""
        return max(seq_sub(snd_nxt, snd_una) - self.dupacks * mss, 0)

    def next_retransmission(
        self, snd_una: int, snd_max: int, cwnd: int, mss: int, dupthresh: int
    ) -> tuple[int, int] | None:
        """The next queued retransmission still unacknowledged, as
        (seq, length)."""
        q = self.rtx_queue
        while q:
            seq = q.pop(0)
            if seq_geq(seq, snd_una) and seq_lt(seq, snd_max):
                return seq, mss
        return None

    def on_retransmitted(self, seq: int) -> None:
        pass  # NewReno keeps no per-segment marks


class SackRecovery(NewRenoRecovery):
    """RFC 6675 conservative SACK-based loss recovery. Until the first SACK
    block arrives it works as NewReno does, but without RFC 6582's
    partial-ACK retransmission (NextSeg covers holes once blocks come)."""

    __slots__ = ("sb", "retransmitted")

    def __init__(self, iss: int) -> None:
        super().__init__(iss)
        self.sb: Scoreboard | None = None  # made with the first block: most connections never lose
        # Start sequence numbers resent in this episode: an empty frozenset
        # until the first (a set costs 216 bytes on every connection).
        self.retransmitted: AbstractSet[int] = _NO_RTX

    def take_sack(self, una: int, blocks: Sequence[tuple[int, int]], snd_max: int) -> int:
        """RFC 6675 §3: update the scoreboard; returns the bytes newly SACKed."""
        if self.sb is None:
            self.sb = Scoreboard()
        return self.sb.update(una, blocks, snd_max)

    def _loss_detected(self, snd_una: int, newly_sacked: int, mss: int, dupthresh: int) -> bool:
        # RFC 6675 §5 (and Linux): dupthresh duplicate ACKs, or
        # IsLost(HighACK + 1) by what the SACK blocks report.
        if self.dupacks >= dupthresh:
            return True
        return newly_sacked > 0 and self.sb is not None and self.sb.is_lost(snd_una, mss, dupthresh)

    def enter(self, snd_una: int, snd_max: int) -> None:
        """RFC 6675 §5 step (4)."""
        self.retransmitted = _NO_RTX
        super().enter(snd_una, snd_max)

    def _exit(self) -> None:
        super()._exit()
        self.retransmitted = _NO_RTX

    def _partial_ack(self, ack: int, data: int, mss: int) -> None:
        pass  # RFC 6675 §5 step (C): NextSeg decides, not the partial ACK

    def on_rto(self, snd_max: int) -> None:
        """RFC 6675 §5.1: the episode ends; SACK information is dropped
        (RFC 2018 §8: the receiver may have reneged)."""
        super().on_rto(snd_max)
        self.retransmitted = _NO_RTX
        if self.sb is not None:
            self.sb.clear()

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, mss: int) -> int:
        """RFC 6675 §4 SetPipe (NewReno's estimate until a block arrived)."""
        if self.sb is None:
            return super().pipe(snd_una, snd_nxt, snd_max, mss)
        return self.sb.pipe(snd_una, snd_max, self.retransmitted, mss)

    def next_retransmission(
        self, snd_una: int, snd_max: int, cwnd: int, mss: int, dupthresh: int
    ) -> tuple[int, int] | None:
        """Queued retransmissions first, then RFC 6675 §5 step (C): while
        cwnd - pipe >= 1 SMSS, NextSeg rule (1)."""
        r = super().next_retransmission(snd_una, snd_max, cwnd, mss, dupthresh)
        if r is not None or not self.in_recovery or self.sb is None:
            return r
        sb = self.sb
        if cwnd - sb.pipe(snd_una, snd_max, self.retransmitted, mss) < mss:
            return None
        r = sb.next_to_retransmit(snd_una, snd_max, mss, dupthresh, self.retransmitted)
        if r is None or r[0] in self.retransmitted:
            return None
        return r[0], min(r[1], mss)

    def on_retransmitted(self, seq: int) -> None:
        if type(self.retransmitted) is not set:
            self.retransmitted = set()
        self.retransmitted.add(seq)


def make_recovery(sack: bool, iss: int) -> LossRecovery:
    """SACK-based recovery when both ends agreed to SACK (RFC 2018 §2)."""
    return SackRecovery(iss) if sack else NewRenoRecovery(iss)
