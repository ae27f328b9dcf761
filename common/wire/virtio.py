"""The virtio-net header a TAP (``IFF_VNET_HDR``) or an AF_PACKET socket
(``PACKET_VNET_HDR``) puts before every frame (virtio 1.2 §5.1.6,
``struct virtio_net_hdr`` in ``linux/virtio_net.h``).

It carries the offloads of one frame: ``NEEDS_CSUM`` says the L4 checksum
field holds only the pseudo-header sum and the sum over
``frame[csum_start:]`` must be stored at ``csum_start + csum_offset``;
``DATA_VALID`` says the link already verified the checksum; a ``gso_type``
other than ``NONE`` marks a super-frame to be cut into ``gso_size``-byte
segments (TSO/USO on transmit, GRO on receive).

The fields are little-endian: virtio 1.x always is, and the TAP is switched
to little-endian with ``TUNSETVNETLE`` (a no-op on x86). The 12-byte form adds
``num_buffers`` (``struct virtio_net_hdr_mrg_rxbuf``); the TAP writes it as 0.

Validation follows what Linux accepts in ``virtio_net_hdr_to_skb()``
(``include/linux/virtio_net.h``): known flags and GSO types only, a partial
checksum that lies inside the frame. ``hdr_len`` is a hint (virtio §5.1.6.2)
and is not checked. Left out: ``VIRTIO_NET_HDR_F_RSC_INFO`` (rejected: a TAP
never sets it and it gives the checksum fields another meaning) and the v1
hash-report header (``virtio_net_hdr_v1_hash``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import Drop, MalformedPacket

VIRTIO_NET_HDR_LEN = 10  # struct virtio_net_hdr
VIRTIO_NET_HDR_MRG_LEN = 12  # struct virtio_net_hdr_mrg_rxbuf: + u16 num_buffers
VIRTIO_NET_HDR_SIZES = (VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_MRG_LEN)

# flags (virtio 1.2 §5.1.6)
F_NEEDS_CSUM = 0x01  # checksum to be completed from csum_start / csum_offset
F_DATA_VALID = 0x02  # checksum already verified by the link (receive only)
F_RSC_INFO = 0x04  # coalescing info in the checksum fields: not supported
_KNOWN_FLAGS = F_NEEDS_CSUM | F_DATA_VALID

# gso_type (virtio 1.2 §5.1.6); ECN is a flag or-ed into the type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: IPv4 fragmentation of one big UDP datagram
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO: UDP segmentation (Linux 5.18+ on a TAP, TUN_F_USO4/6)
GSO_ECN = 0x80  # the super-frame carries CWR: set it on the first segment only
_GSO_NAMES = {
    GSO_NONE: "none",
    GSO_TCPV4: "tcpv4",
    GSO_UDP: "udp",
    GSO_TCPV6: "tcpv6",
    GSO_UDP_L4: "udp_l4",
}

_VNET = struct.Struct("<BBHHHH")
_VNET_MRG = struct.Struct("<BBHHHHH")


def _check_size(size: int) -> None:
    if size not in VIRTIO_NET_HDR_SIZES:
        raise ValueError(f"virtio-net header size must be 10 or 12, not {size}")


class VirtioNetView:
    """Zero-copy view of what one TAP read returns: the virtio-net header,
    then the Ethernet frame (``payload``)."""

    __slots__ = ("buf", "size")

    def __init__(self, buf: memoryview, size: int = VIRTIO_NET_HDR_LEN) -> None:
        self.buf = buf  # unchecked: for our own output
        self.size = size  # 10, or 12 with num_buffers

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, size: int = VIRTIO_NET_HDR_LEN
    ) -> VirtioNetView:
        """Validate ``buf`` (header and frame). ``size`` is the header length
        the link was set up with (``TUNSETVNETHDRSZ``); a bad ``size`` is API
        misuse and raises ValueError."""
        if size != VIRTIO_NET_HDR_LEN and size != VIRTIO_NET_HDR_MRG_LEN:
            _check_size(size)
        if type(buf) is not memoryview:
            buf = memoryview(buf)
        if len(buf) < size:
            raise MalformedPacket(Drop.VNET_TRUNCATED, f"{len(buf)} bytes", layer="vnet")
        if not buf[0] and not buf[1]:
            return cls(buf, size)  # the common case: no flag, no GSO, nothing to check
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(buf)
        if flags & ~_KNOWN_FLAGS:
            raise MalformedPacket(Drop.VNET_BAD_FLAGS, f"flags 0x{flags:02x}", layer="vnet")
        base = gso_type & ~GSO_ECN
        if base not in _GSO_NAMES:
            raise MalformedPacket(
                Drop.VNET_BAD_GSO_TYPE, f"gso_type 0x{gso_type:02x}", layer="vnet"
            )
        if base != GSO_NONE and gso_size == 0:
            raise MalformedPacket(Drop.VNET_BAD_GSO_SIZE, "gso_size 0", layer="vnet")
        # Linux skb_partial_csum_set(): the 2-byte checksum field lies inside
        # the frame (csum_start counts from the first byte of the frame).
        if flags & F_NEEDS_CSUM and csum_start + csum_offset + 2 > len(buf) - size:
            raise MalformedPacket(
                Drop.VNET_BAD_CSUM_OFFSET,
                f"csum_start {csum_start} csum_offset {csum_offset}, frame {len(buf) - size}",
                layer="vnet",
            )
        return cls(buf, size)

    def fields(self) -> tuple[int, int, int, int, int, int]:
        """(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)."""
        return _VNET.unpack_from(self.buf)

    @property
    def flags(self) -> int:
        return self.buf[0]

    @property
    def gso_type(self) -> int:
        return self.buf[1]

    @property
    def hdr_len(self) -> int:
        return self.buf[2] | (self.buf[3] << 8)

    @property
    def gso_size(self) -> int:
        return self.buf[4] | (self.buf[5] << 8)

    @property
    def csum_start(self) -> int:
        return self.buf[6] | (self.buf[7] << 8)

    @property
    def csum_offset(self) -> int:
        return self.buf[8] | (self.buf[9] << 8)

    @property
    def num_buffers(self) -> int:
        return self.buf[10] | (self.buf[11] << 8) if self.size == VIRTIO_NET_HDR_MRG_LEN else 0

    @property
    def checksum_trusted(self) -> bool:
        """True if the L4 checksum must not be verified: the link either
        verified it (DATA_VALID) or it was never computed (NEEDS_CSUM, the
        field holds only the pseudo-header sum)."""
        return bool(self.buf[0] & (F_NEEDS_CSUM | F_DATA_VALID))

    @property
    def is_gso(self) -> bool:
        return self.buf[1] & ~GSO_ECN != GSO_NONE

    @property
    def raw(self) -> memoryview:
        """The header bytes alone (10 or 12)."""
        return self.buf[: self.size]

    @property
    def payload(self) -> memoryview:
        """The Ethernet frame."""
        return self.buf[self.size :]

    def header(self) -> VirtioNetHeader:
        if self.size == VIRTIO_NET_HDR_MRG_LEN:
            return VirtioNetHeader(*_VNET_MRG.unpack_from(self.buf))
        return VirtioNetHeader(*_VNET.unpack_from(self.buf))

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class VirtioNetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0  # bytes of Ethernet + IP + L4 headers of a GSO frame (a hint)
    gso_size: int = 0  # payload bytes per segment (the MSS for TCP)
    csum_start: int = 0  # from the first byte of the frame
    csum_offset: int = 0  # of the checksum field from csum_start (TCP 16, UDP 6)
    num_buffers: int = 0  # 12-byte header only

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, size: int = VIRTIO_NET_HDR_LEN
    ) -> VirtioNetHeader:
        return VirtioNetView.checked(buf, size=size).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, size: int = VIRTIO_NET_HDR_LEN
    ) -> int:
        """Write the header at ``offset``; returns ``size`` (10 or 12). With
        ``size`` 10, ``num_buffers`` is not written."""
        if size == VIRTIO_NET_HDR_MRG_LEN:
            _VNET_MRG.pack_into(
                buf,
                offset,
                self.flags,
                self.gso_type,
                self.hdr_len,
                self.gso_size,
                self.csum_start,
                self.csum_offset,
                self.num_buffers,
            )
            return VIRTIO_NET_HDR_MRG_LEN
        _check_size(size)
        _VNET.pack_into(
            buf,
            offset,
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )
        return VIRTIO_NET_HDR_LEN

    @property
    def checksum_trusted(self) -> bool:
        """See ``VirtioNetView.checksum_trusted``."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))

    @property
    def is_gso(self) -> bool:
        return self.gso_type & ~GSO_ECN != GSO_NONE

    @property
    def is_plain(self) -> bool:
        """True if the header asks for nothing (no checksum, no GSO): the
        frame can go to a link without a virtio-net header as it is."""
        return not self.flags & F_NEEDS_CSUM and not self.is_gso

    def summary(self) -> str:
        names = [
            n
            for bit, n in ((F_NEEDS_CSUM, "needs_csum"), (F_DATA_VALID, "data_valid"))
            if self.flags & bit
        ]
        unknown = self.flags & ~_KNOWN_FLAGS
        if unknown:
            names.append(f"0x{unknown:02x}")
        base = self.gso_type & ~GSO_ECN
        gso = _GSO_NAMES.get(base, f"0x{base:02x}") + ("|ecn" if self.gso_type & GSO_ECN else "")
        text = f"vnet flags {','.join(names) or 'none'} gso {gso}"
        if base != GSO_NONE:
            text += f" gso_size {self.gso_size} hdr_len {self.hdr_len}"
        if self.flags & F_NEEDS_CSUM:
            text += f" csum_start {self.csum_start} csum_offset {self.csum_offset}"
        if self.num_buffers:
            text += f" num_buffers {self.num_buffers}"
        return text
