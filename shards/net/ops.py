"""Control requests on the network state (``shardnet ctl``, ``Client``),
answered by shard 0: NICs, addresses, routes, neighbours.

Arguments arrive as msgpack values (text addresses, names); each op checks
them and raises ``NetError`` with a one-line message for the caller.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from typing import Any

from shardnet.common.addr import parse_ip, parse_mac

from .model import PrimaryBehavior, network_of
from .route import Route
from .state import NetError, NetOwner, route_to_row


def _prefix(text: Any, what: str) -> tuple[bytes, int]:
    try:
        net = ipaddress.ip_interface(str(text))
    except ValueError:
        raise NetError(errno.EINVAL, f"{what}: bad address {text!r} (want ADDRESS/LEN)") from None
    if "/" not in str(text):
        raise NetError(errno.EINVAL, f"{what}: {text!r} needs a prefix length")
    return net.ip.packed, net.network.prefixlen


def _ip(text: Any, what: str) -> bytes:
    try:
        return parse_ip(str(text))
    except ValueError:
        raise NetError(errno.EINVAL, f"{what}: bad address {text!r}") from None


class NetOps:
    """The request table: op name -> handler(args) -> JSON-friendly value."""

    def __init__(self, owner: NetOwner, neighbours: Callable[[], list[dict[str, Any]]]) -> None:
        self.owner = owner
        self.neighbours = neighbours
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "nics": self.nics,
            "nic_add": self.nic_add,
            "nic_set": self.nic_set,
            "nic_del": self.nic_del,
            "addrs": self.addrs,
            "addr_add": self.addr_add,
            "addr_del": self.addr_del,
            "routes": self.routes,
            "route_add": self.route_add,
            "route_del": self.route_del,
            "neigh": lambda args: self.neighbours(),
        }

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        handler = self.ops.get(op)
        if handler is None:
            raise NetError(errno.EOPNOTSUPP, f"unknown request {op!r}")
        return handler(args)

    def _nic_name(self, nic_id: int) -> str:
        nic = self.owner.view.nics.get(nic_id)
        return nic.name if nic is not None else str(nic_id)

    # --- NICs ------------------------------------------------------------------
    def nics(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """NIC info: the NIC's row (with its opaque context) with its addresses and their state."""
        view = self.owner.view
        return [
            n.to_row()
            | {
                "addresses": [
                    {
                        "addr": f"{a['addr']}/{a['prefix_len']}",
                        "kind": a["kind"],
                        "behavior": a["behavior"],
                    }
                    for a in (x.to_row() for fam in (4, 16) for x in view.addresses_of(n.id, fam))
                ]
            }
            for n in sorted(view.nics.values(), key=lambda n: n.id)
        ]

    def nic_add(self, args: dict[str, Any]) -> dict[str, Any]:
        """A NIC without a link of its own: only loopback NICs make sense in
        a stack process that owns one link."""
        if not args.get("loopback"):
            raise NetError(errno.EOPNOTSUPP, "a NIC needs a link; only loopback NICs can be added")
        mac = parse_mac(str(args["mac"])) if args.get("mac") else bytes(6)
        nic = self.owner.create_nic(
            str(args.get("name", "")),
            mac=mac,
            mtu=int(args.get("mtu", 65536)),
            loopback=True,
            disabled=bool(args.get("disabled", False)),
            kind="loopback",
            context=args.get("context"),
            nic_id=int(args["id"]) if args.get("id") is not None else None,
        )
        return nic.to_row()

    def nic_set(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.owner.set_nic_enabled(
            str(args.get("name")), bool(args.get("enabled", True))
        ).to_row()

    def nic_del(self, args: dict[str, Any]) -> None:
        name = str(args.get("name"))
        if self.owner.nic(name).id == 1:
            raise NetError(errno.EBUSY, f"{name} is the stack's link; stop the stack instead")
        self.owner.remove_nic(name)

    # --- addresses -----------------------------------------------------------------
    def addrs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for a in sorted(
            self.owner.view.addresses.values(), key=lambda a: (a.nic, len(a.addr), a.position)
        ):
            rows.append(a.to_row() | {"nic_name": self._nic_name(a.nic)})
        return rows

    def check_addr_add(self, args: dict[str, Any]) -> None:
        """The checks of ``addr_add`` without adding (for IPv6, which NDP adds)."""
        _prefix(args.get("address"), "addr add")
        try:
            PrimaryBehavior(args.get("behavior", "can-be-primary"))
        except ValueError:
            raise NetError(
                errno.EINVAL, f"addr add: bad behaviour {args.get('behavior')!r}"
            ) from None

    def addr_add(self, args: dict[str, Any]) -> dict[str, Any]:
        addr, plen = _prefix(args.get("address"), "addr add")
        try:
            behavior = PrimaryBehavior(args.get("behavior", "can-be-primary"))
        except ValueError:
            raise NetError(
                errno.EINVAL, f"addr add: bad behaviour {args.get('behavior')!r}"
            ) from None
        a = self.owner.add_address(str(args.get("nic")), addr, plen, behavior=behavior)
        return a.to_row()

    def addr_del(self, args: dict[str, Any]) -> None:
        text = str(args.get("address"))
        addr = _ip(text.split("/")[0], "addr del")
        self.owner.remove_address(str(args.get("nic")), addr)

    # --- routes ---------------------------------------------------------------------
    def routes(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            route_to_row(r) | {"nic_name": self._nic_name(r.nic)}
            for r in self.owner.view.routes.routes()
        ]

    def _route(self, args: dict[str, Any], what: str) -> Route:
        dst, plen = _prefix(args.get("dst"), what)
        gateway = _ip(args["gateway"], f"{what} via") if args.get("gateway") else None
        if args.get("nic"):
            nic_id = self.owner.nic(str(args["nic"])).id
        elif gateway is not None:
            onlink = self.owner.view.routes.lookup(gateway)
            if onlink is None or onlink.gateway is not None:
                raise NetError(
                    errno.ENETUNREACH,
                    f"{what}: gateway {args['gateway']} is not on a connected network",
                )
            nic_id = onlink.nic
        else:
            raise NetError(errno.EINVAL, f"{what}: give --dev NIC or --via GATEWAY")
        try:
            metric = int(args.get("metric") or 0)
        except (TypeError, ValueError):
            raise NetError(errno.EINVAL, f"{what}: bad metric {args.get('metric')!r}") from None
        # network_of keeps the family (an int alone would make ::/0 0.0.0.0/0).
        return Route(network_of(dst, plen), plen, nic_id, gateway, metric, "static")

    def route_add(self, args: dict[str, Any]) -> dict[str, Any]:
        route = self._route(args, "route add")
        self.owner.add_route(route)
        return route_to_row(route) | {"nic_name": self._nic_name(route.nic)}

    def route_del(self, args: dict[str, Any]) -> None:
        self.owner.remove_route(self._route(args, "route del"))
