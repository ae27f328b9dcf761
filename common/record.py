"""The layout of the records the dispatcher puts in a shard's ring.

Dispatcher -> shard (the downlink ring, ``common/ring.py``), one record per
frame::

    [tag: 1 byte][virtio-net header: vnet_hdr_len bytes][Ethernet frame]

* ``tag`` says where the frame comes from: ``TAG_WIRE`` (read from the link)
  or ``TAG_LOOPED`` (sent by a shard to one of the stack's own addresses, or
  routed over a loopback NIC, and looped back through the dispatcher so that
  it is classified like a wire frame, as a kernel loops local traffic). A looped frame never
  touched the wire: its source may be one of our addresses, 127/8 and ::1 are
  legitimate, and its checksums were computed by us. Any other tag value is
  a bug; the shard counts and drops the record.
* the virtio-net header is the link's (``ShardSpec.vnet_hdr_len`` bytes, 0
  for a link without one); a looped frame carries zeros there.

Shard -> dispatcher (the uplink ring), one record per frame::

    [UPLINK_LOOP: 1 byte][Ethernet frame]        or
    [UPLINK_WIRE: 1 byte][virtio-net header][Ethernet frame]        or
    [target shard: 1 byte][tag: 1 byte][Ethernet frame]

* ``UPLINK_LOOP`` (0xFF): a frame for the stack itself; the dispatcher
  classifies it like a wire frame and tags it ``TAG_LOOPED``.
* ``UPLINK_WIRE`` (0xFE): a frame a shard read from its own queue of a
  multi-queue TAP (``common/tap_queue.py``) that is not its own; the
  dispatcher classifies it as if it had read it from the link, virtio-net
  header included.
* a shard index: a frame that reached the wrong shard, *steered* to the one
  that owns its socket (a reply to an unconnected UDP socket's ephemeral
  port, which no flow hash can aim at: ``udp_port_owner``); the dispatcher
  puts it in that shard's ring unclassified, with its original ``tag`` and a
  virtio-net header saying ``DATA_VALID`` (the steering shard checked the
  checksums, or the link vouched for them).
"""

from __future__ import annotations

TAG_LEN = 1  # bytes before the virtio-net header
TAG_WIRE = 0
TAG_LOOPED = 1
UPLINK_LOOP = 0xFF  # an uplink record's target byte: classify and loop back
UPLINK_WIRE = 0xFE  # ... a wire frame read by a shard: classify it as read from the link


def udp_port_owner(port: int, nshards: int) -> int:
    """The shard whose unconnected sockets get ephemeral ``port``: the one
    a datagram to that port is steered to when no socket of the shard it
    hashed to takes it."""
    return port % nshards
