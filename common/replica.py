"""Replicated tables: shard 0 owns them, every other shard keeps a copy.

Sans-I/O: ``TableOwner`` turns changes into ``Patch`` messages and answers
snapshot requests; ``TableReplica`` applies patches in order and asks for a
snapshot when it joins, when a patch is missing (PUB/SUB may drop under
pressure) or when the owner restarted (a new epoch). Patches that arrive
while a snapshot is on its way are buffered and replayed after it, so a
replica never misses a change made between its subscription and the
snapshot (the "slow joiner" of PUB/SUB).

Keys are strings, values anything msgpack carries.
"""

from __future__ import annotations

from typing import Any

from .messages import Beat, Patch, Snapshot

_MAX_BUFFERED = 10_000  # patches kept while a snapshot is awaited


class TableOwner:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch  # random per owner process: a restart is a new epoch
        self.version = 0
        self.tables: dict[str, dict[str, Any]] = {}

    def set(self, table: str, key: str, value: Any) -> Patch:
        if value is None:
            raise ValueError("None deletes; call delete()")
        self.tables.setdefault(table, {})[key] = value
        return self._patch(table, key, value)

    def delete(self, table: str, key: str) -> Patch | None:
        rows = self.tables.get(table)
        if rows is None or key not in rows:
            return None
        del rows[key]
        return self._patch(table, key, None)

    def snapshot(self) -> Snapshot:
        tables = {name: dict(rows) for name, rows in self.tables.items()}
        return Snapshot(self.epoch, self.version, tables)

    def _patch(self, table: str, key: str, value: Any) -> Patch:
        self.version += 1
        return Patch(self.epoch, self.version, table, key, value)


class TableReplica:
    def __init__(self) -> None:
        self.epoch: int | None = None
        self.version = 0
        self.tables: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.resyncs = 0  # how often a snapshot had to be fetched again
        self._buffer: list[Patch] = []

    @property
    def needs_snapshot(self) -> bool:
        return not self.synced

    def apply_patch(self, patch: Patch) -> bool:
        """Apply one patch. Returns False when the replica has fallen out of
        sync and must fetch a snapshot (``needs_snapshot`` is then True)."""
        if not self.synced:
            if len(self._buffer) < _MAX_BUFFERED:
                self._buffer.append(patch)
            return False
        if patch.epoch != self.epoch or patch.version > self.version + 1:
            self._lose_sync()
            self._buffer.append(patch)
            return False
        if patch.version <= self.version:
            return True  # already contained in the snapshot
        self._apply(patch)
        return True

    def check_beat(self, beat: Beat) -> bool:
        """False (and out of sync) if the owner is ahead of us or restarted:
        patches were lost, or it is a new owner."""
        if self.synced and (beat.epoch != self.epoch or beat.version > self.version):
            self._lose_sync()
        return self.synced

    def load_snapshot(self, snap: Snapshot) -> None:
        self.epoch = snap.epoch
        self.version = snap.version
        self.tables = {name: dict(rows) for name, rows in snap.tables.items()}
        self.synced = True
        pending, self._buffer = self._buffer, []
        for patch in pending:
            if patch.epoch == self.epoch and patch.version > self.version:
                if patch.version != self.version + 1:
                    self._lose_sync()
                    return
                self._apply(patch)

    def _apply(self, patch: Patch) -> None:
        rows = self.tables.setdefault(patch.table, {})
        if patch.value is None:
            rows.pop(patch.key, None)
        else:
            rows[patch.key] = patch.value
        self.version = patch.version

    def _lose_sync(self) -> None:
        self.synced = False
        self.resyncs += 1
        self._buffer.clear()
