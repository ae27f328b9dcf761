"""A shard's own queue of a multi-queue TAP (``--multi-queue``).

With ``IFF_MULTI_QUEUE`` the kernel spreads the TAP's frames over its
queues by flow, and sends a flow's frames to the queue its last outgoing
frame was written on (the tun driver's flow table). Each shard reads one
queue and writes its own frames on it, so the frames of the flows a shard
owns come straight to it, without the dispatcher's hop. A frame that lands
on another shard's queue (a new flow the kernel hashed there, ARP or NDP
for shard 0, a fragment) goes to the dispatcher, which classifies it as if
it had read it (``common/record.py``, ``UPLINK_WIRE``).

Reads are non-blocking ``readinto`` calls into one preallocated arena, one
frame per syscall, laid out as ring records (``[tag][virtio-net
header][frame]``: a byte is left free before each frame for the tag), so a
frame for this shard goes to its ingress without a copy.
"""

from __future__ import annotations

import errno
import os

from .link_tx import LinkError
from .record import TAG_LEN, TAG_WIRE
from .wire.errors import Drop, MalformedPacket
from .wire.virtio import VirtioNetView

QUEUE_CHUNK = 65536 + 256  # bytes: a 64 KiB super-frame and its headers
QUEUE_ARENA = 1 << 20  # bytes: >= 15 super-frames or ~700 MTU frames a batch


class TapQueueReader:
    """Reads queue ``fd`` (owned: closed by ``close``)."""

    def __init__(self, fd: int, vnet_hdr_len: int, *, arena: int = QUEUE_ARENA) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.vnet_hdr_len = vnet_hdr_len
        self._file = open(fd, "rb", buffering=0, closefd=True)
        self._arena = memoryview(bytearray(max(arena, 2 * (QUEUE_CHUNK + TAG_LEN))))
        self.frames = 0  # read from the queue
        self.drops: dict[Drop, int] = {}  # bad virtio-net headers, frames cut

    def fileno(self) -> int:
        return self.fd

    def read_batch(self, max_frames: int = 64) -> list[memoryview]:
        """Up to ``max_frames`` records, as many as are ready; views into
        the arena, valid until the next call."""
        records: list[memoryview] = []
        arena = self._arena
        readinto = self._file.readinto
        size = self.vnet_hdr_len
        chunk = QUEUE_CHUNK
        limit = len(arena) - chunk - TAG_LEN
        off = 0
        while off <= limit and len(records) < max_frames:
            try:
                n = readinto(arena[off + TAG_LEN : off + TAG_LEN + chunk])
            except OSError as exc:
                if exc.errno in (errno.EBADFD, errno.EBADF):
                    raise LinkError("the TAP queue is gone", exc.errno) from None
                break  # the kernel dropped this frame; the next read may work
            if not n:  # None: EAGAIN, the queue is empty
                break
            if n < size:
                self._drop(Drop.VNET_TRUNCATED)
                continue
            if n >= chunk:
                self._drop(Drop.LINK_FRAME_TOO_LONG)
                continue
            if size and (arena[off + 1] or arena[off + 2]):  # flags or GSO: check them
                try:
                    VirtioNetView.checked(arena[off + 1 : off + 1 + n], size=size)
                except MalformedPacket as exc:
                    self._drop(exc.reason)
                    continue
            arena[off] = TAG_WIRE
            records.append(arena[off : off + TAG_LEN + n])
            off += TAG_LEN + n
        self.frames += len(records)
        return records

    def _drop(self, reason: Drop) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def close(self) -> None:
        self._file.close()
