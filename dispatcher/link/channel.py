"""An in-memory link for tests and the embedded stack (gVisor's channel
endpoint): the program injects inbound frames and collects outbound ones.

``fileno()`` is an eventfd, readable while inbound frames wait, so the same
event loop code runs over a channel link as over a TAP. ``inject`` may be
called from another thread. The send side is a ``ChannelWriter``
(``common/link_tx.py``), shared with every in-process writer opened from
``tx_spec()``; it cannot cross a process boundary.

With ``LinkCaps.VNET_HDR`` in ``capabilities`` frames carry virtio-net
headers both ways, validated on inject as a TAP read validates them.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Sequence

from ...common.link_tx import BytesLike, ChannelWriter, LinkTxSpec
from ...common.wire.errors import MalformedPacket
from ...common.wire.virtio import VIRTIO_NET_HDR_LEN, VirtioNetHeader, VirtioNetView
from .base import Frame, LinkBase, LinkCaps, resolve_mac


class ChannelLink(LinkBase):
    def __init__(
        self,
        *,
        name: str = "channel0",
        mtu: int = 1500,
        mac: bytes | str | None = None,
        capabilities: LinkCaps = LinkCaps.NONE,
        capacity: int = 4096,
    ) -> None:
        self.name = name
        self.mtu = mtu
        self.mac = resolve_mac(mac)
        self.capabilities = capabilities
        self.capacity = capacity  # inbound frames queued at most; more are dropped
        self.vnet_hdr_len = VIRTIO_NET_HDR_LEN if capabilities & LinkCaps.VNET_HDR else 0
        self._inbound: deque[Frame] = deque()
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._writer = ChannelWriter(vnet_hdr_len=self.vnet_hdr_len)
        self._hdr = bytearray(self.vnet_hdr_len)
        self._closed = False
        self.inject_drops = 0  # frames refused because the inbound queue was full
        self._init_counters()

    # --- the outside world's side

    def inject(self, frame: BytesLike, vnet: VirtioNetHeader | None = None) -> bool:
        """Queue ``frame`` (copied) as if it arrived on the wire. Returns
        False if it was dropped (full queue, or a bad virtio-net header,
        counted in ``drop_reasons`` as a TAP read would)."""
        if self._closed:  # its eventfd number may belong to something else now
            raise OSError(errno.EBADF, f"{self.name} is closed")
        if len(self._inbound) >= self.capacity:
            self.inject_drops += 1
            return False
        size = self.vnet_hdr_len
        if size:
            (vnet or VirtioNetHeader()).emit(self._hdr, size=size)
            try:
                view = VirtioNetView.checked(bytes(self._hdr) + bytes(frame), size=size)
            except MalformedPacket as exc:
                self._drop(exc.reason)
                return False
            item = Frame(view.payload, view)
        elif vnet is not None:
            raise ValueError("this channel link has no virtio-net header")
        else:
            item = Frame(bytes(frame), None)
        self._inbound.append(item)
        os.eventfd_write(self._event, 1)
        return True

    def collect(self) -> list[bytes]:
        """The frames written to the link since the last collect or drain,
        oldest first."""
        return [frame for frame, _ in self._writer.take()]

    def drain(self) -> list[tuple[bytes, VirtioNetHeader | None]]:
        """Like ``collect``, with each frame's virtio-net header (None on a
        link without one)."""
        return self._writer.take()

    # --- the dispatcher's side

    def fileno(self) -> int:
        return self._event

    def read_batch(self, max_frames: int = 64) -> list[Frame]:
        # Clear the eventfd before taking frames: an inject racing with us
        # sets it again, so no wake-up is lost.
        try:
            os.eventfd_read(self._event)
        except BlockingIOError:
            pass
        frames: list[Frame] = []
        inbound = self._inbound
        while inbound and len(frames) < max_frames:
            frame = inbound.popleft()
            frames.append(frame)
            self.rx_frames += 1
            self.rx_bytes += len(frame.data)
        if inbound:
            os.eventfd_write(self._event, 1)  # more than max_frames were waiting
        return frames

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        self._writer.write(frame_parts, vnet)

    @property
    def writer(self) -> ChannelWriter:
        return self._writer

    def tx_spec(self) -> LinkTxSpec:
        return LinkTxSpec("channel", self.vnet_hdr_len, channel=self._writer)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._event)
