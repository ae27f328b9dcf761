"""The link's send side (common/link_tx.py) over socketpairs: no device, no root.

A SOCK_SEQPACKET / SOCK_DGRAM socketpair keeps frame boundaries, so it stands
in for a TAP fd: one writev is one frame.
"""

from __future__ import annotations

import errno
import os
import pickle
import socket

import multiprocess
import pytest

from shardnet.common.link_tx import (
    ChannelWriter,
    LinkError,
    LinkTxSpec,
    TapWriter,
    TunWriter,
    open_writer,
)
from shardnet.common.wire.virtio import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    VirtioNetHeader,
    VirtioNetView,
)

FRAME = [b"\x02\x00\x00\x00\x00\x01" * 2 + b"\x08\x00", b"payload"]
TSO = VirtioNetHeader(F_NEEDS_CSUM, GSO_TCPV4, 54, 1460, 34, 16)


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def test_zero_header_when_none_given(pair) -> None:
    a, b = pair
    w = TapWriter(a.fileno(), 10)
    w.write(FRAME)
    assert b.recv(4096) == bytes(10) + b"".join(FRAME)
    assert (w.frames, w.bytes, w.drops) == (1, 21, 0)


def test_header_written_before_parts(pair) -> None:
    a, b = pair
    w = TapWriter(a.fileno(), 12)
    w.write(FRAME, TSO)
    got = b.recv(4096)
    assert VirtioNetHeader.parse(got + bytes(60), size=12) == TSO
    assert got[12:] == b"".join(FRAME)


def test_no_header_link(pair) -> None:
    a, b = pair
    w = TapWriter(a.fileno(), 0)
    w.write(FRAME, VirtioNetHeader())  # asks for nothing: fine
    assert b.recv(4096) == b"".join(FRAME)
    with pytest.raises(ValueError):
        w.write(FRAME, TSO)  # an offload the link cannot do is a bug, not a drop


def test_fd_made_non_blocking(pair) -> None:
    a, _ = pair
    a.setblocking(True)
    TapWriter(a.fileno(), 10)
    assert not os.get_blocking(a.fileno())


def test_full_queue_drops_never_blocks(pair) -> None:
    a, _ = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    w = TapWriter(a.fileno(), 10)
    for _ in range(2000):
        w.write([b"x" * 1000])
    assert w.drops > 0 and w.errors == 0
    assert w.frames + w.drops == 2000


def test_refused_frame_counted_as_error() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        w = TapWriter(a.fileno(), 0)
        w.write([bytes(4 * 1024 * 1024)])  # EMSGSIZE
        assert (w.frames, w.drops, w.errors, w.last_error) == (0, 1, 1, errno.EMSGSIZE)


def test_dead_fd_raises() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    w = TapWriter(a.fileno(), 10)
    a.close()
    b.close()
    with pytest.raises(OSError) as exc:
        w.write(FRAME)
    assert exc.value.errno == errno.EBADF


def test_write_batch(pair) -> None:
    a, b = pair
    w = TapWriter(a.fileno(), 10)
    w.write_batch([(FRAME, None), ([b"second"], TSO)])
    assert b.recv(4096)[10:] == b"".join(FRAME)
    second = b.recv(4096)
    assert VirtioNetView.checked(second + bytes(60)).header() == TSO
    assert w.frames == 2


def test_open_writer_duplicates_an_int_fd(pair) -> None:
    a, b = pair
    w = open_writer(LinkTxSpec("tap", 10, fd=a.fileno()))
    assert w.fd != a.fileno()
    w.write(FRAME)
    w.close()
    os.fstat(a.fileno())  # the link's own fd stays open
    assert b.recv(4096)[10:] == b"".join(FRAME)


def _child_writes(spec: LinkTxSpec) -> None:
    writer = open_writer(spec)
    writer.write([b"from", b" the child"], TSO)
    writer.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spec_carries_the_fd_to_a_child(pair, method: str) -> None:
    """The supervisor passes the spec as a Process argument: pickling wraps
    the fd in multiprocess's DupFd and the child writes on its duplicate."""
    a, b = pair
    ctx = multiprocess.get_context(method)
    proc = ctx.Process(target=_child_writes, args=(LinkTxSpec("tap", 10, fd=a.fileno()),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    b.settimeout(5)
    got = b.recv(4096)
    assert VirtioNetHeader.parse(got[:10] + bytes(60)) == TSO
    assert got[10:] == b"from the child"


def test_channel_spec_is_in_process_only() -> None:
    w = ChannelWriter()
    with pytest.raises(TypeError):
        pickle.dumps(w)
    with pytest.raises(TypeError):
        pickle.dumps(LinkTxSpec("channel", channel=w))
    assert open_writer(LinkTxSpec("channel", channel=w)) is w


def test_channel_writer_queue_and_hook() -> None:
    w = ChannelWriter(vnet_hdr_len=10, capacity=2)
    h = VirtioNetHeader(F_NEEDS_CSUM, csum_start=34, csum_offset=6)
    w.write(FRAME, h)
    h.csum_offset = 16  # the writer kept its own copy
    w.write([b"b"])
    w.write([b"c"])
    assert (w.frames, w.drops, w.bytes) == (2, 1, 22)
    assert w.take() == [(b"".join(FRAME), VirtioNetHeader(1, 0, 0, 0, 34, 6)), (b"b", None)]
    seen = []
    hooked = ChannelWriter(on_write=lambda f, v: seen.append(f))
    hooked.write([b"x", b"y"])
    assert seen == [b"xy"] and hooked.take() == []
    with pytest.raises(ValueError):
        hooked.write([b"z"], TSO)


def test_bad_specs() -> None:
    with pytest.raises(ValueError):
        open_writer(LinkTxSpec("carrier-pigeon"))
    with pytest.raises(ValueError):
        open_writer(LinkTxSpec("packet"))
    with pytest.raises(ValueError):
        TapWriter(0, 11)


def test_link_error_is_one_line() -> None:
    e = LinkError("no permission to open /dev/net/tun", errno.EACCES)
    assert isinstance(e, OSError) and e.errno == errno.EACCES
    assert str(e) == "no permission to open /dev/net/tun"


IP_FRAME = [b"\x02\x00\x00\x00\x00\x01" * 2 + b"\x08\x00" + b"\x45" + bytes(19), b"payload"]


def test_tun_writer_sends_the_ip_packet_alone(pair) -> None:
    a, b = pair
    w = TunWriter(a.fileno(), 0)
    w.write(IP_FRAME)
    w.write([IP_FRAME[0][:14], IP_FRAME[0][14:], b"x"])  # the header as a part of its own
    assert b.recv(4096) == IP_FRAME[0][14:] + b"payload"
    assert b.recv(4096) == IP_FRAME[0][14:] + b"x"
    assert (w.frames, w.bytes, w.drops) == (2, 48, 0)


def test_tun_writer_moves_offload_offsets_to_the_ip_header(pair) -> None:
    a, b = pair
    w = TunWriter(a.fileno(), 10)
    w.write(IP_FRAME, TSO)
    got = b.recv(4096)
    hdr = VirtioNetHeader.parse(got + bytes(60), size=10)
    # On a TUN, tun_get_user() counts csum_start and hdr_len from the IP header.
    assert (hdr.csum_start, hdr.hdr_len, hdr.gso_size) == (20, 40, 1460)
    assert got[10:] == IP_FRAME[0][14:] + b"payload"
    assert TSO.csum_start == 34  # the caller's header is not changed


def test_tun_writer_drops_what_is_not_ip(pair) -> None:
    a, b = pair
    w = TunWriter(a.fileno(), 0)
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    w.write([arp])
    w.write([b"short"])
    assert (w.frames, w.drops) == (0, 2)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(4096)


def test_tun_spec_opens_a_tun_writer(pair) -> None:
    a, _ = pair
    w = open_writer(LinkTxSpec("tun", 10, fd=a.fileno()))
    try:
        assert isinstance(w, TunWriter) and w.fd != a.fileno()
    finally:
        w.close()
