"""NUD in the neighbour table (RFC 4861 §7.3.3): STALE -> DELAY on use,
PROBE with unicast solicitations, REACHABLE on a solicited answer or an
upper-layer confirmation, removal when the probes go unanswered."""

from __future__ import annotations

from shardnet.shards.net.neighbour import NeighbourConfig, NeighbourTable, NudState

IP = bytes([198, 18, 0, 1])
MAC = bytes.fromhex("020000000001")


def stale_entry() -> NeighbourTable:
    t = NeighbourTable(NeighbourConfig())
    t.learn(0.0, IP, MAC, solicited=False, create=True)  # e.g. from an ARP request: STALE
    assert t.state(IP) is NudState.STALE
    return t


def run_to(t: NeighbourTable, now: float) -> list:
    failures = []
    while (d := t.next_deadline()) is not None and d <= now:
        failures += t.handle_timeout(d)
    return failures


def test_use_of_a_stale_entry_starts_delay_then_unicast_probes() -> None:
    t = stale_entry()
    assert t.resolve(1.0, IP) == MAC and t.state(IP) is NudState.DELAY
    run_to(t, 5.9)
    assert t.state(IP) is NudState.DELAY and t.poll_probes() == []
    run_to(t, 6.0)  # DELAY_FIRST_PROBE_TIME later
    assert t.state(IP) is NudState.PROBE
    (probe,) = t.poll_probes()
    assert probe.mac == MAC  # unicast, to the cached address


def test_a_solicited_answer_in_probe_makes_it_reachable() -> None:
    t = stale_entry()
    t.resolve(1.0, IP)
    run_to(t, 6.0)
    assert len(t.poll_probes()) == 1
    t.learn(6.5, IP, MAC, solicited=True, create=False)
    assert t.state(IP) is NudState.REACHABLE
    run_to(t, 20.0)
    assert t.poll_probes() == [] and t.state(IP) is NudState.REACHABLE  # no more probes


def test_unanswered_probes_remove_the_entry() -> None:
    t = stale_entry()
    t.resolve(1.0, IP)
    failures = run_to(t, 6.0 + 3 * 1.0)
    assert [len(t.poll_probes())] == [3]  # MAX_UNICAST_SOLICIT
    assert t.state(IP) is None and [f.ip for f in failures] == [IP]


def test_upper_layer_confirmation_needs_no_probe() -> None:
    """RFC 4861 §7.3.1: TCP progress confirms reachability."""
    t = stale_entry()
    t.resolve(1.0, IP)
    t.confirm(2.0, IP)
    assert t.state(IP) is NudState.REACHABLE
    run_to(t, 10.0)
    assert t.poll_probes() == []


def test_nud_can_be_off() -> None:
    t = NeighbourTable(NeighbourConfig(nud=False))
    t.learn(0.0, IP, MAC, solicited=False, create=True)
    t.resolve(1.0, IP)
    assert t.state(IP) is NudState.STALE
