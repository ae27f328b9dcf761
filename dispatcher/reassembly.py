"""IP fragment reassembly for the dispatcher (DESIGN.md "Classification"):
the dispatcher must see a whole datagram to hash it to its flow's shard.

Implemented:

* IPv4 reassembly (RFC 791 §3.2 "Fragmentation and Reassembly"), keyed on
  (source, destination, protocol, identification); the header of the
  offset-0 fragment is the header of the datagram (its options included),
  rebuilt with MF=0, offset 0, the new total length and a new checksum;
* IPv6 reassembly (RFC 8200 §4.5), keyed on (source, destination,
  identification): the Unfragmentable Part of the offset-0 fragment is kept,
  the Fragment header removed, the Next Header field before it patched and the
  Payload Length recomputed; atomic fragments (offset 0, M=0) are returned at
  once without their Fragment header (RFC 6946 §4), never queued;
* a first fragment that does not hold the whole header chain is dropped
  (RFC 8200 §4.5, RFC 7112 §5), as Linux's ``ipv6_frag_thdr_truncated`` does;
* ECN (RFC 3168 §5.3, as Linux's ``ip_frag_ecn_table``): a datagram whose
  fragments mix Not-ECT with ECT/CE is dropped; if any fragment is CE the
  reassembled datagram is CE.

Policies (both families alike, but for overlaps):

* Overlaps: an IPv6 fragment that is an *exact* duplicate (same offset,
  length and bytes) of one held is ignored (RFC 8200 §4.5 allows this); any
  other overlap abandons the whole datagram silently, as RFC 5722 §4
  demands. An IPv4 fragment wholly inside data already held is ignored as a
  duplicate (RFC 791 allows overlaps; Linux keeps the datagram the same way),
  and a partial overlap abandons the datagram (Linux since CVE-2018-5391).
  Either way the bytes first received are the ones kept: there is no way to
  smuggle different bytes past a filter (RFC 1858 §4, RFC 3128).
* Fragments RFC 8200 §4.5 answers with a Parameter Problem (a non-last one
  whose length is not a multiple of 8, one reaching past 65,535 bytes) are
  dropped and flagged ``refused``, so that the caller hands them to a shard
  to answer.
* Inconsistent ends (a second last fragment with another end, data beyond the
  end a last fragment gave) abandon the datagram ("bad_length"); a fragment
  without data, or a non-last one whose data is not a multiple of 8 bytes, is
  dropped alone ("bad_length").
* Timeouts run from the first-arriving fragment (RFC 8200 §4.5; Linux does
  the same for IPv4 instead of RFC 791's per-fragment TTL timer): 30 s for
  IPv4 (Linux ``ipfrag_time``), 60 s for IPv6 (RFC 8200 §4.5).
* Limits: past ``max_datagrams`` datagrams in progress, or ``max_bytes`` bytes
  held, the OLDEST incomplete datagram is dropped (the pre-4.17 Linux evictor,
  FreeBSD): legitimate datagrams complete within milliseconds, so under a
  flood of never-completing fragments the old ones are the attacker's. A
  datagram that would need more than ``max_fragments`` fragments, or grow
  beyond the largest datagram, is dropped whole. The bytes charged are the
  data and headers kept plus ``overhead_per_fragment`` per fragment (Linux
  charges the skb truesize the same way), so ``held_bytes`` never exceeds
  ``max_bytes`` whatever arrives.

Every drop is counted in ``Reassembler.drops`` (a ``Counter[str]``): the
``ReassemblyDrop`` values below, or the codec's ``Drop`` value (e.g.
``"ipv4_bad_checksum"``) for a malformed frame. ``push`` never raises.

``now`` must not go backwards (datagrams are kept in arrival order, which is
deadline order). Left out: the ICMP errors RFC 8200 §4.5 asks for on a bad
fragment length (Parameter Problem code 0) or an incomplete header chain
(code 3) -- the dispatcher does not send; time-exceeded is left to the caller
through ``Expired``. Jumbograms (RFC 2675) are refused by the codecs.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, replace

from shardnet.common.addr import format_ip
from shardnet.common.ipconfig import (
    FRAG_HIGH_THRESH,
    FRAG_MAX_DATAGRAMS,
    FRAG_MAX_FRAGMENTS,
    FRAG_TIME_V4_S,
    FRAG_TIME_V6_S,
    IpConfig,
)
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetView
from shardnet.common.wire.ipv4 import IPV4_HEADER_LEN, IPV4_MAX_PACKET, Ipv4View
from shardnet.common.wire.ipv6 import (
    IPV6_FRAGMENT_HEADER_LEN,
    IPV6_HEADER_LEN,
    IPV6_MAX_PAYLOAD,
    NH_AH,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_ROUTING,
    NH_TCP,
    NH_UDP,
    PTR_NEXT_HEADER,
    PTR_PAYLOAD_LENGTH,
    Ipv6View,
    walk_extensions,
)

# The defaults of the [ip] table's reassembly settings (common/ipconfig.py).
TIMEOUT_V4_S = FRAG_TIME_V4_S
TIMEOUT_V6_S = FRAG_TIME_V6_S
MAX_FRAGMENTS = FRAG_MAX_FRAGMENTS
MAX_DATAGRAMS = FRAG_MAX_DATAGRAMS
MAX_BYTES = FRAG_HIGH_THRESH
OVERHEAD_PER_FRAGMENT = 64  # bytes charged per fragment for the bookkeeping
IPV6_MAX_CHAIN = 16  # extension headers followed after a first Fragment header

_MF = 0x2000  # RFC 791 §3.1 flags/fragment offset word
_OFFSET_MASK = 0x1FFF  # 8-byte units
_ECN_NOT_ECT = 0  # RFC 3168 §5 codepoints
_ECN_CE = 3

# Minimum upper-layer header a first fragment must hold (RFC 7112 §5; the
# sizes Linux's ipv6_frag_thdr_truncated uses).
_UPPER_MIN = {NH_TCP: 20, NH_UDP: 8, NH_ICMPV6: 8}


class ReassemblyDrop(enum.StrEnum):
    """Why a fragment or a datagram was dropped: the ``drops`` keys (metric labels)."""

    TIMEOUT = "timeout"  # not complete in time (counted per datagram)
    OVERLAP = "overlap"  # overlapping fragments: datagram abandoned
    DUPLICATE = "duplicate"  # an exact duplicate fragment, ignored
    TOO_BIG = "too_big"  # would exceed the largest datagram
    TOO_MANY_FRAGMENTS = "too_many_fragments"  # datagram abandoned
    TOO_MANY_DATAGRAMS = "too_many_datagrams"  # oldest datagram evicted
    MEMORY = "memory"  # oldest datagram evicted to stay within max_bytes
    BAD_LENGTH = "bad_length"  # length not a multiple of 8, empty, inconsistent end
    ECN = "ecn"  # Not-ECT mixed with ECT/CE (RFC 3168 §5.3)
    INCOMPLETE_CHAIN = "incomplete_chain"  # IPv6 first fragment without the header chain
    NOT_FRAGMENT = "not_fragment"  # pushed a frame that is no fragment
    NOT_IP = "not_ip"  # neither IPv4 nor IPv6
    MALFORMED = "malformed"  # e.g. two Fragment headers in one packet


@dataclass(frozen=True, slots=True)
class ReassemblyConfig:
    """Limits of a ``Reassembler``; the defaults follow Linux (ipfrag_time, ipfrag_high_thresh)."""

    timeout_v4: float = TIMEOUT_V4_S
    timeout_v6: float = TIMEOUT_V6_S
    max_datagram_v4: int = IPV4_MAX_PACKET  # bytes, total length (RFC 791 §3.1)
    max_payload_v6: int = IPV6_MAX_PAYLOAD  # bytes, Payload Length (RFC 8200 §4.5)
    max_fragments: int = MAX_FRAGMENTS
    max_datagrams: int = MAX_DATAGRAMS
    max_bytes: int = MAX_BYTES
    overhead_per_fragment: int = OVERHEAD_PER_FRAGMENT  # bytes
    verify_checksum: bool = True  # IPv4 header checksum (False if the link vouched for it)

    def __post_init__(self) -> None:
        if self.timeout_v4 <= 0 or self.timeout_v6 <= 0:
            raise ValueError("reassembly timeouts must be positive")
        if min(self.max_fragments, self.max_datagrams, self.max_bytes) < 1:
            raise ValueError("reassembly limits must be positive")
        if self.overhead_per_fragment < 0:
            raise ValueError("overhead_per_fragment must not be negative")

    def with_ip(self, ip: IpConfig) -> ReassemblyConfig:
        """These limits with the [ip] table's reassembly settings (at start,
        and after ``ctl ip --set``: datagrams in progress keep their
        deadline, the byte and count limits apply to the next fragment)."""
        return replace(
            self, timeout_v4=ip.frag_time_v4_s, timeout_v6=ip.frag_time_v6_s,
            max_bytes=ip.frag_high_thresh, max_datagrams=ip.frag_max_datagrams,
            max_fragments=ip.frag_max_fragments,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Expired:
    """A datagram abandoned at its deadline. The caller answers ICMP Time
    Exceeded code 1 "fragment reassembly time exceeded" (RFC 792; RFC 8200
    §4.5 / RFC 4443 §3.3) only when ``first_fragment`` is not None, quoting it."""

    version: int  # 4 or 6
    src: bytes
    dst: bytes
    ident: int
    protocol: int | None  # IPv4 only (part of the key)
    first_fragment: bytes | None  # the offset-0 fragment as an IP packet, if it arrived
    link_header: bytes | None  # its Ethernet header (802.1Q tag included)

    def summary(self) -> str:
        first = " first" if self.first_fragment is not None else ""
        return (
            f"reassembly timeout IP{'' if self.version == 4 else '6'} {format_ip(self.src)}"
            f" > {format_ip(self.dst)} id {self.ident}{first}"
        )


class _Datagram:
    """A datagram in progress. Fragments are disjoint (any overlap kills the
    datagram), kept sorted by offset in three parallel lists, so the datagram
    is complete when its end is known and the bytes received reach it."""

    __slots__ = (
        "version",
        "key",
        "deadline",
        "created",
        "starts",
        "ends",
        "datas",
        "received",
        "end",
        "max_end",
        "head",
        "link_len",
        "nh_pointer",
        "next_header",
        "ecn_seen",
        "held",
    )

    def __init__(self, version: int, key: bytes, now: float, deadline: float) -> None:
        self.version = version
        self.key = key
        self.created = now
        self.deadline = deadline
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.datas: list[bytes] = []
        self.received = 0  # data bytes held
        self.end: int | None = None  # data length, once the last fragment arrived
        self.max_end = 0
        # Of the offset-0 fragment: Ethernet header + IPv4 header, or Ethernet
        # header + IPv6 Unfragmentable Part + Fragment header.
        self.head: bytes | None = None
        self.link_len = 0
        self.nh_pointer = PTR_NEXT_HEADER  # IPv6: the Next Header field to patch
        self.next_header = 0  # IPv6: from the first fragment's Fragment header
        self.ecn_seen = 0  # bit (1 << codepoint) per ECN codepoint seen
        self.held = 0  # bytes charged


class Reassembler:
    """Sans-I/O IPv4/IPv6 reassembly: ``push`` fragments, call
    ``handle_timeout`` at ``next_deadline()``."""

    __slots__ = ("config", "drops", "_v4", "_v6", "_held", "refused")

    def __init__(self, config: ReassemblyConfig | None = None) -> None:
        self.config = config if config is not None else ReassemblyConfig()
        self.drops: Counter[str] = Counter()
        # Insertion order is arrival order, hence deadline order per family.
        self._v4: dict[bytes, _Datagram] = {}
        self._v6: dict[bytes, _Datagram] = {}
        self._held = 0
        self.refused = False  # the last push dropped a fragment owed an ICMP error

    # --- introspection ---------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """Bytes charged against ``max_bytes`` now."""
        return self._held

    def __len__(self) -> int:
        """Datagrams in progress."""
        return len(self._v4) + len(self._v6)

    # --- input -------------------------------------------------------------

    def push(self, now: float, frame: bytes | bytearray | memoryview) -> bytes | None:
        """Take an Ethernet frame holding an IP fragment; return the whole
        reassembled Ethernet frame when this fragment completes its datagram
        (or at once for an IPv6 atomic fragment), else None. Never raises:
        whatever is dropped is counted in ``drops``; ``refused`` then says
        whether the sender is owed an ICMP error about it."""
        self.refused = False
        try:
            eth = EthernetView.checked(frame)
            ethertype = eth.ethertype
            if ethertype == ETHERTYPE_IPV4:
                return self._push_v4(now, eth)
            if ethertype == ETHERTYPE_IPV6:
                return self._push_v6(now, eth)
            self.drops[ReassemblyDrop.NOT_IP] += 1
        except MalformedPacket as exc:
            self.drops[_reason(exc)] += 1
            # RFC 8200 §4.5: some bad fragments are answered with a Parameter
            # Problem; the caller hands the frame to a shard, whose stack
            # parses it again and sends the error (rate-limited there).
            self.refused = exc.icmp is not None
        return None

    def _push_v4(self, now: float, eth: EthernetView) -> bytes | None:
        view = Ipv4View.checked(eth.payload, verify_checksum=self.config.verify_checksum)
        buf = view.buf
        word = (buf[6] << 8) | buf[7]
        offset = (word & _OFFSET_MASK) * 8
        more = bool(word & _MF)
        if not more and not offset:
            self.drops[ReassemblyDrop.NOT_FRAGMENT] += 1
            return None
        hl = (buf[0] & 0x0F) * 4
        n = len(buf) - hl
        # RFC 791 §3.2: every fragment but the last carries a multiple of 8
        # data bytes; an empty fragment carries nothing to reassemble.
        if n == 0 or (more and n & 7):
            self.drops[ReassemblyDrop.BAD_LENGTH] += 1
            return None
        end = offset + n
        if IPV4_HEADER_LEN + end > self.config.max_datagram_v4:
            self.drops[ReassemblyDrop.TOO_BIG] += 1
            return None
        # Key: identification, protocol, source and destination (RFC 791 §3.2).
        key = b"".join((buf[4:6], buf[9:10], buf[12:20]))
        d = self._v4.get(key)
        if d is None:
            d = self._new(self._v4, 4, key, now, self.config.timeout_v4)
        head = None
        if offset == 0:
            head = bytes(eth.buf[: eth.header_len + hl])
        if self._add(d, offset, end, more, buf[hl:], buf[1] & 0x03, head, eth.header_len) <= 0:
            return None
        return self._complete_v4(d)

    def _push_v6(self, now: float, eth: EthernetView) -> bytes | None:
        view = Ipv6View.checked(eth.payload)
        chain = walk_extensions(view)
        frag = chain.fragment
        if frag is None:
            self.drops[ReassemblyDrop.NOT_FRAGMENT] += 1
            return None
        headers = chain.headers
        if sum(1 for nh, _ in headers if nh == NH_FRAGMENT) > 1:
            # RFC 8200 §4.1: a Fragment header occurs at most once.
            self.drops[ReassemblyDrop.MALFORMED] += 1
            return None
        buf = view.buf
        fh = frag.header_offset
        nh_pointer = PTR_NEXT_HEADER
        for i in range(len(headers) - 1, -1, -1):
            if headers[i][1] == fh:
                if i:
                    nh_pointer = headers[i - 1][1]  # Next Header is byte 0 of every extension
                break
        if frag.atomic:
            return _strip_atomic(eth, buf, fh, nh_pointer, frag.next_header)
        data = buf[fh + IPV6_FRAGMENT_HEADER_LEN :]
        n = len(data)
        if n == 0:  # (a non-multiple of 8 with M set was refused by the codec)
            self.drops[ReassemblyDrop.BAD_LENGTH] += 1
            return None
        offset = frag.fragment_offset
        end = offset + n
        if fh - IPV6_HEADER_LEN + end > self.config.max_payload_v6:
            self.drops[ReassemblyDrop.TOO_BIG] += 1
            return None
        head = None
        if offset == 0:
            # RFC 8200 §4.5 / RFC 7112 §5: the first fragment holds the whole
            # header chain and the start of the upper-layer header.
            if not _chain_complete(data, frag.next_header):
                self.drops[ReassemblyDrop.INCOMPLETE_CHAIN] += 1
                return None
            head = bytes(eth.buf[: eth.header_len + fh + IPV6_FRAGMENT_HEADER_LEN])
        # Key: source, destination, identification (RFC 8200 §4.5).
        key = b"".join((buf[8:40], buf[fh + 4 : fh + 8]))
        d = self._v6.get(key)
        if d is None:
            d = self._new(self._v6, 6, key, now, self.config.timeout_v6)
        ecn = (buf[1] >> 4) & 0x03
        state = self._add(d, offset, end, frag.more_fragments, data, ecn, head, eth.header_len)
        if state < 0:
            return None
        if head is not None:
            d.nh_pointer = nh_pointer
            d.next_header = frag.next_header
        if state == 0:
            return None
        return self._complete_v6(d)

    # --- the shared queue logic -------------------------------------------

    def _new(
        self, table: dict[bytes, _Datagram], version: int, key: bytes, now: float, timeout: float
    ) -> _Datagram:
        while len(self._v4) + len(self._v6) >= self.config.max_datagrams:
            self._kill(self._oldest(), ReassemblyDrop.TOO_MANY_DATAGRAMS)
        d = _Datagram(version, key, now, now + timeout)
        table[key] = d
        return d

    def _add(
        self,
        d: _Datagram,
        start: int,
        end: int,
        more: bool,
        data: memoryview,
        ecn: int,
        head: bytes | None,
        link_len: int,
    ) -> int:
        """Queue one fragment: 1 if the datagram is now complete, 0 if queued,
        -1 if the fragment (or the whole datagram) was dropped and counted."""
        if more:
            if d.end is not None and end > d.end:
                self._kill(d, ReassemblyDrop.BAD_LENGTH)
                return -1
        else:
            if (d.end is not None and d.end != end) or d.max_end > end:
                self._kill(d, ReassemblyDrop.BAD_LENGTH)
                return -1
        starts = d.starts
        if d.version == 4 and _covered(d, start, end):
            # RFC 791 lets fragments overlap; one wholly inside data already
            # held adds nothing and is dropped alone, the datagram kept (as
            # Linux's IPFRAG_DUP). A partial overlap still abandons it.
            self.drops[ReassemblyDrop.DUPLICATE] += 1
            return -1
        i = bisect_left(starts, start)
        if i < len(starts) and starts[i] == start and d.ends[i] == end:
            if d.datas[i] == data:
                # RFC 8200 §4.5: an exact duplicate may be dropped alone.
                self.drops[ReassemblyDrop.DUPLICATE] += 1
                return -1
            self._kill(d, ReassemblyDrop.OVERLAP)  # same place, other bytes
            return -1
        if (i and d.ends[i - 1] > start) or (i < len(starts) and starts[i] < end):
            # RFC 5722 §4 (and our IPv4 policy): abandon the datagram.
            self._kill(d, ReassemblyDrop.OVERLAP)
            return -1
        if len(starts) >= self.config.max_fragments:
            self._kill(d, ReassemblyDrop.TOO_MANY_FRAGMENTS)
            return -1
        charge = len(data) + self.config.overhead_per_fragment
        if head is not None:
            charge += len(head)
        while self._held + charge > self.config.max_bytes:
            victim = self._oldest()
            self._kill(victim, ReassemblyDrop.MEMORY)
            if victim is d:
                return -1
        starts.insert(i, start)
        d.ends.insert(i, end)
        d.datas.insert(i, bytes(data))
        d.received += end - start
        if end > d.max_end:
            d.max_end = end
        if not more:
            d.end = end
        if head is not None:
            d.head = head
            d.link_len = link_len
        d.ecn_seen |= 1 << ecn
        d.held += charge
        self._held += charge
        return 1 if d.end is not None and d.received == d.end else 0

    def _oldest(self) -> _Datagram:
        """The first-arrived datagram of both tables (each table's first entry
        is its oldest). Called only while one is not empty."""
        a = next(iter(self._v4.values()), None)
        b = next(iter(self._v6.values()), None)
        if a is not None and (b is None or a.created <= b.created):
            return a
        if b is None:
            raise RuntimeError("no datagram to evict")  # unreachable: callers hold one
        return b

    def _kill(self, d: _Datagram, reason: str) -> None:
        self._remove(d)
        self.drops[reason] += 1

    def _remove(self, d: _Datagram) -> None:
        table = self._v4 if d.version == 4 else self._v6
        if table.pop(d.key, None) is not None:
            self._held -= d.held

    def _ecn(self, d: _Datagram) -> int | None:
        """RFC 3168 §5.3: None to drop, else the ECN bits to OR in (0 or CE)."""
        seen = d.ecn_seen
        if seen & (1 << _ECN_NOT_ECT) and seen != 1 << _ECN_NOT_ECT:
            return None
        return _ECN_CE if seen & (1 << _ECN_CE) else 0

    def _complete_v4(self, d: _Datagram) -> bytes | None:
        self._remove(d)
        head = d.head
        if head is None:  # cannot happen: disjoint fragments covering [0, end)
            self.drops[ReassemblyDrop.MALFORMED] += 1
            return None
        ecn = self._ecn(d)
        if ecn is None:
            self.drops[ReassemblyDrop.ECN] += 1
            return None
        link = d.link_len
        header = Ipv4View(memoryview(head)[link:]).header()
        hl = header.header_len
        total = hl + d.received
        if total > self.config.max_datagram_v4:
            self.drops[ReassemblyDrop.TOO_BIG] += 1
            return None
        out = bytearray(link + total)
        out[:link] = head[:link]
        header.mf = False
        header.frag_offset = 0
        header.total_length = total
        header.tos |= ecn
        header.emit(out, link)  # checksum recomputed
        base = link + hl
        for start, end, data in zip(d.starts, d.ends, d.datas, strict=True):
            out[base + start : base + end] = data
        return bytes(out)

    def _complete_v6(self, d: _Datagram) -> bytes | None:
        self._remove(d)
        head = d.head
        if head is None:  # cannot happen: disjoint fragments covering [0, end)
            self.drops[ReassemblyDrop.MALFORMED] += 1
            return None
        ecn = self._ecn(d)
        if ecn is None:
            self.drops[ReassemblyDrop.ECN] += 1
            return None
        link = d.link_len
        unfrag = len(head) - link - IPV6_FRAGMENT_HEADER_LEN
        payload_length = unfrag - IPV6_HEADER_LEN + d.received
        if payload_length > self.config.max_payload_v6:
            self.drops[ReassemblyDrop.TOO_BIG] += 1
            return None
        out = bytearray(link + unfrag + d.received)
        out[: link + unfrag] = head[: link + unfrag]
        header = Ipv6View(memoryview(head)[link:]).header()
        header.payload_length = payload_length
        header.traffic_class |= ecn
        header.emit(out, link)
        # RFC 8200 §4.5: the Next Header of the last Unfragmentable header
        # comes from the first fragment's Fragment header.
        out[link + d.nh_pointer] = d.next_header
        base = link + unfrag
        for start, end, data in zip(d.starts, d.ends, d.datas, strict=True):
            out[base + start : base + end] = data
        return bytes(out)

    # --- time ----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` has work, or None when nothing is queued."""
        a = next(iter(self._v4.values()), None)
        b = next(iter(self._v6.values()), None)
        if a is None:
            return None if b is None else b.deadline
        if b is None:
            return a.deadline
        return min(a.deadline, b.deadline)

    def handle_timeout(self, now: float) -> list[Expired]:
        """Abandon the datagrams whose deadline has passed (counted as
        "timeout"); the caller sends ICMP time exceeded for those with a
        ``first_fragment``."""
        expired: list[Expired] = []
        for table in (self._v4, self._v6):
            while table:
                d = next(iter(table.values()))
                if d.deadline > now:
                    break
                self._kill(d, ReassemblyDrop.TIMEOUT)
                expired.append(_expired(d))
        return expired


def _covered(d: _Datagram, start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies within one contiguous run of the
    fragments held (adjacent fragments form a run)."""
    i = bisect_right(d.starts, start) - 1
    if i < 0 or d.ends[i] <= start:
        return False
    reach = d.ends[i]
    while reach < end:
        i += 1
        if i == len(d.starts) or d.starts[i] != reach:
            return False
        reach = d.ends[i]
    return True


def _expired(d: _Datagram) -> Expired:
    key = d.key
    first = None
    link_header = None
    if d.head is not None and d.starts and d.starts[0] == 0:
        first = d.head[d.link_len :] + d.datas[0]
        link_header = d.head[: d.link_len]
    if d.version == 4:
        return Expired(4, key[3:7], key[7:11], (key[0] << 8) | key[1], key[2], first, link_header)
    return Expired(6, key[0:16], key[16:32], int.from_bytes(key[32:36]), None, first, link_header)


def _strip_atomic(
    eth: EthernetView, buf: memoryview, fh: int, nh_pointer: int, next_header: int
) -> bytes:
    """RFC 6946 §4: an atomic fragment is processed in isolation; hand it on
    without its Fragment header."""
    link = eth.header_len
    out = bytearray(link + len(buf) - IPV6_FRAGMENT_HEADER_LEN)
    out[:link] = eth.buf[:link]
    out[link : link + fh] = buf[:fh]
    out[link + fh :] = buf[fh + IPV6_FRAGMENT_HEADER_LEN :]
    length = len(buf) - IPV6_HEADER_LEN - IPV6_FRAGMENT_HEADER_LEN
    out[link + PTR_PAYLOAD_LENGTH] = length >> 8
    out[link + PTR_PAYLOAD_LENGTH + 1] = length & 0xFF
    out[link + nh_pointer] = next_header
    return bytes(out)


def _chain_complete(data: memoryview, next_header: int) -> bool:
    """True if the first fragment's data (after its Fragment header) holds
    the rest of the extension header chain and the first bytes of the
    upper-layer header (RFC 7112 §5)."""
    off = 0
    n = len(data)
    for _ in range(IPV6_MAX_CHAIN):
        if next_header in (NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS, NH_FRAGMENT):
            if off + 8 > n:
                return False
            size = 8 if next_header == NH_FRAGMENT else (data[off + 1] + 1) * 8
        elif next_header == NH_AH:  # RFC 4302 §2.2: length in 4-byte units, minus 2
            if off + 8 > n:
                return False
            size = (data[off + 1] + 2) * 4
        else:
            return off + _UPPER_MIN.get(next_header, 0) <= n
        next_header = data[off]
        off += size
    return False  # longer than any sane chain


def _reason(exc: MalformedPacket) -> str:
    """The ``drops`` key for a codec error: the reassembly reason when one
    fits (lengths), else the codec's own Drop value."""
    if exc.reason is Drop.IPV4_BAD_FRAGMENT:
        return ReassemblyDrop.TOO_BIG  # the only fragment check of Ipv4View
    if exc.reason is Drop.IPV6_BAD_FRAGMENT:
        # The codec points Parameter Problem at Payload Length for a bad
        # length, at the Fragment Offset for a datagram beyond 65535 bytes.
        if exc.icmp is not None and exc.icmp.pointer == PTR_PAYLOAD_LENGTH:
            return ReassemblyDrop.BAD_LENGTH
        return ReassemblyDrop.TOO_BIG
    return exc.reason.value
