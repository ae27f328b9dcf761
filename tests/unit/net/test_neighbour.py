"""Neighbour table: resolution, retries, failure, queue and entry caps, LRU,
ageing, static entries, RFC 4861 §7.2.5 update rules, published changes.

Driven by a fake clock: ``Loop`` plays the shard loop, waking the table at
its deadlines and collecting probes and failures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.shards.net.neighbour import (
    QUEUE_OVERHEAD,
    Failure,
    NeighbourConfig,
    NeighbourTable,
    NudState,
    Probe,
)

A, B, C, D = (parse_ip(f"198.18.0.{i}") for i in (1, 2, 3, 4))
V6 = parse_ip("2001:db8::1")
MAC_A, MAC_B, MAC_C, MAC_D = (parse_mac(f"02:00:00:00:00:0{i}") for i in (1, 2, 3, 4))
MAC_X = parse_mac("02:00:00:00:00:99")


@dataclass
class Loop:
    """The shard loop around one table, with a fake clock."""

    table: NeighbourTable
    now: float = 0.0
    probes: list[tuple[float, Probe]] = field(default_factory=list)
    failures: list[tuple[float, Failure]] = field(default_factory=list)

    def collect(self) -> None:
        self.probes += [(self.now, p) for p in self.table.poll_probes()]

    def advance(self, dt: float) -> None:
        """Run until now + dt, waking at every deadline on the way."""
        end = self.now + dt
        while (d := self.table.next_deadline()) is not None and d <= end:
            self.now = max(self.now, d)
            self.failures += [(self.now, f) for f in self.table.handle_timeout(self.now)]
            self.collect()
        self.now = end

    def resolve(self, ip: bytes, packet: Any = None) -> bytes | None:
        mac = self.table.resolve(self.now, ip, packet)
        self.collect()
        return mac

    def learn(
        self, ip: bytes, mac: bytes, *, solicited: bool = True, create: bool = True, **kw: Any
    ) -> list[Any]:
        return self.table.learn(self.now, ip, mac, solicited=solicited, create=create, **kw)


def loop(**cfg: Any) -> Loop:
    return Loop(NeighbourTable(NeighbourConfig(**cfg)))


# --- resolution, retries, failure --------------------------------------------------------
def test_defaults_are_the_checklist_constants() -> None:
    cfg = NeighbourConfig()
    assert (cfg.max_entries, cfg.gc_s, cfg.retrans_s, cfg.max_attempts) == (512, 60.0, 1.0, 3)
    assert (cfg.max_queue_bytes, cfg.gc_keep) == (
        212_992,
        128,
    )  # Linux unres_qlen_bytes, gc_thresh1


def test_unknown_neighbour_queues_and_probes_once() -> None:
    lp = loop()
    assert lp.resolve(A, "p1") is None
    assert lp.resolve(A, "p2") is None
    assert [p for _, p in lp.probes] == [Probe(A, 1, None)]
    assert lp.table.state(A) is NudState.INCOMPLETE
    assert lp.table.entries(0.0)[0].queued == 2


def test_three_attempts_one_second_apart_then_failure_with_the_queued_packets() -> None:
    lp = loop()
    lp.resolve(A, "p1")
    lp.advance(0.5)
    lp.resolve(A, "p2")
    lp.advance(10)
    assert [(t, p.attempt) for t, p in lp.probes] == [(0.0, 1), (1.0, 2), (2.0, 3)]
    assert all(p.ip == A and p.mac is None for _, p in lp.probes)
    assert lp.failures == [(3.0, Failure(A, ["p1", "p2"]))]
    assert A not in lp.table and len(lp.table) == 0
    assert lp.table.stats.failures == 1
    assert lp.table.next_deadline() is None
    # A later packet starts a new resolution.
    lp.resolve(A, "p3")
    assert lp.probes[-1] == (lp.now, Probe(A, 1, None))


def test_retry_and_timeout_constants_come_from_the_config() -> None:
    lp = loop(retrans_s=0.25, max_attempts=5)
    lp.resolve(A, "p")
    lp.advance(5)
    assert [t for t, _ in lp.probes] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [t for t, _ in lp.failures] == [1.25]


def test_solicit_once_probes_once_and_learns_the_answer() -> None:
    """RFC 4191 §3.5 router probing: one solicitation, an INCOMPLETE entry
    that fails after one retransmission time, or learns a solicited answer;
    nothing for an address with an entry; a packet that comes to wait on it
    gets the whole resolution."""
    lp = loop()
    assert lp.table.solicit_once(lp.now, A)
    lp.collect()
    lp.advance(5)
    assert [(t, p) for t, p in lp.probes] == [(0.0, Probe(A, 1, None))]
    assert lp.failures == [(1.0, Failure(A, []))] and A not in lp.table
    assert lp.table.solicit_once(lp.now, A)
    lp.learn(A, MAC_A, create=False)
    assert lp.table.state(A) is NudState.REACHABLE
    assert not lp.table.solicit_once(lp.now, A)
    assert lp.table.solicit_once(lp.now, B)
    lp.resolve(B, "p")
    lp.advance(5)
    assert [t for t, p in lp.probes if p.ip == B] == [5.0, 6.0, 7.0]


def test_answer_releases_the_queue_in_order() -> None:
    lp = loop()
    lp.resolve(A, "p1")
    lp.advance(1.5)
    lp.resolve(A, "p2")
    assert lp.learn(A, MAC_A) == ["p1", "p2"]
    assert lp.table.state(A) is NudState.REACHABLE
    assert lp.resolve(A, "p3") == MAC_A
    lp.advance(5)
    assert lp.failures == [] and len(lp.probes) == 2  # attempts 1 and 2 only


def test_resolve_without_a_packet_only_starts_resolution() -> None:
    lp = loop()
    assert lp.resolve(A) is None
    assert lp.learn(A, MAC_A) == []
    lp2 = loop()
    lp2.resolve(A)
    lp2.advance(10)
    assert lp2.failures == [(3.0, Failure(A, []))]


# --- queue bound ---------------------------------------------------------------------------
def test_queue_bound_drops_the_oldest_and_counts() -> None:
    lp = loop(max_queue_bytes=3 * QUEUE_OVERHEAD)
    for i in range(5):
        lp.resolve(A, f"p{i}")
    assert lp.table.stats.queue_overflow == 2
    assert lp.learn(A, MAC_A) == ["p2", "p3", "p4"]


def test_queue_bound_is_configurable() -> None:
    lp = loop(max_queue_bytes=QUEUE_OVERHEAD)
    lp.resolve(A, "old")
    lp.resolve(A, "new")
    lp.advance(10)
    assert lp.failures[0][1].packets == ["new"]
    assert lp.table.stats.queue_overflow == 1


# --- caps ---------------------------------------------------------------------------------
def random_targets(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    # 198.19.0.0/16: never one of A..D.
    return [bytes([198, 19, rng.randrange(256), rng.randrange(256)]) for _ in range(n)]


def test_flood_of_resolutions_for_random_targets_is_capped() -> None:
    lp = loop()  # 512 entries, 64 INCOMPLETE
    lp.learn(A, MAC_A)
    for i, ip in enumerate(random_targets(5000)):
        lp.resolve(ip, i)
    t = lp.table
    assert t.incomplete == 64 and len(t) == 65
    assert t.stats.incomplete_overflow == t.stats.probes - 64  # the oldest gave way each time
    assert t.lookup(A) == MAC_A  # resolved entries are never evicted for resolutions in flight
    assert lp.resolve(B, "p") is None  # a real peer is still resolved in the flood
    assert lp.learn(B, MAC_B) == ["p"]
    lp.advance(3.0)  # the rest fail ...
    assert len(lp.failures) == 63 and t.incomplete == 0
    assert lp.resolve(C, "c") is None  # ... and resolution works on
    assert lp.learn(C, MAC_A) == ["c"]


def test_flood_of_learnt_entries_is_capped_with_lru_eviction() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    targets = random_targets(3000, seed=2)
    for i, ip in enumerate(targets):
        lp.learn(ip, MAC_X, solicited=False)
        if i % 100 == 0:
            assert lp.resolve(A) == MAC_A  # in use: never the least recently used
    t = lp.table
    assert len(t) == 512
    assert t.stats.evictions >= len(set(targets)) + 1 - 512
    assert t.lookup(A) == MAC_A


def test_lru_eviction_order() -> None:
    lp = loop(max_entries=3, max_incomplete=1)
    lp.learn(A, MAC_A)
    lp.learn(B, MAC_B)
    lp.learn(C, MAC_C)
    lp.advance(1)
    assert lp.resolve(A) == MAC_A  # A is now the most recently used, B the least
    lp.learn(D, MAC_D)
    assert B not in lp.table and {A, C, D} <= {e.ip for e in lp.table.entries(lp.now)}
    assert lp.table.stats.evictions == 1
    lp.resolve(B, "p")  # a resolution evicts too (C, least recently used now)
    assert C not in lp.table and lp.table.state(B) is NudState.INCOMPLETE


def test_incomplete_and_static_entries_are_never_evicted() -> None:
    lp = loop(max_entries=3, max_incomplete=2)
    lp.table.add_static(A, MAC_A)  # not counted in max_entries
    lp.resolve(B, "b")
    lp.resolve(C, "c")
    lp.learn(D, MAC_D)  # third dynamic entry: fits
    lp.learn(V6, MAC_X)  # a fourth: evicts D, the only resolved dynamic one
    assert D not in lp.table and V6 in lp.table
    t2 = loop(max_entries=2, max_incomplete=2)
    t2.resolve(B, "b")
    t2.resolve(C, "c")
    assert t2.learn(D, MAC_D) == [] and D not in t2.table
    assert t2.table.stats.table_full == 1 and len(t2.table) == 2


# --- ageing ---------------------------------------------------------------------------------
def test_reachable_ages_to_stale_and_stale_still_resolves() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    lp.advance(29.9)
    assert lp.table.state(A) is NudState.REACHABLE
    lp.advance(0.2)
    assert lp.table.state(A) is NudState.STALE
    assert lp.resolve(A, "p") == MAC_A
    assert lp.probes == []


def test_queue_bound_counts_bytes() -> None:
    """Linux's unres_qlen_bytes: a burst of small answers all wait for one
    neighbour; big packets push the oldest out."""
    lp = loop()
    for i in range(50):  # 50 SYN-ACKs to one peer after a quiet minute
        lp.table.resolve(lp.now, A, f"synack{i}", 80)
    assert lp.table.stats.queue_overflow == 0
    for i in range(200):
        lp.table.resolve(lp.now, A, f"big{i}", 1500)
    assert lp.table.stats.queue_overflow > 0
    sent = lp.learn(A, MAC_A)
    assert sent[-1] == "big199" and len(sent) == 212_992 // (1500 + QUEUE_OVERHEAD)


def test_a_small_table_keeps_its_stale_entries_past_gc_s() -> None:
    """Linux gc_thresh1: below it nothing ages out, so the first packet to a
    peer after a quiet spell goes at once (and NUD checks the address)."""
    lp = loop()
    lp.learn(A, MAC_A)
    lp.advance(600)
    assert lp.table.state(A) is NudState.STALE
    assert lp.resolve(A, "p") == MAC_A
    assert lp.table.state(A) is NudState.DELAY


def test_unused_entries_are_removed_after_gc_s() -> None:
    """Ageing alone in a table over gc_keep (NUD off: with it, using the
    STALE entry would probe it, see test_neighbour_nud.py)."""
    lp = loop(nud=False, gc_keep=0)
    lp.learn(A, MAC_A)
    lp.learn(B, MAC_B, solicited=False)
    lp.advance(50)
    lp.resolve(A)  # used at t=50: lives until 110
    lp.advance(10.5)
    assert A in lp.table and B not in lp.table
    lp.advance(49.4)
    assert A in lp.table
    lp.advance(0.1)
    assert A not in lp.table
    assert lp.table.stats.expired == 2
    assert lp.table.next_deadline() is None


def test_confirmation_keeps_an_entry_reachable() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    for _ in range(5):
        lp.advance(20)
        lp.resolve(A)
        lp.learn(A, MAC_A, solicited=True, create=False)
        assert lp.table.state(A) is NudState.REACHABLE


def test_touch_counts_as_use() -> None:
    """A shard reports it sent to the entry: kept from ageing out, and a
    STALE entry is checked by NUD (RFC 4861 §7.3.3) as one used here is."""
    lp = loop()
    lp.learn(A, MAC_A)
    lp.advance(59)
    lp.table.touch(lp.now, A)
    assert lp.table.state(A) is NudState.DELAY
    lp.advance(5)
    lp.learn(A, MAC_A, solicited=True, create=False)
    lp.advance(30)
    assert A in lp.table


def test_touch_of_a_silent_entry_ends_it() -> None:
    lp = loop()
    lp.learn(A, MAC_A, solicited=False)  # STALE
    lp.table.touch(lp.now, A)
    lp.advance(10)  # DELAY 5 s, three unanswered probes 1 s apart
    assert A not in lp.table


def test_ageing_constants_come_from_the_config() -> None:
    lp = loop(reachable_s=1.0, gc_s=2.0, gc_keep=0)
    lp.learn(A, MAC_A)
    lp.advance(1.0)
    assert lp.table.state(A) is NudState.STALE
    lp.advance(1.0)
    assert A not in lp.table


# --- static entries -------------------------------------------------------------------------
def test_static_entries_never_expire_nor_change() -> None:
    lp = loop()
    lp.table.add_static(A, MAC_A)
    assert lp.resolve(A) == MAC_A
    lp.learn(A, MAC_X)  # an ARP/NA cannot override an administrator
    lp.advance(1e6)
    assert lp.table.lookup(A) == MAC_A and lp.table.state(A) is NudState.PERMANENT
    (info,) = lp.table.entries(lp.now)
    assert (info.state, info.age_s) == (NudState.PERMANENT, 0.0)
    assert lp.table.remove(A) and A not in lp.table
    assert not lp.table.remove(A)


def test_static_entry_over_a_resolution_releases_the_queue() -> None:
    lp = loop()
    lp.resolve(A, "p")
    assert lp.table.add_static(A, MAC_A) == ["p"]
    assert lp.table.incomplete == 0
    lp.advance(10)
    assert lp.failures == [] and lp.table.lookup(A) == MAC_A


def test_flush_keeps_static_entries_unless_asked() -> None:
    lp = loop()
    lp.table.add_static(A, MAC_A)
    lp.learn(B, MAC_B)
    lp.resolve(C, "c")
    lp.table.flush()
    assert [e.ip for e in lp.table.entries(0)] == [A] and lp.table.incomplete == 0
    lp.table.flush(static=True)
    assert len(lp.table) == 0
    lp.advance(100)
    assert lp.failures == []


# --- RFC 4861 §7.2.5 update rules -------------------------------------------------------------
def test_create_only_when_asked() -> None:
    lp = loop()
    assert lp.learn(A, MAC_A, create=False) == [] and A not in lp.table
    lp.learn(A, MAC_A, solicited=False)
    assert lp.table.state(A) is NudState.STALE


def test_unsolicited_update_with_a_new_mac_goes_stale() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    lp.learn(A, MAC_A, solicited=False)  # same address: nothing changes
    assert lp.table.state(A) is NudState.REACHABLE
    lp.learn(A, MAC_X, solicited=False, create=False)
    assert (lp.table.lookup(A), lp.table.state(A)) == (MAC_X, NudState.STALE)


def test_solicited_confirmation_makes_stale_reachable() -> None:
    lp = loop()
    lp.learn(A, MAC_A, solicited=False)
    lp.learn(A, MAC_X, solicited=True, create=False)
    assert (lp.table.lookup(A), lp.table.state(A)) == (MAC_X, NudState.REACHABLE)
    # The REACHABLE deadline is earlier than the STALE entry's gc deadline.
    lp.advance(30.0)
    assert lp.table.state(A) is NudState.STALE


def test_no_override_keeps_the_mac_and_downgrades_reachable() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    lp.learn(A, MAC_X, solicited=True, create=False, override=False)
    assert (lp.table.lookup(A), lp.table.state(A)) == (MAC_A, NudState.STALE)
    lp.learn(A, MAC_A, solicited=True, create=False, override=False)  # same mac: confirms
    assert lp.table.state(A) is NudState.REACHABLE


def entry_in(state: NudState) -> Loop:
    """A table whose entry for A (MAC_A) is in ``state``."""
    lp = loop()
    lp.learn(A, MAC_A, solicited=state is NudState.REACHABLE)
    if state in (NudState.DELAY, NudState.PROBE):
        lp.resolve(A)  # RFC 4861 §7.3.3: sending with a STALE entry starts DELAY
    if state is NudState.PROBE:
        lp.advance(5.0)  # DELAY_FIRST_PROBE_TIME
    assert lp.table.state(A) is state
    return lp


@pytest.mark.parametrize(
    ("start", "mac", "solicited", "override", "want_state", "want_mac"),
    [
        # RFC 4861 Appendix C, an entry not INCOMPLETE, cached MAC_A
        (NudState.REACHABLE, MAC_X, True, False, NudState.STALE, MAC_A),  # S=1 O=0 different
        (NudState.STALE, MAC_X, True, False, NudState.STALE, MAC_A),
        (NudState.STALE, MAC_A, True, False, NudState.REACHABLE, MAC_A),  # S=1 same
        (NudState.STALE, MAC_X, True, True, NudState.REACHABLE, MAC_X),  # S=1 O=1
        (NudState.REACHABLE, MAC_X, False, True, NudState.STALE, MAC_X),  # S=0 O=1 different
        (NudState.REACHABLE, MAC_A, False, True, NudState.REACHABLE, MAC_A),  # S=0 same
        (NudState.DELAY, None, False, False, NudState.DELAY, MAC_A),  # no TLLA: unchanged
        (NudState.PROBE, MAC_X, False, False, NudState.PROBE, MAC_A),
        (NudState.PROBE, None, True, False, NudState.REACHABLE, MAC_A),  # no TLLA, S=1
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
    lp = entry_in(start)
    lp.table.learn(lp.now, A, mac, solicited=solicited, create=False, override=override)
    assert (lp.table.state(A), lp.table.lookup(A)) == (want_state, want_mac)


def test_an_advert_without_tlla_never_resolves_nor_creates() -> None:
    lp = loop()
    assert lp.table.learn(0.0, A, None, solicited=True, create=True) == [] and A not in lp.table
    lp.resolve(A, "p")
    assert lp.table.learn(0.0, A, None, solicited=True, create=False) == []
    assert lp.table.state(A) is NudState.INCOMPLETE


def test_unsolicited_answer_to_a_resolution_is_stale() -> None:
    lp = loop()
    lp.resolve(A, "p")
    assert lp.learn(A, MAC_A, solicited=False) == ["p"]  # e.g. their ARP request for us
    assert lp.table.state(A) is NudState.STALE


# --- published changes, entries ---------------------------------------------------------------
def test_changes_for_the_replicas() -> None:
    lp = loop(gc_keep=0)
    lp.resolve(A, "p")
    assert lp.table.drain_changes() == []  # INCOMPLETE is not published
    lp.learn(A, MAC_A)
    lp.learn(B, MAC_B)
    assert lp.table.drain_changes() == [(A, MAC_A), (B, MAC_B)]
    assert lp.table.drain_changes() == []
    lp.learn(A, MAC_A)  # confirmation only
    lp.advance(30)  # REACHABLE -> STALE: state only
    assert lp.table.drain_changes() == []
    lp.learn(A, MAC_X, solicited=False)
    lp.learn(A, MAC_A, solicited=False)  # coalesced: the latest value
    lp.table.remove(B)
    assert lp.table.drain_changes() == [(A, MAC_A), (B, None)]
    lp.resolve(C, "c")
    lp.advance(100)  # C fails (never published), A expires
    assert lp.table.drain_changes() == [(A, None)]


def test_entries_report_ages() -> None:
    lp = loop()
    lp.learn(A, MAC_A)
    lp.advance(5)
    lp.resolve(A)
    lp.resolve(B, "b")
    lp.advance(2)
    infos = {i.ip: i for i in lp.table.entries(lp.now)}
    assert infos[A].state is NudState.REACHABLE
    assert (infos[A].age_s, infos[A].idle_s) == (7.0, 2.0)
    assert infos[B].mac is None and infos[B].queued == 1 and infos[B].attempts == 3
    assert "198.18.0.1 lladdr 02:00:00:00:00:01 REACHABLE" in infos[A].summary()
    assert "(incomplete)" in infos[B].summary()


def test_every_rfc_4861_state_exists() -> None:
    names = {"INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE", "FAILED", "PERMANENT"}
    assert {s.value for s in NudState} == names


def test_timer_heap_stays_bounded_under_churn() -> None:
    lp = loop(max_entries=8, max_incomplete=4)
    for i, ip in enumerate(random_targets(2000, seed=3)):
        lp.learn(ip, MAC_X)
        lp.resolve(ip)
        if i % 50 == 0:
            lp.advance(0.5)
    assert len(lp.table._heap) <= 2 * len(lp.table) + 64 + 50


@pytest.mark.parametrize(
    "kw",
    [
        {"max_entries": 0},
        {"max_incomplete": 0},
        {"max_entries": 4, "max_incomplete": 5},
        {"max_queue_bytes": 0},
        {"max_attempts": 0},
        {"retrans_s": 0},
        {"gc_s": -1},
    ],
)
def test_config_validation(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NeighbourConfig(**kw)
