"""The links the dispatcher reads frames from: a TAP, an interface through
AF_PACKET, an in-memory channel, and a pcap tee around any of them."""

from __future__ import annotations

from shardnet.common.config import StackConfig
from shardnet.common.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW

from .base import Frame, Link, LinkCaps, LinkError
from .channel import ChannelLink
from .packet import PacketLink
from .pcap import PcapTee
from .tap import TapLink
from .tun import TunLink


def open_link(config: StackConfig) -> Link:
    """The link a stack's settings name: ``--tap``, ``--tun`` or
    ``--packet``, wrapped in a pcap tee with ``--pcap``. Raises LinkError
    with a one-line message."""
    link: Link
    if config.tun:
        link = TunLink.open(
            config.tun,
            mtu=config.mtu,
            mac=config.mac,
            vnet_hdr=config.vnet_hdr,
            offload=config.offload,
            netns=config.tun_netns,
        )
    elif config.tap:
        link = TapLink.open(
            config.tap,
            mtu=config.mtu,
            mac=config.mac,
            vnet_hdr=config.vnet_hdr,
            offload=config.offload,
            multi_queue=config.multi_queue,
        )
        link.admit(config.shards)
        if config.multi_queue:
            link.steer(config.shards)
    else:
        assert config.packet is not None  # StackConfig.validate() saw to it
        link = PacketLink.open(
            config.packet, mac=config.mac, vnet_hdr=config.vnet_hdr, offload=config.offload
        )
    if config.pcap:
        link = PcapTee(
            link, config.pcap, linktype=LINKTYPE_RAW if config.tun else LINKTYPE_ETHERNET
        )
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
    "TunLink",
]
