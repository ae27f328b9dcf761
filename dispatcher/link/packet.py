"""An existing interface (a veth, a real NIC) through AF_PACKET.

The receive socket is ``SOCK_RAW`` bound to one interface for ``ETH_P_ALL``,
read with plain non-blocking ``recv_into`` calls through the receive loop all
links share (``common/rx_batch.py``). No ``PACKET_RX_RING``: the v1/v2 ring has a known kernel
stall (DESIGN.md); TPACKET_V3 is faster (~0.3 against ~1 µs a frame, measured) and can come
later behind the same interface.

Frames the host itself sends on the interface (``PACKET_OUTGOING``), ours
included, are not read: ``PACKET_IGNORE_OUTGOING`` (Linux 4.20+) keeps the
kernel from queueing them; on older kernels the packet type in the address
is checked.

shardnet has its own MAC on the interface (random ``02:xx:..`` unless given).
A real NIC filters unicast to other addresses in hardware, so the socket
joins promiscuous mode when shardnet's MAC is not the interface's (a
``PACKET_MR_PROMISC`` membership: it ends with the socket). The kernel's
own stack on the interface ignores frames for our MAC (``PACKET_OTHERHOST``).

With ``vnet_hdr`` (default) the socket prepends a virtio-net header
(``PACKET_VNET_HDR``). This matters on veth: the peer sends with checksum
offload and TSO, so frames arrive with partial checksums and as 64 KiB
super-frames, and only the header says so. Without it, switch those
offloads off on the peer (``ethtool -K PEER tx off tso off gso off``).
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Sequence

from ...common.link_tx import (
    ETH_P_ALL,
    PACKET_VNET_HDR,
    SOL_PACKET,
    BytesLike,
    LinkError,
    LinkTxSpec,
    PacketSocketWriter,
)
from ...common.rx_batch import BatchReader, Recv
from ...common.wire.virtio import VIRTIO_NET_HDR_LEN, VirtioNetHeader
from .base import (
    RX_ARENA,
    RX_CHUNK,
    Frame,
    LinkBase,
    LinkCaps,
    check_ifname,
    interface_mac,
    interface_mtu,
    resolve_mac,
)

# linux/if_packet.h
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4  # sll_pkttype of a frame the host sends
_PACKET_MREQ = struct.Struct("iHH8s")  # mr_ifindex, mr_type, mr_alen, mr_address


class PacketLink(LinkBase):
    """An interface read and written through AF_PACKET; open it with
    ``PacketLink.open``."""

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        *,
        mtu: int,
        mac: bytes,
        vnet_hdr_len: int,
        promiscuous: bool,
        rx_arena: int = RX_ARENA,
        ignores_outgoing: bool = False,
    ) -> None:
        """``ignores_outgoing``: the socket has ``PACKET_IGNORE_OUTGOING``
        (otherwise each frame's packet type is checked)."""
        self.sock = sock
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.vnet_hdr_len = vnet_hdr_len
        self.promiscuous = promiscuous
        self.tx_offload = False  # set by open(): shards may ask for checksum offload and TSO
        recv: Recv
        if ignores_outgoing:
            # MSG_TRUNC: the frame's full length, to tell a cut frame.
            recv = functools.partial(sock.recv_into, flags=socket.MSG_TRUNC)
        else:
            recv = self._recv_incoming
        self._rx = BatchReader(
            recv, f"link {name}", vnet_hdr_len, self, arena=rx_arena, chunk=RX_CHUNK
        )
        self._writer = PacketSocketWriter(name, vnet_hdr_len)
        self._closed = False
        self._init_counters()

    @classmethod
    def open(
        cls,
        ifname: str,
        *,
        mac: bytes | str | None = None,
        vnet_hdr: bool = True,
        promiscuous: bool | None = None,
        offload: bool = True,
    ) -> PacketLink:
        """Attach to the existing interface ``ifname``. ``promiscuous``
        None: on when shardnet's MAC differs from the interface's.
        ``offload``: the shards may ask for checksum offload and TSO (the
        frames read carry whatever the peer sent either way)."""
        check_ifname(ifname)
        mac = resolve_mac(mac)
        mtu = interface_mtu(ifname)  # LinkError when there is no such interface
        if promiscuous is None:
            promiscuous = mac != interface_mac(ifname)
        try:
            # protocol 0 until bound: no frame of another interface is queued
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise LinkError("AF_PACKET needs CAP_NET_RAW: run as root", exc.errno) from None
        try:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                ignores_outgoing = True
            except OSError:
                ignores_outgoing = False  # before Linux 4.20: the reader checks the type
            size = VIRTIO_NET_HDR_LEN if vnet_hdr else 0
            if size:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.bind((ifname, ETH_P_ALL))
            if promiscuous:
                mreq = _PACKET_MREQ.pack(socket.if_nametoindex(ifname), PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
            link = cls(
                sock, ifname, mtu=mtu, mac=mac, vnet_hdr_len=size, promiscuous=promiscuous,
                ignores_outgoing=ignores_outgoing,
            )  # fmt: skip
            link.tx_offload = bool(offload and size)
            return link
        except OSError as exc:
            sock.close()
            if isinstance(exc, LinkError):
                raise
            raise LinkError(f"cannot attach to {ifname}: {exc.strerror}", exc.errno or 0) from None

    @property
    def capabilities(self) -> LinkCaps:  # type: ignore[override]
        if not self.vnet_hdr_len:
            return LinkCaps.NONE
        # packet_rcv() reports partial checksums and hands over GSO skbs
        # unsegmented; packet_snd() takes NEEDS_CSUM and GSO frames.
        caps = LinkCaps.VNET_HDR | LinkCaps.RX_CSUM | LinkCaps.RX_GSO
        if self.tx_offload:
            caps |= LinkCaps.TX_CSUM | LinkCaps.TX_TSO4 | LinkCaps.TX_TSO6
        return caps

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_batch(self, max_frames: int = 64) -> list[Frame]:
        return self._rx.frames(max_frames)

    def _recv_incoming(self, buf: memoryview) -> int:
        """One frame that the host did not send (before Linux 4.20)."""
        while True:
            n, addr = self.sock.recvfrom_into(buf, 0, socket.MSG_TRUNC)
            if addr[2] != PACKET_OUTGOING:
                return int(n)

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        self._writer.write(frame_parts, vnet)

    @property
    def writer(self) -> PacketSocketWriter:
        """The dispatcher's own writer (its counters are the dispatcher's tx)."""
        return self._writer

    def tx_spec(self) -> LinkTxSpec:
        return LinkTxSpec("packet", self.vnet_hdr_len, ifname=self.name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self.sock.close()
