"""Control-plane messages between the processes, carried by pyzmq as msgpack.

Frames never travel here (they go through the rings); these are the small,
rare messages: hello and stats from shards, stop and forwarded control
requests to them, and shard 0's state publications. Each message is a frozen
dataclass; on the wire it is ``[kind, field, field, ...]``.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

import msgpack


@dataclass(frozen=True, slots=True)
class Hello:
    """A shard is up and its loop is running."""

    kind: ClassVar[str] = "hello"
    shard: int
    pid: int


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a shard's plain counters, sent about once a second.
    ``counters`` maps a metric key to a value; ``drops`` maps
    "layer/reason" to a count; ``gauges`` carries current values
    (e.g. "tcp_connections/ESTABLISHED")."""

    kind: ClassVar[str] = "stats"
    shard: int
    counters: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stop:
    """Close gracefully within ``drain_s`` seconds, then exit."""

    kind: ClassVar[str] = "stop"
    drain_s: float


@dataclass(frozen=True, slots=True)
class Request:
    """A control request (from ``shardnet ctl`` or an integrator) forwarded
    to the shard that owns the state. ``op`` names it, ``args`` holds its
    arguments."""

    kind: ClassVar[str] = "request"
    req_id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    kind: ClassVar[str] = "reply"
    req_id: int
    ok: bool
    value: Any = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Patch:
    """One change of a replicated table published by shard 0. ``value`` None
    deletes ``key``. ``version`` is the owner's counter after the change."""

    kind: ClassVar[str] = "patch"
    epoch: int
    version: int
    table: str
    key: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class Beat:
    """Shard 0's tables are at ``version`` of ``epoch``: published twice a
    second so a replica that missed the last patches (PUB/SUB drops while a
    subscriber reconnects) notices and fetches a snapshot."""

    kind: ClassVar[str] = "beat"
    epoch: int
    version: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    kind: ClassVar[str] = "snapshot_request"
    shard: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every replicated table as of ``version``."""

    kind: ClassVar[str] = "snapshot"
    epoch: int
    version: int
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolve:
    """A shard lacks the MAC of a next hop: shard 0 resolves it and the
    answer arrives by replication of the neighbour table."""

    kind: ClassVar[str] = "resolve"
    shard: int
    nic: int
    ip: bytes


@dataclass(frozen=True, slots=True)
class Confirm:
    """TCP progress in a shard confirms a neighbour's reachability (RFC 4861
    §7.3.1); shard 0 owns the neighbour tables. Sent at most once a second
    per neighbour. ``used``: the shard only sent to it (RFC 4861 §7.3.3: a
    STALE entry used to send starts NUD), nothing is confirmed."""

    kind: ClassVar[str] = "confirm"
    shard: int
    nic: int
    ip: bytes
    used: bool = False


MEMBERSHIP_RESET_NIC = 0  # Membership.nic of "forget this shard's groups" (no NIC has id 0)


@dataclass(frozen=True, slots=True)
class Membership:
    """A shard's sockets joined (the first of them) or left (the last) a
    multicast group on a NIC: shard 0 runs IGMP/MLD for the host and
    replicates the joined groups that every shard accepts.
    ``MEMBERSHIP_RESET_NIC`` is sent once as a shard starts: forget the groups of the
    sockets it had before a restart."""

    kind: ClassVar[str] = "membership"
    shard: int
    nic: int
    group: bytes
    join: bool


@dataclass(frozen=True, slots=True)
class Event:
    """Something an integrator may want to hear about (NDP, supervision),
    published on the control channel's event socket."""

    kind: ClassVar[str] = "event"
    type: str
    data: dict[str, Any] = field(default_factory=dict)


Message = (
    Hello
    | Stats
    | Stop
    | Request
    | Reply
    | Patch
    | Beat
    | SnapshotRequest
    | Snapshot
    | Resolve
    | Confirm
    | Membership
    | Event
)
_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Hello,
        Stats,
        Stop,
        Request,
        Reply,
        Patch,
        Beat,
        SnapshotRequest,
        Snapshot,
        Resolve,
        Confirm,
        Membership,
        Event,
    )
}


class BadMessage(ValueError):
    """Bytes that are not a message of this protocol."""


def encode(msg: Message) -> bytes:
    # The fields as they are (``astuple`` would deep-copy every list and dict
    # first: seconds for a page of connections); a dataclass nested in a
    # value goes as a tuple, as ``astuple`` made it.
    values = [getattr(msg, name) for name in _field_names(type(msg))]
    return msgpack.packb([msg.kind, *values], use_bin_type=True, default=_nested)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


def _nested(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return astuple(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a control message")


def decode(data: bytes) -> Message:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        kind, *values = obj
        return _KINDS[kind](*values)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise BadMessage(f"not a control message: {exc}") from None
