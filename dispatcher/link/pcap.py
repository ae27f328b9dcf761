"""``--pcap FILE``: record every frame in and out of a link.

``PcapTee(link, path)`` wraps a link: it creates the pcap file, records the
frames the dispatcher reads and writes, and hands out a ``tx_spec`` that
makes every other process (each shard) append its own sends to the same
file. Each process has its own fd opened with ``O_APPEND`` and writes a
record with one ``writev``: no lock is shared, and records never tear (the
reasoning and its limits are in ``common/pcap.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ...common.link_tx import BytesLike, LinkTxSpec
from ...common.pcap import LINKTYPE_ETHERNET, PcapTeeWriter, PcapWriter
from ...common.wire.virtio import VirtioNetHeader
from .base import Frame, Link, LinkCaps

__all__ = ["PcapTee", "PcapTeeWriter", "PcapWriter"]


class PcapTee:
    """A ``Link`` that records into ``path`` every frame it reads or writes,
    and whose ``tx_spec`` records the other processes' writes there too.
    Anything else (``set_offload``, ``kernel_mac``, counters) is the inner
    link's."""

    def __init__(self, link: Link, path: str, *, linktype: int = LINKTYPE_ETHERNET) -> None:
        self.link = link
        self.path = path
        self.pcap = PcapWriter.create(path, linktype=linktype)

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def mtu(self) -> int:
        return self.link.mtu

    @property
    def mac(self) -> bytes:
        return self.link.mac

    @property
    def capabilities(self) -> LinkCaps:
        return self.link.capabilities

    def fileno(self) -> int:
        return self.link.fileno()

    def read_batch(self, max_frames: int = 64) -> list[Frame]:
        frames = self.link.read_batch(max_frames)
        record = self.pcap.write
        for frame in frames:
            record((frame.data,))
        return frames

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        self.pcap.write(frame_parts)
        self.link.write(frame_parts, vnet)

    def tx_spec(self) -> LinkTxSpec:
        return dataclasses.replace(self.link.tx_spec(), pcap_path=self.path)

    def close(self) -> None:
        self.pcap.close()
        self.link.close()

    def __enter__(self) -> PcapTee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found above: counters, set_offload, ...
        return getattr(self.link, name)
