"""Fault injection for a link, to test recovery against a real peer (the
kernel here has no netem): drop, duplicate, reorder and delay frames by
probability, on the receive side (dispatcher) and the send side (shards).

Spec text: ``drop=0.05,dup=0.01,reorder=0.05,delay=0.02,delay_ms=20,seed=1``
(probabilities per frame; every field optional); ``latency_ms=MS`` delays
every frame by MS in order (a path's propagation delay, which the
reordering and delays above then come on top of); ``ce=P`` marks IP
packets sent ECN-capable (ECT(0) or ECT(1)) with Congestion Experienced,
as an RFC 3168 router would instead of dropping them. Sans-I/O: ``apply(now,
frame)`` returns the frames to pass on now; delayed ones come back from
``due(now)`` after ``next_deadline()``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass
from typing import Any

from .config import ConfigError

_FIELDS = {"drop", "dup", "reorder", "delay", "delay_ms", "latency_ms", "ce", "seed"}
REORDER_S = 0.002  # how long a reordered frame is held back


@dataclass(frozen=True, slots=True)
class FaultSpec:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_ms: float = 20.0
    latency_ms: float = 0.0  # every frame, in order
    ce: float = 0.0  # ECN-capable IP packets marked CE
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in _FIELDS:
                raise ConfigError(
                    f"--fault: bad item {item!r} (want drop=P,dup=P,reorder=P,delay=P,delay_ms=MS,"
                    "latency_ms=MS,ce=P,seed=N)"
                )
            try:
                values[key] = int(value) if key == "seed" else float(value)
            except ValueError:
                raise ConfigError(f"--fault: {key} wants a number, got {value!r}") from None
        spec = cls(**values)
        for name in ("drop", "dup", "reorder", "delay", "ce"):
            if not 0.0 <= getattr(spec, name) <= 1.0:
                raise ConfigError(f"--fault: {name} is a probability (0..1)")
        if spec.delay_ms < 0 or spec.latency_ms < 0:
            raise ConfigError("--fault: delay_ms and latency_ms must not be negative")
        return spec


class FaultInjector:
    def __init__(self, spec: FaultSpec, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.rng = rng or random.Random(spec.seed)
        self._delayed: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self.dropped = self.duplicated = self.reordered = self.delayed = self.ce_marked = 0

    def apply(self, now: float, frame: Any) -> list[Any]:
        s, rnd = self.spec, self.rng.random
        if s.drop and rnd() < s.drop:
            self.dropped += 1
            return []
        if s.ce and rnd() < s.ce and isinstance(frame, tuple) and isinstance(frame[0], bytes):
            marked = mark_ce(frame[0])
            if marked is not None:
                self.ce_marked += 1
                frame = (marked, *frame[1:])
        out = [frame]
        if s.dup and rnd() < s.dup:
            self.duplicated += 1
            out.append(frame)
        base = now + s.latency_ms / 1000
        if s.delay and rnd() < s.delay:
            self.delayed += 1
            heapq.heappush(self._delayed, (base + s.delay_ms / 1000, next(self._order), frame))
            return []
        if s.reorder and rnd() < s.reorder:
            # Held back briefly, so the frames right behind it overtake it.
            self.reordered += 1
            heapq.heappush(self._delayed, (base + REORDER_S, next(self._order), frame))
            out = out[1:]
        if s.latency_ms and out:
            for f in out:  # in order: equal times leave first in, first out
                heapq.heappush(self._delayed, (base, next(self._order), f))
            return []
        return out

    def next_deadline(self) -> float | None:
        if self._delayed:
            return self._delayed[0][0]
        return None

    def due(self, now: float) -> list[Any]:
        out = []
        while self._delayed and self._delayed[0][0] <= now:
            out.append(heapq.heappop(self._delayed)[2])
        return out

    def flush(self) -> list[Any]:
        """Everything still held (at shutdown)."""
        out = [f for _, _, f in sorted(self._delayed)]
        self._delayed.clear()
        return out


def mark_ce(frame: bytes) -> bytes | None:
    """The Ethernet ``frame`` with its IPv4 or IPv6 packet's ECN field set
    to CE (RFC 3168 §5) if it was ECT(0) or ECT(1), the IPv4 header
    checksum updated; None for anything else."""
    if len(frame) < 34:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    b = bytearray(frame)
    if ethertype == 0x0800:
        if b[15] & 3 == 0:
            return None  # Not-ECT: a router would drop, not mark
        b[15] |= 3
        ihl = (b[14] & 0x0F) * 4
        b[24:26] = b"\0\0"
        total = 0
        for i in range(14, 14 + ihl, 2):
            total += (b[i] << 8) | b[i + 1]
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        b[24:26] = (~total & 0xFFFF).to_bytes(2, "big")
        return bytes(b)
    if ethertype == 0x86DD:
        if (b[15] >> 4) & 3 == 0:  # traffic class bits 0-1 are bits 4-5 of byte 1
            return None
        b[15] |= 0x30
        return bytes(b)
    return None


class FaultyWriter:
    """A ``FrameWriter`` whose frames pass a ``FaultInjector`` first (the send
    side of ``--fault``). ``schedule(when, fn)`` runs ``fn`` at loop time
    ``when`` (asyncio's ``call_at``)."""

    def __init__(self, inner: Any, injector: FaultInjector, clock: Any, schedule: Any) -> None:
        self.inner = inner
        self.injector = injector
        self.clock = clock
        self.schedule = schedule
        self._timer: Any = None  # the handle ``schedule`` returned, while armed
        self._timer_at = 0.0

    def __getattr__(self, name: str) -> Any:  # counters and the rest are the inner writer's
        return getattr(self.inner, name)

    def write(self, frame_parts: Any, vnet: Any = None) -> None:
        frame = b"".join(bytes(p) for p in frame_parts)  # copied: it may be delayed
        for item in self.injector.apply(self.clock(), (frame, vnet)):
            self.inner.write((item[0],), item[1])
        self._arm()

    def _arm(self) -> None:
        """One timer for the earliest held frame (latency_ms holds every one)."""
        deadline = self.injector.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            cancel = getattr(self._timer, "cancel", None)
            if cancel is not None:
                cancel()
        self._timer_at = deadline
        self._timer = self.schedule(deadline, self._due) or True

    def write_batch(self, frames: Any) -> None:
        for parts, vnet in frames:
            self.write(parts, vnet)

    def _due(self) -> None:
        self._timer = None
        for frame, vnet in self.injector.due(self.clock()):
            self.inner.write((frame,), vnet)
        self._arm()

    def close(self) -> None:
        self.inner.close()
