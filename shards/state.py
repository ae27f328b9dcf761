"""The replicated tables shard 0 starts with.

Issue scope so far: the NIC table (one row per NIC, keyed by name). Later
layers add addresses, routes and neighbours as further tables.
"""

from __future__ import annotations

from typing import Any

from shardnet.common.addr import format_mac
from shardnet.common.procspec import ShardSpec


def initial_tables(spec: ShardSpec) -> dict[str, dict[str, Any]]:
    cfg = spec.config
    nic = {
        "name": cfg.link_name,
        "id": 1,
        "mac": format_mac(spec.mac),
        "mtu": cfg.mtu,
        "kind": "tap" if cfg.tap else "packet",
        "enabled": True,
        "loopback": False,
        "addresses": list(cfg.ipv4 + cfg.ipv6),
    }
    return {"nics": {cfg.link_name: nic}}
