"""The dispatcher's book of what every shard reported.

Shards send snapshots of plain counters that restart from zero when a shard
restarts; Prometheus counters must never go down, so when a new incarnation
says Hello, the last snapshot of the old one is folded into a per-shard base.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from shardnet.common.messages import Stats


@dataclass(slots=True)
class DispatcherCounters:
    link_rx_frames: int = 0
    link_rx_bytes: int = 0
    link_rx_errors: int = 0  # frames the link refused (shorter than the vnet header, ...)
    # Per shard, sized once: the metrics thread iterates them while the loop
    # increments items, which is safe for a list of fixed length.
    ring_drops: list[int] = field(default_factory=list)
    to_shard: list[int] = field(default_factory=list)  # frames put in each ring
    # Control-plane frames dropped because a shard's backlog of them was full (backlog.py)
    backlog_drops: list[int] = field(default_factory=list)
    fragments: int = 0
    steered: int = 0  # frames a shard handed to the shard owning their socket
    from_queues: int = 0  # --multi-queue: frames a shard read from its queue for another
    steering: str = ""  # --multi-queue: "ebpf", or why the kernel's own ("automq: ...")
    reassembly_drops: Counter[str] = field(default_factory=Counter)  # by reason
    link_filter: str = ""  # the TAP's admission filter: "ebpf", or why none
    # What that filter turned away in the kernel, by reason (read from its map when asked)
    link_drops: Callable[[], dict[str, int]] = dict


@dataclass(slots=True)
class ShardBook:
    base: Counter[str] = field(default_factory=Counter)
    base_drops: Counter[str] = field(default_factory=Counter)
    last: Stats | None = None

    def counters(self) -> Counter[str]:
        total = Counter(self.base)
        if self.last is not None:
            total.update(self.last.counters)
        return total

    def drops(self) -> Counter[str]:
        total = Counter(self.base_drops)
        if self.last is not None:
            total.update(self.last.drops)
        return total


class StatsBook:
    """Written by the dispatcher's loop, read by the metrics thread: the
    per-shard bases change under ``lock`` (replacing ``last`` is one
    reference store and needs none)."""

    def __init__(self, nshards: int) -> None:
        self.shards = [ShardBook() for _ in range(nshards)]
        self.dispatcher = DispatcherCounters(
            ring_drops=[0] * nshards, to_shard=[0] * nshards, backlog_drops=[0] * nshards
        )
        self.lock = threading.Lock()

    def new_incarnation(self, shard: int) -> None:
        book = self.shards[shard]
        with self.lock:
            if book.last is not None:
                book.base.update(book.last.counters)
                book.base_drops.update(book.last.drops)
                book.last = None

    def totals(self, shard: int) -> tuple[Counter[str], Counter[str]]:
        """(counters, drops) of a shard over all its incarnations."""
        book = self.shards[shard]
        with self.lock:
            return book.counters(), book.drops()

    def record(self, stats: Stats) -> None:
        if 0 <= stats.shard < len(self.shards):
            self.shards[stats.shard].last = stats

    def as_dict(self) -> dict[str, object]:
        """For ``ctl stats`` and ``top``: everything, JSON-friendly."""
        d = self.dispatcher
        shards = []
        for i, book in enumerate(self.shards):
            counters, drops = self.totals(i)
            last = book.last
            shards.append(
                {
                    "shard": i,
                    "to_shard": d.to_shard[i],
                    "ring_drops": d.ring_drops[i],
                    "backlog_drops": d.backlog_drops[i],
                    "counters": dict(counters),
                    "drops": dict(drops),
                    "gauges": dict(last.gauges) if last else {},
                }
            )
        return {
            "dispatcher": {
                "link_rx_frames": d.link_rx_frames,
                "link_rx_bytes": d.link_rx_bytes,
                "link_rx_errors": d.link_rx_errors,
                "fragments": d.fragments,
                "steered": d.steered,
                "from_queues": d.from_queues,
                "steering": d.steering,
                "reassembly_drops": dict(d.reassembly_drops),
                "link_filter": d.link_filter,
                "link_drops": d.link_drops(),
            },
            "shards": shards,
        }
