"""IPv4 address conflict detection (RFC 5227), sans-I/O, one machine per NIC.

Implements:
  * §2.1.1 probing: after a random wait of up to PROBE_WAIT_S, PROBE_NUM
    ARP probes (sender IP 0.0.0.0) PROBE_MIN_S..PROBE_MAX_S apart, then
    ANNOUNCE_WAIT_S of quiet; the caller keeps the address tentative
    meanwhile (never a source, never answered for);
  * §2.1.1 conflicts while probing: any ARP from another MAC whose sender
    IP is the address, or an ARP probe (sender IP 0.0.0.0) from another
    MAC for the same target (another host probing at the same time): the
    address is not configured (``AcdConflict``);
  * §2.4 (b)/(c) defence of an address in use: the first conflicting ARP
    gets one announcement (``AcdDefend``, event ``AcdDefended``); a second
    within DEFEND_INTERVAL_S gives the address up (``AcdAbandoned``).

  * §2.1.1 rate limit: after MAX_CONFLICTS conflicts on the NIC, at most
    one probing starts per RATE_LIMIT_INTERVAL_S (until one succeeds).

The §3 announcements after probing are the caller's (``control.py``
repeats them ANNOUNCE_NUM times). Left out: §2.4 (a) (ceasing at once,
without defending) and §2.4 (c) (defending for ever).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from shardnet.common.addr import format_ip, format_mac
from shardnet.common.wire.arp import ARP_REQUEST

from .timers import Timer, TimerQueue

# RFC 5227 §1.1 constants.
PROBE_WAIT_S = 1.0  # initial random delay
PROBE_NUM = 3  # number of probe packets
PROBE_MIN_S = 1.0  # minimum delay until repeated probe
PROBE_MAX_S = 2.0  # maximum delay until repeated probe
ANNOUNCE_WAIT_S = 2.0  # delay before announcing
MAX_CONFLICTS = 10  # max conflicts before rate-limiting
RATE_LIMIT_INTERVAL_S = 60.0  # delay between successive attempts
DEFEND_INTERVAL_S = 10.0  # minimum interval between defensive ARPs

IPV4_ANY = bytes(4)


class AcdState(enum.Enum):
    PROBING = "probing"
    IN_USE = "in-use"  # probed (or not probed, only defended)


@dataclass(frozen=True, slots=True)
class AcdProbe:
    """Send an ARP probe for ``addr`` (sender IP 0.0.0.0, §2.1.1)."""

    addr: bytes


@dataclass(frozen=True, slots=True)
class AcdReady:
    """Probing found nobody: the address may be used and announced (§2.3)."""

    addr: bytes


@dataclass(frozen=True, slots=True)
class AcdDefend:
    """Send one announcement of ``addr`` to defend it (§2.4 (b))."""

    addr: bytes


@dataclass(frozen=True, slots=True)
class AcdConflict:
    """Another host has ``addr`` (seen while probing): not configured."""

    nic: int
    addr: bytes
    mac: bytes

    def as_event(self) -> dict[str, Any]:
        return _event("acd_conflict", self.nic, self.addr, self.mac)


@dataclass(frozen=True, slots=True)
class AcdDefended:
    nic: int
    addr: bytes
    mac: bytes

    def as_event(self) -> dict[str, Any]:
        return _event("acd_defended", self.nic, self.addr, self.mac)


@dataclass(frozen=True, slots=True)
class AcdAbandoned:
    """A second conflict within DEFEND_INTERVAL_S: the address is given up."""

    nic: int
    addr: bytes
    mac: bytes

    def as_event(self) -> dict[str, Any]:
        return _event("acd_abandoned", self.nic, self.addr, self.mac)


def _event(kind: str, nic: int, addr: bytes, mac: bytes) -> dict[str, Any]:
    return {"type": kind, "nic": nic, "addr": format_ip(addr), "mac": format_mac(mac)}


@dataclass(slots=True)
class _Entry:
    addr: bytes
    state: AcdState
    timer: Timer
    probes_left: int = PROBE_NUM
    last_defence: float | None = None


class AcdMachine:
    """The conflict detection of NIC ``nic_id`` whose MAC is ``mac``."""

    def __init__(self, nic_id: int, mac: bytes, rng: random.Random) -> None:
        self.nic_id = nic_id
        self.mac = mac
        self.rng = rng
        self.timers = TimerQueue()
        self.entries: dict[bytes, _Entry] = {}
        self.conflicts = 0  # since the last address probed successfully
        self._last_start: float | None = None  # of the last probing
        self._out: list[Any] = []

    # --- driving ------------------------------------------------------------------
    def probe(self, now: float, addr: bytes) -> list[Any]:
        """Start probing ``addr`` (the caller holds it tentative)."""
        self.forget(addr)
        entry = _Entry(addr, AcdState.PROBING, self.timers.timer(lambda t: self._on_timer(t, addr)))
        self.entries[addr] = entry
        start = now
        if self.conflicts >= MAX_CONFLICTS and self._last_start is not None:
            # §2.1.1: one attempt per RATE_LIMIT_INTERVAL after MAX_CONFLICTS.
            start = max(now, self._last_start + RATE_LIMIT_INTERVAL_S)
        self._last_start = start
        # §2.1.1: wait a random time in 0..PROBE_WAIT before the first probe.
        entry.timer.reset(start + self.rng.uniform(0.0, PROBE_WAIT_S))
        return self._take()

    def forget(self, addr: bytes) -> None:
        """``addr`` went from the NIC: nothing more to probe or defend."""
        entry = self.entries.pop(addr, None)
        if entry is not None:
            entry.timer.stop()

    def handle_arp(self, now: float, op: int, sha: bytes, spa: bytes, tpa: bytes) -> list[Any]:
        """One received ARP packet's fields (already checked by the codec)."""
        if sha == self.mac:
            return []  # our own, looped back
        entry = self.entries.get(spa)
        if entry is None and spa == IPV4_ANY and op == ARP_REQUEST:
            probing = self.entries.get(tpa)
            if probing is not None and probing.state is AcdState.PROBING:
                entry = probing  # §2.1.1: another host probes for the same address
        if entry is None:
            return []
        addr = entry.addr
        if entry.state is AcdState.PROBING:
            self.forget(addr)
            self.conflicts += 1
            self._out.append(AcdConflict(self.nic_id, addr, sha))
        elif entry.last_defence is None or now - entry.last_defence >= DEFEND_INTERVAL_S:
            # §2.4 (b): defend once, record when.
            entry.last_defence = now
            self._out += (AcdDefend(addr), AcdDefended(self.nic_id, addr, sha))
        else:
            # §2.4 (b): a second conflict within DEFEND_INTERVAL: cease using it.
            self.forget(addr)
            self._out.append(AcdAbandoned(self.nic_id, addr, sha))
        return self._take()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timeout(self, now: float) -> list[Any]:
        self.timers.run_due(now)
        return self._take()

    def row(self, addr: bytes) -> dict[str, Any] | None:
        """The address's ACD state for ``ctl addrs``."""
        entry = self.entries.get(addr)
        if entry is None:
            return None
        return {
            "state": entry.state.value,
            "probes_left": entry.probes_left,
            "defended": entry.last_defence is not None,
        }

    # --- internals ----------------------------------------------------------------
    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _on_timer(self, now: float, addr: bytes) -> None:
        entry = self.entries.get(addr)
        if entry is None or entry.state is not AcdState.PROBING:
            return
        if entry.probes_left > 0:
            entry.probes_left -= 1
            self._out.append(AcdProbe(addr))
            if entry.probes_left:
                entry.timer.reset(now + self.rng.uniform(PROBE_MIN_S, PROBE_MAX_S))
            else:
                entry.timer.reset(now + ANNOUNCE_WAIT_S)  # §2.1.1: then ANNOUNCE_WAIT
            return
        entry.state = AcdState.IN_USE
        self.conflicts = 0
        self._out.append(AcdReady(addr))
