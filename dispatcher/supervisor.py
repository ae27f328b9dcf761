"""Starts the shard processes, restarts one that dies, stops them all.

Each shard gets a fresh pair of rings when it (re)starts: a dead consumer
may have left its downlink ring half-read, a dead producer its uplink ring
half-written. The uplink ring (shard -> dispatcher: frames a shard loops back
to the stack: sent to one of its own addresses) is read by the dispatcher's loop: its eventfd is
registered with ``on_uplink(slot)`` while the shard lives and unregistered
before the ring is closed. A restarted shard resynchronises its replicas
from shard 0; a restarted shard 0 rebuilds its state from the configuration
(its epoch changes, so every replica fetches a new snapshot). A shard that
keeps dying is restarted with an exponential backoff (capped), so a crash
loop cannot eat the machine. Shards are forked from a fork server that has
imported their code once, so a restart costs a fork, not an interpreter's
start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiprocess

from shardnet.common.ring import Ring, RingConsumer, RingProducer

from .backlog import ControlBacklog

log = logging.getLogger("shardnet.dispatcher")

MAX_BACKOFF_S = 5.0
STABLE_AFTER_S = 10.0  # a shard alive this long resets its backoff

# What the fork server imports before it forks any shard.
SHARD_MODULES = ("shardnet.shards.main", "shardnet.shards.runtime")

# (index, downlink ring, uplink ring) -> the picklable argument of the shard entry point
SpecFactory = Callable[[int, Ring, Ring], Any]


@dataclass(slots=True)
class ShardSlot:
    index: int
    process: Any = None  # multiprocess.Process
    ring: Ring | None = None
    producer: RingProducer | None = None
    backlog: ControlBacklog = field(default_factory=ControlBacklog)  # of ``ring``
    uplink: Ring | None = None  # shard -> dispatcher
    uplink_consumer: RingConsumer | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    pid: int | None = None
    ready: bool = False  # its Hello arrived
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        nshards: int,
        entry: Callable[[Any], None],
        make_spec: SpecFactory,
        *,
        ring_bytes: int,
        backoff_s: float = 0.2,
        on_restart: Callable[[int, int | None], None] | None = None,
        on_uplink: Callable[[ShardSlot], None] | None = None,
    ) -> None:
        # A fork server that has imported the shard's code once: a shard
        # then starts, and a dead one is back, in about 0.25 s, where a
        # fresh interpreter (spawn) spends 1.3-2.2 s importing it on this
        # machine. The server holds no sockets, rings or zmq context (it is
        # started before any shard exists and only imports), so every
        # shard still makes its own after it starts; fds reach it with
        # SCM_RIGHTS (common/fdpass.py). It exits when the dispatcher does.
        self.ctx = multiprocess.get_context("forkserver")
        self.ctx.set_forkserver_preload(list(SHARD_MODULES))
        self.entry = entry
        self.make_spec = make_spec
        self.ring_bytes = ring_bytes
        self.base_backoff_s = backoff_s
        self.on_restart = on_restart
        self.on_uplink = on_uplink  # the uplink's eventfd is readable (or: start draining)
        self.slots = [ShardSlot(i) for i in range(nshards)]
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- starting ---------------------------------------------------------
    def start_all(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for slot in self.slots:
            self._start(slot)

    def producer(self, index: int) -> RingProducer | None:
        return self.slots[index].producer

    def _start(self, slot: ShardSlot) -> None:
        ring = Ring.create(self.ring_bytes, name=f"shardnet-ring{slot.index}")
        uplink = Ring.create(self.ring_bytes, name=f"shardnet-uplink{slot.index}")
        spec = self.make_spec(slot.index, ring, uplink)
        proc = self.ctx.Process(
            target=self.entry, args=(spec,), name=f"shardnet-shard{slot.index}", daemon=True
        )
        proc.start()
        slot.process, slot.ring, slot.producer = proc, ring, ring.producer()
        slot.backlog = ControlBacklog()
        # The dispatcher's loop does other work: no spinning before it sleeps.
        slot.uplink, slot.uplink_consumer = uplink, uplink.consumer(spin_us=0)
        slot.pid, slot.started_at, slot.ready = proc.pid, time.monotonic(), False
        assert self._loop is not None  # start_all() ran
        self._loop.add_reader(proc.sentinel, self._on_exit, slot)
        if self.on_uplink is not None:
            self._loop.add_reader(slot.uplink_consumer.fileno(), self.on_uplink, slot)
            # The consumer must announce sleep once before the doorbell rings.
            self._loop.call_soon(self.on_uplink, slot)

    def _close_rings(self, slot: ShardSlot) -> None:
        if slot.uplink is not None:
            if self._loop is not None and slot.uplink_consumer is not None:
                self._loop.remove_reader(slot.uplink_consumer.fileno())
            slot.uplink.close()
        if slot.ring is not None:
            slot.ring.close()
        slot.ring = slot.producer = slot.uplink = slot.uplink_consumer = None

    # --- deaths -------------------------------------------------------------
    def _on_exit(self, slot: ShardSlot) -> None:
        assert self._loop is not None
        proc = slot.process
        self._loop.remove_reader(proc.sentinel)
        proc.join(0)
        code = proc.exitcode if proc.exitcode is not None else -1
        slot.exit_codes.append(code)
        self._close_rings(slot)
        if self.stopping:
            return
        lived = time.monotonic() - slot.started_at
        slot.backoff_s = (
            self.base_backoff_s
            if lived > STABLE_AFTER_S or not slot.backoff_s
            else min(slot.backoff_s * 2, MAX_BACKOFF_S)
        )
        slot.restarts += 1
        level = logging.ERROR if slot.index == 0 else logging.WARNING
        log.log(
            level,
            "shard %d (pid %s) died with exit code %s; restarting in %.1f s%s",
            slot.index,
            slot.pid,
            code,
            slot.backoff_s,
            " — shard 0 is the control plane: its state is rebuilt from the configuration"
            if slot.index == 0
            else "",
        )
        if self.on_restart is not None:
            self.on_restart(slot.index, code)
        self._loop.call_later(slot.backoff_s, self._restart, slot)

    def _restart(self, slot: ShardSlot) -> None:
        if not self.stopping:
            self._start(slot)

    # --- stopping -------------------------------------------------------------
    async def stop_all(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the shards (already told to stop) to
        exit; terminate, then kill, what is left. Leaves no process behind."""
        self.stopping = True
        deadline = time.monotonic() + timeout_s
        for escalate in (None, "terminate", "kill"):
            alive = [
                s.process for s in self.slots if s.process is not None and s.process.is_alive()
            ]
            if not alive:
                break
            if escalate is not None:
                for proc in alive:
                    getattr(proc, escalate)()
                deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(p.is_alive() for p in alive):
                await asyncio.sleep(0.02)
        for slot in self.slots:
            if slot.process is not None:
                if self._loop is not None:
                    self._loop.remove_reader(slot.process.sentinel)
                slot.process.join(0.5)
            self._close_rings(slot)

    def pids(self) -> dict[int, int | None]:
        return {s.index: (s.process.pid if s.process is not None else None) for s in self.slots}

    def alive(self) -> list[int]:
        return [s.index for s in self.slots if s.process is not None and s.process.is_alive()]
