"""The links the dispatcher reads frames from: a TAP, an interface through
AF_PACKET, an in-memory channel, and a pcap tee around any of them."""

from __future__ import annotations

from shardnet.common.config import StackConfig

from .base import Frame, Link, LinkCaps, LinkError
from .channel import ChannelLink
from .packet import PacketLink
from .pcap import PcapTee
from .tap import TapLink


def open_link(config: StackConfig) -> Link:
    """The link a stack's settings name: ``--tap`` or ``--packet``, wrapped
    in a pcap tee with ``--pcap``. Raises LinkError with a one-line message."""
    link: Link
    if config.tap:
        link = TapLink.open(
            config.tap,
            mtu=config.mtu,
            mac=config.mac,
            vnet_hdr=config.vnet_hdr,
            offload=config.offload,
            multi_queue=config.multi_queue,
        )
        if config.multi_queue:
            link.steer(config.shards)
    else:
        assert config.packet is not None  # StackConfig.validate() saw to it
        link = PacketLink.open(
            config.packet, mac=config.mac, vnet_hdr=config.vnet_hdr, offload=config.offload
        )
    if config.pcap:
        link = PcapTee(link, config.pcap)
    return link


__all__ = [
    "open_link",
    "ChannelLink",
    "Frame",
    "Link",
    "LinkCaps",
    "LinkError",
    "PacketLink",
    "PcapTee",
    "TapLink",
]
