"""Handing a datagram to the shard that owns its port.

A flow reaches the shard its hash names (DESIGN.md "Classification"). That
is where connected sockets and connections are, since their ports are
picked to hash back (``flowhash.pick_port``); but an unconnected UDP socket
or a listener on an ephemeral port exists in one shard only, and no port
can hash back for every peer. So such a port is one its shard owns
(``record.udp_port_owner``: port mod shards), and a shard that has no socket
for a datagram to a port another shard owns steers it there through the
dispatcher (``common/record.py``); the owner answers it, or refuses it (port
unreachable, RST) if it has no socket either.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from shardnet.common.record import TAG_LOOPED, TAG_WIRE, udp_port_owner
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6

from ..net.datagram import Delivery

# (target shard, record tag, Ethernet header, IP packet) -> False when it
# could not be handed on. The packet is valid only during the call (its buffer is reused): the
# uplink copies it, once, into the ring.
Steer = Callable[[int, int, bytes, memoryview], bool]

_ETH = struct.Struct("!6s6sH")


class Steering:
    def __init__(self, *, shard: int, nshards: int, steer: Steer | None, mac: bytes) -> None:
        self.shard = shard
        self.nshards = nshards
        self.steer = steer if nshards > 1 else None
        # The frame's Ethernet header: the link's MAC, which the owner's
        # ingress checks; the source does not matter.
        self._eth_v4 = _ETH.pack(mac, bytes(6), ETHERTYPE_IPV4)
        self._eth_v6 = _ETH.pack(mac, bytes(6), ETHERTYPE_IPV6)
        self.steered = 0

    def elsewhere(self, d: Delivery, port: int) -> bool:
        """Steer ``d`` (to local ``port``, no socket here) to the port's owner
        when that is another shard; True when it was handed on (or dropped on
        a full uplink): the caller must not refuse it then."""
        if self.steer is None or d.broadcast:
            return False
        owner = udp_port_owner(port, self.nshards)
        if owner == self.shard:
            return False
        eth = self._eth_v4 if len(d.src) == 4 else self._eth_v6
        if self.steer(owner, TAG_LOOPED if d.looped else TAG_WIRE, eth, d.packet):
            self.steered += 1
        return True
