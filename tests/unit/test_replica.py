"""Shard 0's tables replicated to the other shards: order, gaps, restarts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.messages import Beat, Confirm, Patch, Snapshot, decode, encode
from shardnet.common.replica import TableOwner, TableReplica


def synced(owner: TableOwner) -> TableReplica:
    r = TableReplica()
    r.load_snapshot(decode(encode(owner.snapshot())))
    return r


def test_patches_in_order_keep_the_replica_equal() -> None:
    owner = TableOwner(epoch=7)
    owner.set("nics", "sntap0", {"mtu": 1500})
    replica = synced(owner)
    for patch in (owner.set("nics", "lo", {"mtu": 65536}), owner.delete("nics", "sntap0")):
        assert replica.apply_patch(decode(encode(patch)))
    assert replica.tables == owner.tables == {"nics": {"lo": {"mtu": 65536}}}


def test_a_missing_patch_asks_for_a_snapshot() -> None:
    owner = TableOwner(epoch=1)
    replica = synced(owner)
    owner.set("nics", "a", 1)  # lost on the way
    assert not replica.apply_patch(owner.set("nics", "b", 2))
    assert replica.needs_snapshot and replica.resyncs == 1
    replica.load_snapshot(owner.snapshot())
    assert replica.tables == {"nics": {"a": 1, "b": 2}}


def test_owner_restart_is_a_new_epoch() -> None:
    old = TableOwner(epoch=1)
    old.set("nics", "x", 1)
    replica = synced(old)
    new = TableOwner(epoch=2)
    assert not replica.apply_patch(new.set("nics", "y", 1))
    replica.load_snapshot(new.snapshot())
    assert replica.tables == {"nics": {"y": 1}} and replica.epoch == 2


def test_patches_racing_the_snapshot_are_replayed_not_lost() -> None:
    """Slow joiner: the replica subscribes, patches flow before the snapshot
    arrives; older ones are already in it, newer ones must be applied."""
    owner = TableOwner(epoch=3)
    replica = TableReplica()
    early = owner.set("nics", "a", 1)
    snap = owner.snapshot()
    late = owner.set("nics", "b", 2)
    assert not replica.apply_patch(early)
    assert not replica.apply_patch(late)
    replica.load_snapshot(snap)
    assert replica.synced and replica.tables == owner.tables


def test_deleting_a_missing_key_publishes_nothing() -> None:
    assert TableOwner(epoch=1).delete("nics", "nope") is None


ops = st.lists(
    st.tuples(st.sampled_from(["set", "del"]), st.sampled_from("abcde"), st.integers(0, 9)),
    max_size=60,
)


@given(ops, st.sets(st.integers(0, 59)))
def test_any_loss_pattern_converges_after_resync(ops: list, lost: set[int]) -> None:
    owner = TableOwner(epoch=5)
    replica = synced(owner)
    for i, (op, key, value) in enumerate(ops):
        patch = owner.set("t", key, value) if op == "set" else owner.delete("t", key)
        if patch is not None and i not in lost and not replica.apply_patch(patch):
            replica.load_snapshot(owner.snapshot())
    if replica.needs_snapshot or replica.version != owner.version:
        replica.load_snapshot(owner.snapshot())
    assert replica.tables.get("t", {}) == owner.tables.get("t", {})


def test_messages_round_trip() -> None:
    for msg in (
        Patch(1, 2, "t", "k", {"v": [1, 2]}),
        Snapshot(1, 2, {"t": {"k": 1}}),
        Confirm(1, 1, bytes(16)),
        Confirm(2, 1, bytes(4), used=True),  # a next hop used, not confirmed (NUD)
    ):
        assert decode(encode(msg)) == msg


def test_a_beat_reveals_lost_last_patches_and_owner_restarts() -> None:
    """PUB/SUB drops while a subscriber reconnects: without a later patch,
    only the owner's beat shows the replica is behind."""
    owner = TableOwner(epoch=1)
    replica = synced(owner)
    assert replica.check_beat(Beat(owner.epoch, owner.version))
    owner.set("t", "k", 1)  # lost
    assert not replica.check_beat(Beat(owner.epoch, owner.version)) and replica.needs_snapshot
    replica.load_snapshot(owner.snapshot())
    assert replica.check_beat(Beat(owner.epoch, owner.version))
    assert not replica.check_beat(Beat(2, 0))  # a restarted owner
