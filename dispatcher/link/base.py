"""What every link offers the dispatcher: batches of received frames, a way
to write, and the facts the stack needs (MTU, MAC, offloads).

A link is the dispatcher's receive side. The send side of every process,
shards included, is ``common/link_tx.py``: ``Link.tx_spec()`` describes it.

Frames returned by ``read_batch`` are memoryviews into the link's receive
buffer, valid until the next ``read_batch``: the dispatcher copies each one
into a shard's ring at once, and anything that keeps a frame longer copies it.
Frames come from the wire and are untrusted: any length, any content.
"""

from __future__ import annotations

import enum
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from typing import Protocol, Self

from ...common.addr import format_mac, is_multicast_mac, parse_mac
from ...common.link_tx import BytesLike, LinkError, LinkTxSpec
from ...common.rx_batch import Frame
from ...common.wire.errors import Drop
from ...common.wire.virtio import VirtioNetHeader

__all__ = [
    "Frame",
    "Link",
    "LinkBase",
    "LinkCaps",
    "LinkError",
    "interface_mac",
    "interface_mtu",
    "random_mac",
    "resolve_mac",
]

IFNAMSIZ = 16  # linux/if.h, with the terminating NUL
# Receive buffer of one read: a GSO super-frame of 64 KiB of IP plus the
# Ethernet, VLAN and virtio-net headers fits; a read that fills it may be cut.
RX_CHUNK = 65536 + 256  # bytes
RX_ARENA = 2 * 1024 * 1024  # bytes per link: >= 31 super-frames or ~1,400 MTU frames a batch

# linux/sockios.h
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927


class LinkCaps(enum.IntFlag):
    """What a link does with the virtio-net header (``LinkTxSpec`` and
    ``Frame.vnet``). TX flags: what a writer may ask of the link. RX flags:
    what frames read from the link may carry."""

    NONE = 0
    VNET_HDR = 0x01  # frames carry a virtio-net header both ways
    TX_CSUM = 0x02  # the link completes checksums of frames written with NEEDS_CSUM
    TX_TSO4 = 0x04  # ... and segments GSO_TCPV4 super-frames
    TX_TSO6 = 0x08  # ... and GSO_TCPV6
    RX_CSUM = 0x10  # frames read may have NEEDS_CSUM: their L4 checksum is not computed
    RX_GSO = 0x20  # frames read may be GSO super-frames (up to 64 KiB)
    MULTI_QUEUE = 0x40  # a TAP with IFF_MULTI_QUEUE (one queue per shard possible)


class Link(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def mtu(self) -> int:
        """Of the IP packet, as the interface's MTU."""
        ...

    @property
    def mac(self) -> bytes:
        """Shardnet's own address on this link."""
        ...

    @property
    def capabilities(self) -> LinkCaps: ...
    @property
    def vnet_hdr_len(self) -> int:
        """Bytes of virtio-net header per frame, 0 without one."""
        ...

    @property
    def rx_frames(self) -> int: ...
    @property
    def rx_bytes(self) -> int:
        """Ethernet bytes, without the virtio-net header."""
        ...

    @property
    def rx_drops(self) -> int:
        """Frames read and dropped (bad virtio-net header, cut)."""
        ...

    @property
    def rx_errors(self) -> int:
        """Reads that failed (the kernel dropped the frame)."""
        ...

    @property
    def drop_reasons(self) -> dict[Drop, int]: ...

    def read_batch(self, max_frames: int = 64) -> list[Frame]:
        """Up to ``max_frames`` frames, as many as are ready without waiting
        (an empty list when none is)."""
        ...

    def fileno(self) -> int:
        """Readable when frames are waiting (for ``loop.add_reader``)."""
        ...

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        """Send a frame from the dispatcher itself (see ``FrameWriter``)."""
        ...

    def tx_spec(self) -> LinkTxSpec: ...

    def close(self) -> None: ...


class LinkBase:
    """Counters and context management shared by the links."""

    name: str
    mtu: int
    mac: bytes
    capabilities: LinkCaps

    def _init_counters(self) -> None:
        self.rx_frames = 0
        self.rx_bytes = 0
        self.rx_drops = 0
        self.rx_errors = 0
        self.drop_reasons: dict[Drop, int] = {}

    def _drop(self, reason: Drop) -> None:
        self.rx_drops += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} mac {format_mac(self.mac)} mtu {self.mtu}"
            f" caps {self.capabilities.name}>"
        )


def random_mac() -> bytes:
    """A random locally administered unicast MAC, ``02:xx:xx:xx:xx:xx``
    (IEEE 802: bit 1 of the first octet set, bit 0 clear)."""
    return b"\x02" + os.urandom(5)


def resolve_mac(mac: bytes | str | None) -> bytes:
    """``mac`` as 6 bytes (text is parsed), a random one for None. A
    multicast or all-zero address is refused with LinkError."""
    if mac is None:
        return random_mac()
    if isinstance(mac, str):
        try:
            mac = parse_mac(mac)
        except ValueError as exc:
            raise LinkError(str(exc)) from None
    mac = bytes(mac)
    if len(mac) != 6 or is_multicast_mac(mac) or mac == bytes(6):
        raise LinkError(f"not a unicast MAC address: {mac.hex(':')}")
    return mac


def check_ifname(name: str) -> bytes:
    """The interface name as bytes for an ``ifreq``; LinkError if Linux
    would refuse it (dev_valid_name(): 1..15 bytes, no '/', ':' or space)."""
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ or any(c in name for c in "/: \t\n") or name in (".", ".."):
        raise LinkError(f"not a valid interface name: {name!r}")
    return raw


def _ifreq(name: str, request: int) -> bytes:
    raw = check_ifname(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return fcntl.ioctl(s, request, struct.pack("16s24x", raw))
        except OSError as exc:
            raise LinkError(f"no interface {name}: {exc.strerror}", exc.errno or 0) from None


def interface_mtu(name: str) -> int:
    """The MTU of interface ``name`` in the current network namespace."""
    return struct.unpack_from("i", _ifreq(name, SIOCGIFMTU), IFNAMSIZ)[0]


def interface_mac(name: str) -> bytes:
    """The hardware address of interface ``name`` (the kernel side's MAC
    for a TAP)."""
    return _ifreq(name, SIOCGIFHWADDR)[IFNAMSIZ + 2 : IFNAMSIZ + 8]
