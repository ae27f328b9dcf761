"""TCP loss recovery: what was sent and when, and what to resend.

Two parts, both sans-I/O (``now`` is passed in):

* ``SentLedger``: the sent, unacknowledged sequence space as entries of
  (start, end, transmit time, retransmitted?), as gVisor's ``writeList``
  and aioquic's ``sent_packets``. It gives RTT samples when timestamps are
  off, one per round trip and by Karn's rule (RFC 6298 §3: none from data
  that was retransmitted), and is where RACK (RFC 8985) reads transmit
  times and keeps its loss marks.
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

* ``RackRecovery``: RFC 8985 RACK-TLP loss detection on the ledger's
  transmit times (the default with SACK), RFC 2883 D-SACK detection for
  its reordering window.

* ``Prr``: RFC 6937 Proportional Rate Reduction (PRR-SSRB), how much may
  be sent on each ACK of a recovery episode.

Left out: undo (RFC 3708), the RFC 6675 rescue retransmission (NextSeg
rule 4).
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
    lost: bool = False  # RACK (RFC 8985 §6.2 step 5) marked it lost; cleared when resent


class SentLedger:
    """The sent and unacknowledged sequence space, lowest first, entries
    contiguous. Covers [SND.UNA, SND.MAX) once data has been sent."""

    __slots__ = ("_entries", "_head", "_rtt_after", "acked_at", "acked_rtx", "acked_clean")

    def __init__(self) -> None:
        self._entries: list[Sent] = []
        self._head = 0  # entries before it are acknowledged (compacted in batches)
        self._rtt_after: int | None = None  # SND.MAX at the last RTT sample
        # What the last ``on_ack`` acknowledged, for RACK (RFC 8985 §6.2
        # steps 2-3): the latest transmit time among it (-1.0: nothing),
        # whether that transmission was a retransmission, and whether none
        # of it was retransmitted.
        self.acked_at = -1.0
        self.acked_rtx = False
        self.acked_clean = True

    def oldest_sent_at(self) -> float | None:
        """When the oldest unacknowledged data left (its last transmission)."""
        return self._entries[self._head].sent_at if self._head < len(self._entries) else None

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
            ents.insert(i + 1, Sent(seq, e.end, e.sent_at, e.retransmitted, e.lost))
            e.end = seq
            i += 1
        while i < len(ents):
            e = ents[i]
            if seq_leq(end, e.seq):
                break
            if seq_lt(end, e.end):  # keep the part after ``end`` as it was
                ents.insert(i + 1, Sent(end, e.end, e.sent_at, e.retransmitted, e.lost))
                e.end = end
            e.sent_at = now
            e.retransmitted = True
            e.lost = False
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

    def split_at(self, seq: int) -> None:
        """Make ``seq`` the start of an entry (RACK marks whole entries)."""
        i = self._find(seq)
        if i < 0:
            return
        e = self._entries[i]
        if seq_gt(seq, e.seq):
            self._entries.insert(i + 1, Sent(seq, e.end, e.sent_at, e.retransmitted, e.lost))
            e.end = seq

    def latest_in(self, lo: int, hi: int) -> tuple[float, bool, bool]:
        """Over the entries overlapping [lo, hi): the latest transmit time,
        whether that transmission was a retransmission, and whether any of
        them was retransmitted ((-1.0, False, False) if none overlaps)."""
        ents = self._entries
        i = self._find(lo)
        latest, latest_rtx, any_rtx = -1.0, False, False
        if i < 0:
            return latest, latest_rtx, any_rtx
        while i < len(ents):
            e = ents[i]
            if not seq_lt(e.seq, hi):
                break
            if e.sent_at >= latest:
                latest = e.sent_at
                latest_rtx = e.retransmitted
            any_rtx = any_rtx or e.retransmitted
            i += 1
        return latest, latest_rtx, any_rtx

    def clear_lost(self) -> None:
        for k in range(self._head, len(self._entries)):
            self._entries[k].lost = False

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
            self.acked_at = -1.0
            return None
        e = ents[i]
        if (ack - e.seq) & SEQ_MASK < (e.end - e.seq) & SEQ_MASK:
            # The common case: the ACK falls inside the oldest entry (a
            # burst or super-segment acknowledged a few segments at a time).
            if ack == e.seq:
                self.acked_at = -1.0
                return None
            e.seq = ack
            self.acked_at = e.sent_at
            rtx = self.acked_rtx = e.retransmitted
            self.acked_clean = not rtx
            if rtx:
                return None
            return self._sample(now, ack, e.sent_at)
        sent_at = -1.0
        clean = True
        latest = -1.0
        latest_rtx = False
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
            if sent_at >= latest:
                latest = sent_at
                latest_rtx = e.retransmitted
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
        self.acked_at = latest
        self.acked_rtx = latest_rtx
        self.acked_clean = clean
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

    def take_sack(
        self, now: float, una: int, blocks: Sequence[tuple[int, int]], snd_max: int,
        ack: int | None = None,
    ) -> int: ...  # fmt: skip

    def on_dup_ack(self) -> None: ...

    def should_enter(self, snd_una: int, snd_max: int, newly_sacked: int, mss: int,
                     dupthresh: int) -> bool: ...  # fmt: skip

    def enter(self, snd_una: int, snd_max: int) -> None: ...

    def on_new_ack(self, now: float, ack: int, data: int, mss: int) -> bool: ...

    def on_rto(self, snd_max: int) -> None: ...

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, mss: int) -> int: ...

    def next_retransmission(
        self, snd_una: int, snd_max: int, cwnd: int, mss: int, dupthresh: int
    ) -> tuple[int, int] | None: ...

    def on_retransmitted(self, seq: int) -> None: ...

    def sacked(self) -> int: ...


@dataclass(slots=True)
class Prr:
    """RFC 6937 §3 state of one recovery episode (bytes)."""

    recover_fs: int  # RecoverFS: the flight when the episode began
    delivered: int = 0  # prr_delivered
    out: int = 0  # prr_out

    def sndcnt(self, delivered: int, pipe: int, ssthresh: int, mss: int) -> int:
        """RFC 6937 §3 on an ACK delivering ``delivered`` bytes: how many
        may be sent now. Above ssthresh, sending follows deliveries in the
        proportion ssthresh/RecoverFS; at or below, the Slow Start
        Reduction Bound lets the flight grow back towards ssthresh by at
        most what was delivered plus one MSS."""
        self.delivered += delivered
        if pipe > ssthresh:
            fs = self.recover_fs if self.recover_fs > 0 else 1
            n = -(-self.delivered * ssthresh // fs) - self.out  # CEIL()
        else:
            limit = max(self.delivered - self.out, delivered) + mss  # PRR-SSRB
            n = min(ssthresh - pipe, limit)
        if n < 0:
            n = 0
        if not self.out and n < mss:
            n = mss  # the fast retransmit always goes (Linux tcp_cwnd_reduction)
        return n


class NewRenoRecovery:
    """RFC 5681 §3.2 fast retransmit and fast recovery with RFC 6582's
    partial-ACK rule, for connections without SACK."""

    __slots__ = ("in_recovery", "recover", "dupacks", "rtx_queue")

    def __init__(self, iss: int) -> None:
        self.in_recovery = False
        self.recover = iss
        self.dupacks = 0
        self.rtx_queue: list[int] = []

    def take_sack(
        self, now: float, una: int, blocks: Sequence[tuple[int, int]], snd_max: int,
        ack: int | None = None,
    ) -> int:  # fmt: skip
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

    def on_new_ack(self, now: float, ack: int, data: int, mss: int) -> bool:
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

    def sacked(self) -> int:
        """Octets above SND.UNA the peer SACKed (RFC 6937's SACKd)."""
        return 0


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

    def take_sack(
        self, now: float, una: int, blocks: Sequence[tuple[int, int]], snd_max: int,
        ack: int | None = None,
    ) -> int:  # fmt: skip
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

    def sacked(self) -> int:
        sb = self.sb
        return 0 if sb is None else sb.sacked_bytes

    def on_retransmitted(self, seq: int) -> None:
        if type(self.retransmitted) is not set:
            self.retransmitted = set()
        self.retransmitted.add(seq)


# ------------------------------------------------------------- RACK-TLP

RACK_REO_PERSIST = 16  # RFC 8985 §6.2 step 4: D-SACK-free recoveries before reo_wnd_mult resets
TLP_WC_DELACK_S = 0.2  # RFC 8985 §7.2 WCDelAckT: the worst-case delayed ACK
TLP_MIN_PTO_S = 0.01  # Linux tcp_schedule_loss_probe: a PTO is never below 10 ms
_EPS = 1e-9  # seconds: "remaining <= 0" with float rounding


def is_dsack(blocks: Sequence[tuple[int, int]], ack: int) -> bool:
    """RFC 2883 §4: the first SACK block reports a duplicate when it lies
    at or below the cumulative ACK, or inside the second block."""
    if not blocks:
        return False
    left, right = blocks[0]
    if seq_leq(right, ack):
        return True
    if len(blocks) > 1:
        l2, r2 = blocks[1]
        return seq_geq(left, l2) and seq_leq(right, r2)
    return False


class RackRecovery(SackRecovery):
    """RFC 8985 RACK-TLP loss detection over the ledger's transmit times,
    with RFC 6675 recovery (pipe, retransmitting what is lost) around it.

    RACK: a segment is lost when a segment sent after it was delivered
    (cumulatively or by SACK) and more than RACK.rtt + reo_wnd has passed
    since it was sent (§6.2 step 5); until then the reorder timer waits for
    it. reo_wnd is min_RTT/4 times a multiplier that grows by one for each
    round trip that brings a D-SACK (§6.2 step 4), at most SRTT, and 0
    before any reordering was seen once recovery started or DupThresh
    segments are SACKed. Ledger entries stand for a burst sent at one
    instant; ties are broken by sequence number (RACK_sent_after), and an
    entry is split where RACK.end_seq cuts it.

    TLP (§7): the endpoint arms the probe timeout and sends the probe;
    this object keeps TLP.end_seq and TLP.is_retrans and tells from the
    ACKs whether the probe repaired a loss (§7.4).

    Reordering is also recorded, as Linux does, when a D-SACK reports a
    retransmission the receiver already had (the original was only late).
    Left out: the timestamp check of RACK_update (retransmissions are
    judged by min_RTT only) and recovery undo (RFC 3708).
    """

    __slots__ = (
        "ledger", "xmit_ts", "end_seq", "rtt", "min_rtt", "fack", "reordering_seen",
        "reo_wnd_mult", "reo_wnd_persist", "dsack_round", "reo_timeout", "_newly_lost",
        "_una", "tlp_end", "tlp_rtx", "tlp_repaired", "rto_recover", "dsacks",
    )  # fmt: skip

    def __init__(self, iss: int, ledger: SentLedger) -> None:
        super().__init__(iss)
        self.ledger = ledger
        self.xmit_ts = -1.0  # RACK.xmit_ts (-1: nothing delivered yet)
        self.end_seq = iss  # RACK.end_seq
        self.rtt = 0.0  # RACK.rtt
        self.min_rtt = float("inf")  # RACK.min_RTT
        self.fack: int | None = None  # RACK.fack: the highest end delivered above SND.UNA
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = RACK_REO_PERSIST
        self.dsack_round: int | None = None
        self.reo_timeout = 0.0  # seconds until the reorder timer should fire (0: none)
        self._newly_lost = False
        self._una = iss
        self.tlp_end: int | None = None  # TLP.end_seq
        self.tlp_rtx = False  # TLP.is_retrans
        self.tlp_repaired = False  # set by an ACK showing the probe repaired a loss
        self.rto_recover: int | None = None  # SND.MAX at the last RTO, until acknowledged
        self.dsacks = 0  # D-SACK blocks received

    # --- RACK_update and RACK_detect_reordering (§6.2 steps 2-3)

    def _delivered(self, now: float, sent_at: float, end: int, rtx: bool) -> None:
        if sent_at < 0.0:
            return
        rtt = now - sent_at
        if rtx and rtt < self.min_rtt:
            return  # may answer the original transmission: no information
        self.rtt = rtt
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        xt = self.xmit_ts
        if sent_at > xt or (sent_at == xt and seq_gt(end, self.end_seq)):
            self.xmit_ts = sent_at
            self.end_seq = end

    def take_sack(
        self, now: float, una: int, blocks: Sequence[tuple[int, int]], snd_max: int,
        ack: int | None = None,
    ) -> int:  # fmt: skip
        """RFC 2883 §4 D-SACK detection, then RFC 6675 §3 per block; the
        latest transmission each newly SACKed block covers updates RACK.
        ``ack``: the segment's cumulative ACK when older than ``una`` (a
        late ACK's ordinary blocks may lie below SND.UNA)."""
        if is_dsack(blocks, una if ack is None else ack):
            self._on_dsack(una, blocks[0], snd_max)
            blocks = blocks[1:]
        sb = self.sb
        if sb is None:
            sb = self.sb = Scoreboard()
        if not blocks:
            sb.update(una, blocks, snd_max)
            return 0
        newly = 0
        led = self.ledger
        for blk in blocks:
            n = sb.update(una, (blk,), snd_max)
            if not n:
                continue
            newly += n
            hi = blk[1]
            t, t_rtx, any_rtx = led.latest_in(blk[0], hi)
            self._delivered(now, t, hi, t_rtx)
            fack = self.fack
            if fack is None or seq_gt(hi, fack):
                self.fack = hi
            elif seq_lt(hi, fack) and not any_rtx:
                self.reordering_seen = True  # sent before something delivered earlier
        return newly

    def _on_dsack(self, una: int, block: tuple[int, int], snd_max: int) -> None:
        self.dsacks += 1
        # §6.2 step 4: reo_wnd_mult grows once per round trip with D-SACKs.
        if self.dsack_round is not None and seq_geq(una, self.dsack_round):
            self.dsack_round = None
        if self.dsack_round is None:
            self.dsack_round = snd_max
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = RACK_REO_PERSIST
        # Linux (tcp_sacktag_one): a D-SACKed retransmission was reordering.
        self.reordering_seen = True
        # §7.4.2: a D-SACK for the probe's retransmission: nothing was lost.
        te = self.tlp_end
        if te is not None and self.tlp_rtx and seq_lt(block[0], te) and seq_geq(block[1], te):
            self.tlp_end = None

    def on_new_ack(self, now: float, ack: int, data: int, mss: int) -> bool:
        led = self.ledger
        fack = self.fack
        if led.acked_at >= 0.0:
            self._delivered(now, led.acked_at, ack, led.acked_rtx)
            if fack is not None:
                # A hole at the old SND.UNA under SACKed data, filled by
                # data sent once: it was reordered, not lost (§6.2 step 3).
                if seq_lt(self._una, fack) and led.acked_clean and seq_lt(self._una, ack):
                    self.reordering_seen = True
                if seq_geq(ack, fack):
                    self.fack = None
        self._una = ack
        rr = self.rto_recover
        if rr is not None and seq_geq(ack, rr):
            self.rto_recover = None
            self._episode_over()
        te = self.tlp_end
        if te is not None and seq_geq(ack, te):
            # §7.4.2: the probe's outcome.
            if not self.tlp_rtx:
                self.tlp_end = None  # new data delivered
            elif seq_gt(ack, te):
                self.tlp_end = None  # the probe repaired a single loss
                self.tlp_repaired = True
        return super().on_new_ack(now, ack, data, mss)

    def _episode_over(self) -> None:
        # §6.2 step 4: reo_wnd_mult resets after 16 recoveries without D-SACK.
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1
            self.reo_wnd_persist = RACK_REO_PERSIST

    def _exit(self) -> None:
        super()._exit()
        self._episode_over()

    # --- RACK_detect_loss (§6.2 step 5)

    def reo_wnd(self, srtt: float | None, mss: int, dupthresh: int) -> float:
        """§6.2 step 4 RACK_update_reo_wnd."""
        if not self.reordering_seen:
            if self.in_recovery:
                return 0.0
            sb = self.sb
            if sb is not None and sb.sacked_bytes >= dupthresh * mss:
                return 0.0
        base = self.min_rtt if self.min_rtt != float("inf") else self.rtt
        w = base / 4 * self.reo_wnd_mult
        if srtt is not None and srtt < w:
            w = srtt
        return w

    def detect_loss(self, now: float, srtt: float | None, mss: int, dupthresh: int) -> bool:
        """Mark lost every unacknowledged entry sent before RACK.xmit_ts
        (ties: ending at or below RACK.end_seq) more than RACK.rtt +
        reo_wnd ago; ``reo_timeout`` is how long until the next of the
        others would be. True when something was newly marked."""
        self.reo_timeout = 0.0
        self._newly_lost = False
        sb = self.sb
        xmit = self.xmit_ts
        if sb is None or not sb.sacked_bytes or xmit < 0.0:
            return False  # nothing delivered out of order: nothing to judge
        wait = self.rtt + self.reo_wnd(srtt, mss, dupthresh)
        rend = self.end_seq
        led = self.ledger
        ents = led._entries
        i = led._head
        timeout = 0.0
        newly = False
        while i < len(ents):
            e = ents[i]
            t = e.sent_at
            if t > xmit or (t == xmit and not seq_lt(e.seq, rend)):
                if not e.retransmitted:
                    # Original transmissions go out in sequence order, and a
                    # retransmission above this one left later still.
                    break
                i += 1
                continue
            if e.lost:
                i += 1
                continue
            if t == xmit and seq_gt(e.end, rend):
                led.split_at(rend)  # only the part up to RACK.end_seq was sent "before"
            if sb.sacked_in(e.seq, e.end) >= seq_sub(e.end, e.seq):
                i += 1
                continue
            remaining = t + wait - now
            if remaining <= _EPS:
                e.lost = True
                newly = True
            elif remaining > timeout:
                timeout = remaining
            i += 1
        self.reo_timeout = timeout
        self._newly_lost = newly
        return newly

    # --- recovery with RACK's marks

    def should_enter(
        self, snd_una: int, snd_max: int, newly_sacked: int, mss: int, dupthresh: int
    ) -> bool:
        """§6.2 step 5: losses RACK marked start fast recovery (not while
        an RTO's go-back-N is resending everything anyway)."""
        return (
            self._newly_lost
            and not self.in_recovery
            and self.rto_recover is None
            and seq_lt(snd_una, snd_max)
        )

    def enter(self, snd_una: int, snd_max: int) -> None:
        """RFC 6675 §5 step (4) without a retransmission of its own: what
        RACK marked lost is resent (NextSeg on the marks)."""
        self.retransmitted = _NO_RTX
        self.in_recovery = True
        self.recover = snd_max
        self._newly_lost = False

    def on_rto(self, snd_max: int) -> None:
        super().on_rto(snd_max)
        self.ledger.clear_lost()
        self.tlp_end = None
        self.rto_recover = snd_max
        self.reo_timeout = 0.0

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, mss: int) -> int:
        """In flight, as Linux counts it: sent, less SACKed, less marked
        lost and not resent since (a resent entry is no longer marked)."""
        sb = self.sb
        if sb is None:
            return super().pipe(snd_una, snd_nxt, snd_max, mss)
        flight = seq_sub(snd_max, snd_una) - sb.sacked_bytes
        led = self.ledger
        ents = led._entries
        for k in range(led._head, len(ents)):
            e = ents[k]
            if e.lost:
                flight -= seq_sub(e.end, e.seq) - sb.sacked_in(e.seq, e.end)
        return flight if flight > 0 else 0

    def next_retransmission(
        self, snd_una: int, snd_max: int, cwnd: int, mss: int, dupthresh: int
    ) -> tuple[int, int] | None:
        """The lowest unSACKed octets marked lost, at most ``mss``, while
        cwnd - pipe allows a segment (RFC 6675 §5 step (C))."""
        sb = self.sb
        if not self.in_recovery or sb is None:
            return None
        led = self.ledger
        ents = led._entries
        for k in range(led._head, len(ents)):
            e = ents[k]
            if not e.lost:
                continue
            r = sb.first_unsacked(e.seq, e.end)
            if r is None:
                continue
            if cwnd - self.pipe(snd_una, snd_max, snd_max, mss) < mss:
                return None
            n = seq_sub(r[1], r[0])
            return r[0], (n if n < mss else mss)
        return None

    def on_retransmitted(self, seq: int) -> None:
        pass  # the ledger entry is stamped (and unmarked) by the transmission itself


def make_recovery(sack: bool, iss: int) -> LossRecovery:
    """SACK-based recovery when both ends agreed to SACK (RFC 2018 §2)."""
    return SackRecovery(iss) if sack else NewRenoRecovery(iss)
