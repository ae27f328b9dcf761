"""The receive loop every link reader shares: the dispatcher's TAP and
AF_PACKET links (``dispatcher/link/``) and a shard's own multi-queue TAP
queue (``tap_queue.py``).

A link has no batch read that Python can use (a TAP gives one frame per
``read``; AF_PACKET without a ring, one per ``recv``), so a batch is a loop
of non-blocking reads, one frame each, into one preallocated arena, until
the kernel queue is empty, ``max_frames`` are read or the arena is full.
Nothing is copied or allocated per frame but the views handed out, which
stay valid until the next batch.

With a virtio-net header (``IFF_VNET_HDR``, ``PACKET_VNET_HDR``) each
frame starts with one; a header without flags and GSO needs no check (the
common case), any other is validated (virtio 1.2 §5.1.6) and a bad one
dropped and counted, as are reads shorter than the header and frames that
filled the whole read buffer (they may have been cut).

Two shapes come out: ``Frame`` records (the frame and its header view) for
the dispatcher, or ring records (``[tag][virtio-net header][frame]``, the
tag byte left free before each frame) that a shard's ingress takes without
a copy.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .link_tx import LinkError
from .wire.errors import Drop, MalformedPacket
from .wire.virtio import VirtioNetView

# One read into the buffer given: the frame's length (its full length if it
# was longer, for AF_PACKET's MSG_TRUNC), or None / BlockingIOError when the
# queue is empty.
Recv = Callable[[memoryview], "int | None"]


class Frame(NamedTuple):
    """One received frame: the Ethernet frame and, on a link with
    ``VNET_HDR``, its validated virtio-net header."""

    data: memoryview | bytes
    vnet: VirtioNetView | None


class RxCounters(Protocol):
    """Where a reader counts (a link, a queue reader)."""

    rx_frames: int
    rx_bytes: int  # frame bytes, virtio-net headers not included
    rx_errors: int  # reads the kernel failed (the next one may work)

    def _drop(self, reason: Drop) -> None: ...


class BatchReader:
    """Reads with ``recv`` into an arena of ``arena`` bytes, at most
    ``chunk`` bytes a frame; ``what`` names the source in errors. The
    counts go to ``counters``."""

    __slots__ = ("recv", "what", "vnet_hdr_len", "chunk", "counters", "_arena")

    def __init__(
        self,
        recv: Recv,
        what: str,
        vnet_hdr_len: int,
        counters: RxCounters,
        *,
        arena: int,
        chunk: int,
    ) -> None:
        self.recv = recv
        self.what = what
        self.vnet_hdr_len = vnet_hdr_len
        self.chunk = chunk
        self.counters = counters
        self._arena = memoryview(bytearray(max(arena, 2 * (chunk + 1))))

    def frames(self, max_frames: int) -> list[Frame]:
        """Up to ``max_frames`` frames, as many as are ready."""
        frames: list[Frame] = self._read(max_frames, None)
        return frames

    def records(self, max_frames: int, tag: int) -> list[memoryview]:
        """Up to ``max_frames`` ring records tagged ``tag``."""
        records: list[memoryview] = self._read(max_frames, tag)
        return records

    def _read(self, max_frames: int, tag: int | None) -> list[Any]:
        out: list[Any] = []
        append = out.append
        new = tuple.__new__  # Frame(a, b) costs twice tuple.__new__(Frame, (a, b))
        arena = self._arena
        recv = self.recv
        size = self.vnet_hdr_len
        chunk = self.chunk
        records = tag is not None
        mark = 0 if tag is None else tag
        head = 1 if records else 0  # a byte for the tag before each record's frame
        limit = len(arena) - chunk - head
        off = 0
        nbytes = 0
        while off <= limit and len(out) < max_frames:
            start = off + head
            try:
                n = recv(arena[start : start + chunk])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EBADFD, errno.EBADF):
                    raise LinkError(f"{self.what} is gone", exc.errno) from None
                # The kernel dropped this frame (or ENETDOWN once when an
                # interface goes down); the next read may work.
                self.counters.rx_errors += 1
                break
            if not n:  # None: EAGAIN, the queue is empty
                break
            if n >= chunk:  # filled the buffer (or longer, MSG_TRUNC): maybe cut
                self.counters._drop(Drop.LINK_FRAME_TOO_LONG)
                continue
            if n < size:
                self.counters._drop(Drop.VNET_TRUNCATED)
                continue
            end = start + n
            if size and (arena[start] or arena[start + 1]):  # flags or GSO: check them
                try:
                    view = VirtioNetView.checked(arena[start:end], size=size)
                except MalformedPacket as exc:
                    self.counters._drop(exc.reason)
                    continue
                if records:
                    arena[off] = mark
                    append(arena[off:end])
                else:
                    append(new(Frame, (view.payload, view)))
            elif records:
                arena[off] = mark
                append(arena[off:end])
            elif size:  # no flag, no GSO: nothing in the header to check
                buf = arena[start:end]
                append(new(Frame, (buf[size:], VirtioNetView(buf, size))))
            else:
                append(new(Frame, (arena[start:end], None)))
            nbytes += n
            off = end
        counters = self.counters
        counters.rx_frames += len(out)
        counters.rx_bytes += nbytes - size * len(out)
        return out
