"""``shardnet ctl``: the state of a running stack, as a table or as JSON,
and changes to it (addresses, routes, NICs).

    shardnet ctl nics|addrs|routes|neigh|groups|conns|relays|fronts|stats|shards [--json]
    shardnet ctl events [--json]
    shardnet ctl addr add|del NIC ADDRESS/LEN [--first-primary|--never-primary]
    shardnet ctl route add|del DST/LEN [--via GATEWAY] [--dev NIC] [--metric N]
    shardnet ctl nic up|down|del NAME
    shardnet ctl ndp|tcp|ip [--set NAME=VALUE]... [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from shardnet.common.client import Client, ControlError
from shardnet.common.settings import parse_pairs

VIEWS = (
    "nics", "addrs", "routes", "neigh", "groups", "conns", "relays", "fronts", "stats", "shards"
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", metavar="ENDPOINT", help="control endpoint of the stack")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="view", metavar="WHAT", required=True)
    for view in VIEWS:
        sub.add_parser(view, help=f"show {view}")
    sub.add_parser("events", help="stream events as JSON lines")
    addr = sub.add_parser("addr", help="add or delete an address")
    addr.add_argument("action", choices=("add", "del"))
    addr.add_argument("nic")
    addr.add_argument("address", metavar="ADDRESS/LEN")
    behaviour = addr.add_mutually_exclusive_group()
    behaviour.add_argument(
        "--first-primary", dest="behavior", action="store_const", const="first-primary"
    )
    behaviour.add_argument(
        "--never-primary", dest="behavior", action="store_const", const="never-primary"
    )
    route = sub.add_parser("route", help="add or delete a route")
    route.add_argument("action", choices=("add", "del"))
    route.add_argument(
        "dst", metavar="DST/LEN", help="destination prefix, or 'default4'/'default6'"
    )
    route.add_argument("--via", metavar="GATEWAY")
    route.add_argument("--dev", metavar="NIC")
    route.add_argument("--metric", type=int, default=0)
    ndp = sub.add_parser("ndp", help="show or change a NIC's NDP configuration")
    ndp.add_argument("nic", nargs="?", help="NIC name (default: the link)")
    ndp.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="change a setting"
    )
    for table, what in (("tcp", "stack-wide TCP"), ("ip", "IPv4/IPv6")):
        tunables = sub.add_parser(table, help=f"show or change the {what} settings")
        tunables.add_argument(
            "--set", action="append", default=[], metavar="NAME=VALUE", help="change a setting"
        )
    fwd = sub.add_parser("forwarding", help="show, or turn on/off, forwarding (router mode)")
    fwd.add_argument("state", nargs="?", choices=("on", "off"))
    nic = sub.add_parser("nic", help="enable, disable or remove a NIC")
    nic.add_argument("action", choices=("up", "down", "del"))
    nic.add_argument("name")
    for parser in sub.choices.values():  # --json after the subcommand too
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def request_of(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The control request a command line stands for."""
    if ns.view in VIEWS:
        return ns.view, {}
    if ns.view == "addr":
        args = {"nic": ns.nic, "address": ns.address}
        if ns.action == "add" and ns.behavior:
            args["behavior"] = ns.behavior
        return f"addr_{ns.action}", args
    if ns.view == "route":
        dst = {"default4": "0.0.0.0/0", "default6": "::/0"}.get(ns.dst, ns.dst)
        return f"route_{ns.action}", {
            "dst": dst,
            "gateway": ns.via,
            "nic": ns.dev,
            "metric": ns.metric,
        }
    if ns.view in ("ndp", "tcp", "ip"):
        try:
            settings = parse_pairs(ns.set, "--set")
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        where = {"nic": ns.nic} if ns.view == "ndp" else {}
        if settings:
            return f"{ns.view}_set", {**where, "settings": settings}
        return f"{ns.view}_get", where
    if ns.view == "forwarding":
        return "forwarding", ({} if ns.state is None else {"on": ns.state == "on"})
    if ns.view == "nic":
        op = {"up": "nic_set", "down": "nic_set", "del": "nic_del"}[ns.action]
        args = {"name": ns.name}
        if ns.action != "del":
            args["enabled"] = ns.action == "up"
        return op, args
    raise ValueError(ns.view)


def main(ns: argparse.Namespace) -> int:
    try:
        with Client(ns.control) as client:
            if ns.view == "events":
                for event in client.events():
                    print(json.dumps({"type": event.type, **event.data}), flush=True)
                return 0
            op, args = request_of(ns)  # ControlError for a bad --set, before any request
            # Connections come a page at a time (100,000 make no single reply).
            if op == "conns":
                value = client.conns()
            elif op == "relays":
                value = client.relays()
            elif op == "fronts":
                value = client.fronts()
            else:
                value = client.call(op, **args)
    except ControlError as exc:
        print(f"shardnet ctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if ns.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    elif ns.view in VIEWS:
        print(render(ns.view, value))
    elif ns.view in ("tcp", "ip") and isinstance(value, dict):
        print(render_settings(value))
    elif value:
        print(value if isinstance(value, str) else json.dumps(value))
    return 0


def render(view: str, value: Any) -> str:
    rows: list[tuple[str, ...]]
    if view == "nics":
        rows = [("ID", "NAME", "MAC", "MTU", "KIND", "STATE", "FLAGS")]
        rows += [
            (
                str(n["id"]),
                n["name"],
                n["mac"],
                str(n["mtu"]),
                n["kind"],
                "up" if n["enabled"] else "down",
                ",".join(f for f in ("loopback",) if n.get(f)) or "-",
            )
            for n in value
        ]
        return table(rows)
    if view == "addrs":
        rows = [("NIC", "ADDRESS", "STATE", "PRIMARY", "ORIGIN")]
        rows += [
            (a["nic_name"], f"{a['addr']}/{a['prefix_len']}", a["kind"] + _acd(a.get("acd")),
             a["behavior"],
             a["origin"] + _lease(a.get("dhcp4")) + _lease6(a.get("dhcp6")))
            for a in value
        ]  # fmt: skip
        return table(rows)
    if view == "routes":
        rows = [("DESTINATION", "GATEWAY", "NIC", "METRIC", "ORIGIN", "ROUTER")]
        rows += [
            (
                f"{r['dst']}/{r['prefix_len']}",
                r["gateway"] or "-",
                r["nic_name"],
                str(r["metric"]),
                r["origin"],
                _router(r.get("router")),
            )
            for r in value
        ]
        return table(rows)
    if view == "neigh":
        rows = [("NIC", "ADDRESS", "MAC", "STATE", "AGE", "ROUTER")]
        rows += [
            (
                n["nic_name"],
                n["ip"],
                n["mac"] or "-",
                n["state"],
                f"{n['age_s']:.1f}s",
                "yes" if n.get("router") else "-",
            )
            for n in value
        ]
        return table(rows)
    if view == "groups":
        rows = [("NIC", "GROUP", "SHARDS", "PROTOCOL")]
        rows += [
            (str(g["nic"]), g["group"], ",".join(map(str, g["shards"])), g["protocol"])
            for g in value
        ]
        return table(rows)
    if view == "conns":
        rows = [
            (
                "SHARD",
                "STATE",
                "LOCAL",
                "REMOTE",
                "CWND",
                "SRTT",
                "RTO",
                "RETRANS",
                "SENT",
                "RECEIVED",
            )
        ]
        for c in value:
            srtt = c.get("srtt")
            rows.append(
                (
                    str(c["shard"]),
                    c["state"],
                    c["local"],
                    c["remote"],
                    str(c.get("cwnd", "-")),
                    f"{srtt * 1000:.1f}ms" if srtt else "-",
                    f"{c['rto']:.3f}s" if "rto" in c else "-",
                    str(c.get("retransmits", "-")),
                    str(c.get("bytes_sent", "-")),
                    str(c.get("bytes_received", "-")),
                )  # fmt: skip
            )
        return table(rows)
    if view == "relays":  # as ss shows sockets: one line per flow
        rows = [("SHARD", "PROTO", "STATE", "CLIENT", "DESTINATION", "UP", "DOWN", "AGE")]
        for r in value:
            up = r.get("bytes_up")
            down = r.get("bytes_down")
            age = r.get("age_s")
            rows.append(
                (
                    str(r["shard"]),
                    r["proto"],
                    r["state"],
                    r["client"],
                    r["destination"],
                    "-" if up is None else str(up),
                    "-" if down is None else str(down),
                    "-" if age is None else f"{age:.1f}s",
                )  # fmt: skip
            )
        return table(rows)
    if view == "fronts":  # as ss shows sockets: one line per flow
        rows = [("SHARD", "PROTO", "CLIENT", "TARGET", "UP", "DOWN", "AGE")]
        rows += [
            (str(r["shard"]), r["proto"], r["client"], r["target"], str(r["bytes_up"]),
             str(r["bytes_down"]), f"{r['age_s']:.1f}s")
            for r in value
        ]  # fmt: skip
        return table(rows)
    if view == "shards":
        rows = [("SHARD", "PID", "READY", "RESTARTS")]
        rows += [
            (str(s["shard"]), str(s["pid"]), str(s["ready"]), str(s["restarts"]))
            for s in value["shards"]
        ]
        return f"dispatcher pid {value['dispatcher']}\n" + table(rows)
    if view == "stats":
        d = value["dispatcher"]
        lines = [
            f"link: rx {d['link_rx_frames']} frames, {d['link_rx_bytes']} bytes, {d['link_rx_errors']} errors"
        ]
        if d.get("link_filter"):  # the TAP's admission filter ("ebpf" or why none)
            turned = ", ".join(f"{n} {reason}" for reason, n in d["link_drops"].items())
            lines.append(
                f"admission filter: {d['link_filter']}" + (f"; dropped {turned}" if turned else "")
            )
        rows = [("SHARD", "IN", "RX", "TX", "RING DROPS", "BACKLOG DROPS", "DROPS")]
        for s in value["shards"]:
            c = s["counters"]
            rows.append(
                (
                    str(s["shard"]),
                    str(s["to_shard"]),
                    str(c.get("rx_frames", 0)),
                    str(c.get("tx_frames", 0)),
                    str(s["ring_drops"]),
                    str(s["backlog_drops"]),
                    str(sum(s["drops"].values())),
                )
            )
        lines.append(table(rows))
        drops: dict[str, int] = {}
        for s in value["shards"]:
            for key, n in s["drops"].items():
                drops[key] = drops.get(key, 0) + n
        if drops:
            lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        return "\n".join(lines)
    return json.dumps(value, indent=2)


def _lease(lease: dict[str, Any] | None) -> str:
    """A DHCPv4 address's lease: the client's state, the server, T1/T2 and
    expiry in seconds from now."""
    if not lease:
        return ""
    times = "/".join(
        "-" if lease.get(k) is None else f"{lease[k]:.0f}s" for k in ("t1_s", "t2_s", "expires_s")
    )
    return f" ({lease['state']} from {lease.get('server')}, T1/T2/expiry {times})"


def _lease6(lease: dict[str, Any] | None) -> str:
    """A DHCPv6 address's lease (T1/T2, preferred/valid in seconds from
    now), or the stateless configuration on the link-local address: the
    client's state, the server, DNS servers and search list."""
    if not lease:
        return ""

    def secs(key: str) -> str:
        return "-" if lease.get(key) is None else f"{lease[key]:.0f}s"

    parts = [f"dhcp6 {lease['state']} from {lease.get('server') or '-'}"]
    if "valid_s" in lease:
        parts.append(f"T1/T2 {secs('t1_s')}/{secs('t2_s')}, "
                     f"preferred/valid {secs('preferred_s')}/{secs('valid_s')}")  # fmt: skip
    if "refresh_s" in lease:
        parts.append(f"refresh {secs('refresh_s')}")
    if lease.get("dns_servers"):
        parts.append("dns " + " ".join(lease["dns_servers"]))
    if lease.get("domains"):
        parts.append("search " + " ".join(lease["domains"]))
    return " (" + ", ".join(parts) + ")"


def _acd(acd: dict[str, Any] | None) -> str:
    """An IPv4 address's conflict detection (RFC 5227): probing, or in use
    (and defended once)."""
    if not acd:
        return ""
    if acd["state"] == "probing":
        return f" (acd probing, {acd['probes_left']} probes left)"
    return " (acd defended)" if acd.get("defended") else ""


def _router(info: dict[str, Any] | None) -> str:
    """A default router's state (RFC 4861 §6.3.6, RFC 4191 §2.2): its
    preference, whether it is (probably) reachable, in use or standing by."""
    if not info:
        return "-"
    reach = "reachable" if info["reachable"] else "unknown"
    use = "in use" if info["rank"] == 0 else "standby"
    return f"{info['preference']} {reach} {use}"


def render_settings(settings: dict[str, Any]) -> str:
    """``ctl tcp|ip``: one setting a line, spelt as ``--set`` takes it."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "none" if value is None else str(value)

    return table([("NAME", "VALUE")] + [(k, text(v)) for k, v in sorted(settings.items())])


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
