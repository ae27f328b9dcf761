"""The typed control API of a stack, whatever carries it (DESIGN.md "What
users program against").

``ControlApi`` turns the control requests that ``shardnet ctl`` sends into
typed methods; a subclass supplies only ``call(op, **args)``. ``Client``
(``common/client.py``) carries the requests over the control channel to a
running stack, the embedded ``Stack`` (``embedded/stack.py``) answers them
in its own process: the same methods, the same values, the same errors
(``ControlError``, an ``OSError``), so code written against one runs
against the other.

Values are JSON-friendly: rows as dictionaries, addresses as text, as
``shardnet ctl --json`` prints them. NICs are named by name or id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any


class ControlError(OSError):
    """The stack is not there, did not answer, or refused the request
    (``errno`` is set when the stack said why, e.g. ``EEXIST``)."""


class ControlApi(ABC):
    """Typed helpers over ``call``; one per request ``shardnet ctl`` makes."""

    @abstractmethod
    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its value; ``ControlError`` otherwise."""

    # --- the stack ------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        """Static facts: link name, MAC, shard count, processes."""
        return self.call("hello")

    def shards(self) -> dict[str, Any]:
        """The processes: ``{"dispatcher": pid, "shards": [{shard, pid, ready, restarts}]}``."""
        return self.call("shards")

    def stats(self) -> dict[str, Any]:
        """Link counters and every shard's counters, drops and gauges."""
        return self.call("stats")

    def conns(self) -> list[dict[str, Any]]:
        """Every shard's TCP connections (as ``ss -ti`` shows them), fetched
        a page at a time so that 100,000 connections never make one reply."""
        return list(self.iter_conns())

    def relays(self) -> list[dict[str, Any]]:
        """Every flow the shards relay (``--relay``): TCP being dialled or
        spliced, UDP flows, with their client and destination, a page at a
        time as ``conns``."""
        return list(self.iter_conns(op="relays"))

    def fronts(self) -> list[dict[str, Any]]:
        """Every flow the fronts carry (``--socks5``, ``--http-proxy``,
        ``--forward``): TCP splices, UDP forward pairs and SOCKS5 UDP
        associations, with their client, target, bytes each way and age,
        a page at a time as ``conns``."""
        return list(self.iter_conns(op="fronts"))

    def iter_conns(self, page: int = 1000, *, op: str = "conns") -> Iterator[dict[str, Any]]:
        """The connections (or with ``op="relays"``/``"fronts"`` the flows),
        shard by shard, ``page`` per request."""
        for shard in range(len(self.shards()["shards"])):
            offset = 0
            while True:
                rows = self.call(op, shard=shard, offset=offset, limit=page)
                yield from rows
                # A shard's listeners come with its last page of connections.
                if len(rows) < page or any(r.get("state") == "LISTEN" for r in rows):
                    break
                offset += page

    # --- NICs -------------------------------------------------------------------
    def nics(self) -> list[dict[str, Any]]:
        """Every NIC with its addresses and their state."""
        return self.call("nics")

    def nic(self, name: str | int) -> dict[str, Any]:
        """One NIC's info, by name or id; ``ControlError`` if there is none."""
        for row in self.nics():
            if row["name"] == name or row["id"] == name:
                return row
        raise ControlError(f"no such NIC: {name}")

    def nic_create(
        self,
        name: str,
        *,
        mtu: int = 65536,
        mac: str | None = None,
        disabled: bool = False,
        context: Any = None,
    ) -> dict[str, Any]:
        """A loopback NIC (the only kind a stack with one link can add), with
        an opaque ``context`` kept in its row and handed back unchanged."""
        args: dict[str, Any] = {"name": name, "loopback": True, "mtu": mtu, "disabled": disabled}
        if mac is not None:
            args["mac"] = mac
        if context is not None:
            args["context"] = context
        return self.call("nic_add", **args)

    def nic_enable(self, name: str) -> dict[str, Any]:
        return self.call("nic_set", name=name, enabled=True)

    def nic_disable(self, name: str) -> dict[str, Any]:
        return self.call("nic_set", name=name, enabled=False)

    def nic_remove(self, name: str) -> None:
        self.call("nic_del", name=name)

    # --- addresses ----------------------------------------------------------------
    def addrs(self) -> list[dict[str, Any]]:
        return self.call("addrs")

    def addr_add(
        self, nic: str | int, address: str, *, behavior: str | None = None
    ) -> dict[str, Any]:
        """``address`` is ``ADDRESS/LEN``; ``behavior`` one of
        ``can-be-primary`` (default), ``first-primary``, ``never-primary``.
        An IPv6 address starts tentative (DAD, RFC 4862 §5.4)."""
        args: dict[str, Any] = {"nic": nic, "address": address}
        if behavior is not None:
            args["behavior"] = behavior
        return self.call("addr_add", **args)

    def addr_remove(self, nic: str | int, address: str) -> None:
        """``address`` with or without its prefix length."""
        self.call("addr_del", nic=nic, address=address)

    # --- routes ---------------------------------------------------------------------
    def routes(self) -> list[dict[str, Any]]:
        return self.call("routes")

    def route_add(
        self, dst: str, *, via: str | None = None, dev: str | None = None, metric: int = 0
    ) -> dict[str, Any]:
        """``dst`` is ``PREFIX/LEN`` (``0.0.0.0/0``, ``::/0`` for defaults);
        give the gateway ``via``, the NIC ``dev``, or both."""
        return self.call("route_add", dst=dst, gateway=via, nic=dev, metric=metric)

    def route_remove(
        self, dst: str, *, via: str | None = None, dev: str | None = None, metric: int = 0
    ) -> None:
        self.call("route_del", dst=dst, gateway=via, nic=dev, metric=metric)

    # --- neighbours, NDP, forwarding --------------------------------------------------
    def neigh(self) -> list[dict[str, Any]]:
        """ARP and NDP neighbours with their NUD state."""
        return self.call("neigh")

    def groups(self) -> list[dict[str, Any]]:
        """The multicast groups sockets joined: NIC, group, the shards with
        members, and the protocol (``igmpv3``/``igmpv2``/``igmpv1``/``mldv2``)."""
        return self.call("groups")

    def ndp_get(self, nic: str | None = None) -> dict[str, Any]:
        """A NIC's NDP configuration (default: the link's)."""
        return self.call("ndp_get", nic=nic)

    def ndp_set(self, settings: dict[str, Any], nic: str | None = None) -> dict[str, Any]:
        """Change NDP settings (``NdpConfig`` field names); returns them all."""
        return self.call("ndp_set", nic=nic, settings=dict(settings))

    # --- stack-wide TCP and IP settings ---------------------------------------------------
    def tcp_get(self) -> dict[str, Any]:
        """The stack-wide TCP settings (``TcpConfig`` field -> value)."""
        return self.call("tcp_get")

    def tcp_set(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Change stack-wide TCP settings in every shard (all or none: a bad
        name or value raises ``ControlError`` with ``EINVAL`` and changes
        nothing); returns them all. New connections take every change;
        open ones the TIME-WAIT and FIN-WAIT-2 times, the retry budget and
        the keepalive defaults their socket options did not set."""
        return self.call("tcp_set", settings=dict(settings))

    def ip_get(self) -> dict[str, Any]:
        """The IPv4/IPv6 settings: default TTL / hop limit, ICMP error rate,
        reassembly limits (``IpConfig`` field -> value)."""
        return self.call("ip_get")

    def ip_set(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Change IPv4/IPv6 settings (all or none, as ``tcp_set``); returns them all."""
        return self.call("ip_set", settings=dict(settings))

    def forwarding(self, on: bool | None = None) -> bool:
        """Whether the stack forwards (router mode, RFC 4861 §6.2: RAs ignored,
        no RS); ``on`` changes it."""
        args = {} if on is None else {"on": bool(on)}
        return bool(self.call("forwarding", **args)["forwarding"])
