"""The network layer's state: shard 0 changes it (``NetOwner``), every shard
reads it (``NetView``).

Shard 0 keeps the truth as rows of replicated tables (``TableOwner``): each
operation validates, writes rows, and publishes the patches; every shard,
shard 0 included, rebuilds its ``NetView`` lookup structures from the same
rows, so there is one code path from a change to its effect.

Tables: ``nics`` (key: NIC id), ``addrs`` (key: "nic/address"), ``routes``
(key: "dst/len nic gateway"), ``neigh`` (key: "nic/ip").
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Any

from shardnet.common.addr import format_ip, format_mac, is_unicast, parse_ip, parse_mac
from shardnet.common.messages import Patch
from shardnet.common.replica import TableOwner
from shardnet.common.wire.ipv6 import solicited_node_multicast

from .model import Address, AddressKind, Nic, PrimaryBehavior, directed_broadcast, network_of
from .route import ROUTE_ORIGINS, Route, RouteTable

LOOPBACK_NAME = "lo"
LOOPBACK_MTU = 65536


class NetError(OSError):
    """A refused network-layer operation; ``str()`` is one line for ``ctl``."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def route_key(r: Route) -> str:
    """The table key: what makes two routes the same route (``Route.key``;
    an add with the same key replaces, whatever the metric)."""
    gw = format_ip(r.gateway) if r.gateway else "-"
    return f"{format_ip(r.dst)}/{r.prefix_len} {r.nic} {gw}"


def route_to_row(r: Route) -> dict[str, Any]:
    return {
        "dst": format_ip(r.dst),
        "prefix_len": r.prefix_len,
        "nic": r.nic,
        "gateway": format_ip(r.gateway) if r.gateway else None,
        "metric": r.metric,
        "origin": r.origin,
    }


def route_from_row(row: dict[str, Any]) -> Route:
    gw = row.get("gateway")
    return Route(
        parse_ip(row["dst"]),
        row["prefix_len"],
        row["nic"],
        parse_ip(gw) if gw else None,
        row["metric"],
        row["origin"],
    )


POINT_TO_POINT_MAC = bytes(6)  # the peer's "address" on a TUN: none


class NetView:
    """Lookup structures for the data path, rebuilt from the tables."""

    def __init__(self) -> None:
        self.nics: dict[int, Nic] = {}
        self.nic_by_name: dict[str, Nic] = {}
        self.addresses: dict[str, Address] = {}
        self.local: dict[bytes, Address] = {}  # usable addresses: accepted, may be sources
        self.tentative: dict[bytes, Address] = {}  # DAD running: only NDP may use them
        self.broadcast: dict[bytes, int] = {}  # IPv4 directed broadcasts -> NIC
        # Solicited-node groups of our IPv6 addresses, tentative included (DAD).
        self.solicited_groups: frozenset[bytes] = frozenset()
        # Multicast groups sockets joined, per NIC (IGMP/MLD run in shard 0).
        self.groups: frozenset[tuple[int, bytes]] = frozenset()
        self.routes = RouteTable()
        self.neighbours: dict[tuple[int, bytes], bytes] = {}  # (nic, ip) -> mac
        # Bumped whenever NICs or addresses change: what is derived from them
        # (the stack's source-address choices) is stale then.
        self.generation = 0
        # Bumped on every change of any table: what is derived from routes,
        # neighbours, NICs or addresses together (``path.PathCache``) is stale then.
        self.version = 0

    def load(
        self, tables: dict[str, dict[str, Any]], changed: str | None = None, key: str | None = None
    ) -> None:
        """Rebuild from ``tables``; only the part ``changed`` names, if given,
        and of the neighbours only the row ``key``, if given (a neighbour
        learnt must cost the same whatever the table's size)."""
        self.version += 1
        if changed == "neigh" and key is not None:
            nic_id, _, ip = key.partition("/")
            entry = (int(nic_id), parse_ip(ip))
            row = tables.get("neigh", {}).get(key)
            if row is not None and row.get("mac"):
                self.neighbours[entry] = parse_mac(row["mac"])
            else:
                self.neighbours.pop(entry, None)
            return
        if changed in (None, "nics"):
            self.nics = {int(k): Nic.from_row(r) for k, r in tables.get("nics", {}).items()}
            self.nic_by_name = {n.name: n for n in self.nics.values()}
        if changed in (None, "nics", "addrs"):
            self.generation += 1
            self.addresses = {k: Address.from_row(r) for k, r in tables.get("addrs", {}).items()}
            self.local, self.tentative, self.broadcast = {}, {}, {}
            for a in self.addresses.values():
                nic = self.nics.get(a.nic)
                if nic is None or not nic.enabled:
                    continue
                if a.usable:
                    self.local[a.addr] = a
                    bcast = directed_broadcast(a.addr, a.prefix_len)
                    if bcast is not None:
                        self.broadcast[bcast] = a.nic
                elif a.kind is AddressKind.TENTATIVE:
                    self.tentative[a.addr] = a
            self.solicited_groups = frozenset(
                solicited_node_multicast(addr)
                for addr in (*self.local, *self.tentative)
                if len(addr) == 16
            )
        if changed in (None, "routes"):
            self.routes.replace_all(route_from_row(r) for r in tables.get("routes", {}).values())
        if changed in (None, "groups"):
            self.groups = frozenset(
                (r["nic"], parse_ip(r["group"])) for r in tables.get("groups", {}).values()
            )
        if changed in (None, "neigh"):
            self.neighbours = {
                (r["nic"], parse_ip(r["ip"])): parse_mac(r["mac"])
                for r in tables.get("neigh", {}).values()
                if r.get("mac")
            }

    def next_hop_mac(self, nic: Nic, ip: bytes) -> bytes | None:
        """The MAC to send to ``ip`` over ``nic``: the neighbour table's, or
        on a point-to-point TUN (no link-layer addresses, nothing to
        resolve) the placeholder its link drops with the Ethernet header."""
        if nic.kind == "tun":
            return POINT_TO_POINT_MAC
        return self.neighbours.get((nic.id, ip))

    def bound_nic(self, value: int | str | None) -> int:
        """SO_BINDTODEVICE's NIC by id or name; 0 (or "", None) unbinds;
        OSError(ENODEV) if there is none (socket(7))."""
        if value in (0, "", None):
            return 0
        nic = self.nic_by_name.get(value) if isinstance(value, str) else self.nics.get(int(value))
        if nic is None:
            raise OSError(errno.ENODEV, f"no such NIC: {value}")
        return nic.id

    def nic_enabled(self, nic_id: int) -> bool:
        nic = self.nics.get(nic_id)
        return nic is not None and nic.enabled

    def addresses_of(self, nic_id: int, family_len: int) -> list[Address]:
        """A NIC's addresses of one family in primary-list order."""
        found = [
            a for a in self.addresses.values() if a.nic == nic_id and len(a.addr) == family_len
        ]
        return sorted(found, key=lambda a: a.position)


class NetOwner:
    """Shard 0's operations on the network state. Each returns the rows it
    changed via ``publish``; errors raise ``NetError``."""

    def __init__(self, owner: TableOwner, publish: Callable[[Patch | None], None]) -> None:
        self.owner = owner
        self.publish = publish
        self.view = NetView()
        self._next_nic_id = 1
        self._next_position = 0

    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        return self.owner.tables

    def _set(self, table: str, key: str, row: dict[str, Any]) -> None:
        self.publish(self.owner.set(table, key, row))
        self.view.load(self.tables, table, key)

    def _delete(self, table: str, key: str) -> None:
        self.publish(self.owner.delete(table, key))
        self.view.load(self.tables, table, key)

    # --- NICs ----------------------------------------------------------------------
    def create_nic(
        self,
        name: str,
        *,
        mac: bytes,
        mtu: int,
        loopback: bool = False,
        disabled: bool = False,
        kind: str = "tap",
        context: Any = None,
        nic_id: int | None = None,
    ) -> Nic:
        """``nic_id``: the id to give it (as gVisor's CreateNIC takes one);
        by default the next free one."""
        if nic_id is not None and (nic_id < 1 or nic_id in self.view.nics):
            raise NetError(errno.EEXIST, f"NIC id {nic_id} is taken or invalid")
        if not name or len(name) > 15:
            raise NetError(errno.EINVAL, f"bad NIC name {name!r}")
        if name in self.view.nic_by_name:
            raise NetError(
                errno.EEXIST, f"a NIC named {name} exists"
            )  # names are unique (gVisor allowed duplicates at first; Linux does not)
        if not 68 <= mtu <= 65536:
            raise NetError(errno.EINVAL, f"bad MTU {mtu}")
        if nic_id is None:
            nic_id = self._next_nic_id
        nic = Nic(nic_id, name, mac, mtu, loopback, not disabled, kind, context)
        self._next_nic_id = max(self._next_nic_id, nic_id + 1)
        self._set("nics", str(nic.id), nic.to_row())
        return nic

    def nic(self, name_or_id: str | int) -> Nic:
        nic = self.view.nic_by_name.get(name_or_id) if isinstance(name_or_id, str) else None
        if nic is None and (isinstance(name_or_id, int) or str(name_or_id).isdigit()):
            nic = self.view.nics.get(int(name_or_id))  # a NIC id, as an integrator may give it
        if nic is None:
            raise NetError(errno.ENODEV, f"no NIC {name_or_id}")
        return nic

    def set_nic_mtu(self, name_or_id: str | int, mtu: int) -> Nic:
        """An MTU learnt from an RA (RFC 4861 §6.3.4) or set by the user."""
        nic = self.nic(name_or_id)
        if not 68 <= mtu <= 65536:
            raise NetError(errno.EINVAL, f"bad MTU {mtu}")
        nic.mtu = mtu
        self._set("nics", str(nic.id), nic.to_row())
        return nic

    def set_nic_param(self, name_or_id: str | int, name: str, value: Any) -> Nic:
        """A host variable learnt from an RA (RFC 4861 §6.3.4)."""
        nic = self.nic(name_or_id)
        if nic.params.get(name) != value:
            nic.params[name] = value
            self._set("nics", str(nic.id), nic.to_row())
        return nic

    def set_nic_enabled(self, name_or_id: str | int, enabled: bool) -> Nic:
        nic = self.nic(name_or_id)
        nic.enabled = enabled
        self._set("nics", str(nic.id), nic.to_row())
        return nic

    def remove_nic(self, name_or_id: str | int) -> None:
        nic = self.nic(name_or_id)
        for a in [a for a in self.view.addresses.values() if a.nic == nic.id]:
            self._delete("addrs", a.key)
        for r in [r for r in self.view.routes.routes() if r.nic == nic.id]:
            self._delete("routes", route_key(r))
        for table in ("neigh", "groups"):
            for key in [k for k, row in self.tables.get(table, {}).items() if row["nic"] == nic.id]:
                self._delete(table, key)
        self._delete("nics", str(nic.id))

    # --- addresses -----------------------------------------------------------------
    def add_address(
        self,
        nic_name: str | int,
        addr: bytes,
        prefix_len: int,
        *,
        behavior: PrimaryBehavior = PrimaryBehavior.CAN_BE_PRIMARY,
        kind: AddressKind = AddressKind.PERMANENT,
        origin: str = "static",
        connected_route: bool = True,
    ) -> Address:
        nic = self.nic(nic_name)
        bits = len(addr) * 8
        if len(addr) not in (4, 16) or not 0 <= prefix_len <= bits:
            raise NetError(errno.EINVAL, f"bad prefix length /{prefix_len}")
        if not is_unicast(addr):
            raise NetError(errno.EINVAL, f"{format_ip(addr)} is not a unicast address")
        key = f"{nic.id}/{format_ip(addr)}"
        old = self.view.addresses.get(key)
        if old is not None and old.kind is not AddressKind.EXPIRED:
            raise NetError(errno.EEXIST, f"{format_ip(addr)} is already on {nic.name}")
        for other in self.view.addresses.values():
            if other.addr == addr and other.nic != nic.id:
                raise NetError(errno.EEXIST, f"{format_ip(addr)} is already on NIC {other.nic}")
        # A re-added (expired) address takes its place from the new behaviour.
        position = self._position(nic.id, behavior, old)
        a = Address(nic.id, addr, prefix_len, kind, behavior, origin, position)
        self._set("addrs", a.key, a.to_row())
        if connected_route and prefix_len < bits:
            self.add_route(
                Route(network_of(addr, prefix_len), prefix_len, nic.id, None, 0, "connected")
            )
        return a

    def _position(self, nic_id: int, behavior: PrimaryBehavior, old: Address | None) -> int:
        positions = [a.position for a in self.view.addresses.values() if a.nic == nic_id]
        if behavior is PrimaryBehavior.FIRST_PRIMARY:
            return min(positions, default=0) - 1
        if (
            old is not None
            and behavior is PrimaryBehavior.CAN_BE_PRIMARY
            and old.behavior is not PrimaryBehavior.NEVER_PRIMARY
        ):
            return old.position  # keeps its place (a never-primary one had none: appended)
        return max(positions, default=0) + 1

    def set_address_kind(self, nic_id: int, addr: bytes, kind: AddressKind) -> Address:
        a = self.address(nic_id, addr)
        a.kind = kind
        self._set("addrs", a.key, a.to_row())
        return a

    def address(self, nic_name: str | int, addr: bytes) -> Address:
        nic = self.nic(nic_name)
        a = self.view.addresses.get(f"{nic.id}/{format_ip(addr)}")
        if a is None:
            raise NetError(errno.EADDRNOTAVAIL, f"{format_ip(addr)} is not on {nic.name}")
        return a

    def remove_address(self, nic_name: str | int, addr: bytes) -> None:
        a = self.address(nic_name, addr)
        self._delete("addrs", a.key)
        for r in self.view.routes.routes():
            if (
                r.origin == "connected"
                and r.nic == a.nic
                and r.prefix_len == a.prefix_len
                and r.dst == network_of(a.addr, a.prefix_len)
                and not any(
                    o.nic == a.nic
                    and network_of(o.addr, o.prefix_len) == r.dst
                    and o.prefix_len == r.prefix_len
                    for o in self.view.addresses.values()
                )
            ):
                self._delete("routes", route_key(r))

    # --- routes --------------------------------------------------------------------
    def add_route(self, route: Route) -> None:
        # Everything RouteTable checks is checked here first: a row it refused
        # would be published, and then break every rebuild of the table.
        if route.nic not in self.view.nics:
            raise NetError(errno.ENODEV, f"no NIC {route.nic}")
        if len(route.dst) not in (4, 16) or not 0 <= route.prefix_len <= len(route.dst) * 8:
            raise NetError(errno.EINVAL, f"bad route destination /{route.prefix_len}")
        if route.gateway is not None and len(route.gateway) != len(route.dst):
            raise NetError(errno.EINVAL, "gateway and destination are of different families")
        if route.metric < 0:
            raise NetError(errno.EINVAL, f"bad metric {route.metric}")
        if route.origin not in ROUTE_ORIGINS:
            raise NetError(errno.EINVAL, f"bad route origin {route.origin!r}")
        if network_of(route.dst, route.prefix_len) != route.dst:
            raise NetError(
                errno.EINVAL, f"{format_ip(route.dst)}/{route.prefix_len} has host bits set"
            )
        self._set("routes", route_key(route), route_to_row(route))

    def remove_route(self, route: Route) -> None:
        key = route_key(route)
        if key not in self.tables.get("routes", {}):
            raise NetError(errno.ESRCH, f"no route {key}")
        self._delete("routes", key)

    def replace_routes(self, routes: Iterable[Route]) -> None:
        new = {route_key(r): r for r in routes}
        for key in list(self.tables.get("routes", {})):
            if key not in new:
                self._delete("routes", key)
        for r in new.values():
            self.add_route(r)

    # --- neighbours (published for the replicas) -----------------------------------
    def set_group(self, nic_id: int, group: bytes, shards: list[int] | None) -> None:
        """Publish that sockets in ``shards`` joined ``group`` on the NIC
        (None or empty: nobody any more)."""
        key = f"{nic_id}/{format_ip(group)}"
        if not shards:
            if key in self.tables.get("groups", {}):
                self._delete("groups", key)
            return
        self._set("groups", key, {"nic": nic_id, "group": format_ip(group), "shards": shards})

    def set_neighbour(
        self, nic_id: int, ip: bytes, mac: bytes | None, *, republish: bool = False
    ) -> None:
        """Publish ``ip``'s MAC (None: gone). ``republish``: send the row even
        if unchanged (a replica asked for it: it may have missed the patch)."""
        key = f"{nic_id}/{format_ip(ip)}"
        if mac is None:
            if key in self.tables.get("neigh", {}):
                self._delete("neigh", key)
            return
        # Only the address is replicated: state changes (REACHABLE -> STALE ...)
        # stay in shard 0's neighbour table and would only be chatter here.
        old = self.tables.get("neigh", {}).get(key)
        if republish or old is None or old["mac"] != format_mac(mac):
            self._set("neigh", key, {"nic": nic_id, "ip": format_ip(ip), "mac": format_mac(mac)})
