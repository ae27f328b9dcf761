"""The link's send side: every process writes its own frames to the link.

Shards never hand frames back to the dispatcher: shard N writes straight to
the TAP (a duplicate of the dispatcher's fd) or through its own AF_PACKET
socket. The dispatcher describes the link once in a small picklable
``LinkTxSpec``; each process turns it into a ``FrameWriter`` with
``open_writer(spec)``.

Writes never block: the fd is non-blocking, and a frame the kernel cannot
take now (``EAGAIN``, ``ENOBUFS``) is dropped and counted, as a NIC drops on
a full queue; TCP retransmits. A frame the kernel refuses (a bad virtio-net
header, too big, link down) is dropped and counted in ``errors`` too. Only a
dead link (its fd closed or the device gone) raises.

Counters are plain ints (``frames``, ``bytes``, ``drops``, ``errors``), read
by the stats snapshot about once a second.

A TAP takes one frame per ``writev`` (there is no batching either way,
measured: a TAP has no batch read or write), so ``write_batch`` is a loop kept for the interface's
sake: a future link (AF_XDP, a vhost ring) can batch behind it.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .wire.virtio import VIRTIO_NET_HDR_LEN, VirtioNetHeader

BytesLike = bytes | bytearray | memoryview
_U16LE = struct.Struct("<H")

# linux/if_packet.h
SOL_PACKET = 263
PACKET_VNET_HDR = 15
ETH_P_ALL = 0x0003

# A frame the kernel cannot queue now: dropped and counted, never waited for.
_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
# A frame the kernel refused (bad vnet header EINVAL, larger than the MTU
# EMSGSIZE, link down EIO/ENETDOWN): dropped and counted as an error too.
_REFUSED = frozenset(
    {errno.EINVAL, errno.EMSGSIZE, errno.EIO, errno.ENETDOWN, errno.ENXIO, errno.EFAULT}
)


class LinkError(OSError):
    """A link cannot be opened or used. ``str()`` is one line that the CLI
    prints as it is (no ``[Errno N]`` prefix)."""

    def __init__(self, message: str, err: int | None = 0) -> None:
        super().__init__(err or 0, message)

    def __str__(self) -> str:
        return str(self.strerror)


class FrameWriter(Protocol):
    """Writes whole Ethernet frames, given as parts (headers, payload) that
    are sent without joining them."""

    @property
    def frames(self) -> int:
        """Frames sent."""
        ...

    @property
    def bytes(self) -> int:
        """Ethernet bytes sent (no virtio-net header)."""
        ...

    @property
    def drops(self) -> int:
        """Frames not sent, whatever the cause."""
        ...

    @property
    def errors(self) -> int:
        """Of those, frames the kernel refused."""
        ...

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        """Send one frame. ``vnet`` asks the link for checksum offload or
        segmentation; None sends a zero header (nothing asked)."""
        ...

    def write_batch(
        self, frames: Iterable[tuple[Sequence[BytesLike], VirtioNetHeader | None]]
    ) -> None: ...

    def close(self) -> None: ...


def _check_plain(vnet: VirtioNetHeader | None) -> None:
    if vnet is not None and not vnet.is_plain:
        raise ValueError("this link has no virtio-net header: it cannot offload " + vnet.summary())


class _CountingWriter:
    """Counters and the error policy shared by the fd-based writers."""

    frames: int
    bytes: int
    drops: int
    errors: int
    last_error: int

    def _reset_counters(self) -> None:
        self.frames = self.bytes = self.drops = self.errors = 0
        self.last_error = 0  # errno of the last refused frame

    def _failed(self, exc: OSError) -> None:
        if exc.errno in _BUSY:
            self.drops += 1
        elif exc.errno in _REFUSED:
            self.drops += 1
            self.errors += 1
            self.last_error = exc.errno
        else:
            raise exc

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        raise NotImplementedError

    def write_batch(
        self, frames: Iterable[tuple[Sequence[BytesLike], VirtioNetHeader | None]]
    ) -> None:
        write = self.write
        for parts, vnet in frames:
            write(parts, vnet)


class TapWriter(_CountingWriter):
    """Writes frames to a TAP fd with ``os.writev([vnet header, *parts])``
    (no header when ``vnet_hdr_len`` is 0). The fd is made non-blocking.
    ``owns_fd``: close the fd on ``close()`` (a duplicate received by a
    shard), or leave it to its owner (the dispatcher's link)."""

    def __init__(self, fd: int, vnet_hdr_len: int = VIRTIO_NET_HDR_LEN, *, owns_fd: bool = False):
        if vnet_hdr_len not in (0, 10, 12):
            raise ValueError(f"vnet_hdr_len must be 0, 10 or 12, not {vnet_hdr_len}")
        os.set_blocking(fd, False)
        self.fd = fd
        self.vnet_hdr_len = vnet_hdr_len
        self.owns_fd = owns_fd
        self._zero = bytes(vnet_hdr_len)
        self._hdr = bytearray(vnet_hdr_len)  # reused: writev copies before returning
        self._reset_counters()

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        size = self.vnet_hdr_len
        bufs: Sequence[BytesLike]
        if size:
            if vnet is None:
                bufs = [self._zero, *frame_parts]
            else:
                vnet.emit(self._hdr, 0, size=size)
                bufs = [self._hdr, *frame_parts]
        else:
            _check_plain(vnet)
            bufs = frame_parts
        try:
            n = os.writev(self.fd, bufs)
        except OSError as exc:
            self._failed(exc)
            return
        self.frames += 1
        self.bytes += n - size

    def close(self) -> None:
        if self.owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


# A TUN link carries IP packets with no link header (the IFF_TUN mode of
# linux/if_tun.h). The stack frames every packet for Ethernet alike; on a TUN
# the first 14 bytes are a placeholder (``tun_frame_header``) that the link
# adds to what it reads and ``TunWriter`` drops from what it writes, so one
# output path serves both kinds of links.
ETH_HLEN = 14
_ETHERTYPE_IP = (b"\x08\x00", b"\x86\xdd")  # IPv4, IPv6: all a TUN carries
_VNET_HDR_LEN_AT = 2  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start
_VNET_CSUM_START_AT = 6


def tun_frame_header(buf: bytearray | memoryview, at: int, dst_mac: bytes, version: int) -> None:
    """Write at ``buf[at:at + 14]`` the Ethernet header a TUN link puts
    before an IP packet of ``version``: our MAC as destination, zeros as
    source (a point-to-point peer has no address), the ethertype of the
    version; 0 for anything else, which the stack counts as unhandled."""
    buf[at : at + 6] = dst_mac
    buf[at + 6 : at + 12] = bytes(6)
    buf[at + 12 : at + 14] = (
        b"\x08\x00" if version == 4 else b"\x86\xdd" if version == 6 else b"\0\0"
    )


class TunWriter(TapWriter):
    """Writes IP packets to a TUN fd (``IFF_TUN|IFF_NO_PI``): the frame's
    Ethernet header is left out, and the virtio-net header's offsets, which
    the stack counts from the Ethernet header, are moved back to the IP
    header (on a TUN, ``csum_start`` and ``hdr_len`` count from the IP
    header: ``tun_get_user()`` builds the skb from the packet alone). A
    frame that is not IPv4 or IPv6 (ARP has no place on an L3 link) is
    dropped and counted."""

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        first = frame_parts[0]
        if len(first) < ETH_HLEN or bytes(first[12:14]) not in _ETHERTYPE_IP:
            self.drops += 1
            return
        parts: list[BytesLike] = list(frame_parts[1:])
        if len(first) > ETH_HLEN:
            parts.insert(0, memoryview(first)[ETH_HLEN:])
        size = self.vnet_hdr_len
        bufs: list[BytesLike]
        if size:
            if vnet is None:
                bufs = [self._zero, *parts]
            else:
                hdr = self._hdr
                vnet.emit(hdr, 0, size=size)
                if vnet.hdr_len:
                    _U16LE.pack_into(hdr, _VNET_HDR_LEN_AT, max(vnet.hdr_len - ETH_HLEN, 0))
                if vnet.csum_start:
                    _U16LE.pack_into(hdr, _VNET_CSUM_START_AT, vnet.csum_start - ETH_HLEN)
                bufs = [hdr, *parts]
        else:
            _check_plain(vnet)
            bufs = parts
        try:
            n = os.writev(self.fd, bufs)
        except OSError as exc:
            self._failed(exc)
            return
        self.frames += 1
        self.bytes += n - size


class PacketSocketWriter(_CountingWriter):
    """Writes frames through its own AF_PACKET socket bound to ``ifname``.

    The socket is opened with protocol 0, so it receives nothing (no queue
    fills up behind a socket that only sends). With ``vnet_hdr_len`` 10 the
    socket takes a virtio-net header first (``PACKET_VNET_HDR``): checksum
    offload and GSO on transmit, as on a TAP."""

    def __init__(self, ifname: str, vnet_hdr_len: int = 0) -> None:
        if vnet_hdr_len not in (0, VIRTIO_NET_HDR_LEN):
            raise ValueError(
                f"AF_PACKET takes a 10-byte virtio-net header or none, not {vnet_hdr_len}"
            )
        self.ifname = ifname
        self.vnet_hdr_len = vnet_hdr_len
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise LinkError("AF_PACKET needs CAP_NET_RAW: run as root", exc.errno) from None
        try:
            if vnet_hdr_len:
                self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self.sock.bind((ifname, 0))
        except OSError as exc:
            self.sock.close()
            raise LinkError(f"cannot send on {ifname}: {exc.strerror}", exc.errno or 0) from None
        self.sock.setblocking(False)
        self._zero = bytes(vnet_hdr_len)
        self._hdr = bytearray(vnet_hdr_len)
        self._reset_counters()

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        size = self.vnet_hdr_len
        bufs: Sequence[BytesLike]
        if size:
            if vnet is None:
                bufs = [self._zero, *frame_parts]
            else:
                vnet.emit(self._hdr, 0, size=size)
                bufs = [self._hdr, *frame_parts]
        else:
            _check_plain(vnet)
            bufs = frame_parts
        try:
            n = self.sock.sendmsg(bufs)
        except OSError as exc:
            self._failed(exc)
            return
        self.frames += 1
        self.bytes += n - size

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class ChannelWriter:
    """The in-memory send side of a channel link (tests, the embedded
    stack). Frames are joined into ``bytes`` and queued (at most
    ``capacity``; more are dropped and counted) until collected, or handed
    to ``on_write`` instead when it is set. In-process only: it refuses to
    be pickled."""

    def __init__(
        self,
        *,
        vnet_hdr_len: int = 0,
        capacity: int = 65536,
        on_write: Callable[[bytes, VirtioNetHeader | None], None] | None = None,
    ) -> None:
        self.vnet_hdr_len = vnet_hdr_len
        self.capacity = capacity
        self.on_write = on_write
        self.queue: deque[tuple[bytes, VirtioNetHeader | None]] = deque()
        self.frames = self.bytes = self.drops = self.errors = 0

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        if not self.vnet_hdr_len:
            _check_plain(vnet)
            vnet = None
        elif vnet is not None:
            vnet = dataclasses.replace(vnet)  # the caller may reuse its header
        frame = b"".join(frame_parts)
        if self.on_write is not None:
            self.on_write(frame, vnet)
        elif len(self.queue) >= self.capacity:
            self.drops += 1
            return
        else:
            self.queue.append((frame, vnet))
        self.frames += 1
        self.bytes += len(frame)

    def write_batch(
        self, frames: Iterable[tuple[Sequence[BytesLike], VirtioNetHeader | None]]
    ) -> None:
        for parts, vnet in frames:
            self.write(parts, vnet)

    def take(self) -> list[tuple[bytes, VirtioNetHeader | None]]:
        """Every queued frame with its header, oldest first; empties the queue."""
        out = []
        popleft = self.queue.popleft
        while self.queue:
            out.append(popleft())
        return out

    def close(self) -> None:
        pass

    def __reduce__(self) -> Any:
        raise TypeError("a channel link's send side works in-process only")


@dataclass(frozen=True, slots=True)
class LinkTxSpec:
    """How a process opens its own send side of the link.

    * ``"tap"``: ``fd`` is the TAP fd. Pickling (the supervisor passing the
      spec to a shard started with spawn or forkserver) wraps it in
      ``multiprocess.reduction.DupFd``, so the child receives its own
      duplicate; ``open_writer`` detaches it. Under fork the int is inherited.
    * ``"tun"``: as ``"tap"``, a TUN fd (IP packets, ``TunWriter``).
    * ``"packet"``: ``ifname``; the writer opens its own AF_PACKET socket.
    * ``"channel"``: ``channel``, in-process only.

    ``pcap_path``: record every frame written, appended to that pcap file
    (see ``common/pcap.py``).
    """

    kind: str
    vnet_hdr_len: int = 0
    fd: Any = None  # int, or an object with detach() -> int after unpickling
    ifname: str | None = None
    channel: ChannelWriter | None = None
    pcap_path: str | None = None

    def __reduce__(self) -> Any:
        if self.kind == "channel":
            raise TypeError("a channel link's send side works in-process only")
        fd = self.fd
        if isinstance(fd, int):
            from multiprocess.reduction import DupFd

            fd = DupFd(fd)
        return (LinkTxSpec, (self.kind, self.vnet_hdr_len, fd, self.ifname, None, self.pcap_path))


def open_writer(spec: LinkTxSpec) -> FrameWriter:
    """The ``FrameWriter`` for ``spec`` in this process. A TAP writer owns
    its fd: a duplicate (``os.dup`` of an inherited int, or the one a
    ``DupFd`` hands over), closed by ``close()``."""
    writer: FrameWriter
    if spec.kind == "tap" or spec.kind == "tun":
        fd = spec.fd.detach() if hasattr(spec.fd, "detach") else os.dup(spec.fd)
        cls = TapWriter if spec.kind == "tap" else TunWriter
        writer = cls(fd, spec.vnet_hdr_len, owns_fd=True)
    elif spec.kind == "packet":
        if spec.ifname is None:
            raise ValueError("a packet link spec needs ifname")
        writer = PacketSocketWriter(spec.ifname, spec.vnet_hdr_len)
    elif spec.kind == "channel":
        if spec.channel is None:
            raise ValueError("a channel link spec needs its channel")
        writer = spec.channel
    else:
        raise ValueError(f"unknown link kind {spec.kind!r}")
    if spec.pcap_path is not None:
        from .pcap import PcapTeeWriter, PcapWriter

        writer = PcapTeeWriter(writer, PcapWriter.append(spec.pcap_path))
    return writer
