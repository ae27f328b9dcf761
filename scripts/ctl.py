"""``shardnet ctl``: the state of a running stack, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shardnet.common.client import Client, ControlError

VIEWS = ("nics", "stats", "shards", "events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", metavar="ENDPOINT", help="control endpoint of the stack")
    p.add_argument("view", choices=VIEWS, help="what to show")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(ns: argparse.Namespace) -> int:
    try:
        with Client(ns.control) as client:
            if ns.view == "events":
                for event in client.events():
                    print(json.dumps({"type": event.type, **event.data}), flush=True)
                return 0
            value = getattr(client, ns.view)() if ns.view != "shards" else client.call("shards")
    except ControlError as exc:
        print(f"shardnet ctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if ns.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    else:
        print(render(ns.view, value))
    return 0


def render(view: str, value: Any) -> str:
    if view == "nics":
        rows = [("NAME", "ID", "MAC", "MTU", "KIND", "STATE")]
        rows += [
            (
                n["name"],
                str(n["id"]),
                n["mac"],
                str(n["mtu"]),
                n["kind"],
                "up" if n["enabled"] else "down",
            )
            for n in value
        ]
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
        rows = [("SHARD", "IN", "RX", "TX", "RING DROPS", "DROPS")]
        for s in value["shards"]:
            c = s["counters"]
            rows.append(
                (
                    str(s["shard"]),
                    str(s["to_shard"]),
                    str(c.get("rx_frames", 0)),
                    str(c.get("tx_frames", 0)),
                    str(s["ring_drops"]),
                    str(sum(s["drops"].values())),
                )
            )
        lines.append(table(rows))
        drops = {}
        for s in value["shards"]:
            for key, n in s["drops"].items():
                drops[key] = drops.get(key, 0) + n
        if drops:
            lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        return "\n".join(lines)
    return json.dumps(value, indent=2)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
