"""Cancellable timers for sans-I/O machines (as gVisor's tcpip.CancellableTimer).

gVisor's ``tcpip.CancellableTimer`` guarantees that a timer stopped while
the owner holds its lock never runs its action afterwards, even if it had
already fired and was blocked on that lock. Here there are no threads: the
shard loop calls ``TimerQueue.run_due(now)``, which runs the due actions one
by one. The same guarantee becomes: an action that stops (or re-arms) another
timer that is also due in this same turn prevents that timer from running —
each heap item carries the generation it was armed with, and the generation
is checked right before its action runs, not when the due items are
collected.

* ``Timer.reset(deadline)`` re-arms (a fresh generation: the old deadline is
  dead); ``Timer.stop()`` disarms. Stop+reset any number of times yields
  exactly one run, at the last deadline.
* Stale heap items are skipped lazily and the heap is compacted when they
  outnumber the live ones, so frequent re-arming costs O(log n) and no scan.

Actions take ``now`` (the time ``run_due`` was called with, not the
deadline) and must not call ``run_due``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timer:
    """One re-armable timer of a ``TimerQueue``; see the module docstring."""

    __slots__ = ("_queue", "action", "deadline", "_gen")

    def __init__(self, queue: TimerQueue, action: Callable[[float], None]) -> None:
        self._queue = queue
        self.action = action
        self.deadline: float | None = None  # None: not armed
        self._gen = 0

    @property
    def armed(self) -> bool:
        return self.deadline is not None

    def reset(self, deadline: float) -> None:
        """Arm for ``deadline`` (absolute seconds), replacing any earlier arming."""
        self._gen += 1
        self.deadline = deadline
        self._queue._push(deadline, self._gen, self)

    def stop(self) -> None:
        """Disarm: the action will not run for any earlier arming, even one
        already due in the current ``run_due`` turn."""
        if self.deadline is not None:
            self._gen += 1
            self.deadline = None
            self._queue._stale += 1

    def remaining(self, now: float) -> float | None:
        """Seconds until the deadline (None when not armed)."""
        d = self.deadline
        return None if d is None else max(0.0, d - now)


class TimerQueue:
    """A heap of ``Timer`` deadlines for one machine."""

    __slots__ = ("_heap", "_seq", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Timer]] = []
        self._seq = itertools.count()
        self._stale = 0  # heap items known dead (stopped or re-armed)

    def timer(self, action: Callable[[float], None]) -> Timer:
        """A new, disarmed timer that runs ``action(now)`` when due."""
        return Timer(self, action)

    def _push(self, deadline: float, gen: int, timer: Timer) -> None:
        heap = self._heap
        if gen > 1:
            self._stale += 1  # a re-arm may leave the previous item dead
        heapq.heappush(heap, (deadline, next(self._seq), gen, timer))
        if self._stale > 64 and self._stale > len(heap) // 2:
            self._compact()

    def _compact(self) -> None:
        live = [i for i in self._heap if i[3]._gen == i[2] and i[3].deadline is not None]
        heapq.heapify(live)
        self._heap = live
        self._stale = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            d, _, gen, t = heap[0]
            if t._gen == gen and t.deadline is not None:
                return d
            heapq.heappop(heap)
        return None

    def run_due(self, now: float) -> int:
        """Run the actions of the timers due at ``now``, earliest first;
        returns how many ran. Validity is checked item by item, right before
        each action (the stop-after-fire race): a timer stopped or re-armed by an
        earlier action of this turn does not run for its old deadline. A
        timer re-armed for a deadline <= now runs in this same turn."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            _, _, gen, t = heapq.heappop(heap)
            if t._gen != gen or t.deadline is None:
                continue
            t.deadline = None
            ran += 1
            t.action(now)
        return ran

    def __len__(self) -> int:
        """Armed timers (an upper bound: stale items are skipped lazily)."""
        return len(self._heap)
