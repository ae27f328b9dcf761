"""What the dispatcher hands a shard process when it starts it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import StackConfig
from .fdpass import PassedFd
from .link_tx import LinkTxSpec
from .ring import RingHandle


@dataclass(slots=True)
class ShardSpec:
    index: int
    nshards: int
    ring: RingHandle  # dispatcher -> shard frames (records: common/record.py)
    uplink: RingHandle  # shard -> dispatcher: frames looped back (sent to our own addresses)
    tx: LinkTxSpec  # how this shard writes frames to the link
    config: StackConfig
    mac: bytes  # shardnet's own MAC on the link
    ipc_dir: str  # where the internal zmq sockets live
    lifeline: PassedFd  # read end of a pipe the dispatcher holds open: EOF = it died
    vnet_hdr_len: int = 0  # bytes of virtio-net header before each ring record's frame
    rx_queue: PassedFd | None = None  # --multi-queue: the shard's own TAP queue to read


def internal_endpoints(ipc_dir: str) -> dict[str, str]:
    """The internal zmq endpoints: the dispatcher's ROUTER for shards, and
    shard 0's state PUB and snapshot ROUTER."""
    return {
        "dispatcher": f"ipc://{os.path.join(ipc_dir, 'dispatcher.sock')}",
        "state": f"ipc://{os.path.join(ipc_dir, 'state.sock')}",
        "sync": f"ipc://{os.path.join(ipc_dir, 'sync.sock')}",
    }
