"""The network layer's records: NICs (named, loopback or not, with an opaque
context) and addresses (with their kind and primary behaviour), as shard 0
owns them and publishes them to the other shards.

Each record converts to a msgpack-friendly row (``to_row``/``from_row``)
for the replicated tables; routes are ``route.Route`` and neighbours rows
of the neighbour table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from shardnet.common.addr import format_ip, format_mac, parse_ip, parse_mac


class AddressKind(enum.Enum):
    """gVisor's referencedNetworkEndpoint kinds."""

    PERMANENT = "permanent"
    TENTATIVE = "tentative"  # DAD running: never a source, not accepted (RFC 4862 §5.4)
    DEPRECATED = (
        "deprecated"  # preferred lifetime over: kept for existing use only (RFC 4862 §5.5.4)
    )
    EXPIRED = "expired"  # removed while still referenced


class PrimaryBehavior(enum.Enum):
    """Where an address goes in its NIC's primary list (RFC 6724 §5's last tie-break)."""

    CAN_BE_PRIMARY = "can-be-primary"  # appended
    FIRST_PRIMARY = "first-primary"  # prepended
    NEVER_PRIMARY = "never-primary"  # not a candidate source unless bound explicitly


@dataclass(slots=True)
class Nic:
    id: int
    name: str
    mac: bytes
    mtu: int
    loopback: bool = False
    enabled: bool = True
    kind: str = "tap"  # "tap", "tun", "packet", "channel" (embedded), "loopback"
    context: Any = None  # the integrator's opaque value, handed back unchanged
    # Host variables learnt from RAs (RFC 4861 §6.3.2): cur_hop_limit,
    # reachable_time, retrans_timer; replicated so every shard uses them.
    params: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "mac": format_mac(self.mac),
            "mtu": self.mtu,
            "loopback": self.loopback,
            "enabled": self.enabled,
            "kind": self.kind,
            "context": self.context,
            "params": dict(self.params),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Nic:
        return cls(
            row["id"],
            row["name"],
            parse_mac(row["mac"]),
            row["mtu"],
            row["loopback"],
            row["enabled"],
            row["kind"],
            row.get("context"),
            dict(row.get("params") or {}),
        )


@dataclass(slots=True)
class Address:
    nic: int
    addr: bytes
    prefix_len: int
    kind: AddressKind = AddressKind.PERMANENT
    behavior: PrimaryBehavior = PrimaryBehavior.CAN_BE_PRIMARY
    origin: str = "static"  # "static", "linklocal", "slaac", "temporary" (RFC 8981), "loopback"
    position: int = 0  # order in the NIC's primary list (lower first)
    extra: dict[str, Any] = field(default_factory=dict)  # lifetimes etc. (SLAAC, RFC 4862 §5.5.3)

    @property
    def key(self) -> str:
        return f"{self.nic}/{format_ip(self.addr)}"

    @property
    def usable(self) -> bool:
        """Accepts packets and may be a source (tentative and expired may not)."""
        return self.kind is AddressKind.PERMANENT or self.kind is AddressKind.DEPRECATED

    def to_row(self) -> dict[str, Any]:
        return {
            "nic": self.nic,
            "addr": format_ip(self.addr),
            "prefix_len": self.prefix_len,
            "kind": self.kind.value,
            "behavior": self.behavior.value,
            "origin": self.origin,
            "position": self.position,
            "extra": self.extra,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Address:
        return cls(
            row["nic"],
            parse_ip(row["addr"]),
            row["prefix_len"],
            AddressKind(row["kind"]),
            PrimaryBehavior(row["behavior"]),
            row["origin"],
            row["position"],
            row.get("extra") or {},
        )


def network_of(addr: bytes, prefix_len: int) -> bytes:
    """``addr`` with the host bits cleared."""
    bits = len(addr) * 8
    value = (
        int.from_bytes(addr, "big") >> (bits - prefix_len) << (bits - prefix_len)
        if prefix_len
        else 0
    )
    return value.to_bytes(len(addr), "big")


def directed_broadcast(addr: bytes, prefix_len: int) -> bytes | None:
    """The subnet broadcast of an IPv4 address (RFC 919/922), None for /31,
    /32 (RFC 3021: no broadcast on point-to-point subnets) and IPv6."""
    if len(addr) != 4 or prefix_len >= 31:
        return None
    host_bits = 32 - prefix_len
    value = int.from_bytes(addr, "big") | ((1 << host_bits) - 1)
    return value.to_bytes(4, "big")
