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

Connection requests (a SYN without ACK) from the wire pass a token bucket
first (``syn_gate``): beyond its rate they are dropped here, for the price
of reading four bytes, and counted (``tcp/tcp_syn_over_rate``). Under a SYN flood
the shard then spends a bounded share of its time on SYNs and keeps reading
its ring or queue at the flood's pace, so the frames of established
connections are neither queued behind the flood nor dropped for lack of
room. A real client retransmits a SYN that got no answer (RFC 6298 §5.7:
after 1 s), the same segment again; a flood of spoofed SYNs seldom repeats
one. So a dropped SYN leaves a trace (a hash in a fixed table), and its
retransmission passes, within a second bucket of its own: a client
connects on its second try whatever the flood.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shardnet.common.addr import is_multicast_mac
from shardnet.common.classify import bare_syn
from shardnet.common.ratelog import RateLimitedLog
from shardnet.common.record import TAG_LEN, TAG_LOOPED, TAG_WIRE
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import EthernetView

from .counters import ShardCounters
from .net.ratelimit import TokenBucket

# SYNs a shard takes per second from the wire, and in a burst. A SYN costs
# the shard ~50 µs of Python (cookie, SYN-ACK): 8,000 a second is under half
# its time, far above what clients open (a few thousand connections a
# second per shard at most), and a burst of 2,048 covers many clients
# connecting at once.
SYN_RATE_PER_S = 8000.0
SYN_BURST = 2048
RETRIED_SYN_RATE_PER_S = 4000.0  # retransmitted SYNs let through past the gate
RETRIED_SYN_BURST = 512
# Traces of dropped SYNs: one byte per slot, 2**20 slots (1 MiB). A flood of
# 150,000 SYNs a second per shard overwrites a slot about every 7 s, longer
# than a client's first retransmission takes.
SYN_TRACE_SLOTS = 1 << 20

# A protocol handler: the checked Ethernet view of one frame. The view (and
# its buffer) is valid only during the call (the ring reuses it).
FrameHandler = Callable[[EthernetView, memoryview], None]

log = logging.getLogger("shardnet.shard")


class Ingress:
    def __init__(
        self,
        mac: bytes,
        counters: ShardCounters,
        vnet_hdr_len: int = 0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.mac = mac
        self.counters = counters
        # None (no clock): every SYN is taken (unit tests of single frames).
        self.syn_gate = TokenBucket(SYN_RATE_PER_S, SYN_BURST) if clock is not None else None
        self.retried_syn_gate = TokenBucket(RETRIED_SYN_RATE_PER_S, RETRIED_SYN_BURST)
        self.clock: Callable[[], float] = clock if clock is not None else float
        self._syn_traces = bytearray(SYN_TRACE_SLOTS)
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

    def _retried_syn(self, frame: memoryview) -> bool:
        """Whether a SYN the gate refused is one refused before (the same
        addresses, ports and sequence number: a retransmission) that the
        retransmission bucket lets through; else its trace is left."""
        # Addresses, ports and ISN: what a retransmission repeats (its IP
        # identification, checksums and TCP timestamp change).
        if frame[12] == 0x08:  # IPv4
            l4 = 14 + (frame[14] & 0x0F) * 4
            h = hash(bytes(frame[26:34]) + bytes(frame[l4 : l4 + 8]))
        else:  # IPv6 without extension headers (bare_syn)
            h = hash(bytes(frame[22:62]))
        slot = h & (SYN_TRACE_SLOTS - 1)
        tag = ((h >> 20) & 0xFF) | 1  # never 0, the empty slot
        traces = self._syn_traces
        if traces[slot] == tag:
            traces[slot] = 0
            return self.retried_syn_gate.allow(self.clock())
        traces[slot] = tag
        return False

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
                gate = self.syn_gate
                if gate is not None and bare_syn(frame) and not gate.allow(self.clock()):
                    if not self._retried_syn(frame):
                        c.refuse("tcp", Drop.TCP_SYN_OVER_RATE)
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
