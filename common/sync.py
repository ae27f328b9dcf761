"""Named locks with an optional lock-order checker (CHECKLIST B5).

The dispatcher runs a few threads (metrics, control) beside its data loop;
every lock they share comes from here, as gVisor routes all of netstack's
locks through ``pkg/sync`` so that a deadlock detector can be swapped in.

``Lock(name)`` and ``RLock(name)`` return plain ``threading`` locks unless
checking is on, so they cost nothing in production. Checking is on when the
environment has ``SHARDNET_LOCKCHECK=1`` at import time, or after
``enable_lockcheck()``; it applies to locks created from then on.

The checker works like Linux lockdep: each lock belongs to a class, its name
(so name locks by role, e.g. ``"metrics.snapshot"``). Each thread keeps the
stack of locks it holds; a blocking acquisition of class B while holding
class A records the edge A -> B in one process-wide order graph. If B already
reaches A in the graph (B then A was seen somewhere, possibly in another
thread and through intermediate locks), the two orders can deadlock, and the
acquisition raises ``LockOrderError`` *before* blocking, naming both orders
and where the earlier one was first seen. Also as in lockdep:
* a non-blocking acquire (``blocking=False``) cannot deadlock and records no
  edge, but the lock counts as held for later acquisitions;
* re-acquiring an ``RLock`` the thread already owns records nothing;
* nesting two different locks of the same class is reported (it is an A-A
  order that another thread can invert): give them different names.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

__all__ = [
    "CheckedLock",
    "Lock",
    "LockOrderError",
    "RLock",
    "disable_lockcheck",
    "enable_lockcheck",
    "lockcheck_enabled",
    "reset_lockcheck",
]

_enabled = os.environ.get("SHARDNET_LOCKCHECK") == "1"
# The order graph: class name -> {class name acquired while holding it:
# where that edge was first recorded}. Guarded by a plain lock (never checked).
_graph: dict[str, dict[str, str]] = {}
_graph_lock = threading.Lock()
_local = threading.local()


class LockOrderError(RuntimeError):
    """Two code paths take the same locks in opposite orders."""


def enable_lockcheck() -> None:
    """Check the order of every lock created from now on."""
    global _enabled
    _enabled = True


def disable_lockcheck() -> None:
    """Locks created from now on are plain (existing checked locks stay checked)."""
    global _enabled
    _enabled = False


def lockcheck_enabled() -> bool:
    return _enabled


def reset_lockcheck() -> None:
    """Forget every recorded order (for tests)."""
    with _graph_lock:
        _graph.clear()


def Lock(name: str) -> Any:  # noqa: N802 - mirrors threading.Lock
    """A mutex named ``name``: ``threading.Lock()`` unless checking is on."""
    if not _enabled:
        return threading.Lock()
    return CheckedLock(name, threading.Lock(), reentrant=False)


def RLock(name: str) -> Any:  # noqa: N802 - mirrors threading.RLock
    """A re-entrant mutex named ``name``: ``threading.RLock()`` unless checking is on."""
    if not _enabled:
        return threading.RLock()
    return CheckedLock(name, threading.RLock(), reentrant=True)


def _held() -> list[CheckedLock]:
    held: list[CheckedLock] | None = getattr(_local, "held", None)
    if held is None:
        held = _local.held = []
    return held


def _path(src: str, dst: str) -> list[str] | None:
    """A path src -> ... -> dst in the order graph (caller holds _graph_lock)."""
    stack = [(src, [src])]
    seen = {src}
    while stack:
        node, path = stack.pop()
        for nxt in _graph.get(node, ()):
            if nxt == dst:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _where() -> str:
    # The caller of acquire()/__enter__, skipping this module's frames.
    frames = [f for f in traceback.extract_stack() if f.filename != __file__]
    return "".join(traceback.format_list(frames[-3:])).rstrip()


def _record(held: list[CheckedLock], lock: CheckedLock) -> None:
    """Check, then record, the edges held -> lock. Raises before any edge of
    this acquisition is recorded if one of them inverts a known order."""
    name = lock.name
    with _graph_lock:
        new: list[str] = []
        for h in held:
            if h is lock:
                continue
            if h.name == name:
                raise LockOrderError(
                    f"lock order: acquiring a second lock of class {name!r} while holding "
                    f"one; name them apart or take them in a fixed order\nat:\n{_where()}"
                )
            if name in _graph.get(h.name, ()):
                continue  # known edge
            back = _path(name, h.name)
            if back is not None:
                first_seen = _graph[back[0]][back[1]]
                raise LockOrderError(
                    f"lock order inversion: acquiring {name!r} while holding {h.name!r}, "
                    f"but {' -> '.join(back)} was seen before.\n"
                    f"{back[0]!r} -> {back[1]!r} first at:\n{first_seen}\n"
                    f"now at:\n{_where()}"
                )
            new.append(h.name)
        if new:
            where = _where()
            for src in new:
                _graph.setdefault(src, {})[name] = where


class CheckedLock:
    """A ``threading.Lock``/``RLock`` that checks acquisition order. Made by
    ``Lock()``/``RLock()`` when checking is on; same interface."""

    __slots__ = ("name", "_lock", "_reentrant", "_owner", "_count", "_holder_list")

    def __init__(self, name: str, lock: Any, *, reentrant: bool) -> None:
        self.name = name
        self._lock = lock
        self._reentrant = reentrant
        self._owner: int | None = None
        self._count = 0
        self._holder_list: list[CheckedLock] | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._reentrant and self._owner == me:
            ok = self._lock.acquire(blocking, timeout)
            if ok:
                self._count += 1
            return ok
        held = _held()
        if blocking and held:
            _record(held, self)
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self._owner = me
            self._count = 1
            self._holder_list = held
            held.append(self)
        return ok

    def release(self) -> None:
        if self._reentrant:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release un-acquired lock")
            if self._count > 1:
                self._count -= 1
                self._lock.release()
                return
        elif not self._lock.locked():
            raise RuntimeError("release unlocked lock")
        # Bookkeeping first: once the real lock is released another thread
        # may take it and set these fields.
        holder = self._holder_list
        self._owner = None
        self._count = 0
        self._holder_list = None
        # A plain Lock may be released by another thread: remove it from the
        # list of the thread that acquired it.
        if holder is not None:
            for i in range(len(holder) - 1, -1, -1):
                if holder[i] is self:
                    del holder[i]
                    break
        self._lock.release()

    def locked(self) -> bool:
        if self._reentrant:
            return self._count > 0
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "RLock" if self._reentrant else "Lock"
        return f"<Checked{kind} {self.name!r} {'locked' if self.locked() else 'unlocked'}>"
