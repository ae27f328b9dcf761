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
loop cannot eat the machine.

A restart costs little time: a spare process, started SPARE_AFTER_S after
the shards (and again after each use), has already imported the shard entry
point's module (and run its ``warm()``, if it has one) and waits for the
spec of the shard it is to become. A dead shard's new process is that spare
when there is one (its fds reach it through multiprocess's resource sharer),
else a new spawn (a Python start and the stack's imports: a second or more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiprocess

from shardnet.common.ring import Ring, RingConsumer, RingProducer

log = logging.getLogger("shardnet.dispatcher")

MAX_BACKOFF_S = 5.0
STABLE_AFTER_S = 10.0  # a shard alive this long resets its backoff
# The spare starts this long after the shards or its last use: its imports
# take a core for about a second, which the shards starting get first.
SPARE_AFTER_S = 5.0

# (index, downlink ring, uplink ring) -> the picklable argument of the shard entry point
SpecFactory = Callable[[int, Ring, Ring], Any]


def standby(entry: Callable[[Any], None], pipe: Any) -> None:
    """A spare shard process: what the shard entry point needs is imported
    now; then it becomes the shard whose spec arrives (or exits when the pipe
    closes unused)."""
    warm = getattr(sys.modules.get(entry.__module__), "warm", None)
    if callable(warm):
        warm()
    try:
        spec = pipe.recv()
    except (EOFError, OSError):
        return
    finally:
        pipe.close()
    entry(spec)


@dataclass(slots=True)
class ShardSlot:
    index: int
    process: Any = None  # multiprocess.Process
    ring: Ring | None = None
    producer: RingProducer | None = None
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
        self.ctx = multiprocess.get_context("spawn")
        self.entry = entry
        self.make_spec = make_spec
        self.ring_bytes = ring_bytes
        self.base_backoff_s = backoff_s
        self.on_restart = on_restart
        self.on_uplink = on_uplink  # the uplink's eventfd is readable (or: start draining)
        self.slots = [ShardSlot(i) for i in range(nshards)]
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.spare: tuple[Any, Any] | None = None  # (process, the pipe's sending end)
        self._spare_timer: asyncio.TimerHandle | None = None

    # --- starting ---------------------------------------------------------
    def start_all(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for slot in self.slots:
            self._start(slot)
        self._arm_spare()

    def producer(self, index: int) -> RingProducer | None:
        return self.slots[index].producer

    def _start(self, slot: ShardSlot) -> None:
        ring = Ring.create(self.ring_bytes, name=f"shardnet-ring{slot.index}")
        uplink = Ring.create(self.ring_bytes, name=f"shardnet-uplink{slot.index}")
        spec = self.make_spec(slot.index, ring, uplink)
        proc = self._take_spare(spec)
        if proc is None:
            proc = self.ctx.Process(
                target=self.entry, args=(spec,), name=f"shardnet-shard{slot.index}", daemon=True
            )
            proc.start()
        slot.process, slot.ring, slot.producer = proc, ring, ring.producer()
        # The dispatcher's loop does other work: no spinning before it sleeps.
        slot.uplink, slot.uplink_consumer = uplink, uplink.consumer(spin_us=0)
        slot.pid, slot.started_at, slot.ready = proc.pid, time.monotonic(), False
        assert self._loop is not None  # start_all() ran
        self._loop.add_reader(proc.sentinel, self._on_exit, slot)
        if self.on_uplink is not None:
            self._loop.add_reader(slot.uplink_consumer.fileno(), self.on_uplink, slot)
            # The consumer must announce sleep once before the doorbell rings.
            self._loop.call_soon(self.on_uplink, slot)

    # --- the spare ------------------------------------------------------------
    def _arm_spare(self) -> None:
        if self._loop is not None and self._spare_timer is None and not self.stopping:
            self._spare_timer = self._loop.call_later(SPARE_AFTER_S, self._start_spare)

    def _start_spare(self) -> None:
        self._spare_timer = None
        if self.stopping or self.spare is not None:
            return
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=standby, args=(self.entry, recv), name="shardnet-spare", daemon=True
        )
        proc.start()
        recv.close()
        self.spare = (proc, send)

    def _take_spare(self, spec: Any) -> Any:
        """The spare process, become the shard of ``spec``; None without one."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        proc, pipe = spare
        self._arm_spare()  # the next one, later
        try:
            if proc.is_alive():
                pipe.send(spec)
                return proc
        except OSError:  # it died meanwhile: a new spawn instead
            pass
        finally:
            pipe.close()
        proc.kill()
        proc.join(1.0)
        return None

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
        if self._spare_timer is not None:
            self._spare_timer.cancel()
            self._spare_timer = None
        spare, self.spare = self.spare, None
        extra = []
        if spare is not None:
            spare[1].close()  # the spare exits when its pipe closes unused
            extra.append(spare[0])
        deadline = time.monotonic() + timeout_s
        for escalate in (None, "terminate", "kill"):
            alive = [
                s.process for s in self.slots if s.process is not None and s.process.is_alive()
            ] + [p for p in extra if p.is_alive()]
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
        for proc in extra:
            with contextlib.suppress(AssertionError, ValueError):
                proc.join(0.5)

    def pids(self) -> dict[int, int | None]:
        return {s.index: (s.process.pid if s.process is not None else None) for s in self.slots}

    def alive(self) -> list[int]:
        return [s.index for s in self.slots if s.process is not None and s.process.is_alive()]
