"""A bound on the control-plane frames waiting in one shard's ring.

A flow's frames and the control plane's (ARP, neighbour discovery, MLD,
IGMP, anything the stack has no flow for: ``classify.control_plane``) share
a shard's ring, which holds tens of thousands of small frames. A flood of
neighbour solicitations or router advertisements from ever new senders
arrives faster than the shard can turn each one down, so without a bound the
ring fills with it: every frame of a flow then waits behind the backlog,
and when the flood stops the shard spends seconds draining frames nobody
wants any more (the peer's own solicitations waiting among them).

So at most ``CONTROL_BACKLOG`` control-plane frames may be in a ring at a
time; beyond that the dispatcher drops them (counted), as a NIC drops what
its queue cannot hold, and flows' frames still find room. The dispatcher
knows which of its frames are still queued without any help from the shard:
the ring's counters are monotonic, so a frame is consumed once the
consumer's released counter has passed the producer's counter taken just
after the frame was put.

Connection requests (a SYN without ACK) are not counted here: each shard
turns down SYNs beyond its rate for the price of reading four bytes, and
recognises a client's retransmitted SYN (``shards/ingress.py``), which a
drop here, out of the shard's sight, would defeat.
"""

from __future__ import annotations

from collections import deque

from shardnet.common.ring import RingProducer

# Control-plane frames queued per shard. Linux's netdev_max_backlog (1,000
# packets per CPU) is the same idea. Turning an unwanted neighbour-discovery
# frame down costs shard 0 about 80 µs, so a full backlog drains in about
# 0.1 s; learning a new neighbour costs ~1 ms, but shard 0 learns at most
# 500 a second.
CONTROL_BACKLOG = 1000


class ControlBacklog:
    """One shard ring's queued control-plane frames, by the ring position
    just past each one. Made with the ring: a restarted shard's new ring
    starts a new backlog."""

    __slots__ = ("limit", "_ends")

    def __init__(self, limit: int = CONTROL_BACKLOG) -> None:
        self.limit = limit
        self._ends: deque[int] = deque()

    def admits(self, producer: RingProducer) -> bool:
        """Whether one more control-plane frame may be put in the ring.
        Reads the consumer's counter only when the backlog looks full."""
        ends = self._ends
        if len(ends) < self.limit:
            return True
        consumed = producer.consumed
        while ends and ends[0] <= consumed:
            ends.popleft()
        return len(ends) < self.limit

    def put(self, end: int) -> None:
        """A control-plane frame was put; ``end`` is the ring position just
        past it."""
        self._ends.append(end)
