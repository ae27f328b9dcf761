"""The control changes made at run time, kept by the dispatcher so that a
restarted shard 0 gets them back.

Shard 0 owns the stack's tables; when it dies, the supervisor starts a new
one, which rebuilds its state from the configuration. What
integrators changed since — addresses, routes, loopback NICs, their state,
NDP settings, forwarding, the stack-wide TCP and IP settings — would be
lost silently. The dispatcher forwards
every such request and sees its answer, so it records the ones shard 0
accepted and replays them, in order, to the new shard 0. What the network
teaches the stack (SLAAC addresses, routers, neighbours) is learnt again
from the network; the sockets' multicast groups are announced again by
their shards.

A NIC added at run time is recorded with the id shard 0 gave it and made
again with that id, so requests naming it by id stay right. The journal
stays small under churn: a deletion cancels the addition it undoes (both
go), a NIC's removal takes its own records with it, and later NIC states,
NDP, TCP and IP settings and forwarding replace earlier ones.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("shardnet.dispatcher")

# The requests that change shard 0's tables (ctl's and Client's writes).
MUTATIONS = frozenset(
    {"nic_add", "nic_set", "nic_del", "addr_add", "addr_del", "route_add", "route_del",
     "ndp_set", "forwarding", "tcp_set", "ip_set"}
)  # fmt: skip
MAX_ENTRIES = 10_000  # beyond this the oldest records go (and a warning says so)


def _addr_key(args: dict[str, Any]) -> tuple[str, str, str]:
    return ("addr", str(args.get("nic")), str(args.get("address", "")).split("/")[0])


def _route_key(args: dict[str, Any]) -> tuple[str, ...]:
    return (
        "route",
        str(args.get("dst")),
        str(args.get("gateway")),
        str(args.get("nic")),
        str(args.get("metric", 0)),
    )


class ControlJournal:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # key -> (op, args); insertion order is replay order.
        self._entries: dict[tuple[str, ...], tuple[str, dict[str, Any]]] = {}
        self._seq = 0
        self.dropped = 0  # records lost to the size limit

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """The requests to replay, oldest first."""
        return list(self._entries.values())

    def record(self, op: str, args: dict[str, Any], value: Any = None) -> None:
        """Shard 0 accepted ``op(args)`` and answered ``value``."""
        if op not in MUTATIONS:
            return
        args = dict(args)
        if op == "forwarding":
            if "on" in args:
                self._put(("forwarding",), op, {"on": bool(args["on"])})
        elif op == "ndp_set":
            key: tuple[str, ...] = ("ndp", str(args.get("nic")))
            old = self._entries.pop(key, None)
            settings = dict(old[1].get("settings", {})) if old else {}
            settings.update(args.get("settings") or {})
            self._put(key, op, {**args, "settings": settings})
        elif op in ("tcp_set", "ip_set"):  # later settings add to (and win over) earlier ones
            key = (op,)
            old = self._entries.pop(key, None)
            settings = dict(old[1].get("settings", {})) if old else {}
            settings.update(args.get("settings") or {})
            self._put(key, op, {"settings": settings})
        elif op == "nic_add":
            if isinstance(value, dict) and "id" in value:
                args["id"] = value["id"]  # made again with the same id
            self._put(("nic", str(args.get("name"))), op, args)
        elif op == "nic_set":
            self._put(("nic_set", str(args.get("name"))), op, args)
        elif op == "nic_del":
            name = str(args.get("name"))
            added = self._entries.get(("nic", name))
            refs = {name}
            if added is not None and "id" in added[1]:
                refs.add(str(added[1]["id"]))
            for key in [k for k in self._entries if self._about_nic(k, refs)]:
                del self._entries[key]
            if added is None:  # a NIC from the configuration: removed again
                self._put(("nic", name), op, args)
        elif op in ("addr_add", "addr_del"):
            self._undo_or_put(_addr_key(args), op, args, undoes="addr_add")
        else:
            self._undo_or_put(_route_key(args), op, args, undoes="route_add")

    @staticmethod
    def _about_nic(key: tuple[str, ...], refs: set[str]) -> bool:
        kind = key[0]
        if kind in ("nic", "nic_set", "ndp", "addr"):
            return key[1] in refs
        if kind == "route":
            return key[3] in refs
        return False

    def _undo_or_put(
        self, key: tuple[str, ...], op: str, args: dict[str, Any], *, undoes: str
    ) -> None:
        old = self._entries.get(key)
        if op != undoes and old is not None and old[0] == undoes:
            del self._entries[key]  # the deletion undoes a run-time addition
            return
        self._put(key, op, args)

    def _put(self, key: tuple[str, ...], op: str, args: dict[str, Any]) -> None:
        self._entries.pop(key, None)  # to the end: replayed after what it depends on
        self._entries[key] = (op, args)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            log.warning("control journal full: %s will not survive a shard 0 restart", oldest)
            del self._entries[oldest]
            self.dropped += 1
