"""A shard's own queue of a multi-queue TAP (``--multi-queue``).

With ``IFF_MULTI_QUEUE`` the kernel spreads the TAP's frames over its
queues by flow, and sends a flow's frames to the queue its last outgoing
frame was written on (the tun driver's flow table). Each shard reads one
queue and writes its own frames on it, so the frames of the flows a shard
owns come straight to it, without the dispatcher's hop. A frame that lands
on another shard's queue (a new flow the kernel hashed there, ARP or NDP
for shard 0, a fragment) goes to the dispatcher, which classifies it as if
it had read it (``common/record.py``, ``UPLINK_WIRE``).

Reads are non-blocking ``readinto`` calls, one frame per syscall, through
the receive loop the links share (``rx_batch.py``), laid out as ring records
(``[tag][virtio-net header][frame]``: a byte is left free before each frame
for the tag), so a frame for this shard goes to its ingress without a copy.
"""

from __future__ import annotations

import os

from .record import TAG_WIRE
from .rx_batch import BatchReader
from .wire.errors import Drop

QUEUE_CHUNK = 65536 + 256  # bytes: a 64 KiB super-frame and its headers
QUEUE_ARENA = 1 << 20  # bytes: >= 15 super-frames or ~700 MTU frames a batch


class TapQueueReader:
    """Reads queue ``fd`` (owned: closed by ``close``)."""

    def __init__(self, fd: int, vnet_hdr_len: int, *, arena: int = QUEUE_ARENA) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.vnet_hdr_len = vnet_hdr_len
        self._file = open(fd, "rb", buffering=0, closefd=True)
        self.rx_frames = 0  # read from the queue
        self.rx_bytes = 0
        self.rx_errors = 0
        self.drops: dict[Drop, int] = {}  # bad virtio-net headers, frames cut
        self._rx = BatchReader(
            self._file.readinto, "the TAP queue", vnet_hdr_len, self, arena=arena, chunk=QUEUE_CHUNK
        )

    def fileno(self) -> int:
        return self.fd

    def read_batch(self, max_frames: int = 64) -> list[memoryview]:
        """Up to ``max_frames`` records, as many as are ready; views into
        the arena, valid until the next call."""
        return self._rx.records(max_frames, TAG_WIRE)

    def _drop(self, reason: Drop) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def close(self) -> None:
        self._file.close()
