"""Runs the chosen scenarios against each system (shardnet for every shard
count, then the kernel baseline), one system alive at a time, and reports:
table on stdout, ``--json``, ``--plot``; exit 1 when any transfer was
corrupted or any connection failed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from . import PROG, Settings
from .report import build, failures, plot, scenario_key, table
from .scenarios import RUNNERS, Options
from .systems import System, kernel_pair, shardnet_lab, target


def _preflight(s: Settings) -> str | None:
    """Why this run cannot start, or None."""
    makes_namespaces = s.target is None or s.against_kernel
    if makes_namespaces and os.geteuid() != 0:
        return "needs root (it makes network namespaces, a TAP and a veth)"
    if (makes_namespaces or s.netns) and shutil.which("ip") is None:
        return "needs ip (apt-get install iproute2)"
    if "ping" in s.scenarios and shutil.which("ping") is None:
        return "needs ping (apt-get install iputils-ping)"
    if s.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return "--plot needs matplotlib: pip install 'shardnet[plot]'"
    return None


def _systems(s: Settings) -> Iterator[tuple[str, int, contextlib.AbstractContextManager[System]]]:
    """(role, shard count, system) in the order they are measured."""
    if s.target is not None:
        yield "shardnet", 0, target(s.target, s.netns, s.control)
    else:
        for n in s.shards:
            yield "shardnet", n, shardnet_lab(n, s.ipv6, s.multi_queue)
    if s.against_kernel:
        yield "kernel", 0, kernel_pair(s.ipv6, kernel_workers(s))


def kernel_workers(s: Settings) -> int:
    """Server processes of the baseline: as many as shardnet has shards
    (SO_REUSEPORT spreads the flows as the dispatcher's hash does); conns
    adds what it needs for file descriptors."""
    return max(s.shards)


def _measure(system: System, s: Settings, opts: Options) -> dict[str, dict[str, Any]]:
    out = {}
    for name in s.scenarios:
        before = system.stack_counters()
        try:
            out[name] = RUNNERS[name](system, opts)
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
            # one scenario that could not run is a failure, not the end of the run
            out[name] = {"failed": 1, "corrupted": 0, "error": f"{type(exc).__name__}: {exc}"}
        if name != s.scenarios[-1]:  # (conns, then drain, always come last)
            system.settle()
        after = system.stack_counters()
        if before and after:
            out[name]["stack"] = {k: after[k] - before[k] for k in after}
        print(f"{system.label}: {name} done", file=sys.stderr, flush=True)
    return out


def _interrupted(signum: int, frame: object) -> None:
    # SIGTERM or a closed terminal (SIGHUP) clean up as Ctrl-C does: the
    # namespaces, the stack and the clients go in the context managers' exits
    raise KeyboardInterrupt


def run_settings(s: Settings) -> int:
    why = _preflight(s)
    if why:
        print(f"{PROG}: {why}", file=sys.stderr)
        return 2 if why.startswith("--") else 1
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    opts = Options(
        duration=s.duration,
        streams=s.streams,
        conns=s.conns,
        window=s.window,
        size=s.size,
        flood_rate=s.flood_rate,
        soak_duration=s.soak_duration,
        kill_every=s.kill_every,
    )
    sweep = len(s.shards) > 1 and s.target is None
    ours: dict[str, dict[str, Any]] = {}
    kernel: dict[str, dict[str, Any]] | None = {} if s.against_kernel else None
    t0 = time.monotonic()
    try:
        for role, shards, context in _systems(s):
            with context as system:
                measured = _measure(system, s, opts)
            if role == "kernel":
                assert kernel is not None
                kernel.update(measured)
            else:
                ours.update({scenario_key(k, shards, sweep): v for k, v in measured.items()})
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone
            print(f"{PROG}: interrupted; everything made was removed", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    config = {
        "scenarios": list(s.scenarios), "shards": list(s.shards), "duration_s": s.duration,
        "streams": s.streams, "conns": s.conns, "udp_window": s.window, "udp_size": s.size,
        "flood_rate": s.flood_rate,
        "family": "ipv6" if s.ipv6 else "ipv4", "target": s.target,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    if "soak" in s.scenarios:
        config |= {"soak_duration_s": s.soak_duration, "kill_every_s": s.kill_every}
    doc = build(ours, kernel, config)
    print(
        f"{PROG}: {','.join(s.scenarios)}, {s.duration:g} s per phase, {s.streams} streams, "
        f"shards {','.join(map(str, s.shards)) if s.target is None else 'of ' + s.target}, "
        f"{config['family']}, {config['elapsed_s']:.0f} s"
    )
    print(table(doc))
    if s.json:
        with open(s.json, "w") as f:
            json.dump(doc, f, indent=1)
    if s.plot:
        plot(doc, s.plot)
    bad = failures(doc)
    for line in bad:
        print(f"{PROG}: FAILED {line}", file=sys.stderr)
    return 1 if bad else 0
