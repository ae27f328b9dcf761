"""The first step of every frame a shard receives from its ring.

Reads the record's tag (``common/record.py``), strips the virtio-net header
the link put in front (when the TAP has one), checks the Ethernet header,
drops frames unicast to another MAC, and hands the rest to the handler
registered for the ethertype. A looped frame (``TAG_LOOPED``: sent by this
stack to itself, loopback routing) goes to the ethertype's looped handler
instead, without the MAC check; an ethertype without one does not loop (its
frame is counted as unhandled). Any ``MalformedPacket`` a handler raises is
counted by layer and reason, never propagated; any other exception is a bug,
counted and logged (rate-limited): nothing in a frame can stop the shard loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shardnet.common.addr import is_multicast_mac
from shardnet.common.ratelog import RateLimitedLog
from shardnet.common.record import TAG_LEN, TAG_LOOPED, TAG_WIRE
from shardnet.common.wire.errors import MalformedPacket
from shardnet.common.wire.ethernet import EthernetView

from .counters import ShardCounters

# A protocol handler: the checked Ethernet view of one frame. The view (and
# its buffer) is valid only during the call (the ring reuses it).
FrameHandler = Callable[[EthernetView, memoryview], None]

log = logging.getLogger("shardnet.shard")


class Ingress:
    def __init__(self, mac: bytes, counters: ShardCounters, vnet_hdr_len: int = 0) -> None:
        self.mac = mac
        self.counters = counters
        self.vnet_hdr_len = vnet_hdr_len
        self._frame_at = TAG_LEN + vnet_hdr_len
        self.handlers: dict[int, FrameHandler] = {}
        self.looped_handlers: dict[int, FrameHandler] = {}
        self._log_drop = RateLimitedLog(log)
        self._log_bug = RateLimitedLog(log)

    def register(
        self, ethertype: int, handler: FrameHandler, looped: FrameHandler | None = None
    ) -> None:
        """``handler`` for wire frames of ``ethertype``; ``looped`` for the
        frames the stack looped back to itself (none: they are unhandled)."""
        self.handlers[ethertype] = handler
        if looped is not None:
            self.looped_handlers[ethertype] = looped

    def handle_record(self, record: memoryview) -> None:
        """One ring record: tag + [virtio-net header] + Ethernet frame."""
        c = self.counters
        c.rx_frames += 1
        c.rx_bytes += len(record)
        at = self._frame_at
        vnet = record[TAG_LEN:at]
        frame = record[at:]
        try:
            eth = EthernetView.checked(frame)
            tag = record[0]
            if tag == TAG_WIRE:
                dst = frame[0:6]
                if dst != self.mac and not is_multicast_mac(dst):
                    c.not_for_us += 1
                    return
                handler = self.handlers.get(eth.ethertype)
            elif tag == TAG_LOOPED:
                handler = self.looped_handlers.get(eth.ethertype)
            else:  # a record the dispatcher cannot have written
                c.internal_errors += 1
                self._log_bug(logging.ERROR, "ring record with unknown tag %d", tag)
                return
            if handler is None:
                c.unhandled += 1
                return
            handler(eth, vnet)
        except MalformedPacket as exc:
            c.drop(exc)
            self._log_drop(logging.DEBUG, "drop %s/%s %s", exc.layer, exc.reason.value, exc.detail)
        except Exception:  # a bug must cost one frame, never the shard
            c.internal_errors += 1
            self._log_bug(logging.ERROR, "frame handler failed", exc_info=True)
