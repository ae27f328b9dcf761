"""Single-producer single-consumer shared-memory ring: dispatcher -> shard.

One ring per shard carries the frames the dispatcher classified to it (records
laid out as ``common/record.py`` says); a second one per shard, the uplink,
carries the frames a shard loops back to the dispatcher (loopback routing). The
shape follows gVisor's ``pkg/tcpip/link/sharedmem`` pipe: one writer, one
reader, length-prefixed records, monotonically increasing head/tail byte
counters in the shared mapping, batched publish, and an eventfd doorbell rung
only when the reader has said it is about to sleep (a doorbell per record
costs a syscall on the producer and, with the reader on the other CPU, ~35 µs
of wake-up: a blocking hand-off to the other CPU costs ~30-70 µs here).

Memory (one memfd, mmapped ``MAP_SHARED`` by both processes)::

    [0, capacity)              data area, capacity a power of two
    [capacity, +4096)          control page, 64-bit words:
        +0    magic            _MAGIC, checked by attach()
        +8    capacity
        +64   tail             producer's byte counter (written only by it)
        +128  head             consumer's byte counter (written only by it)
        +192  waiting          consumer's sleep token: 0 awake, else a
                               sequence number (written only by the consumer)

Each word has a single writer, and tail, head and waiting sit on separate
64-byte cache lines. The memfd is sealed against resizing, so a peer can never
SIGBUS the other by truncating it. No ``multiprocessing.SharedMemory``: its
resource tracker may unlink a segment when an attaching process exits
(DESIGN.md).

Records: a native u32 length, the payload, zero padding to 8 bytes. A record
never wraps: when it does not fit before the end of the data area, the
producer writes ``WRAP_MARKER`` as the length and continues at offset 0 (the
space is always 8-aligned, so the 4-byte marker always fits). A record's
payload may be at most ``capacity // 4`` bytes, so that a record plus the
space a wrap wastes always fits in an empty ring.

Memory ordering. Python has no atomics; this module assumes x86-64:
* the control words are read and written through a ``memoryview.cast("Q")``
  whose item access is an 8-byte ``memcpy`` to or from an 8-aligned address,
  i.e. one ``mov``: never torn. (``struct`` with ``"<Q"`` would store byte by
  byte and may tear; the native format does not.)
* x86 TSO keeps stores in program order and loads in program order, and never
  moves a store before an earlier load. So the producer's data and length
  stores are visible before its tail store (publish), and the consumer's
  reads of a record complete before its head store (release).
* TSO does let a load pass an earlier store (the store buffer). The sleep
  handshake is exactly that pattern (consumer: store waiting, load tail;
  producer: store tail, load waiting), so both sides put a full fence between
  the two: acquiring and releasing a private ``threading.Lock`` executes
  ``lock``-prefixed instructions (glibc ``sem_trywait``/``sem_post``), which are
  full barriers on x86. ~140 ns, once per publish and once per sleep.
On a weakly ordered CPU (aarch64) these assumptions do not hold: ``create``
warns there.

Ownership (a received packet's buffer is lent, never kept): ``RingConsumer.read_batch`` and ``drain`` hand out
zero-copy views into the shared data area. A view is valid only until the
consumer calls ``release()`` (``drain`` releases when it returns): after that
the producer may overwrite the bytes under it. Anyone who keeps a frame past
that point copies it (``bytes(view)``).

Consumer loop under asyncio::

    loop.add_reader(cons.fileno(), on_doorbell)
    def on_doorbell():
        cons.clear_wakeup()
        step()
    def step():
        if cons.drain(handle_frame, 64) or not cons.prepare_to_sleep():
            loop.call_soon(step)        # more may be there: keep draining

Handing a ring to a child process: ``RingHandle`` (the two fds and the
capacity) pickles through ``multiprocess``/``multiprocessing`` spawn and
forkserver by wrapping the fds in ``reduction.DupFd``, and is inherited as-is
by fork. ``Ring.create(capacity)`` in the parent, ``Ring.attach(handle)`` in
the child; each side closes its own ``Ring``.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import platform
import select
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .fdpass import dup_for_child

__all__ = [
    "CONTROL_SIZE",
    "DEFAULT_CAPACITY",
    "DEFAULT_SPIN_US",
    "MIN_CAPACITY",
    "WRAP_MARKER",
    "Ring",
    "RingConsumer",
    "RingError",
    "RingHandle",
    "RingProducer",
]

# 4 MiB: ~2,700 MTU frames or 63 64-KiB GRO super-frames in flight; the
# largest record (capacity // 4 = 1 MiB) is far above 64 KiB + a
# virtio-net header (the largest GRO super-frame a TAP was seen to hand over: 64,294 B).
DEFAULT_CAPACITY = 1 << 22
MIN_CAPACITY = 64  # bytes; tests use tiny rings to force wrap-around
CONTROL_SIZE = 4096  # bytes: one page after the data area
# Spin before announcing sleep: a cross-CPU wake-up costs ~35 µs here
# (waking a process on the other CPU costs ~30 µs on a 2-vCPU VM); a short spin
# catches back-to-back batches without paying it. Bounded: 20 µs.
DEFAULT_SPIN_US = 20.0
WRAP_MARKER = 0xFFFF_FFFF  # a length that means "skip to offset 0"

_MAGIC = 0x31_474E_4952_4E53  # b"SNRING1\0" read as a little-endian u64
# Control-page word indices (8-byte words): one cache line apart.
_W_MAGIC = 0
_W_CAPACITY = 1
_W_TAIL = 64 // 8
_W_HEAD = 128 // 8
_W_WAITING = 192 // 8
# Records: a 4-byte length prefix, payload, padded to 8 bytes. The hot paths
# spell this as the literals 4 and (n + 11) & -8.
_PREFIX = 4
_IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


class RingError(RuntimeError):
    """Misuse of a ring (second producer, bad handle) or a corrupted ring."""


def _check_capacity(capacity: int) -> None:
    if capacity < MIN_CAPACITY or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two >= {MIN_CAPACITY}: {capacity}")


def _rebuild_handle(memfd: Any, eventfd: Any, capacity: int) -> RingHandle:
    return RingHandle(memfd.detach(), eventfd.detach(), capacity)


@dataclass(slots=True)
class RingHandle:
    """What a child needs to attach: the memfd, the eventfd, the capacity.

    Pickling duplicates the fds for the receiving process (see ``common/fdpass.py``);
    the process that unpickles owns the new fds, and ``Ring.attach`` takes
    them over (``Ring.close`` closes them). With fork the handle is inherited
    as-is and the fds are the inherited ones."""

    memfd: int
    eventfd: int
    capacity: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_handle,
            (dup_for_child(self.memfd), dup_for_child(self.eventfd), self.capacity),
        )


class Ring:
    """The shared mapping and the fds of one ring. Make at most one
    ``producer()`` and one ``consumer()`` per ring across all processes."""

    __slots__ = (
        "handle",
        "capacity",
        "_mm",
        "_data",
        "_u32",
        "_ctl",
        "_has_producer",
        "_has_consumer",
        "_closed",
    )

    def __init__(self, handle: RingHandle, mm: mmap.mmap) -> None:
        self.handle = handle
        self.capacity = handle.capacity
        self._mm = mm
        self._data = memoryview(mm)[: handle.capacity]
        self._u32 = self._data.cast("I")
        self._ctl = memoryview(mm)[handle.capacity :].cast("Q")
        self._has_producer = False
        self._has_consumer = False
        self._closed = False

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY, *, name: str = "shardnet-ring") -> Ring:
        """A new, empty ring (in the process that will hand it to a child)."""
        _check_capacity(capacity)
        if not _IS_X86_64:
            warnings.warn(
                "shardnet ring assumes x86-64 (TSO) memory ordering", RuntimeWarning, stacklevel=2
            )
        memfd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        efd = -1
        try:
            os.ftruncate(memfd, capacity + CONTROL_SIZE)
            fcntl.fcntl(
                memfd,
                fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
            )
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            mm = mmap.mmap(memfd, capacity + CONTROL_SIZE)
        except BaseException:
            os.close(memfd)
            if efd >= 0:
                os.close(efd)
            raise
        ring = cls(RingHandle(memfd, efd, capacity), mm)
        ring._ctl[_W_CAPACITY] = capacity
        ring._ctl[_W_MAGIC] = _MAGIC
        return ring

    @classmethod
    def attach(cls, handle: RingHandle) -> Ring:
        """Map the ring a handle names (in the child). Takes over the handle's
        fds: ``close()`` closes them."""
        _check_capacity(handle.capacity)
        size = handle.capacity + CONTROL_SIZE
        if os.fstat(handle.memfd).st_size != size:
            raise RingError(f"ring memfd is not {size} bytes")
        ring = cls(handle, mmap.mmap(handle.memfd, size))
        if ring._ctl[_W_MAGIC] != _MAGIC or ring._ctl[_W_CAPACITY] != handle.capacity:
            ring.close()
            raise RingError("not a shardnet ring, or capacity mismatch")
        return ring

    def producer(self) -> RingProducer:
        if self._has_producer:
            raise RingError("a ring has one producer")
        self._has_producer = True
        return RingProducer(self)

    def consumer(self, *, spin_us: float = DEFAULT_SPIN_US) -> RingConsumer:
        if self._has_consumer:
            raise RingError("a ring has one consumer")
        self._has_consumer = True
        return RingConsumer(self, spin_us=spin_us)

    @property
    def max_record(self) -> int:
        """Largest payload ``try_put`` accepts, in bytes."""
        return self.capacity // 4

    def used(self) -> int:
        """Published bytes not yet released by the consumer (a gauge)."""
        return self._ctl[_W_TAIL] - self._ctl[_W_HEAD]

    def close(self) -> None:
        """Unmap and close both fds. Views a consumer still holds keep the
        mapping alive until they are dropped; their producer/consumer become
        unusable."""
        if self._closed:
            return
        self._closed = True
        for view in (self._ctl, self._u32, self._data):
            view.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # outstanding record views: unmapped when the last one goes
        os.close(self.handle.memfd)
        os.close(self.handle.eventfd)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingProducer:
    """The writing side (the dispatcher). Never blocks.

    ``try_put`` copies one record in without making it visible; ``publish``
    makes everything put so far visible and rings the doorbell if the
    consumer announced it is going to sleep. ``drops`` counts records refused
    because the ring was full (the caller drops the frame, as a NIC does);
    ``oversize`` those refused for being larger than ``max_record``;
    ``doorbells`` the eventfd writes."""

    __slots__ = (
        "_mm",
        "_u32",
        "_ctl",
        "_efd",
        "_cap",
        "_mask",
        "_max",
        "_tail",
        "_published",
        "_head",
        "_rung",
        "_fence_acquire",
        "_fence_release",
        "drops",
        "oversize",
        "doorbells",
    )

    def __init__(self, ring: Ring) -> None:
        self._mm = ring._mm
        self._u32 = ring._u32
        self._ctl = ring._ctl
        self._efd = ring.handle.eventfd
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._max = ring.max_record
        self._tail = self._published = ring._ctl[_W_TAIL]
        self._head = ring._ctl[_W_HEAD]
        self._rung = 0  # the consumer's sleep token we last rang for
        fence = threading.Lock()
        self._fence_acquire = fence.acquire
        self._fence_release = fence.release
        self.drops = 0
        self.oversize = 0
        self.doorbells = 0

    def try_put(self, data: bytes | bytearray | memoryview) -> bool:
        """Copy ``data`` (bytes-like, format "B") into the ring. False if it
        does not fit now (counted in ``drops``) or ever (``oversize``)."""
        # Hot path: literals instead of module constants (a global load
        # per use costs more than the arithmetic). need = 4-byte prefix +
        # payload, rounded up to 8.
        n = len(data)
        need = (n + 11) & -8
        tail = self._tail
        pos = tail & self._mask
        if need <= self._cap - pos and tail + need - self._head <= self._cap and n <= self._max:
            self._u32[pos >> 2] = n
            self._mm[pos + 4 : pos + 4 + n] = data
            self._tail = tail + need
            return True
        return self._put_slow((data,), n, need, tail, pos)

    def try_put_parts(
        self, head: bytes | bytearray | memoryview, data: bytes | bytearray | memoryview
    ) -> bool:
        """``try_put(head + data)`` without building the concatenation: one
        record, two copies into the ring (a virtio-net header and its frame)."""
        h = len(head)
        n = h + len(data)
        need = (n + 11) & -8
        tail = self._tail
        pos = tail & self._mask
        if need <= self._cap - pos and tail + need - self._head <= self._cap and n <= self._max:
            self._u32[pos >> 2] = n
            self._mm[pos + 4 : pos + 4 + h] = head
            self._mm[pos + 4 + h : pos + 4 + n] = data
            self._tail = tail + need
            return True
        return self._put_slow((head, data), n, need, tail, pos)

    def try_put_tagged(
        self,
        tag: int,
        head: bytes | bytearray | memoryview,
        data: bytes | bytearray | memoryview,
    ) -> bool:
        """``try_put(bytes([tag]) + head + data)`` without building the
        concatenation: one record whose first byte is ``tag`` (0-255), e.g.
        the record tag of ``common/record.py``."""
        h = 1 + len(head)
        n = h + len(data)
        need = (n + 11) & -8
        tail = self._tail
        pos = tail & self._mask
        if need <= self._cap - pos and tail + need - self._head <= self._cap and n <= self._max:
            self._u32[pos >> 2] = n
            self._mm[pos + 4] = tag
            self._mm[pos + 5 : pos + 4 + h] = head
            self._mm[pos + 4 + h : pos + 4 + n] = data
            self._tail = tail + need
            return True
        return self._put_slow((bytes((tag,)), head, data), n, need, tail, pos)

    def _put_slow(
        self,
        parts: tuple[bytes | bytearray | memoryview, ...],
        n: int,
        need: int,
        tail: int,
        pos: int,
    ) -> bool:
        """A put when the record must wrap, the cached head says the ring
        may be full, or the record is too large."""
        if n > self._max:
            self.oversize += 1
            return False
        room = self._cap - pos
        total = need + room if need > room else need
        if tail + total - self._head > self._cap:
            self._head = self._ctl[_W_HEAD]  # refresh only when short of room
            if tail + total - self._head > self._cap:
                self.drops += 1
                return False
        if need > room:
            self._u32[pos >> 2] = WRAP_MARKER
            tail += room
            pos = 0
        self._u32[pos >> 2] = n
        at = pos + _PREFIX
        for part in parts:
            self._mm[at : at + len(part)] = part
            at += len(part)
        self._tail = tail + need
        return True

    def publish(self) -> None:
        """Make the records put so far visible; wake the consumer if it is
        asleep (or about to be)."""
        tail = self._tail
        if tail == self._published:
            return
        ctl = self._ctl
        ctl[_W_TAIL] = tail  # one 8-byte store, after the data stores (TSO)
        self._published = tail
        # Full fence: the load of `waiting` must not pass the tail store.
        self._fence_acquire()
        self._fence_release()
        token = ctl[_W_WAITING]
        if token and token != self._rung:
            # Only the consumer writes `waiting`; we remember the token we
            # rang for instead of clearing it (a clear could erase a newer
            # announcement and lose a wake-up).
            self._rung = token
            os.eventfd_write(self._efd, 1)
            self.doorbells += 1

    def put(self, data: bytes | bytearray | memoryview) -> bool:
        """``try_put`` then ``publish`` (one record; batch with try_put)."""
        ok = self.try_put(data)
        self.publish()
        return ok

    @property
    def pending(self) -> int:
        """Bytes put but not yet published."""
        return self._tail - self._published

    @property
    def position(self) -> int:
        """The byte counter just past the last record put: a record is
        consumed once ``consumed`` reaches the position taken after it."""
        return self._tail

    @property
    def consumed(self) -> int:
        """The consumer's released byte counter (one shared 8-byte load)."""
        head: int = self._ctl[_W_HEAD]
        return head


class RingConsumer:
    """The reading side (a shard). See the module docstring for the view
    ownership rule and the sleep protocol."""

    __slots__ = (
        "_data",
        "_u32",
        "_ctl",
        "_efd",
        "_cap",
        "_mask",
        "_max",
        "_read",
        "_sleep_token",
        "_spin_ns",
        "_poll",
        "_fence_acquire",
        "_fence_release",
        "wakeups",
    )

    def __init__(self, ring: Ring, *, spin_us: float = DEFAULT_SPIN_US) -> None:
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        self._data = ring._data
        self._u32 = ring._u32
        self._ctl = ring._ctl
        self._efd = ring.handle.eventfd
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._max = ring.max_record
        self._read = ring._ctl[_W_HEAD]  # read position, >= the released head
        self._sleep_token = 0
        self._spin_ns = int(spin_us * 1000)
        self._poll = select.poll()
        self._poll.register(self._efd, select.POLLIN)
        fence = threading.Lock()
        self._fence_acquire = fence.acquire
        self._fence_release = fence.release
        self.wakeups = 0  # doorbells consumed by clear_wakeup()

    def fileno(self) -> int:
        """The eventfd: readable after a doorbell (for ``loop.add_reader``)."""
        return self._efd

    def has_data(self) -> bool:
        """Published records not yet read."""
        return self._ctl[_W_TAIL] != self._read

    def read_batch(self, max_records: int = 64) -> list[memoryview]:
        """Up to ``max_records`` published records as views into the ring,
        valid until ``release()``. Calling again before release continues
        after the records already returned."""
        out: list[memoryview] = []
        pos_abs = self._read
        tail = self._ctl[_W_TAIL]
        u32, data, mask, cap, limit = self._u32, self._data, self._mask, self._cap, self._max
        while pos_abs < tail and len(out) < max_records:
            pos = pos_abs & mask
            n = u32[pos >> 2]
            if n == WRAP_MARKER:
                pos_abs += cap - pos
                continue
            if n > limit:
                raise RingError(f"corrupted ring: record length {n} at {pos_abs}")
            out.append(data[pos + 4 : pos + 4 + n])
            pos_abs += (n + 11) & -8  # prefix + payload, padded to 8
        if pos_abs > tail:
            raise RingError(f"corrupted ring: read position {pos_abs} past tail {tail}")
        self._read = pos_abs
        return out

    def release(self) -> None:
        """Give everything read so far back to the producer. Views from
        earlier ``read_batch`` calls are invalid from here on."""
        self._ctl[_W_HEAD] = self._read  # after our reads of the records (TSO)

    def drain(self, fn: Callable[[memoryview], object], max_records: int = 64) -> int:
        """Call ``fn(view)`` for up to ``max_records`` records, then release
        them; returns how many. A view is valid only during its call. If
        ``fn`` raises, the records up to and including that one are consumed
        (a poison frame is not redelivered) and the exception propagates."""
        pos_abs = self._read
        tail = self._ctl[_W_TAIL]
        u32, data, mask, cap, limit = self._u32, self._data, self._mask, self._cap, self._max
        count = 0
        try:
            while pos_abs < tail and count < max_records:
                pos = pos_abs & mask
                n = u32[pos >> 2]
                if n == WRAP_MARKER:
                    pos_abs += cap - pos
                    continue
                nxt = pos_abs + ((n + 11) & -8)  # prefix + payload, padded to 8
                if n > limit or nxt > tail:
                    raise RingError(f"corrupted ring: record length {n} at {pos_abs}")
                pos_abs = nxt
                count += 1
                fn(data[pos + 4 : pos + 4 + n])
        finally:
            self._read = pos_abs
            self._ctl[_W_HEAD] = pos_abs
        return count

    def prepare_to_sleep(self) -> bool:
        """Announce that we are about to block on ``fileno()``. Spins up to
        ``spin_us`` first; returns False (not announced, do not sleep) if data
        is or becomes available, True if the producer will ring the doorbell
        for anything it publishes from now on."""
        ctl, read = self._ctl, self._read
        if ctl[_W_TAIL] != read:
            return False
        if self._spin_ns:
            clock = time.perf_counter_ns
            deadline = clock() + self._spin_ns
            while clock() < deadline:
                if ctl[_W_TAIL] != read:
                    return False
        self._sleep_token += 1
        ctl[_W_WAITING] = self._sleep_token
        # Full fence: the re-check of the tail must not pass the store above.
        self._fence_acquire()
        self._fence_release()
        if ctl[_W_TAIL] != read:
            ctl[_W_WAITING] = 0
            return False
        return True

    def clear_wakeup(self) -> None:
        """We are awake: withdraw the sleep announcement and consume any
        doorbell (non-blocking)."""
        self._ctl[_W_WAITING] = 0
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        self.wakeups += 1

    def wait(self, timeout: float | None = None) -> bool:
        """Block (spin, then sleep on the eventfd) until data is published or
        ``timeout`` seconds pass; True if data is available. A stale doorbell
        (rung for an announcement the consumer then withdrew) only makes it go
        round again. For consumers without an event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.prepare_to_sleep():
                return True
            if deadline is None:
                ms = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.clear_wakeup()
                    return self._ctl[_W_TAIL] != self._read
                ms = math.ceil(remaining * 1000)
            try:
                self._poll.poll(ms)
            finally:
                self.clear_wakeup()
            if self._ctl[_W_TAIL] != self._read:
                return True
