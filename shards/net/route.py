"""The routing table: longest-prefix match, then the lowest metric.

Implements:
  * RFC 1812 §5.2.4.3 / RFC 4861 §5.2 longest-prefix match over IPv4 and IPv6
    routes kept in one table (the family is the address length, 4 or 16);
    among routes of the same prefix the lowest metric wins, then the oldest
    (as Linux's FIB does), optionally restricted to one NIC and to usable
    (enabled) NICs — a route whose NIC is unusable is skipped and the search
    goes on to shorter prefixes.
  * gVisor ``FindRoute``: the limited broadcast, multicast and
    IPv6 link-local destinations need no route: with a NIC from the socket or
    the scope id they go straight out of it, next hop = destination
    (``needs_route``, ``resolve``).

Left out: multipath (ECMP), policy routing (several tables, ``ip rule``),
route types other than unicast (blackhole, prohibit), per-route MTU (the
path MTU cache is ``pmtu.py``).

Lookup cost: one ``int.from_bytes`` and one dict probe per prefix length that
is present in the table (at most 33 for IPv4, 129 for IPv6; typically 2-4).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from shardnet.common.addr import format_ip, is_ipv4_multicast

ROUTE_ORIGINS = frozenset({"static", "connected", "ra", "redirect", "dhcp"})


@dataclass(frozen=True, slots=True)
class Route:
    """``dst/prefix_len`` via ``gateway`` (None: on-link) out of NIC ``nic``.

    ``origin``: "static" (configured), "connected" (the subnet of an address),
    "ra" (learned from a Router Advertisement, RFC 4861 §6.3.4) or
    "redirect" (a host route from a Redirect, RFC 4861 §8.3, RFC 1122 §3.2.2.2)
    or "dhcp" (the router of a DHCPv4 lease, RFC 2132 §3.5).
    """

    dst: bytes
    prefix_len: int
    nic: int
    gateway: bytes | None = None
    metric: int = 0
    origin: str = "static"

    @property
    def key(self) -> tuple[bytes, int, int, bytes | None]:
        """What makes two routes the same route (an add with it replaces)."""
        return (self.dst, self.prefix_len, self.nic, self.gateway)

    def summary(self) -> str:
        via = f" via {format_ip(self.gateway)}" if self.gateway is not None else ""
        return (
            f"{format_ip(self.dst)}/{self.prefix_len}{via} nic {self.nic}"
            f" metric {self.metric} proto {self.origin}"
        )


def next_hop(route: Route, dst: bytes) -> bytes:
    """The neighbour to resolve: the gateway, or ``dst`` itself on-link."""
    gw = route.gateway
    return dst if gw is None else gw


def needs_route(dst: bytes) -> bool:
    """False for destinations a NIC reaches without a route —
    the limited broadcast 255.255.255.255 (RFC 919), IPv4 multicast 224/4
    (RFC 1112), IPv6 multicast ff00::/8 and link-local fe80::/10 (RFC 4291
    §2.5.6, §2.7: meaningful only with a zone, RFC 4007 §6)."""
    if len(dst) == 4:
        return dst != b"\xff\xff\xff\xff" and not is_ipv4_multicast(dst)
    b0 = dst[0]
    return b0 != 0xFF and not (b0 == 0xFE and (dst[1] & 0xC0) == 0x80)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a packet to a destination goes: out of ``nic`` to ``next_hop``.

    ``route`` is None when the NIC came from the socket or the scope id for a
    destination that needs no route (``needs_route``)."""

    nic: int
    next_hop: bytes
    route: Route | None


class _Family:
    """The lookup index of one family: (prefix_len, {prefix int: routes})
    with the longest prefix first; each bucket sorted by metric then age."""

    __slots__ = ("bits", "levels")

    def __init__(self, bits: int, routes: list[Route]) -> None:
        self.bits = bits
        buckets: dict[int, dict[int, list[Route]]] = {}
        for r in routes:  # insertion order: ties in metric keep the older route first
            shift = bits - r.prefix_len
            key = int.from_bytes(r.dst, "big") >> shift
            buckets.setdefault(r.prefix_len, {}).setdefault(key, []).append(r)
        self.levels: list[tuple[int, dict[int, tuple[Route, ...]]]] = [
            (
                bits - plen,  # the shift that turns an address into this level's key
                {k: tuple(sorted(v, key=_by_metric)) for k, v in level.items()},
            )
            for plen, level in sorted(buckets.items(), reverse=True)
        ]


def _by_metric(r: Route) -> int:
    return r.metric


_EMPTY4 = _Family(32, [])
_EMPTY6 = _Family(128, [])


class RouteTable:
    """IPv4 and IPv6 routes; ``lookup`` is the data-path call.

    ``version`` increases on every change so callers may cache decisions."""

    __slots__ = ("_routes", "_v4", "_v6", "version")

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[tuple[bytes, int, int, bytes | None], Route] = {}
        self._v4 = _EMPTY4
        self._v6 = _EMPTY6
        self.version = 0
        self.replace_all(routes)

    # --- changes ------------------------------------------------------------------
    def add(self, route: Route) -> None:
        """Add ``route``; a route with the same dst/prefix_len/nic/gateway is
        replaced in place (it keeps its age for the metric tie-break).

        ValueError for a malformed route (bad lengths, host bits set, unknown
        origin)."""
        route = _checked(route)
        self._routes[route.key] = route
        self._rebuild()

    def remove(self, route: Route) -> bool:
        """Remove the route equal to ``route`` (dst/prefix_len/nic/gateway;
        metric and origin are ignored). False if there was none."""
        if self._routes.pop(route.key, None) is None:
            return False
        self._rebuild()
        return True

    def remove_matching(
        self, dst: bytes, prefix_len: int, *, nic: int | None = None, gateway: bytes | None = None
    ) -> int:
        """``ip route del dst/len [dev nic] [via gateway]``: remove every route
        for that prefix, filtered by NIC and gateway when given. The count."""
        doomed = [
            k
            for k, r in self._routes.items()
            if r.dst == dst
            and r.prefix_len == prefix_len
            and (nic is None or r.nic == nic)
            and (gateway is None or r.gateway == gateway)
        ]
        return self._drop(doomed)

    def remove_nic(self, nic: int) -> int:
        """Remove every route out of NIC ``nic`` (the NIC is gone). The count."""
        return self._drop([k for k, r in self._routes.items() if r.nic == nic])

    def replace_all(self, routes: Iterable[Route]) -> None:
        """The table becomes ``routes`` (later equal routes replace earlier)."""
        new: dict[tuple[bytes, int, int, bytes | None], Route] = {}
        for r in routes:
            r = _checked(r)
            new[r.key] = r
        self._routes = new
        self._rebuild()

    def _drop(self, keys: list[tuple[bytes, int, int, bytes | None]]) -> int:
        for k in keys:
            del self._routes[k]
        if keys:
            self._rebuild()
        return len(keys)

    def _rebuild(self) -> None:
        routes = list(self._routes.values())
        self._v4 = _Family(32, [r for r in routes if len(r.dst) == 4])
        self._v6 = _Family(128, [r for r in routes if len(r.dst) == 16])
        self.version += 1

    # --- reading ------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """All routes: IPv4 first, then by prefix length (longest first), then
        metric, then age — the order ``lookup`` considers them in."""
        out: list[Route] = []
        for fam in (self._v4, self._v6):
            for _shift, level in fam.levels:
                bucket_routes = [r for bucket in level.values() for r in bucket]
                bucket_routes.sort(key=_by_metric)  # stable: dict order keeps age ties
                out.extend(bucket_routes)
        return out

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, route: object) -> bool:
        return isinstance(route, Route) and route.key in self._routes

    def lookup(
        self,
        dst: bytes,
        *,
        nic: int | None = None,
        usable: Callable[[int], bool] | None = None,
    ) -> Route | None:
        """The route to ``dst``: the longest matching prefix, then the lowest
        metric, among routes out of ``nic`` (if given) whose NIC is usable
        (``usable(nic_id)``, if given). None: no route."""
        if len(dst) == 4:
            levels = self._v4.levels
        elif len(dst) == 16:
            levels = self._v6.levels
        else:
            return None
        value = int.from_bytes(dst, "big")
        for shift, level in levels:
            bucket = level.get(value >> shift)
            if bucket is None:
                continue
            if nic is None and usable is None:
                return bucket[0]
            for r in bucket:
                if (nic is None or r.nic == nic) and (usable is None or usable(r.nic)):
                    return r
        return None

    def resolve(
        self,
        dst: bytes,
        *,
        nic: int | None = None,
        usable: Callable[[int], bool] | None = None,
    ) -> RouteDecision:
        """gVisor ``FindRoute`` for a socket: ``nic`` is the NIC
        the socket is bound to or the scope id of ``dst`` (0 or None: none).

        * ``dst`` needs no route (``needs_route``) and a NIC is given: that NIC,
          next hop ``dst``. Otherwise the table is searched; for such a ``dst``
          the next hop is still ``dst`` itself (multicast and broadcast are
          mapped to a MAC, never sent to a gateway).
        * No route: ``OSError(ENETUNREACH)`` ("network unreachable", as Linux
          answers ``connect()``; gVisor returned EHOSTUNREACH for a missing
          route needing one).
        """
        nic = nic or None
        if not needs_route(dst):
            if nic is not None:
                if usable is not None and not usable(nic):
                    raise OSError(errno.ENETUNREACH, f"NIC {nic} is down")
                return RouteDecision(nic, dst, None)
            r = self.lookup(dst, usable=usable)
            if r is None:
                raise OSError(
                    errno.ENETUNREACH,
                    f"{format_ip(dst)} needs an interface (bind to a device or give a scope id)",
                )
            return RouteDecision(r.nic, dst, r)
        r = self.lookup(dst, nic=nic, usable=usable)
        if r is None:
            raise OSError(errno.ENETUNREACH, f"no route to {format_ip(dst)}")
        gw = r.gateway
        return RouteDecision(r.nic, dst if gw is None else gw, r)


def _checked(r: Route) -> Route:
    n = len(r.dst)
    if n not in (4, 16):
        raise ValueError(f"route destination of {n} bytes")
    if not 0 <= r.prefix_len <= n * 8:
        raise ValueError(f"bad prefix length /{r.prefix_len}")
    shift = n * 8 - r.prefix_len
    if int.from_bytes(r.dst, "big") & ((1 << shift) - 1):
        raise ValueError(f"{format_ip(r.dst)}/{r.prefix_len} has host bits set")
    if r.origin not in ROUTE_ORIGINS:
        raise ValueError(f"unknown route origin {r.origin!r}")
    if r.metric < 0:
        raise ValueError(f"negative metric {r.metric}")
    if r.gateway is not None:
        if len(r.gateway) != n:
            raise ValueError("gateway and destination are of different families")
        if not any(r.gateway):
            return replace(r, gateway=None)  # "via 0.0.0.0" / "via ::" is on-link
    return r
