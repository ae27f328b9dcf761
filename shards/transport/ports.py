"""Port reservations for TCP and UDP, with Linux's bind and connect rules.

A reservation is a full 5-tuple: protocol, local address and port, and —
for a connected socket — the remote address and port (gVisor's
port manager at the snapshot reserved only the local half, so a bind that
Linux refuses succeeded and a connect that Linux allows failed).

Bind conflicts follow Linux's ``inet_csk_bind_conflict`` / ``udp_lib_lport_inuse``:
two reservations of one protocol and port conflict when

* their devices overlap (either unbound by SO_BINDTODEVICE, or the same NIC),
* their local addresses overlap (either is the wildcard, or equal; an IPv6
  wildcard without V6ONLY also covers every IPv4 address, RFC 3493 §5.3),
* their remote ends overlap (either is unconnected, or the same 4-tuple),
* and they do not share the port by agreement: both SO_REUSEPORT, or both
  SO_REUSEADDR when neither is a TCP listener.

Ephemeral ports come from ``flowhash.pick_port`` so the flow of an active
open hashes back to the shard that opened it (DESIGN.md), searching from a
start the caller derives from a keyed hash (RFC 6056 §3.3.3). A connect may
reuse a local port already used by another connection as long as the
4-tuple differs (Linux's ``__inet_hash_connect``).
"""

from __future__ import annotations

import errno
from collections import defaultdict
from dataclasses import dataclass, replace
from itertools import count

from shardnet.common.addr import IPV4_ANY, IPV6_ANY, format_ip, is_ipv4_mapped
from shardnet.common.flowhash import EPHEMERAL_HI, EPHEMERAL_LO, pick_port
from shardnet.common.record import udp_port_owner

TCP, UDP = 6, 17


@dataclass(frozen=True, slots=True)
class Reservation:
    proto: int
    local_addr: bytes  # 4 or 16 bytes; the family's zeros for the wildcard
    local_port: int
    remote_addr: bytes | None = None  # None: not connected
    remote_port: int = 0
    nic: int = 0  # SO_BINDTODEVICE; 0: any
    reuse_addr: bool = False
    reuse_port: bool = False
    v6only: bool = False  # meaningful for an IPv6 wildcard only
    listener: bool = False  # a TCP listener (SO_REUSEADDR does not share with it)
    uid: int = 0  # who made it: SO_REUSEPORT shares only within one owner
    ident: int = 0  # set by the manager: unique, increasing (reuse-port group order)

    @property
    def wildcard(self) -> bool:
        return self.local_addr in (IPV4_ANY, IPV6_ANY)

    def summary(self) -> str:
        remote = f" -> {format_ip(self.remote_addr)}:{self.remote_port}" if self.remote_addr else ""
        return f"{'tcp' if self.proto == TCP else 'udp'} {format_ip(self.local_addr)}:{self.local_port}{remote}"


def _v4_of(addr: bytes) -> bytes | None:
    """The IPv4 address an address stands for, if any (4-byte, or v4-mapped)."""
    if len(addr) == 4:
        return addr
    if is_ipv4_mapped(addr):
        return addr[12:]
    return None


def addresses_overlap(a: Reservation, b: Reservation) -> bool:
    """Do two bound local addresses cover a common address (dual-stack aware)?"""
    if a.local_addr == b.local_addr:
        return True
    for x, y in ((a, b), (b, a)):
        if x.local_addr == IPV6_ANY:
            # [::] covers every IPv6 address, and every IPv4 one unless V6ONLY.
            return len(y.local_addr) == 16 or not x.v6only
        if x.local_addr == IPV4_ANY:
            v4 = _v4_of(y.local_addr)
            if v4 is not None:
                return True
    v4a, v4b = _v4_of(a.local_addr), _v4_of(b.local_addr)
    return v4a is not None and v4a == v4b


def conflicts(a: Reservation, b: Reservation) -> bool:
    if a.proto != b.proto or a.local_port != b.local_port:
        return False
    if a.nic and b.nic and a.nic != b.nic:
        return False
    if not addresses_overlap(a, b):
        return False
    if a.remote_addr is not None and b.remote_addr is not None:
        return (a.remote_addr, a.remote_port) == (b.remote_addr, b.remote_port)
    if a.reuse_port and b.reuse_port and a.uid == b.uid:
        return False
    # SO_REUSEADDR shares a port, except with a TCP listener (Linux).
    return not (a.reuse_addr and b.reuse_addr and not (a.listener or b.listener))


class PortManager:
    """One per shard. Reservations by (proto, port) for the conflict checks."""

    def __init__(self, *, lo: int = EPHEMERAL_LO, hi: int = EPHEMERAL_HI) -> None:
        self.lo, self.hi = lo, hi
        self._by_port: dict[tuple[int, int], list[Reservation]] = defaultdict(list)
        self._ids = count(1)

    def reserve(self, res: Reservation) -> Reservation:
        """Reserve ``res`` (port 0: not allowed here, see ``reserve_ephemeral``).
        Raises ``OSError(EADDRINUSE)`` on a conflict, as bind(2)/connect(2) do."""
        if not 0 < res.local_port <= 0xFFFF:
            raise ValueError(f"port {res.local_port}")
        for other in self._by_port.get((res.proto, res.local_port), ()):
            if conflicts(res, other):
                raise OSError(errno.EADDRINUSE, f"address already in use: {res.summary()}")
        res = replace(res, ident=next(self._ids))
        self._by_port[(res.proto, res.local_port)].append(res)
        return res

    def release(self, res: Reservation) -> None:
        group = self._by_port.get((res.proto, res.local_port))
        if group is None:
            return
        for i, other in enumerate(group):
            if other.ident == res.ident:
                del group[i]
                break
        if not group:
            del self._by_port[(res.proto, res.local_port)]

    def in_use(self, proto: int, port: int) -> bool:
        return (proto, port) in self._by_port

    def reservations(self, proto: int, port: int) -> list[Reservation]:
        """In ``ident`` order (reuse-port groups are kept sorted, as gVisor's multiPortEndpoint)."""
        return sorted(self._by_port.get((proto, port), ()), key=lambda r: r.ident)

    def reserve_ephemeral(
        self,
        res: Reservation,
        *,
        shard: int,
        nshards: int,
        start: int,
    ) -> Reservation:
        """Bind ``res`` to an ephemeral port. For a connected reservation the
        port is one whose flow hashes to ``shard`` and whose 4-tuple is free
        (other connections to other peers may share the port); for an
        unconnected one, a port nobody uses that ``shard`` owns
        (``record.udp_port_owner``: traffic to it that hashes elsewhere is
        steered there). ``OSError(EADDRNOTAVAIL)`` when none is left."""
        if res.remote_addr is None:
            port = pick_port(
                res.proto, res.local_addr, res.local_addr, 0, 0, 1,
                lo=self.lo, hi=self.hi, start=start,
                in_use=lambda p: udp_port_owner(p, nshards) != shard or self.in_use(res.proto, p),
            )  # fmt: skip
            return self.reserve(replace(res, local_port=port))
        remote = res.remote_addr
        local = res.local_addr
        if len(local) != len(remote):
            raise ValueError("local and remote addresses of different families")

        def taken(port: int) -> bool:
            candidate = replace(res, local_port=port)
            return any(conflicts(candidate, o) for o in self._by_port.get((res.proto, port), ()))

        port = pick_port(
            res.proto, local, remote, res.remote_port, shard, nshards,
            lo=self.lo, hi=self.hi, start=start, in_use=taken,
        )  # fmt: skip
        return self.reserve(replace(res, local_port=port))
