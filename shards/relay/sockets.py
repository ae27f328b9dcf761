"""Kernel sockets for the relay, opened in the network namespace it dials
from (``--relay-netns``).

A network namespace is a property of each thread in Linux (``setns(2)``
with ``CLONE_NEWNET`` moves the calling thread only), and a socket belongs
for its whole life to the namespace it was created in, whatever thread
uses it later. So one helper thread enters the namespace once and creates
every socket there; the shard's loop then connects and splices them as
any other. Python 3.11 has no ``os.setns``: libc's is called through
ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor

NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` names namespaces
CLONE_NEWNET = 0x40000000  # linux/sched.h


def _enter(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class SocketOpener:
    """Opens non-blocking sockets in namespace ``netns`` (the shard's own
    when None). Raises OSError at once if the namespace cannot be entered."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._executor: ThreadPoolExecutor | None = None
        if netns is None:
            return
        fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            executor = ThreadPoolExecutor(
                1, thread_name_prefix="relay-netns", initializer=_enter, initargs=(fd,)
            )
            try:
                executor.submit(int).result()  # the thread exists and entered the namespace
            except Exception as exc:
                executor.shutdown(wait=False)
                raise OSError(f"cannot enter network namespace {netns}: {exc}") from None
        finally:
            os.close(fd)
        self._executor = executor

    async def open(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        if self._executor is None:
            sock = socket.socket(family, kind, proto)
        else:
            loop = asyncio.get_running_loop()
            sock = await loop.run_in_executor(self._executor, socket.socket, family, kind, proto)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
