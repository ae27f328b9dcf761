"""The first step of every frame a shard receives from its ring.

Strips the virtio-net header the link put in front (when the TAP has one),
checks the Ethernet header, drops frames unicast to another MAC, and hands
the rest to the handler registered for the ethertype. Any ``MalformedPacket``
a handler raises is counted by layer and reason, never propagated; any other
exception is a bug, counted and logged (rate-limited): nothing in a frame can
stop the shard loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shardnet.common.addr import is_multicast_mac
from shardnet.common.ratelog import RateLimitedLog
from shardnet.common.wire.errors import MalformedPacket
from shardnet.common.wire.ethernet import EthernetView

from .counters import ShardCounters

# A protocol handler: the checked Ethernet view of one frame. The view (and
# its buffer) is valid only during the call (CHECKLIST B29).
FrameHandler = Callable[[EthernetView, memoryview], None]

log = logging.getLogger("shardnet.shard")


class Ingress:
    def __init__(self, mac: bytes, counters: ShardCounters, vnet_hdr_len: int = 0) -> None:
        self.mac = mac
        self.counters = counters
        self.vnet_hdr_len = vnet_hdr_len
        self.handlers: dict[int, FrameHandler] = {}
        self._log_drop = RateLimitedLog(log)
        self._log_bug = RateLimitedLog(log)

    def register(self, ethertype: int, handler: FrameHandler) -> None:
        self.handlers[ethertype] = handler

    def handle_record(self, record: memoryview) -> None:
        """One ring record: [virtio-net header] + Ethernet frame."""
        c = self.counters
        c.rx_frames += 1
        c.rx_bytes += len(record)
        vnet = record[: self.vnet_hdr_len]
        frame = record[self.vnet_hdr_len :]
        try:
            eth = EthernetView.checked(frame)
            dst = frame[0:6]
            if dst != self.mac and not is_multicast_mac(dst):
                c.not_for_us += 1
                return
            handler = self.handlers.get(eth.ethertype)
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
