"""``shardnet top``: a live per-shard view refreshed every second."""

from __future__ import annotations

import argparse
import sys
import time

import psutil

from shardnet.common.client import Client, ControlError

from .ctl import table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", metavar="ENDPOINT", help="control endpoint of the stack")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: until Ctrl-C)")


def main(ns: argparse.Namespace) -> int:
    if ns.interval <= 0:
        print("shardnet top: --interval must be positive", file=sys.stderr)
        return 2
    try:
        with Client(ns.control) as client:
            prev, prev_t = client.stats(), time.monotonic()
            procs: dict[int, psutil.Process] = {}
            n = 0
            while ns.count == 0 or n < ns.count:
                time.sleep(ns.interval)
                cur, now = client.stats(), time.monotonic()
                screen = render(prev, cur, now - prev_t, procs)
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(screen, flush=True)
                prev, prev_t, n = cur, now, n + 1
    except ControlError as exc:
        print(f"shardnet top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def render(prev: dict, cur: dict, dt: float, procs: dict[int, psutil.Process]) -> str:
    rows = [
        ("SHARD", "PID", "IN/s", "OUT/s", "RING DROPS", "BACKLOG DROPS", "DROPS", "CPU%", "RSS MiB")
    ]
    pids = {s["shard"]: s["pid"] for s in cur["processes"]["shards"]}
    for before, after in zip(prev["shards"], cur["shards"], strict=True):
        i = after["shard"]
        rx = after["counters"].get("rx_frames", 0) - before["counters"].get("rx_frames", 0)
        tx = after["counters"].get("tx_frames", 0) - before["counters"].get("tx_frames", 0)
        cpu, rss = _usage(pids.get(i), procs)
        rows.append(
            (
                str(i),
                str(pids.get(i)),
                f"{rx / dt:.0f}",
                f"{tx / dt:.0f}",
                str(after["ring_drops"]),
                str(after["backlog_drops"]),
                str(sum(after["drops"].values())),
                cpu,
                rss,
            )
        )
    d0, d1 = prev["dispatcher"], cur["dispatcher"]
    cpu, rss = _usage(cur["processes"]["dispatcher"], procs)
    head = (
        f"shardnet top — link rx {(d1['link_rx_frames'] - d0['link_rx_frames']) / dt:.0f} frames/s; "
        f"dispatcher cpu {cpu}% rss {rss} MiB"
    )
    return head + "\n" + table(rows)


def _usage(pid: int | None, procs: dict[int, psutil.Process]) -> tuple[str, str]:
    if not pid:
        return "-", "-"
    try:
        proc = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
        return f"{proc.cpu_percent():.0f}", f"{proc.memory_info().rss / 2**20:.0f}"
    except psutil.Error:
        return "-", "-"
