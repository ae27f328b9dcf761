"""The TCP endpoint's byte queues, built to copy each byte once.

``SendBuffer`` holds what the application wrote, from SND.UNA on, as a
list of immutable ``bytes`` chunks: a write of ``bytes`` is kept as it is
(asyncio's transports may keep the caller's bytes: they are immutable),
other buffers are copied once, and small writes are gathered in a tail that
becomes a chunk when a segment needs it. A segment's payload is a
``memoryview`` into one chunk (no copy; ``writev`` sends it) or, when it
spans chunks, one join. Acknowledged bytes are dropped by moving a start
offset, never by shifting the rest.

``RecvBuffer`` holds in-order received bytes as the chunks they arrived
in (one copy out of the ring, which is reused); a read returns a chunk as
it is when it fits, else joins or splits.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TypeGuard

BytesLike = bytes | bytearray | memoryview


def immutable(data: BytesLike) -> TypeGuard[bytes | memoryview]:
    """``bytes``, or a read-only view of ``bytes``: safe to keep as it is
    (the caller cannot change it later)."""
    if type(data) is bytes:
        return True
    return type(data) is memoryview and data.readonly and type(data.obj) is bytes


CHUNK_MIN = 4096  # bytes: smaller writes are gathered in the tail
TAIL_MAX = 65536  # bytes: a tail this long becomes a chunk
COMPACT_AFTER = 64  # dropped chunks kept in the lists before compacting them


class SendBuffer:
    __slots__ = ("_chunks", "_starts", "_head", "_begin", "_end", "_tail")

    def __init__(self) -> None:
        self._chunks: list[bytes | memoryview] = []  # bytes, or read-only views of bytes
        self._starts: list[int] = []  # stream offset of each chunk's first byte
        self._head = 0  # chunks before this index are fully acknowledged
        self._begin = 0  # stream offset of the first byte held (SND.UNA's)
        self._end = 0  # stream offset after the last byte held
        self._tail = bytearray()  # the newest bytes, not yet a chunk

    def __len__(self) -> int:
        return self._end - self._begin

    def __bool__(self) -> bool:
        return self._end != self._begin

    def append(self, data: BytesLike) -> None:
        """Queue ``data`` (the caller has checked the room)."""
        n = len(data)
        if not n:
            return
        if n >= CHUNK_MIN:
            self._seal()
            self._chunks.append(data if immutable(data) else bytes(data))  # else: a copy
            self._starts.append(self._end)
            self._end += n
            return
        self._tail += data
        self._end += n
        if len(self._tail) >= TAIL_MAX:
            self._seal()

    def _seal(self) -> None:
        tail = self._tail
        if tail:
            self._chunks.append(bytes(tail))
            self._starts.append(self._end - len(tail))
            tail.clear()

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes (acknowledged)."""
        if n <= 0:
            return
        self._begin = min(self._begin + n, self._end)
        if self._begin > self._end - len(self._tail):
            self._seal()
        chunks, starts, head, begin = self._chunks, self._starts, self._head, self._begin
        while head < len(chunks) and starts[head] + len(chunks[head]) <= begin:
            head += 1
        if head > COMPACT_AFTER and 2 * head > len(chunks):
            del chunks[:head]
            del starts[:head]
            head = 0
        self._head = head

    def peek(self, off: int, n: int) -> bytes | memoryview:
        """``n`` bytes from ``off`` bytes after the first held one (the
        caller keeps ``off + n <= len(self)``)."""
        if n <= 0:
            return b""
        a = self._begin + off
        if a + n > self._end - len(self._tail):
            self._seal()
        chunks, starts = self._chunks, self._starts
        i = bisect_right(starts, a, self._head) - 1
        chunk = chunks[i]
        s = a - starts[i]
        if s + n <= len(chunk):
            if s == 0 and n == len(chunk):
                return chunk
            return memoryview(chunk)[s : s + n]
        parts: list[bytes | memoryview] = [memoryview(chunk)[s:]]
        left = n - (len(chunk) - s)
        while left > 0:
            i += 1
            chunk = chunks[i]
            if len(chunk) <= left:
                parts.append(chunk)
                left -= len(chunk)
            else:
                parts.append(memoryview(chunk)[:left])
                left = 0
        return b"".join(parts)


class RecvBuffer:
    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []  # a list: a deque costs 600 bytes per connection
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len != 0

    def append(self, data: BytesLike) -> None:
        """Queue ``data`` (copied: a received frame's buffer is reused)."""
        if data:
            self._chunks.append(bytes(data))
            self._len += len(data)

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` from the front (b"" when empty)."""
        chunks = self._chunks
        if not chunks or max_bytes <= 0:
            return b""
        first = chunks[0]
        if len(first) > max_bytes:
            chunks[0] = first[max_bytes:]
            self._len -= max_bytes
            return first[:max_bytes]
        del chunks[0]
        if not chunks or len(first) + len(chunks[0]) > max_bytes:
            self._len -= len(first)
            return first
        parts = [first]
        total = len(first)
        k = 0
        while k < len(chunks) and total + len(chunks[k]) <= max_bytes:
            parts.append(chunks[k])
            total += len(chunks[k])
            k += 1
        del chunks[:k]
        self._len -= total
        return b"".join(parts)
