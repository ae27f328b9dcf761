"""Neighbor Unreachability Detection (RFC 4861 §7.3, Appendix C; CHECKLIST
§C 6): the ``nud_*`` transitions through ``NudMachine`` with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.shards.net.ndp import (
    NeighbourFailed,
    NotRouter,
    NudConfig,
    NudEntry,
    NudMachine,
    NudStateChanged,
    Solicit,
    nud_advert,
)
from shardnet.shards.net.neighbour import NudState

IP = parse_ip("fe80::99")
MAC1 = parse_mac("02:00:00:00:00:01")
MAC2 = parse_mac("02:00:00:00:00:02")
S = NudState


@dataclass
class Loop:
    m: NudMachine
    now: float = 0.0
    log: list[tuple[float, Any]] = field(default_factory=list)

    def collect(self) -> None:
        self.log += [(self.now, a) for a in self.m.poll()]

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while (d := self.m.next_deadline()) is not None and d <= end:
            self.now = max(self.now, d)
            self.log += [(self.now, a) for a in self.m.handle_timeout(self.now)]
        self.now = end

    def states(self) -> list[NudState]:
        return [a.new for _, a in self.log if isinstance(a, NudStateChanged)]

    def solicits(self) -> list[tuple[float, Solicit]]:
        return [(t, a) for t, a in self.log if isinstance(a, Solicit)]


def loop() -> Loop:
    return Loop(NudMachine(1, NudConfig(), reachable_time_s=30.0))


def reachable(lp: Loop) -> None:
    assert lp.m.resolve(lp.now, IP) is None
    assert lp.m.handle_na(lp.now, IP, MAC1, solicited=True, override=False, router=False)
    lp.collect()


def test_incomplete_to_reachable() -> None:
    lp = loop()
    reachable(lp)
    assert lp.states() == [S.INCOMPLETE, S.REACHABLE]
    assert lp.solicits() == [(0.0, Solicit(IP, None))]  # multicast
    assert lp.m.resolve(lp.now, IP) == MAC1


def test_incomplete_fails_after_max_multicast_solicit() -> None:
    lp = loop()
    lp.m.resolve(0.0, IP)
    lp.collect()
    lp.advance(10)
    assert [t for t, _ in lp.solicits()] == [0.0, 1.0, 2.0]
    assert (3.0, NeighbourFailed(IP, False)) in lp.log
    assert lp.states()[-1] is S.FAILED and IP not in lp.m.entries


def test_reachable_stale_delay_probe_reachable() -> None:
    lp = loop()
    reachable(lp)
    lp.advance(30.01)  # ReachableTime elapsed
    assert lp.m.entries[IP].state is S.STALE
    assert lp.m.resolve(lp.now, IP) == MAC1  # sending: STALE -> DELAY
    lp.collect()
    assert lp.m.entries[IP].state is S.DELAY
    lp.advance(4.9)
    assert lp.m.entries[IP].state is S.DELAY
    lp.advance(0.2)  # DELAY_FIRST_PROBE_TIME: PROBE, unicast NS
    assert lp.m.entries[IP].state is S.PROBE
    assert lp.solicits()[-1][1] == Solicit(IP, MAC1)
    assert lp.m.handle_na(lp.now, IP, None, solicited=True, override=False, router=False) is False
    lp.collect()
    assert lp.m.entries[IP].state is S.REACHABLE
    assert lp.states() == [S.INCOMPLETE, S.REACHABLE, S.STALE, S.DELAY, S.PROBE, S.REACHABLE]


def test_delay_confirmed_by_upper_layer() -> None:
    """§7.3.1: TCP progress confirms reachability: DELAY -> REACHABLE, no probe."""
    lp = loop()
    reachable(lp)
    lp.advance(31)
    lp.m.resolve(lp.now, IP)
    lp.m.confirm(lp.now, IP)
    lp.collect()
    lp.advance(10)
    assert lp.m.entries[IP].state is S.REACHABLE
    assert len(lp.solicits()) == 1


def test_probe_fails_after_max_unicast_solicit() -> None:
    lp = loop()
    reachable(lp)
    lp.m.entries[IP].is_router = True
    lp.advance(31)
    lp.m.resolve(lp.now, IP)
    lp.collect()
    lp.advance(20)
    unicast = [a for _, a in lp.solicits() if a.mac is not None]
    assert len(unicast) == 3
    assert NeighbourFailed(IP, True) in [a for _, a in lp.log]
    assert lp.states()[-1] is S.FAILED
    assert IP not in lp.m.entries


@pytest.mark.parametrize(
    ("start", "mac", "solicited", "override", "want_state", "want_mac"),
    [
        # Appendix C, entry not INCOMPLETE, cached MAC1
        (S.REACHABLE, MAC2, True, False, S.STALE, MAC1),  # S=1 O=0 different: no update
        (S.STALE, MAC2, True, False, S.STALE, MAC1),
        (S.STALE, MAC1, True, False, S.REACHABLE, MAC1),  # S=1 same
        (S.STALE, MAC2, True, True, S.REACHABLE, MAC2),  # S=1 O=1
        (S.REACHABLE, MAC2, False, True, S.STALE, MAC2),  # S=0 O=1 different
        (S.REACHABLE, MAC1, False, True, S.REACHABLE, MAC1),  # S=0 same: unchanged
        (S.DELAY, None, False, False, S.DELAY, MAC1),  # no TLLA: unchanged
        (S.PROBE, MAC2, False, False, S.PROBE, MAC1),
    ],
)
def test_advert_rules(
    start: NudState,
    mac: bytes | None,
    solicited: bool,
    override: bool,
    want_state: NudState,
    want_mac: bytes,
) -> None:
    e = NudEntry(IP, MAC1, start, 5.0)
    out: list[Any] = []
    nud_advert(e, 0.0, 30.0, mac, solicited=solicited, override=override, router=False, out=out)
    assert (e.state, e.mac) == (want_state, want_mac)


def test_router_flag_cleared() -> None:
    lp = loop()
    lp.m.resolve(0.0, IP)
    lp.m.handle_na(0.0, IP, MAC1, solicited=True, override=True, router=True)
    lp.m.handle_na(1.0, IP, MAC1, solicited=False, override=True, router=False)
    lp.collect()
    assert (0.0, NotRouter(IP)) in lp.log


def test_link_option_updates() -> None:
    lp = loop()
    assert lp.m.handle_link_option(0.0, IP, MAC1, create=False) is False
    assert IP not in lp.m.entries
    lp.m.handle_link_option(0.0, IP, MAC1, create=True)  # §7.2.3: NS with SLLA creates STALE
    assert lp.m.entries[IP].state is S.STALE
    lp.m.confirm(0.0, IP)
    lp.m.handle_link_option(1.0, IP, MAC1, create=True)  # same: unchanged
    assert lp.m.entries[IP].state is S.REACHABLE
    lp.m.handle_link_option(2.0, IP, MAC2, create=True)  # different: STALE
    assert (lp.m.entries[IP].state, lp.m.entries[IP].mac) == (S.STALE, MAC2)
    other = parse_ip("fe80::98")
    lp.m.resolve(3.0, other)
    assert lp.m.handle_link_option(3.0, other, MAC1, create=True) is True  # INCOMPLETE resolved
    assert lp.m.entries[other].state is S.STALE


def test_na_without_entry_ignored() -> None:
    lp = loop()
    assert lp.m.handle_na(0.0, IP, MAC1, solicited=True, override=True, router=False) is False
    assert lp.m.entries == {}
