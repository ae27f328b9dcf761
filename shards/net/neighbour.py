"""Neighbour resolution: the table of next hops' link-layer addresses, shared
by ARP (IPv4) and Neighbor Discovery (IPv6), sans-I/O.

Implements:
  * RFC 826 / RFC 1122 §2.3.2 address resolution with a queue of packets
    per unresolved neighbour bounded in bytes, as Linux's unres_qlen_bytes
    (a burst of answers to one peer after a quiet minute all wait for it;
    RFC 1122 §2.3.2.2, RFC 4861 §7.2.2: "the new arrival SHOULD replace the
    oldest entry" when it is full), retransmission every
    ``retrans_s`` up to ``max_attempts``, then failure with the queued packets
    handed back so the caller answers ICMP host unreachable;
  * the RFC 4861 §7.3.2 state names (``NudState``) and the §7.2.5 update rules
    for solicited / override flags (ARP always overrides);
  * RFC 4861 §7.3.3 NUD, for ARP too (as Linux runs it): REACHABLE becomes
    STALE after ``reachable_s`` without confirmation; sending with a STALE
    entry starts DELAY, then PROBE with up to ``max_unicast_probes`` unicast
    solicitations ``retrans_s`` apart, after which the entry is removed; a
    solicited answer or an upper-layer confirmation (§7.3.1, ``confirm``:
    TCP progress) makes it REACHABLE again; ``nud=False`` turns DELAY/PROBE
    off;
  * ageing: an entry unused for ``gc_s`` is removed (gVisor linkAddrCache
    ageLimit), but only while the table holds more than ``gc_keep`` entries
    (Linux gc_thresh1): a small table keeps its peers, STALE, so the first
    packets after a quiet spell go at once and NUD checks the address;
  * a cap on entries with least-recently-used eviction, a separate cap on
    INCOMPLETE entries where a new resolution pushes out the oldest one
    (hostile traffic cannot fill the table with resolutions, nor keep a
    real peer from being resolved), static (PERMANENT) entries that never
    expire.

The IsRouter flag (RFC 4861 §7.2.5, §6.3.4) is kept per entry for display
(``ctl neigh``); the NDP machine's Default Router List is what routing
uses, and an NA with R clear takes its sender off it
(``NdpMachine.router_unreachable``).

Left out: per-entry random ReachableTime (the caller passes the value it
drew in the config, RFC 4861 §6.3.4).

The table returns actions instead of sending: ``poll_probes()`` gives the
solicitations to send, ``learn()`` the queued packets that became sendable,
``handle_timeout()`` the failures, ``drain_changes()`` what to publish to the
other shards' replicas. Addresses are raw bytes; keys never mix families in
practice (one table per NIC and protocol) but 4- and 16-byte keys cannot
collide anyway.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from shardnet.common.addr import format_ip, format_mac


class NudState(enum.Enum):
    """RFC 4861 §7.3.2 spellings; FAILED (Linux NUD_FAILED) is reported, never
    stored; PERMANENT (Linux NUD_PERMANENT) marks a static entry."""

    INCOMPLETE = "INCOMPLETE"
    REACHABLE = "REACHABLE"
    STALE = "STALE"
    DELAY = "DELAY"
    PROBE = "PROBE"
    FAILED = "FAILED"
    PERMANENT = "PERMANENT"


# Bytes charged per queued packet besides its length (Linux charges the skb's
# truesize): a flood of tiny packets cannot queue without bound.
QUEUE_OVERHEAD = 256


class Unresolved:
    """Packets waiting for a next hop's address, bounded in bytes (each
    charged its length plus QUEUE_OVERHEAD, as Linux's unres_qlen_bytes):
    a new arrival pushes out the oldest ones (RFC 4861 §7.2.2). Shard 0's
    table and the other shards' waiting queues (``NetStack``) both use it."""

    __slots__ = ("_items", "_size", "_limit")

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[Any, int]] = deque()
        self._size = 0
        self._limit = limit

    def push(self, packet: Any, size: int) -> int:
        """Queue ``packet``; the number of older packets pushed out."""
        charge = size + QUEUE_OVERHEAD
        dropped = 0
        while self._items and self._size + charge > self._limit:
            _, old = self._items.popleft()
            self._size -= old
            dropped += 1
        self._items.append((packet, charge))
        self._size += charge
        return dropped

    def packets(self) -> list[Any]:
        return [p for p, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)


_INCOMPLETE = NudState.INCOMPLETE
_REACHABLE = NudState.REACHABLE
_STALE = NudState.STALE
_PERMANENT = NudState.PERMANENT


@dataclass(frozen=True, slots=True)
class NeighbourConfig:
    # gVisor linkAddrCache size.
    max_entries: int = 512
    # Own choice: INCOMPLETE entries allowed at once (counted in max_entries).
    max_incomplete: int = 64
    # Bytes queued per unresolved neighbour (each packet charged its length
    # plus QUEUE_OVERHEAD): Linux unres_qlen_bytes (SK_WMEM_MAX, 212,992);
    # RFC 4861 §7.2.2 wants "some small value" for the count.
    max_queue_bytes: int = 212_992
    # Between solicitations: linkAddrCache resolutionTimeout 1 s; RFC 4861 §10
    # RETRANS_TIMER 1000 ms.
    retrans_s: float = 1.0
    # Solicitations before failure: linkAddrCache resolutionAttempts 3; RFC 4861
    # §10 MAX_MULTICAST_SOLICIT 3.
    max_attempts: int = 3
    # REACHABLE -> STALE without confirmation: RFC 4861 §10 REACHABLE_TIME
    # 30 000 ms (Linux base_reachable_time 30 s for ARP too).
    reachable_s: float = 30.0
    # Unused this long: removed (linkAddrCache ageLimit 1 min), when the table
    # holds more than gc_keep entries (Linux gc_thresh1 128).
    gc_s: float = 60.0
    gc_keep: int = 128
    # RFC 4861 §7.3.3 NUD: a STALE entry used to send goes to DELAY, then PROBE
    # with unicast solicitations (§10 DELAY_FIRST_PROBE_TIME 5 s,
    # MAX_UNICAST_SOLICIT 3); Linux runs the same machine for ARP.
    nud: bool = True
    delay_first_probe_s: float = 5.0
    max_unicast_probes: int = 3

    def __post_init__(self) -> None:
        if self.max_entries < 1 or not 1 <= self.max_incomplete <= self.max_entries:
            raise ValueError("need 1 <= max_incomplete <= max_entries")
        if self.max_queue_bytes < 1 or self.max_attempts < 1 or self.gc_keep < 0:
            raise ValueError("need max_queue_bytes >= 1, max_attempts >= 1, gc_keep >= 0")
        if self.retrans_s <= 0 or self.reachable_s <= 0 or self.gc_s <= 0:
            raise ValueError("retrans_s, reachable_s and gc_s must be > 0")


@dataclass(slots=True)
class Probe:
    """A solicitation to send now: ARP request / NS for ``ip``. ``mac`` is
    None for a broadcast (multicast NS), else the unicast destination."""

    ip: bytes
    attempt: int  # 1-based
    mac: bytes | None = None


@dataclass(slots=True)
class Failure:
    """Resolution of ``ip`` failed: ``packets`` (as given to ``resolve``)
    deserve an ICMP host / address unreachable to their senders
    (RFC 1122 §2.3.2.2, RFC 4861 §7.2.2)."""

    ip: bytes
    packets: list[Any]


@dataclass(frozen=True, slots=True)
class NeighbourInfo:
    """One row of ``ctl neigh``."""

    ip: bytes
    mac: bytes | None
    state: NudState
    age_s: float  # since the mac or state was last learnt or confirmed
    idle_s: float  # since last used to send
    queued: int  # packets waiting (INCOMPLETE)
    attempts: int  # solicitations sent (INCOMPLETE)
    router: bool = False  # IsRouter (RFC 4861 §7.2.5)

    def summary(self) -> str:
        mac = format_mac(self.mac) if self.mac is not None else "(incomplete)"
        return f"{format_ip(self.ip)} lladdr {mac} {self.state.value} age {self.age_s:.1f}s"


@dataclass(slots=True)
class NeighbourStats:
    queue_overflow: int = 0  # queued packet dropped for a newer one (oldest first)
    incomplete_overflow: int = 0  # oldest resolution given up for a new one: max_incomplete reached
    table_full: int = 0  # new entry refused: nothing evictable
    evictions: int = 0  # LRU entry removed to make room
    probes: int = 0  # solicitations asked for
    failures: int = 0  # resolutions that ran out of attempts
    expired: int = 0  # removed after gc_s unused


@dataclass(slots=True, eq=False)
class _Entry:
    ip: bytes
    mac: bytes | None
    state: NudState
    updated: float  # mac/state learnt or confirmed
    confirmed: float  # last reachability confirmation
    used: float  # last resolve() hit
    attempts: int = 0
    probe_at: float = 0.0  # INCOMPLETE: next solicitation / failure
    pending: Unresolved | None = None
    kept_at: float = 0.0  # aged out, kept because the table is small (gc_keep)
    timer_at: float | None = None  # the deadline of this entry's live heap item
    published: bool = False  # the replicas know a mac for it
    router: bool = False  # IsRouter, RFC 4861 §7.2.5 (IPv6 only)
    max_attempts: int = 0  # solicitations before failure (0: the config's)


class NeighbourTable:
    """The neighbour cache of one NIC for one protocol (see module doc)."""

    __slots__ = (
        "config",
        "stats",
        "_entries",
        "_heap",
        "_seq",
        "_probes",
        "_changes",
        "_nud_changed",
        "_incomplete",
        "_dynamic",
    )

    def __init__(self, config: NeighbourConfig | None = None) -> None:
        self.config = config if config is not None else NeighbourConfig()
        self.stats = NeighbourStats()
        # Insertion/use order is the LRU order: resolve() moves a hit to the end.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._probes: list[Probe] = []
        self._changes: dict[bytes, bytes | None] = {}
        # Entries whose NUD state changed (or that came or went) since the
        # last drain_nud_changes(): state events cost per change, not per entry.
        self._nud_changed: set[bytes] = set()
        self._incomplete = 0
        self._dynamic = 0  # entries other than PERMANENT (what max_entries caps)

    # --- the output path ---------------------------------------------------------------
    def resolve(self, now: float, ip: bytes, packet: Any = None, size: int = 0) -> bytes | None:
        """The MAC to send to ``ip`` if one is known (REACHABLE, STALE, ...,
        PERMANENT): nothing is queued. Otherwise ``packet`` (unless None,
        ``size`` bytes long) is queued and None returned; a new resolution
        asks for a probe (``poll_probes``). Packets pushed out of a full
        queue are counted (``stats``)."""
        e = self._entries.get(ip)
        if e is not None:
            mac = e.mac
            if mac is not None:
                self.touch(now, ip)  # RFC 4861 §7.3.3: sending with a STALE entry starts DELAY
                return mac
            if packet is not None:
                self._enqueue(e, packet, size)
                e.max_attempts = 0  # packets wait: a whole resolution, even for a probe
            return None
        cfg = self.config
        if self._incomplete >= cfg.max_incomplete:
            # The oldest resolution in flight gives way (its packets are
            # dropped): unresolvable destinations cannot lock the table.
            oldest = next(e for e in self._entries.values() if e.state is _INCOMPLETE)
            self.stats.incomplete_overflow += 1
            self._remove(oldest)
        if not self._make_room():
            return None
        e = _Entry(ip, None, _INCOMPLETE, now, now, now, attempts=1)
        e.probe_at = now + cfg.retrans_s
        if packet is not None:
            self._enqueue(e, packet, size)
        self._entries[ip] = e
        self._nud_changed.add(ip)
        self._incomplete += 1
        self._dynamic += 1
        self._probe(e)
        self._schedule(e)
        return None

    def solicit_once(self, now: float, ip: bytes) -> bool:
        """One solicitation for ``ip``, which has no entry (RFC 4191 §3.5
        router reachability probing): an INCOMPLETE entry, so that the
        answer is learnt (REACHABLE), given up after ``retrans_s`` unanswered
        rather than after a resolution's ``max_attempts``. False when ``ip``
        has an entry already or the table has no room."""
        if ip in self._entries:
            return False
        self.resolve(now, ip)
        e = self._entries.get(ip)
        if e is None:
            return False
        e.max_attempts = 1
        return True

    def touch(self, now: float, ip: bytes) -> None:
        """``ip`` was used to send (e.g. reported by a shard using its replica):
        keeps the entry from ageing out and from LRU eviction, and a STALE
        one goes to DELAY as in ``resolve`` (RFC 4861 §7.3.3)."""
        e = self._entries.get(ip)
        if e is not None and e.mac is not None:
            e.used = now
            self._entries.move_to_end(ip)
            if e.state is _STALE and self.config.nud:
                self._set_state(e, NudState.DELAY)
                e.probe_at = now + self.config.delay_first_probe_s
                self._schedule(e)

    def confirm(self, now: float, ip: bytes) -> None:
        """Upper-layer reachability confirmation (RFC 4861 §7.3.1: TCP saw new
        data acknowledged): the entry is REACHABLE again, without a probe."""
        e = self._entries.get(ip)
        if e is not None and e.mac is not None and e.state not in (_INCOMPLETE, _PERMANENT):
            self._set_state(e, _REACHABLE)
            e.confirmed = e.updated = now
            e.attempts = 0
            self._schedule(e)

    def lookup(self, ip: bytes) -> bytes | None:
        """The known MAC of ``ip``, without side effects."""
        e = self._entries.get(ip)
        return None if e is None else e.mac

    def state(self, ip: bytes) -> NudState | None:
        e = self._entries.get(ip)
        return None if e is None else e.state

    def poll_probes(self) -> list[Probe]:
        """The solicitations to send now (first attempts from ``resolve``,
        retries from ``handle_timeout``)."""
        probes = self._probes
        if probes:
            self._probes = []
        return probes

    # --- the input path ----------------------------------------------------------------
    def learn(
        self,
        now: float,
        ip: bytes,
        mac: bytes | None,
        *,
        solicited: bool,
        create: bool,
        override: bool = True,
        router: bool | None = None,
    ) -> list[Any]:
        """``ip`` is at ``mac`` (ARP reply or request, NA, NS/RS/redirect link
        option). ``solicited``: the message confirms reachability (ARP unicast
        reply, NA with S). ``create``: make an entry if there is none (RFC 826:
        only when we are the target; RFC 4861 §7.2.3: NS with SLLA). ``override``:
        NA's O flag (ARP: always). ``mac`` None: an NA without a Target
        Link-Layer Address option (Linux answers a unicast NS so): it can
        confirm a known address, never supply one. ``router``: the IsRouter
        flag the message gives (NA's R, True for an RA, False for a new
        entry from an NS or RS; None: unchanged). Returns the queued packets
        now sendable (empty unless the entry was INCOMPLETE). RFC 4861 §7.2.5
        rules."""
        e = self._entries.get(ip)
        if e is not None and router is not None and e.state is not _PERMANENT:
            e.router = router
        if e is None:
            if mac is None or not create or not self._make_room():
                return []
            state = _REACHABLE if solicited else _STALE
            e = _Entry(ip, mac, state, now, now, now)
            e.router = bool(router)
            self._entries[ip] = e
            self._nud_changed.add(ip)
            self._dynamic += 1
            self._publish(e)
            self._schedule(e)
            return []
        state = e.state
        if state is _PERMANENT:
            return []  # static entries change only by administration
        if state is _INCOMPLETE:
            if mac is None:
                return []  # §7.2.5: no link-layer address to record
            # §7.2.5: record the address; REACHABLE if solicited else STALE;
            # send what was queued.
            e.mac = mac
            self._set_state(e, _REACHABLE if solicited else _STALE)
            e.updated = e.used = now
            if solicited:
                e.confirmed = now
            e.attempts = 0
            packets = e.pending.packets() if e.pending else []
            e.pending = None
            self._incomplete -= 1
            self._publish(e)
            self._schedule(e)
            return packets
        # §7.2.5: no TLLA counts as the cached address.
        changed = mac is not None and mac != e.mac
        if changed and not override:
            # §7.2.5: a different address without O does not update; REACHABLE
            # becomes STALE.
            if state is _REACHABLE:
                self._set_state(e, _STALE)
                e.updated = now
            return []
        if changed:
            e.mac = mac
            e.updated = now
            self._publish(e)
        if solicited:
            self._set_state(e, _REACHABLE)
            e.confirmed = e.updated = now
            self._schedule(e)
        elif changed:
            self._set_state(e, _STALE)
        return []

    # --- timers ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            d, _, e = heap[0]
            if e.timer_at == d and self._entries.get(e.ip) is e:
                return d
            heapq.heappop(heap)  # dead item: the entry was rescheduled or removed
        return None

    def handle_timeout(self, now: float) -> list[Failure]:
        """Retries (probes for ``poll_probes``), failures, ageing, expiry."""
        cfg = self.config
        heap = self._heap
        failures: list[Failure] = []
        while heap and heap[0][0] <= now:
            d, _, e = heapq.heappop(heap)
            if e.timer_at != d or self._entries.get(e.ip) is not e:
                continue
            e.timer_at = None
            state = e.state
            if state is _INCOMPLETE:
                if now >= e.probe_at:
                    if e.attempts >= (e.max_attempts or cfg.max_attempts):
                        # RFC 1122 §2.3.2.2 / RFC 4861 §7.3.3: give up, the
                        # queued packets get ICMP unreachable.
                        self.stats.failures += 1
                        packets = e.pending.packets() if e.pending else []
                        self._remove(e)
                        self._set_state(e, NudState.FAILED)
                        failures.append(Failure(e.ip, packets))
                        continue
                    e.attempts += 1
                    e.probe_at = now + cfg.retrans_s
                    self._probe(e)
            elif state is NudState.DELAY or state is NudState.PROBE:
                if now >= e.probe_at:
                    if state is NudState.PROBE and e.attempts >= cfg.max_unicast_probes:
                        # §7.3.3: no answer to the unicast probes: the entry goes.
                        self.stats.failures += 1
                        self._remove(e)
                        self._set_state(e, NudState.FAILED)
                        failures.append(Failure(e.ip, []))
                        continue
                    self._set_state(e, NudState.PROBE)
                    e.attempts = e.attempts + 1 if state is NudState.PROBE else 1
                    e.probe_at = now + cfg.retrans_s
                    self._probes.append(Probe(e.ip, e.attempts, e.mac))  # unicast
            elif state is not _PERMANENT:
                if now >= max(e.used, e.kept_at) + cfg.gc_s:
                    if self._dynamic > cfg.gc_keep:
                        self.stats.expired += 1
                        self._remove(e)
                        continue
                    e.kept_at = now  # a small table keeps it; looked at again in gc_s
                if state is _REACHABLE and now >= e.confirmed + cfg.reachable_s:
                    self._set_state(e, _STALE)  # RFC 4861 §7.3.3: ReachableTime elapsed
                    e.updated = now
            self._schedule(e)
        if len(heap) > 2 * len(self._entries) + 64:
            self._compact()
        return failures

    # --- administration ----------------------------------------------------------------
    def add_static(self, ip: bytes, mac: bytes) -> list[Any]:
        """A PERMANENT entry (``ip neigh add ... nud permanent``): never ages,
        never evicted, not counted in ``max_entries``. Returns the packets that
        were waiting for ``ip``."""
        e = self._entries.get(ip)
        packets: list[Any] = []
        if e is not None:
            if e.state is _INCOMPLETE:
                packets = e.pending.packets() if e.pending else []
                e.pending = None
                self._incomplete -= 1
            if e.state is not _PERMANENT:
                self._dynamic -= 1
            self._set_state(e, _PERMANENT)
            e.mac = mac
            e.attempts = 0
        else:
            e = _Entry(ip, mac, _PERMANENT, 0.0, 0.0, 0.0)
            self._entries[ip] = e
            self._nud_changed.add(ip)
        self._publish(e)
        return packets

    def remove(self, ip: bytes) -> bool:
        """Delete the entry of ``ip`` (static ones included); its queued packets
        are dropped. False if there was none."""
        e = self._entries.get(ip)
        if e is None:
            return False
        self._remove(e)
        return True

    def flush(self, *, static: bool = False) -> None:
        """Delete every dynamic entry (and the static ones with ``static``)."""
        for e in list(self._entries.values()):
            if static or e.state is not _PERMANENT:
                self._remove(e)
        self._compact()

    def drain_nud_changes(self) -> list[tuple[bytes, NudState | None]]:
        """The entries whose state changed since the last call, with their
        state now (None: the entry is gone), for state-change events."""
        if not self._nud_changed:
            return []
        entries = self._entries
        out = [
            (ip, e.state if (e := entries.get(ip)) is not None else None)
            for ip in self._nud_changed
        ]
        self._nud_changed.clear()
        return out

    def _set_state(self, e: _Entry, state: NudState) -> None:
        e.state = state
        self._nud_changed.add(e.ip)

    def entries(self, now: float) -> list[NeighbourInfo]:
        out = []
        for e in self._entries.values():
            permanent = e.state is _PERMANENT
            out.append(
                NeighbourInfo(
                    e.ip,
                    e.mac,
                    e.state,
                    0.0 if permanent else now - e.updated,
                    0.0 if permanent else now - e.used,
                    len(e.pending) if e.pending else 0,
                    e.attempts,
                    e.router,
                )
            )
        return out

    def drain_changes(self) -> list[tuple[bytes, bytes | None]]:
        """(ip, mac) for each neighbour whose usable MAC appeared or changed,
        (ip, None) for one that went away, since the last call (coalesced:
        the latest value per ip). For the replicas: INCOMPLETE entries and
        state-only changes are not published."""
        if not self._changes:
            return []
        changes = list(self._changes.items())
        self._changes.clear()
        return changes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ip: object) -> bool:
        return ip in self._entries

    @property
    def incomplete(self) -> int:
        return self._incomplete

    # --- internals ---------------------------------------------------------------------
    def _enqueue(self, e: _Entry, packet: Any, size: int) -> None:
        if e.pending is None:
            e.pending = Unresolved(self.config.max_queue_bytes)
        self.stats.queue_overflow += e.pending.push(packet, size)

    def _probe(self, e: _Entry) -> None:
        self.stats.probes += 1
        self._probes.append(Probe(e.ip, e.attempts, None))

    def _make_room(self) -> bool:
        """Room for one more dynamic entry, evicting the least recently used
        resolved one if needed (never an INCOMPLETE or PERMANENT one)."""
        if self._dynamic < self.config.max_entries:
            return True
        for e in self._entries.values():
            if e.state is not _INCOMPLETE and e.state is not _PERMANENT:
                self.stats.evictions += 1
                self._remove(e)
                return True
        self.stats.table_full += 1
        return False

    def _remove(self, e: _Entry) -> None:
        del self._entries[e.ip]
        self._nud_changed.add(e.ip)
        if e.state is _INCOMPLETE:
            self._incomplete -= 1
        if e.state is not _PERMANENT:
            self._dynamic -= 1
        e.pending = None
        e.timer_at = None
        if e.published:
            e.published = False
            self._changes[e.ip] = None

    def _publish(self, e: _Entry) -> None:
        e.published = True
        self._changes[e.ip] = e.mac

    def _due(self, e: _Entry) -> float | None:
        state = e.state
        if state is _INCOMPLETE or state is NudState.DELAY or state is NudState.PROBE:
            return e.probe_at
        if state is _PERMANENT:
            return None
        due = max(e.used, e.kept_at) + self.config.gc_s
        if state is _REACHABLE:
            due = min(due, e.confirmed + self.config.reachable_s)
        return due

    def _schedule(self, e: _Entry) -> None:
        """Make sure the entry's heap item fires no later than its due time
        (items fire early when ``used`` moved on: they reschedule)."""
        due = self._due(e)
        if due is None:
            return
        if e.timer_at is None or due < e.timer_at:
            e.timer_at = due
            heapq.heappush(self._heap, (due, next(self._seq), e))

    def _compact(self) -> None:
        seq = self._seq
        self._heap = [
            (e.timer_at, next(seq), e) for e in self._entries.values() if e.timer_at is not None
        ]
        heapq.heapify(self._heap)
