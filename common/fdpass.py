"""Handing file descriptors to child processes through pickling.

``multiprocess`` (and ``multiprocessing``) pass fds the same way whatever the
start method: while a child is being spawned, ``reduction.DupFd(fd)`` records
the fd with the spawning Popen (spawn: the fd number is kept open in the
child; forkserver: it is sent with SCM_RIGHTS), and the child's ``detach()``
returns its own fd. Outside a spawn, DupFd falls back to the resource sharer.
``PassedFd`` wraps one fd so any record holding it pickles correctly; with
fork it is inherited as it is.
"""

from __future__ import annotations

from typing import Any


def dup_for_child(fd: int) -> Any:
    """Wrap ``fd`` for pickling into the process being started."""
    import multiprocess.context
    import multiprocess.reduction

    if multiprocess.context.get_spawning_popen() is not None:
        return multiprocess.reduction.DupFd(fd)
    import multiprocessing.context
    import multiprocessing.reduction

    if multiprocessing.context.get_spawning_popen() is not None:
        return multiprocessing.reduction.DupFd(fd)
    return multiprocess.reduction.DupFd(fd)


def _rebuild(wrapped: Any) -> PassedFd:
    return PassedFd(wrapped.detach())


class PassedFd:
    """An fd that survives being pickled into a child process."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (dup_for_child(self.fd),))

    def __repr__(self) -> str:
        return f"PassedFd({self.fd})"
