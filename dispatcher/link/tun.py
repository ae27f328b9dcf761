"""A TUN device (``/dev/net/tun``, ``IFF_TUN|IFF_NO_PI``) as shardnet's link.

A TUN is an L3 point-to-point link: the kernel hands over IP packets with
no link header and takes IP packets back; nothing is resolved on it (no
ARP, no NDP: the device is ``IFF_NOARP|IFF_POINTOPOINT``). Everything else
is the TAP's (``tap.py``): the virtio-net header and the same offloads
(``TUNSETOFFLOAD`` applies to both modes), creation, MTU, deletion.

The stack works on Ethernet frames everywhere (ring records, the
classifier, reassembly, ingress), so each packet read is given a 14-byte
header in place, without a copy: the read is a ``readv`` whose first
buffer takes the virtio-net header and whose second starts 14 bytes
further on, and the gap is filled with ``tun_frame_header`` (our MAC as
destination, the ethertype of the IP version). The virtio-net header's
offsets, which the kernel counts from the IP header on a TUN, are moved
by those 14 bytes. The shards' writer (``link_tx.TunWriter``) drops the
header again; shard 0 runs no ARP or NDP on a NIC of kind ``"tun"`` and
every next hop on it is the peer itself.
"""

from __future__ import annotations

import os
import struct

from ...common.link_tx import ETH_HLEN, TapWriter, TunWriter, tun_frame_header
from ...common.rx_batch import Recv
from ...common.wire.virtio import F_NEEDS_CSUM
from .tap import IFF_TUN, TapLink

__all__ = ["TunLink"]

_U16LE = struct.Struct("<H")
_HDR_LEN_AT = 2  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start
_CSUM_START_AT = 6


class TunLink(TapLink):
    """A TUN device; open it with ``TunLink.open`` (``TapLink.open``'s
    arguments; ``multi_queue`` is not offered for a TUN)."""

    MODE = IFF_TUN
    KIND = "tun"
    WHAT = "TUN"

    def _recv(self) -> Recv:
        fd = self.fd
        size = self.vnet_hdr_len
        mac = self.mac
        readv = os.readv

        def recv(buf: memoryview) -> int:
            if size:
                n = readv(fd, [buf[:size], buf[size + ETH_HLEN :]])
            else:
                n = readv(fd, [buf[ETH_HLEN:]])
            if n <= size:
                return n  # empty or shorter than the header: the reader counts it
            tun_frame_header(buf, size, mac, buf[size + ETH_HLEN] >> 4)
            if size and (buf[0] or buf[1]):  # offsets count from the IP header on a TUN
                if buf[0] & F_NEEDS_CSUM:
                    start = _U16LE.unpack_from(buf, _CSUM_START_AT)[0]
                    _U16LE.pack_into(buf, _CSUM_START_AT, (start + ETH_HLEN) & 0xFFFF)
                if buf[1]:
                    hdr_len = _U16LE.unpack_from(buf, _HDR_LEN_AT)[0]
                    _U16LE.pack_into(buf, _HDR_LEN_AT, (hdr_len + ETH_HLEN) & 0xFFFF)
            return n + ETH_HLEN

        return recv

    def _make_writer(self, fd: int, vnet_hdr_len: int) -> TapWriter:
        return TunWriter(fd, vnet_hdr_len)
