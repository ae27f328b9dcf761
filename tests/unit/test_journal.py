"""The dispatcher's journal of run-time control changes (replayed to a
restarted shard 0): what is kept, in which order, and how it stays small."""

from __future__ import annotations

from shardnet.dispatcher.journal import ControlJournal


def ops(j: ControlJournal) -> list[tuple[str, dict]]:
    return j.entries()


def test_reads_are_not_recorded() -> None:
    j = ControlJournal()
    for op in ("nics", "addrs", "routes", "neigh", "groups", "ndp_get", "hello"):
        j.record(op, {})
    j.record("forwarding", {})  # a read of the setting
    assert ops(j) == []


def test_order_is_kept_and_a_nic_keeps_its_id() -> None:
    j = ControlJournal()
    j.record("nic_add", {"name": "snlo1", "loopback": True}, {"id": 3, "name": "snlo1"})
    j.record("addr_add", {"nic": "snlo1", "address": "198.19.5.1/24"})
    j.record(
        "route_add", {"dst": "198.19.9.0/24", "gateway": "198.18.0.1", "nic": None, "metric": 0}
    )
    assert [op for op, _ in ops(j)] == ["nic_add", "addr_add", "route_add"]
    assert ops(j)[0][1]["id"] == 3


def test_a_deletion_cancels_its_run_time_addition() -> None:
    j = ControlJournal()
    j.record("addr_add", {"nic": "sntap0", "address": "198.18.0.3/24"})
    j.record("addr_del", {"nic": "sntap0", "address": "198.18.0.3"})
    route = {"dst": "198.19.9.0/24", "gateway": "198.18.0.1", "nic": None, "metric": 5}
    j.record("route_add", route)
    j.record("route_del", route)
    assert ops(j) == []
    # Removing what the configuration made is kept: the new shard 0 makes it again.
    j.record("addr_del", {"nic": "sntap0", "address": "2001:db8::2"})
    assert [op for op, _ in ops(j)] == ["addr_del"]


def test_churn_stays_small() -> None:
    j = ControlJournal()
    for i in range(10_000):
        j.record("addr_add", {"nic": "sntap0", "address": f"198.18.1.{i % 200}/24"})
        j.record("addr_del", {"nic": "sntap0", "address": f"198.18.1.{i % 200}"})
        j.record("nic_set", {"name": "sntap0", "enabled": i % 2 == 0})
        j.record("forwarding", {"on": i % 2 == 1})
    assert len(j) == 2
    assert dict(ops(j)) == {
        "nic_set": {"name": "sntap0", "enabled": False},
        "forwarding": {"on": True},
    }


def test_ndp_settings_merge() -> None:
    j = ControlJournal()
    j.record("ndp_set", {"nic": None, "settings": {"dup_addr_detect_transmits": 2}})
    j.record("ndp_set", {"nic": None, "settings": {"retrans_timer_s": 0.5}})
    ((op, args),) = ops(j)
    assert args["settings"] == {"dup_addr_detect_transmits": 2, "retrans_timer_s": 0.5}


def test_removing_a_nic_takes_its_records_along() -> None:
    j = ControlJournal()
    j.record("nic_add", {"name": "snlo1", "loopback": True}, {"id": 3})
    j.record("addr_add", {"nic": "snlo1", "address": "198.19.5.1/24"})
    j.record("addr_add", {"nic": 3, "address": "198.19.5.2/24"})  # by id
    j.record("route_add", {"dst": "198.19.7.0/24", "gateway": None, "nic": "snlo1", "metric": 0})
    j.record("nic_set", {"name": "snlo1", "enabled": False})
    j.record("addr_add", {"nic": "sntap0", "address": "198.18.0.3/24"})
    j.record("nic_del", {"name": "snlo1"})
    assert [(op, a.get("address")) for op, a in ops(j)] == [("addr_add", "198.18.0.3/24")]


def test_the_size_limit_drops_the_oldest() -> None:
    j = ControlJournal(max_entries=3)
    for i in range(5):
        j.record("addr_add", {"nic": "sntap0", "address": f"198.18.2.{i}/24"})
    assert [a["address"] for _, a in ops(j)] == ["198.18.2.2/24", "198.18.2.3/24", "198.18.2.4/24"]
    assert j.dropped == 2
