"""The receive loop the links share (common/rx_batch.py), over a datagram
socketpair: one frame per read, as a TAP gives them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from shardnet.common.link_tx import LinkError
from shardnet.common.rx_batch import BatchReader
from shardnet.common.wire.errors import Drop

FRAME = b"\x02" * 12 + b"\x08\x00" + bytes(46)
VNET = 10


class Counts:
    def __init__(self) -> None:
        self.rx_frames = self.rx_bytes = self.rx_errors = 0
        self.drops: dict[Drop, int] = {}

    def _drop(self, reason: Drop) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_frames_with_headers_checked_only_when_they_say_something(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    counts = Counts()
    reader = BatchReader(b.recv_into, "test", VNET, counts, arena=1 << 16, chunk=2048)
    a.send(bytes(VNET) + FRAME)  # no flag, no GSO
    a.send(b"\x01" + bytes(VNET - 1) + FRAME)  # NEEDS_CSUM with csum_start 0: checked, fine
    a.send(bytes(4))  # shorter than the header
    a.send(b"\x80" + bytes(VNET - 1) + FRAME)  # an unknown flag
    a.send(bytes(VNET) + bytes(2048))  # filled the read buffer: maybe cut
    frames = reader.frames(64)
    assert [bytes(f.data) for f in frames] == [FRAME, FRAME]
    assert frames[0].vnet is not None and frames[1].vnet is not None
    assert counts.drops == {
        Drop.VNET_TRUNCATED: 1,
        Drop.VNET_BAD_FLAGS: 1,
        Drop.LINK_FRAME_TOO_LONG: 1,
    }
    assert (counts.rx_frames, counts.rx_bytes) == (2, 2 * len(FRAME))
    assert reader.frames(64) == []  # the queue is empty: no error


def test_records_leave_a_tag_byte_before_each_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    counts = Counts()
    reader = BatchReader(b.recv_into, "test", 0, counts, arena=1 << 16, chunk=2048)
    for i in range(3):
        a.send(FRAME[:-1] + bytes([i]))
    records = reader.records(2, 7)
    assert [bytes(r) for r in records] == [b"\x07" + FRAME[:-1] + bytes([i]) for i in range(2)]
    assert [bytes(r)[-1] for r in reader.records(64, 7)] == [2]
    assert counts.rx_frames == 3


def test_a_closed_source_is_a_link_error(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    reader = BatchReader(b.recv_into, "the test link", 0, Counts(), arena=1 << 16, chunk=2048)
    b.close()
    with pytest.raises(LinkError, match="the test link is gone"):
        reader.frames(64)
