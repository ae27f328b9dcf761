"""Classic pcap files (LINKTYPE_ETHERNET, or LINKTYPE_RAW for a TUN link;
microsecond timestamps), written by several processes at once without a lock.

The design: one file, every record appended with one ``writev`` on an fd
opened with ``O_APPEND``. Linux serialises writes to a regular file under
the inode lock and positions each ``O_APPEND`` write at the end of the file
atomically, so the records of the dispatcher and of every shard interleave
whole, never torn. The dispatcher creates the file (``PcapWriter.create``:
truncate, write the global header) before the shards start; each process
then opens its own fd with ``PcapWriter.append``. Records are ordered by
write time, and timestamps of different processes may step back by a few
microseconds: Wireshark and tcpdump read that fine. This holds on local
filesystems (ext4, xfs, tmpfs); on NFS, appends from several hosts can
interleave, so keep the file local.

One syscall per frame makes this a debugging tool, not a data path: the
link tee (``--pcap FILE``) costs a few µs per frame in every process.

Frames are recorded as they cross the link, without the virtio-net header:
a GSO super-frame shows as one big frame and an offloaded checksum as the
pseudo-header sum, as ``tcpdump`` shows them on a host with TSO. A
LINKTYPE_RAW file (a TUN link) holds the IP packets alone: the 14-byte
header the stack puts before each of them (``link_tx.tun_frame_header``) is
left out, as it is on the wire.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .wire.virtio import VirtioNetHeader

if TYPE_CHECKING:
    from .link_tx import FrameWriter

BytesLike = bytes | bytearray | memoryview

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps (pcap-savefile(5))
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # IPv4 or IPv6 packets, no link header (the version nibble says which)
ETH_HLEN = 14
PCAP_SNAPLEN = 262144  # bytes, tcpdump's default: a 64 KiB super-frame fits whole

_GLOBAL = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len


class PcapWriter:
    """Appends frames to a pcap file; one per process (see the module
    docstring). Counters: ``frames`` recorded, ``errors`` (a full disk does
    not stop the stack: the record is lost and counted)."""

    def __init__(
        self, fd: int, path: str, snaplen: int = PCAP_SNAPLEN, linktype: int = LINKTYPE_ETHERNET
    ) -> None:
        self.fd = fd
        self.path = path
        self.snaplen = snaplen
        self.linktype = linktype
        self.frames = 0
        self.errors = 0

    @classmethod
    def create(
        cls, path: str, *, snaplen: int = PCAP_SNAPLEN, linktype: int = LINKTYPE_ETHERNET
    ) -> PcapWriter:
        """Create (or truncate) ``path`` and write the global header."""
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        os.write(fd, _GLOBAL.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype))
        return cls(fd, path, snaplen, linktype)

    @classmethod
    def append(cls, path: str) -> PcapWriter:
        """Open a file that ``create`` made (FileNotFoundError otherwise),
        recording frames as its header's link type says."""
        with open(path, "rb") as f:
            head = f.read(_GLOBAL.size)
        linktype = _GLOBAL.unpack(head)[6] if len(head) == _GLOBAL.size else LINKTYPE_ETHERNET
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return cls(fd, path, linktype=linktype)

    def write(self, frame_parts: Sequence[BytesLike], ts: float | None = None) -> None:
        """Record one frame given as parts; ``ts`` in seconds since the
        epoch, default now."""
        us = time.time_ns() // 1000 if ts is None else round(ts * 1_000_000)
        if self.linktype == LINKTYPE_RAW and frame_parts:
            first = memoryview(frame_parts[0])[ETH_HLEN:]
            frame_parts = [first, *frame_parts[1:]] if len(first) else frame_parts[1:]
        length = 0
        for part in frame_parts:
            length += len(part)
        bufs: list[BytesLike]
        if length > self.snaplen:
            captured = self.snaplen
            bufs = [b"".join(frame_parts)[:captured]]
        else:
            captured = length
            bufs = list(frame_parts)
        record = _RECORD.pack(us // 1_000_000, us % 1_000_000, captured, length)
        bufs.insert(0, record)
        try:
            n = os.writev(self.fd, bufs)  # one atomic append
        except OSError:
            self.errors += 1
            return
        if n != len(record) + captured:
            self.errors += 1  # a short write (disk full): the file is cut here
            return
        self.frames += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PcapTeeWriter:
    """A ``FrameWriter`` that records every frame in a pcap, then sends it
    through ``inner``. The counters are the inner writer's."""

    def __init__(self, inner: FrameWriter, pcap: PcapWriter) -> None:
        self.inner = inner
        self.pcap = pcap

    @property
    def frames(self) -> int:
        return self.inner.frames

    @property
    def bytes(self) -> int:
        return self.inner.bytes

    @property
    def drops(self) -> int:
        return self.inner.drops

    @property
    def errors(self) -> int:
        return self.inner.errors

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        self.pcap.write(frame_parts)
        self.inner.write(frame_parts, vnet)

    def write_batch(
        self, frames: Iterable[tuple[Sequence[BytesLike], VirtioNetHeader | None]]
    ) -> None:
        for parts, vnet in frames:
            self.write(parts, vnet)

    def close(self) -> None:
        self.pcap.close()
        self.inner.close()
