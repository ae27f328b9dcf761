"""The per-destination path MTU cache: RFC 8201 (IPv6) and RFC 1191 (IPv4).

Implements:
  * learning from ICMPv6 Packet Too Big / ICMPv4 Fragmentation Needed
    (``update``): a report never raises the estimate (RFC 8201 §4, RFC 1191
    §3); the estimate never goes below 1280 for IPv6 (RFC 8201 §4, RFC 8200
    §5) nor 68 for IPv4 (RFC 791, RFC 1191 §3);
  * RFC 1191 §5/§7: a Fragmentation Needed with next-hop MTU 0 (a router
    older than RFC 1191) lowers the estimate to the plateau below the total
    length of the datagram it quotes;
  * ageing: an estimate expires 10 minutes after it was learned (RFC 8201 §4,
    RFC 1191 §6.3), after which the link MTU is used again (probing upwards
    by sending larger packets); a report of the same value refreshes it;
  * a bound on the number of destinations (least recently used goes first).

Left out: PLPMTUD (RFC 4821/8899; TCP's business), per-route locked MTUs.
Keys are destination addresses; a link-local destination reached over two
NICs shares one entry (conservative: the smaller MTU wins until expiry).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

IPV6_MIN_MTU = 1280  # bytes, RFC 8200 §5
IPV4_MIN_MTU = 68  # bytes, RFC 791 ("every internet module must be able to forward 68 octets")
PMTU_EXPIRY_S = 600.0  # RFC 8201 §4 and RFC 1191 §6.3 recommend 10 minutes
PMTU_MAX_ENTRIES = 4096  # destinations remembered (memory bound, LRU)

# RFC 1191 §7, table 7-1: the MTU plateaus, largest first.
PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)


@dataclass(frozen=True, slots=True)
class PmtuConfig:
    expiry_s: float = PMTU_EXPIRY_S
    max_entries: int = PMTU_MAX_ENTRIES
    ipv6_min_mtu: int = IPV6_MIN_MTU
    ipv4_min_mtu: int = IPV4_MIN_MTU  # Linux's min_pmtu is 552; 68 is the RFC floor


def plateau_below(length: int) -> int:
    """RFC 1191 §7: the largest plateau smaller than ``length`` (68 at least)."""
    for p in PLATEAUS:
        if p < length:
            return p
    return PLATEAUS[-1]


class PmtuCache:
    """Path MTU estimates by destination address (4 or 16 bytes). Sans-I/O:
    every call takes ``now`` (seconds, monotonic)."""

    __slots__ = ("config", "_entries", "_heap")

    def __init__(self, config: PmtuConfig | None = None) -> None:
        self.config = config or PmtuConfig()
        # dst -> (mtu, expires_at); order = least recently used first.
        self._entries: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        self._heap: list[tuple[float, bytes]] = []  # (expires_at, dst), stale items skipped

    def __len__(self) -> int:
        return len(self._entries)

    # --- data path ----------------------------------------------------------------
    def mtu(self, now: float, dst: bytes, link_mtu: int) -> int:
        """The MTU to use towards ``dst`` out of a link of ``link_mtu``."""
        entries = self._entries
        if not entries:
            return link_mtu
        e = entries.get(dst)
        if e is None:
            return link_mtu
        if now >= e[1]:
            del entries[dst]  # RFC 8201 §4: back to the first-hop MTU
            return link_mtu
        entries.move_to_end(dst)
        m = e[0]
        return m if m < link_mtu else link_mtu

    def get(self, now: float, dst: bytes) -> int | None:
        """The learned estimate for ``dst``, None if none (or expired)."""
        e = self._entries.get(dst)
        if e is None or now >= e[1]:
            return None
        return e[0]

    # --- learning -----------------------------------------------------------------
    def update(
        self,
        now: float,
        dst: bytes,
        mtu: int,
        *,
        original_len: int | None = None,
        link_mtu: int | None = None,
    ) -> int | None:
        """A Packet Too Big (IPv6) or Fragmentation Needed (IPv4) for ``dst``
        reporting next-hop MTU ``mtu``. ``original_len``: the total length of
        the quoted datagram (used when an IPv4 router reports 0); ``link_mtu``:
        the MTU of the NIC towards ``dst`` (reports at or above it are
        ignored).

        Returns the new, lower estimate — the caller tells the transport
        (TCP lowers its MSS, RFC 8201 §5.4) — or None if nothing changed."""
        dst = bytes(dst)
        cfg = self.config
        e = self._entries.get(dst)
        if e is not None and now >= e[1]:
            del self._entries[dst]
            e = None
        current = e[0] if e is not None else link_mtu
        if len(dst) == 4:
            if mtu == 0:
                # RFC 1191 §5: a pre-RFC 1191 router; guess from the quoted length.
                basis = original_len if original_len else current
                if basis is None:
                    return None
                mtu = plateau_below(basis)
            floor = cfg.ipv4_min_mtu
        else:
            floor = cfg.ipv6_min_mtu
        if mtu < floor:
            mtu = floor  # RFC 8201 §4, RFC 1191 §3: never below the minimum
        if current is not None:
            if mtu > current:
                return None  # RFC 8201 §4: a report never raises the estimate
            if mtu == current:
                if e is not None:  # the path is still that small: keep it longer
                    self._store(now, dst, mtu)
                return None
        self._store(now, dst, mtu)
        return mtu

    def forget(self, dst: bytes) -> bool:
        """Drop the estimate for ``dst`` (e.g. its route changed)."""
        return self._entries.pop(bytes(dst), None) is not None

    def clear(self) -> None:
        self._entries.clear()
        self._heap.clear()

    def _store(self, now: float, dst: bytes, mtu: int) -> None:
        expires = now + self.config.expiry_s
        entries = self._entries
        entries[dst] = (mtu, expires)
        entries.move_to_end(dst)
        while len(entries) > self.config.max_entries:
            entries.popitem(last=False)
        heap = self._heap
        heapq.heappush(heap, (expires, dst))
        if len(heap) > 2 * len(entries) + 64:  # too many stale items: rebuild
            self._heap = [(exp, d) for d, (_m, exp) in entries.items()]
            heapq.heapify(self._heap)

    # --- timers -------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the next estimate expires (None: no estimate)."""
        heap, entries = self._heap, self._entries
        while heap:
            expires, dst = heap[0]
            e = entries.get(dst)
            if e is not None and e[1] == expires:
                return expires
            heapq.heappop(heap)  # stale: replaced, forgotten or evicted
        return None

    def handle_timeout(self, now: float) -> list[bytes]:
        """Expire the estimates due by ``now``; returns their destinations."""
        heap, entries = self._heap, self._entries
        expired: list[bytes] = []
        while heap and heap[0][0] <= now:
            expires, dst = heapq.heappop(heap)
            e = entries.get(dst)
            if e is not None and e[1] == expires:
                del entries[dst]
                expired.append(dst)
        return expired

    def entries(self, now: float) -> list[tuple[bytes, int, float]]:
        """(dst, mtu, seconds left) of the live estimates, for ``ctl``."""
        return [(d, m, exp - now) for d, (m, exp) in self._entries.items() if exp > now]
