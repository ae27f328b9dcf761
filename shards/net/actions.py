"""What a control-plane machine asks of the network layer, as plain records.

A protocol machine (NDP, MLD, IGMP; DHCP next) never touches the NIC, address,
route or neighbour tables itself: it returns these records and shard 0's
control plane (``control.py``) applies them in order, outside the machine
(out-of-line updates: nothing is called under anyone's lock, and a unit test
reads what the machine decided). Frames to send and events are the
protocol's own records, beside its machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .model import AddressKind
from .route import Route


@dataclass(frozen=True, slots=True)
class AddAddress:
    """Add ``addr``/``prefix_len`` to the NIC (``NetOwner.add_address``).
    Lifetimes in seconds from now, None: infinite (for display)."""

    addr: bytes
    prefix_len: int
    kind: AddressKind
    origin: str  # "static", "linklocal", "slaac", "temporary" (RFC 8981)
    connected_route: bool = True
    valid_lifetime_s: float | None = None
    preferred_lifetime_s: float | None = None


@dataclass(frozen=True, slots=True)
class SetAddressKind:
    addr: bytes
    kind: AddressKind


@dataclass(frozen=True, slots=True)
class RemoveAddress:
    addr: bytes


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class SetNicParam:
    """A host variable learnt from an RA (RFC 4861 §6.3.2, §6.3.4): ``name``
    is "cur_hop_limit" (int), "base_reachable_time" / "reachable_time" /
    "retrans_timer" (seconds) or "mtu" (bytes)."""

    name: str
    value: int | float


@dataclass(frozen=True, slots=True)
class UpdateNeighbour:
    """An RA's SLLA (RFC 4861 §6.3.4): record ``mac`` for ``ip`` (creating the
    entry, STALE if new or changed). ``is_router``: the sender is a router
    (the entry's IsRouter flag, RFC 4861 §6.3.4, §7.2.5)."""

    ip: bytes
    mac: bytes
    is_router: bool = True


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """The host itself joins ``group`` on the NIC (RFC 4862 §5.4.2: the
    solicited-node group of an address, before its first DAD probe): a user
    of the NIC's membership machine, reported like a socket's join."""

    group: bytes


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    """The host's own use of ``group`` ended (the address went)."""

    group: bytes


Action: TypeAlias = (
    AddAddress
    | SetAddressKind
    | RemoveAddress
    | AddRoute
    | RemoveRoute
    | SetNicParam
    | UpdateNeighbour
    | JoinGroup
    | LeaveGroup
)
