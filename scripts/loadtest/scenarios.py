"""The scenarios: each starts client processes (``client.py``) in the
system's client namespace, shows a progress bar while they run, and turns
what they measured into the named figures of ``report.FIGURES`` plus the
counts that decide success (``failed``, ``corrupted``).

Rates are total work over the span from the earliest client start to the
latest client end (the clients start together at a wall-clock instant).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from shardnet.common.flowhash import shard_for

from ..lab import KERNEL_V4, KERNEL_V6, SHARDNET_V4, SHARDNET_V6
from . import KILL_MARGIN_S
from .client import ECHO_MANY_CHUNK, PROBE_EVERY_S, Spec
from .report import percentile
from .systems import (
    PORTS,
    Stopped,
    System,
    cpu_seconds,
    fd_budget,
    kernel_router,
    open_fds,
    relay_lab,
    rss_bytes,
)

START_DELAY_S = 1.0  # clients start this long after being spawned (Python start-up)
GRACE_S = 30.0  # a timed phase's clients must be done this long after its end
INJECTION_CONNS = 100  # live transfers the injection scenario attacks
DRAIN_CONNS = 100  # live transfers when the drain scenario stops the server
# Connections per client process, each with its own source address. Linux's
# connect() takes ports of one parity first (half the range: ~27k here) and
# searches linearly past the used ones, so a source address much fuller than
# 10k connections makes connect() itself the bottleneck (measured: 100k
# connections over 4 addresses opened at ~1.2k/s, the same for both stacks).
CONNS_PER_SOURCE = 10_000
CONNS_OPEN_MIN_PER_S = 100.0  # a conns client slower than this is given up
CONNS_CHECK_MIN_PER_S = 200.0  # the same for the check that all still answer
PING_INTERVAL_S = 0.002  # iputils' minimum for root is 0.002 s (man ping)


@dataclass(slots=True)
class Options:
    """What the scenarios need from the command line."""

    duration: float = 5.0
    streams: int = 4
    conns: int = 100_000
    window: int = 32
    size: int = 64
    flood_rate: float = 0.0  # the flooders' frames per second (0: as fast as they can)
    soak_duration: float = 1800.0  # soak's length
    kill_every: float = 120.0  # soak: seconds between two shard kills


@dataclass(slots=True)
class Totals:
    """Outcomes of a group of clients added up."""

    ops: int = 0
    bytes: int = 0
    failed: int = 0
    corrupted: int = 0
    lost: int = 0
    fin: int = 0
    rst: int = 0
    t_start: float = math.inf
    t_end: float = 0.0
    lat_us: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return max(self.t_end - self.t_start, 1e-9) if self.t_end else 1e-9

    def add(self, result: dict[str, Any]) -> None:
        for name in ("ops", "bytes", "failed", "corrupted", "lost", "fin", "rst"):
            setattr(self, name, getattr(self, name) + int(result.get(name, 0)))
        if result.get("t_start"):
            self.t_start = min(self.t_start, result["t_start"])
        self.t_end = max(self.t_end, result.get("t_end", 0.0))
        self.lat_us += result.get("lat_us", [])
        if result.get("error"):
            self.errors.append(result["error"])

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"failed": self.failed, "corrupted": self.corrupted}
        if self.errors:
            out["error"] = self.errors[0]
        return out

    def latency(self) -> dict[str, float]:
        if not self.lat_us:
            return {}
        return {"p50_us": percentile(self.lat_us, 50), "p99_us": percentile(self.lat_us, 99)}


class ClientGroup:
    """Client processes started together; their JSON lines read as they
    come. Every process is ended (by pid) on ``close``."""

    def __init__(self, system: System, specs: list[Spec]) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stderr: list[Any] = []
        self.buffers: dict[int, bytes] = {}
        self.lines: dict[int, list[dict[str, Any]]] = {}
        for spec in specs:
            err = tempfile.TemporaryFile()
            cmd = [
                sys.executable,
                "-m",
                "shardnet.scripts.loadtest.client",
                json.dumps(asdict(spec)),
            ]
            proc = subprocess.Popen(
                system.argv(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
            self.procs.append(proc)
            self.stderr.append(err)
            self.buffers[proc.pid] = b""
            self.lines[proc.pid] = []

    def __enter__(self) -> ClientGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for(
        self,
        key: str,
        deadline: float,
        tick: Callable[[list[dict[str, Any]]], None],
        only: int | None = None,
    ) -> list[dict[str, Any]]:
        """Each client's first line holding ``key`` (an empty dict for a
        client that exited or missed the deadline without one), of every
        client or ``only`` that one; ``tick`` sees every line and is called
        at least every 0.2 s."""
        procs = self.procs if only is None else [self.procs[only]]
        found: dict[int, dict[str, Any]] = {}
        sel = selectors.DefaultSelector()
        for proc in procs:
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ, proc)
        open_ = len(procs)
        while len(found) < len(procs) and open_ and time.time() < deadline:
            new: list[dict[str, Any]] = []
            for sel_key, _ in sel.select(timeout=0.2):
                proc = sel_key.data
                chunk = os.read(sel_key.fd, 65536)
                if not chunk:
                    sel.unregister(sel_key.fileobj)
                    open_ -= 1
                    continue
                data = self.buffers[proc.pid] + chunk
                *complete, self.buffers[proc.pid] = data.split(b"\n")
                for raw in complete:
                    line = json.loads(raw)
                    new.append(line)
                    self.lines[proc.pid].append(line)
                    if key in line and proc.pid not in found:
                        found[proc.pid] = line
            tick(new)
        sel.close()
        return [found.get(p.pid, {}) for p in procs]

    def tell(self, line: str, only: int | None = None) -> None:
        for proc in self.procs if only is None else [self.procs[only]]:
            if proc.stdin is not None and proc.poll() is None:
                try:
                    proc.stdin.write(line.encode() + b"\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass

    def wait_exit(self, timeout: float) -> None:
        """Lets the clients end by themselves (``close`` kills the late)."""
        deadline = time.time() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.time(), 0.1))

    def why(self, index: int) -> str:
        """The stderr of a client that gave no result, for the report."""
        err = self.stderr[index]
        err.seek(0)
        text = err.read().decode(errors="replace").strip().splitlines()
        code = self.procs[index].poll()
        if text:
            return text[-1]
        return "no answer in time" if code is None else f"client exited {code}"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for err in self.stderr:
            err.close()


def _bar(label: str, total: float, unit: str) -> tqdm:
    # disable=None: quiet without a TTY (CI, pipes); leave=False: the table follows
    clock = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s"  # no "s/s" rate
    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        disable=None,
        leave=False,
        dynamic_ncols=True,
        bar_format=clock if unit == "s" else None,
    )


def timed(
    system: System,
    specs: list[Spec],
    label: str,
    duration: float,
    sample: Callable[[], None] | None = None,
) -> Totals:
    """Runs a group of timed clients to the end with a clock progress bar;
    ``sample`` is called at every tick (about 5 times a second)."""
    start = specs[0].start_at
    totals = Totals()
    with ClientGroup(system, specs) as group, _bar(label, round(duration, 1), "s") as bar:

        def tick(_: list[dict[str, Any]]) -> None:
            bar.n = round(min(max(time.time() - start, 0.0), duration), 1)
            bar.refresh()
            if sample is not None:
                sample()

        results = group.wait_for("result", start + duration + GRACE_S, tick)
        for i, line in enumerate(results):
            if line:
                totals.add(line["result"])
            else:
                totals.failed += 1
                totals.errors.append(group.why(i))
    return totals


def _specs(kind: str, system: System, port: int, opts: Options, n: int, **kw: Any) -> list[Spec]:
    start = time.time() + START_DELAY_S + 0.05 * n
    return [
        Spec(kind, system.host, port, start_at=start, duration=opts.duration, **kw)
        for _ in range(n)
    ]


# --- scenarios -------------------------------------------------------------------------


def bulk(system: System, opts: Options) -> dict[str, Any]:
    """``--streams`` streams into discard, then as many out of chargen;
    the server side's CPU over both (dispatcher + shards, or the baseline's
    server process) per MB moved."""
    procs = system.processes()
    cpu0 = cpu_seconds(procs)
    into = timed(
        system,
        _specs("bulk_in", system, PORTS["discard"], opts, opts.streams),
        f"{system.label}: bulk in",
        opts.duration,
    )
    out = timed(
        system,
        _specs("bulk_out", system, PORTS["chargen"], opts, opts.streams),
        f"{system.label}: bulk out",
        opts.duration,
    )
    cpu = cpu_seconds(procs) - cpu0
    figures: dict[str, Any] = {
        "mbytes_per_s_in": into.bytes / into.elapsed / 1e6,
        "mbytes_per_s_out": out.bytes / out.elapsed / 1e6,
        "streams": opts.streams,
        "failed": into.failed + out.failed,
        "corrupted": into.corrupted + out.corrupted,
    }
    moved_mb = (into.bytes + out.bytes) / 1e6
    if procs and moved_mb:
        figures["cpu_ms_per_mb"] = cpu * 1000 / moved_mb
    if into.errors or out.errors:
        figures["error"] = (into.errors + out.errors)[0]
    return figures


def echo(system: System, opts: Options) -> dict[str, Any]:
    """``--streams`` streams through echo, SHA-256 of both directions compared."""
    t = timed(
        system,
        _specs("echo", system, PORTS["echo"], opts, opts.streams),
        f"{system.label}: echo",
        opts.duration,
    )
    rate = t.bytes / t.elapsed / 1e6
    return {"mbytes_per_s_in": rate, "mbytes_per_s_out": rate, "streams": opts.streams} | (
        t.counts()
    )


def crr(system: System, opts: Options) -> dict[str, Any]:
    """Connect, 100 B request, 100 B reply, close, from ``--streams`` processes."""
    t = timed(
        system,
        _specs("crr", system, PORTS["echo"], opts, opts.streams),
        f"{system.label}: crr",
        opts.duration,
    )
    return {"conn_per_s": t.ops / t.elapsed, "connections": t.ops} | t.latency() | t.counts()


def rr(system: System, opts: Options) -> dict[str, Any]:
    """100-byte request/response on ``--streams`` persistent connections."""
    t = timed(
        system,
        _specs("rr", system, PORTS["echo"], opts, opts.streams),
        f"{system.label}: rr",
        opts.duration,
    )
    return {"tps": t.ops / t.elapsed, "transactions": t.ops} | t.latency() | t.counts()


def udp(system: System, opts: Options) -> dict[str, Any]:
    """UDP echo with ``--window`` datagrams in flight per client process:
    pps counts echoes (each one datagram in and one out)."""
    t = timed(
        system,
        _specs(
            "udp", system, PORTS["echo"], opts, opts.streams, window=opts.window, size=opts.size
        ),
        f"{system.label}: udp",
        opts.duration,
    )
    return {"pps": t.ops / t.elapsed, "echoes": t.ops, "lost": t.lost} | t.counts()


_PING_TIME = re.compile(rb"time=([\d.]+) ms")
_PING_SUMMARY = re.compile(rb"(\d+) packets transmitted, (\d+) received")


def parse_ping(output: bytes) -> tuple[list[float], int, int]:
    """iputils ping output: the replies' RTTs in µs, sent, received."""
    rtts = [float(m) * 1000 for m in _PING_TIME.findall(output)]
    m = _PING_SUMMARY.search(output)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (0, len(rtts))
    return rtts, sent, got


class _Ping:
    """iputils ping in the clients' namespace for ``duration``, in the
    background; ``finish`` waits for its end and parses its output."""

    def __init__(
        self, system: System, duration: float, *, size: int = 56, interval: float = PING_INTERVAL_S
    ) -> None:
        cmd = ["ping", "-n", "-i", str(interval), "-s", str(size), "-w",
               str(max(1, round(duration))), "-W", "1", system.host]  # fmt: skip
        self.duration = duration
        self.t0 = time.time()
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(system.argv(cmd), stdout=self.out, stderr=subprocess.STDOUT)

    def __enter__(self) -> _Ping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> bool:
        return self.proc.poll() is None and time.time() < self.t0 + self.duration + GRACE_S

    def finish(self) -> tuple[list[float], int, int, bytes]:
        """RTTs in µs, sent, received, its output."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(self.t0 + self.duration + GRACE_S - time.time(), 0.1))
        self._end()
        self.out.seek(0)
        text = self.out.read()
        rtts, sent, got = parse_ping(text)
        return rtts, sent, got, text

    def _end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self._end()
        self.out.close()


def _ping(
    system: System,
    duration: float,
    label: str,
    *,
    size: int = 56,
    interval: float = PING_INTERVAL_S,
    sample: Callable[[], None] | None = None,
) -> tuple[list[float], int, int, bytes]:
    """iputils ping for ``duration``: RTTs in µs, sent, received, its output."""
    with (
        _Ping(system, duration, size=size, interval=interval) as p,
        _bar(label, duration, "s") as bar,
    ):
        while p.running():
            bar.n = round(min(time.time() - p.t0, duration), 1)
            bar.refresh()
            if sample is not None:
                sample()
            time.sleep(0.2)
        return p.finish()


def ping(system: System, opts: Options) -> dict[str, Any]:
    """ICMP echo every 2 ms for the duration (iputils ping, as root)."""
    rtts, sent, got, text = _ping(system, opts.duration, f"{system.label}: ping")
    figures: dict[str, Any] = {"replies": got, "lost": max(sent - got, 0)}
    figures |= {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99)} if rtts else {}
    figures["failed"] = 0 if rtts else 1
    if not rtts:
        said = text.decode(errors="replace").strip().splitlines()
        figures["error"] = said[-1] if said else "no reply"
    figures["corrupted"] = 0
    return figures


def conns(system: System, opts: Options) -> dict[str, Any]:
    """Open ``--conns`` connections to echo from several client processes
    (one source address per CONNS_PER_SOURCE), hold them while the server
    side's RSS is read, then check every one still answers a byte."""
    nclients = max(1, math.ceil(opts.conns / min(CONNS_PER_SOURCE, fd_budget())))
    sources = system.sources(nclients)
    if system.grow is not None:  # the baseline's servers hold one descriptor per connection
        system.grow(math.ceil(opts.conns / fd_budget()))
    procs = system.processes()
    server = {r: p for r, p in procs.items() if r != "dispatcher"}  # the shards hold the state
    rss0 = rss_bytes(server)
    specs = [
        Spec("conns", system.host, PORTS["echo"], source=sources[i],
             conns=opts.conns // nclients + (1 if i < opts.conns % nclients else 0))
        for i in range(nclients)
    ]  # fmt: skip
    totals = Totals()
    opened = 0
    with ClientGroup(system, specs) as group:
        progress = dict.fromkeys(range(len(specs)), 0)
        pids = [p.pid for p in group.procs]
        with _bar(f"{system.label}: conns open", opts.conns, "conn") as bar:

            def tick(lines: list[dict[str, Any]]) -> None:
                bar.n = sum(group_progress(group, pids, progress))
                bar.refresh()

            limit = time.time() + GRACE_S + opts.conns / CONNS_OPEN_MIN_PER_S / nclients
            held = group.wait_for("opened", limit, tick)
        rss1 = rss_bytes(server)
        for line in held:
            opened += int(line.get("opened", 0))
            if line:
                totals.t_start = min(totals.t_start, line["t_start"])
                totals.t_end = max(totals.t_end, line["t_end"])
        open_rate = opened / totals.elapsed if opened else 0.0
        # One client at a time probes its connections: all at once, a slow
        # stack's rings overflow and the probes wait for retransmissions.
        with _bar(f"{system.label}: conns check", opened, "conn") as bar:
            for i, spec in enumerate(specs):
                group.tell("check", only=i)
                limit = time.time() + GRACE_S + spec.conns / CONNS_CHECK_MIN_PER_S
                (line,) = group.wait_for("result", limit, lambda _: None, only=i)
                if line:
                    totals.add(line["result"])
                else:
                    totals.failed += 1
                    totals.errors.append(group.why(i))
                bar.update(spec.conns)
        group.tell("close")  # all checked: now every client closes its connections
        group.wait_exit(GRACE_S)
    answered = totals.ops
    figures: dict[str, Any] = {"conns": opened, "answered": answered, "conn_per_s": open_rate}
    if rss0 and rss1 and opened:
        grown = sum(rss1.values()) - sum(rss0.get(r, 0) for r in rss1)
        figures["rss_per_conn_bytes"] = max(grown, 0) / opened
        figures["rss_bytes"] = rss1
    missing = opts.conns - answered
    figures |= totals.counts()
    figures["failed"] = max(totals.failed, missing)
    return figures


def group_progress(group: ClientGroup, pids: list[int], progress: dict[int, int]) -> list[int]:
    """Each client's latest ``progress`` (or ``opened``) count."""
    for i, pid in enumerate(pids):
        for line in reversed(group.lines[pid]):
            if "progress" in line or "opened" in line:
                progress[i] = int(line.get("progress", line.get("opened", 0)))
                break
    return list(progress.values())


class _Flood:
    """A flooder client (``kind``) running beside a well-behaved workload:
    the server's peak RSS sampled meanwhile (``sample``), shard restarts
    counted, the flood's rate and whether it ran at all (``figures``)."""

    def __init__(self, system: System, opts: Options, kind: str, port: int, **spec: Any) -> None:
        self.system = system
        self.procs = system.processes()
        self.restarts = system.restarts()
        self.start = time.time() + START_DELAY_S + 2.0  # the flooder builds its frames first
        self.peak = 0
        spec.setdefault("host", system.host)
        flooder = Spec(kind, port=port, start_at=self.start, duration=opts.duration,
                       rate=opts.flood_rate, **spec)  # fmt: skip
        self.group = ClientGroup(system, [flooder])
        self.duration = opts.duration

    def __enter__(self) -> _Flood:
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.close()  # whatever happened, the flooder is ended

    def sample(self) -> None:
        if self.procs:
            self.peak = max(self.peak, sum(rss_bytes(self.procs).values()))

    def figures(self) -> dict[str, Any]:
        """Waits for the flooder's result."""
        deadline = self.start + self.duration + GRACE_S
        (line,) = self.group.wait_for("result", deadline, lambda _: None)
        why = self.group.why(0)
        sent = line.get("result", {})
        span = max(sent.get("t_end", 0.0) - sent.get("t_start", 0.0), 1e-9)
        ran = bool(sent.get("t_start")) and not sent.get("error")
        out: dict[str, Any] = {
            "flood_pps": sent.get("ops", 0) / span if ran else 0.0,
            "restarts": self.system.restarts() - self.restarts,
            "failed": 0 if ran else 1,
        }
        if self.peak:
            out["rss_max_bytes"] = self.peak
        if not ran:
            out["error"] = f"the flood did not run: {sent.get('error') or why}"
        return out


def synflood(system: System, opts: Options) -> dict[str, Any]:
    """One process floods the echo port with spoofed SYNs (sources in
    198.19.0.0/16 or 2001:db8:5f::/48) as fast as it can for the duration,
    while one well-behaved client connects, sends 100 bytes, reads them back
    and closes, over and over: what that client saw (``success_rate``,
    ``conn_per_s``, latency), the flood's rate, the server's peak RSS and
    shard restarts. The well-behaved client's failures are the measurement,
    not a failure of the run."""
    with _Flood(system, opts, "synflood", PORTS["echo"]) as flood:
        good = Spec("crr", system.host, PORTS["echo"], start_at=flood.start, duration=opts.duration)
        t = timed(system, [good], f"{system.label}: synflood", opts.duration, flood.sample)
        figures: dict[str, Any] = {
            "success_rate": t.ops / max(t.ops + t.failed, 1),
            "conn_per_s": t.ops / t.elapsed,
            "client_failures": t.failed,
            "corrupted": t.corrupted,
        }
        return figures | t.latency() | flood.figures()


def fragflood(system: System, opts: Options) -> dict[str, Any]:
    """One process floods the server with IP fragments that never complete
    (tiny and large, overlapping, from spoofed sources) as fast as it can,
    while a well-behaved client pings with 3,000-byte echoes (three
    fragments each, every 10 ms): the share answered and their RTT, the
    flood's rate, peak RSS (reassembly memory is bounded), shard restarts."""
    with _Flood(system, opts, "fragflood", 0) as flood:
        time.sleep(max(flood.start - time.time(), 0.0))
        rtts, sent, got, _ = _ping(system, opts.duration, f"{system.label}: fragflood",
                                   size=3000, interval=0.01, sample=flood.sample)  # fmt: skip
        figures: dict[str, Any] = {"success_rate": got / max(sent, 1), "corrupted": 0}
        if rtts:
            figures |= {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99)}
        return figures | flood.figures()


RECOVERY_LIMIT_S = 30.0  # raflood: how long the server may take to answer again


def _recovery_s(system: System, host: str, since: float) -> float | None:
    """Seconds from ``since`` until ``host`` answered a ping (each given a
    second), or None if it did not within RECOVERY_LIMIT_S."""
    cmd = ["ping", "-n", "-c", "1", "-W", "1", host]
    while time.time() - since < RECOVERY_LIMIT_S:
        if subprocess.run(system.argv(cmd), capture_output=True, timeout=10).returncode == 0:
            return time.time() - since
        time.sleep(0.1)
    return None


def raflood(system: System, opts: Options) -> dict[str, Any]:
    """One process floods the link with Router Advertisements from ever new
    routers (two random prefixes each), Neighbor Solicitations and ARP
    requests from ever new senders (each a link-layer address to learn), as
    fast as it can, while the server is pinged every 10 ms: the share
    answered and their RTT during the flood; after it, how long until the
    server answers again over IPv4 and over IPv6 (``recovery_s_v4``,
    ``recovery_s_v6``: a neighbour entry the flood pushed out is resolved
    again; a family silent for RECOVERY_LIMIT_S fails the run) and, for
    shardnet, the size of the tables the flood grows (``ra_routes``,
    ``addresses``, ``neighbours``: each has a bound)."""
    with _Flood(system, opts, "raflood", 0, host=SHARDNET_V4, host6=SHARDNET_V6) as flood:
        time.sleep(max(flood.start - time.time(), 0.0))
        rtts, sent, got, _ = _ping(system, opts.duration, f"{system.label}: raflood",
                                   interval=0.01, sample=flood.sample)  # fmt: skip
        figures: dict[str, Any] = {"success_rate": got / max(sent, 1), "corrupted": 0}
        if rtts:
            figures |= {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99)}
        attack = flood.figures()
    ended = time.time()
    after = {
        f"recovery_s_{family}": _recovery_s(system, host, ended)
        for family, host in (("v4", SHARDNET_V4), ("v6", SHARDNET_V6))
    }
    attack["failed"] += sum(seconds is None for seconds in after.values())
    return figures | attack | after | system.table_sizes()


def injection(system: System, opts: Options) -> dict[str, Any]:
    """``INJECTION_CONNS`` connections echo random chunks (each compared
    byte for byte) while one process injects blind segments into all of
    them (RST, RST+ACK, SYN, data and FIN with random sequence and
    acknowledgement numbers: RFC 5961's attacker) as fast as it can: a
    connection that broke or a corrupted byte fails the run."""
    with _Flood(system, opts, "inject", PORTS["echo"]) as flood:
        good = Spec("echo_many", system.host, PORTS["echo"], start_at=flood.start,
                    duration=opts.duration, conns=INJECTION_CONNS)  # fmt: skip
        t = timed(system, [good], f"{system.label}: injection", opts.duration, flood.sample)
        attack = flood.figures()
        attack["failed"] += t.failed  # a connection the attack broke fails the run
        figures: dict[str, Any] = {
            "success_rate": t.ops / max(t.ops + t.failed, 1),
            "connections_lost": t.failed,
            "mbytes_per_s_in": t.bytes / t.elapsed / 1e6,
        } | t.counts()
        return figures | attack


def drain(system: System, opts: Options) -> dict[str, Any]:
    """``DRAIN_CONNS`` connections echo random chunks; halfway through the
    phase the server gets SIGTERM. Each connection must end with the
    server's FIN or RST (none left hanging until the client's timeout), the
    server exit with status 0 within its drain bound, and none of its
    processes stay behind. It stops the system, so it runs last."""
    stop = system.stop
    if stop is None:
        raise RuntimeError("drain stops the server: only for a stack this run started")
    start = time.time() + START_DELAY_S + 1.0
    good = Spec("echo_many", system.host, PORTS["echo"], start_at=start,
                duration=2 * opts.duration, conns=DRAIN_CONNS)  # fmt: skip
    stopped: list[Stopped] = []

    def halfway() -> None:
        if not stopped and time.time() >= start + opts.duration:
            stopped.append(stop())

    t = timed(system, [good], f"{system.label}: drain", 2 * opts.duration, halfway)
    if not stopped:  # the clients ended before halfway: stop it all the same
        stopped.append(stop())
    s = stopped[0]
    hung = t.failed - t.fin - t.rst  # ended by the client's own timeout or an error
    bad_exit = sum(code != 0 for code in s.exit_codes)
    figures: dict[str, Any] = {
        "success_rate": (t.ops + t.fin + t.rst) / DRAIN_CONNS,
        "drain_s": s.seconds,
        "ended_fin": t.fin,
        "ended_rst": t.rst,
        "hung": hung,
        "exit_codes": s.exit_codes,
        "left_running": s.left_running,
        "failed": hung + bad_exit + s.left_running,
        "corrupted": t.corrupted,
    }
    if t.errors and hung:
        figures["error"] = t.errors[0]
    return figures


def churn(system: System, opts: Options) -> dict[str, Any]:
    """Connections opened and closed as fast as ``--streams`` clients can,
    for the duration (run it for minutes): the server's RSS and open
    descriptors sampled all along. A stack that keeps something per closed
    connection shows it here as growth (``rss_growth_bytes``,
    ``fd_growth``: end less start)."""
    procs = system.processes()
    rss: list[int] = []
    fds: list[int] = []

    def sample() -> None:
        if procs:
            rss.append(sum(rss_bytes(procs).values()))
            fds.append(open_fds(procs))

    sample()
    t = timed(system, _specs("crr", system, PORTS["echo"], opts, opts.streams),
              f"{system.label}: churn", opts.duration, sample)  # fmt: skip
    system.settle()
    sample()
    figures: dict[str, Any] = {
        "conn_per_s": t.ops / t.elapsed,
        "connections": t.ops,
        "success_rate": t.ops / max(t.ops + t.failed, 1),
    } | t.counts()
    if rss:
        figures |= {"rss_max_bytes": max(rss), "rss_growth_bytes": rss[-1] - rss[0]}
        figures["fd_growth"] = fds[-1] - fds[0]
    return figures


SOAK_STREAMS = 16  # soak: echo connections held, chunks of 1 B to ECHO_MANY_CHUNK
SOAK_BULK = 2  # soak: echo connections held, chunks of 1 B to SOAK_BULK_CHUNK
SOAK_BULK_CHUNK = 64 * 1024  # below a client's default receive buffer: lockstep is safe
RESET_BOUND_S = 10.0  # a killed shard's connection must see its reset within this
RESTART_BOUND_S = 1.0  # from the kill until a new connection to that shard is echoed
RECOVERY_S = 10.0  # a connection to a killed shard made this long after the kill must work
PROBE_LEAD_S = 2.0  # a probe process starts this long before its kill (Python start-up)
PROBE_LIMIT_S = 15.0  # a probe gives up this long after the kill
SAMPLE_EVERY_S = 1.0  # soak: RSS and descriptors of the server's processes
SAMPLES_KEPT = 360  # soak: the most samples reported (evenly thinned)


def probe_ports(client: str, server: str, shard: int, nshards: int, n: int) -> list[int]:
    """``n`` local ports from which a connection from ``client`` to
    ``server``'s echo port hashes to ``shard`` (the dispatcher's own hash,
    ``flowhash.shard_for``), from a random start."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    a, b = socket.inet_pton(fam, client), socket.inet_pton(fam, server)
    out: list[int] = []
    port = 10_000 + secrets.randbelow(55_000)
    while len(out) < n:
        port = port + 1 if port < 65_000 else 10_000
        if shard_for(6, a, port, b, PORTS["echo"], nshards) == shard:
            out.append(port)
    return out


class _Killer:
    """SIGKILL to the planned shards at the planned times (wall clock), each
    with a probe process started PROBE_LEAD_S before, told "go" right after
    the kill: it times the first new connection the shard echoes."""

    def __init__(self, system: System, plan: list[tuple[float, int]], nshards: int) -> None:
        self.system, self.plan, self.nshards = system, plan, nshards
        self.client = KERNEL_V6 if ":" in system.host else KERNEL_V4
        self.probes: list[ClientGroup] = []  # one per kill, in plan order
        self.kills: list[tuple[float, int]] = []  # (wall clock, shard) of those done

    def tick(self, now: float) -> None:
        n = len(self.probes)
        if n < len(self.plan) and now >= self.plan[n][0] - PROBE_LEAD_S:
            ports = probe_ports(self.client, self.system.host, self.plan[n][1], self.nshards,
                                int(PROBE_LIMIT_S / PROBE_EVERY_S))  # fmt: skip
            spec = Spec("probe", self.system.host, PORTS["echo"], duration=PROBE_LIMIT_S,
                        ports=ports)  # fmt: skip
            self.probes.append(ClientGroup(self.system, [spec]))
        k = len(self.kills)
        if k < n and now >= self.plan[k][0]:
            shard = self.plan[k][1]
            pid = self.system.processes().get(f"shard{shard}")
            if pid is None:
                raise RuntimeError(f"shard {shard}'s process is unknown: cannot kill it")
            os.kill(pid, signal.SIGKILL)
            self.kills.append((time.time(), shard))
            self.probes[k].tell("go")

    def restart_s(self) -> list[float | None]:
        """Per kill: seconds until its probe's first echo (None: none came)."""
        out: list[float | None] = []
        for (at, _), probe in zip(self.kills, self.probes, strict=False):
            # (an early probe's result has long been waiting in its pipe)
            until = max(at + PROBE_LIMIT_S, time.time()) + GRACE_S
            (line,) = probe.wait_for("result", until, lambda _: None)
            got = line.get("result", {})
            out.append(round(got["t_end"] - at, 3) if got.get("ops") else None)
        return out

    def close(self) -> None:
        for probe in self.probes:
            probe.close()


@dataclass(slots=True)
class FlowVerdict:
    """The soak's connections judged against its kills."""

    reset: int = 0  # on a killed shard, ended by its reset within RESET_BOUND_S
    reset_s: list[float] = field(default_factory=list)  # kill to reset, each
    retried: int = 0  # connects to a killed shard that failed before it was back
    lost: int = 0  # broke without a kill of their shard (or reset too late)
    hung: int = 0  # no progress for the client's I/O timeout


def judge_flows(
    rows: list[list[Any]], kills: list[tuple[float, int]], shard_of: Callable[[str, int], int]
) -> FlowVerdict:
    """Rows of the clients' ``flows`` ([local address, local port, opened,
    ended, how, bytes]) against the kills ((wall clock, shard)): a
    connection may break only if its shard was killed before it ended and
    it was opened at most RECOVERY_S after that kill; then it must be a
    reset within RESET_BOUND_S of the last such kill (a connect may also have failed). Corrupted
    ones are the clients' own count."""
    v = FlowVerdict()
    for addr, port, opened, ended, how, _ in rows:
        if how in ("ok", "corrupt"):
            continue
        if how == "hang":
            v.hung += 1
            continue
        shard = shard_of(addr, port) if addr else -1
        # the last kill of its shard before it ended
        at = max((t for t, s in kills if s == shard and t <= ended and opened <= t + RECOVERY_S),
                 default=None)  # fmt: skip
        if at is not None and how == "rst" and ended - at <= RESET_BOUND_S:
            v.reset += 1
            v.reset_s.append(ended - at)
        elif at is not None and how == "connect":
            v.retried += 1
        else:
            v.lost += 1
    return v


def _thin(samples: list[list[float]], keep: int) -> list[list[float]]:
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    return [samples[int(i * step)] for i in range(keep)]


def soak(system: System, opts: Options) -> dict[str, Any]:
    """Mixed load for ``--duration`` (30 min unless given): echo streams
    (SOAK_STREAMS connections of small chunks, SOAK_BULK of large ones,
    every byte compared, a broken one replaced), crr from half of
    ``--streams`` processes, UDP echo and a ping every 10 ms, while a shard
    other than 0 (in turn, with more than two) is killed with SIGKILL every
    ``--kill-every`` seconds.

    Checked: the killed shard's connections end with a reset within
    RESET_BOUND_S (the new shard has no state for them: RFC 9293 §3.10.7.1);
    every connection on another shard goes on intact (``connections_lost``
    counts those that broke anyway); a new connection hashed to the killed
    shard is echoed within RESTART_BOUND_S of the kill (``restart_s``: a
    probe tries a connection every 10 ms from ports that hash there);
    ``restarts`` equals ``kills``; nothing corrupted. A hang, a corrupted
    byte, a lost connection, a slow restart fail the run. Reported too:
    ``success_rate`` (crr), RSS and descriptors over time (``samples``:
    [seconds, bytes, descriptors]). Against the kernel: the load, no kills."""
    duration = opts.soak_duration
    nshards = sum(role.startswith("shard") for role in system.processes())
    victims = list(range(1, nshards))  # the kernel's baseline has none
    restarts0 = system.restarts()
    start = time.time() + START_DELAY_S + 0.5
    plan: list[tuple[float, int]] = []
    while victims and (at := start + (len(plan) + 1) * opts.kill_every) <= (
        start + duration - KILL_MARGIN_S
    ):
        plan.append((at, victims[len(plan) % len(victims)]))
    echo_port = PORTS["echo"]
    specs = [
        Spec("streams", system.host, echo_port, start, duration, conns=SOAK_STREAMS,
             size=ECHO_MANY_CHUNK),
        Spec("streams", system.host, echo_port, start, duration, conns=SOAK_BULK,
             size=SOAK_BULK_CHUNK),
        Spec("udp", system.host, echo_port, start, duration, window=opts.window, size=opts.size),
        *(Spec("crr", system.host, echo_port, start, duration)
          for _ in range(max(1, opts.streams // 2))),
    ]  # fmt: skip
    samples: list[list[float]] = []
    next_sample = 0.0
    with contextlib.ExitStack() as stack:
        group = stack.enter_context(ClientGroup(system, specs))
        killer = _Killer(system, plan, nshards)
        stack.callback(killer.close)
        bar = stack.enter_context(_bar(f"{system.label}: soak", round(duration, 1), "s"))

        def tick(_: list[dict[str, Any]]) -> None:
            nonlocal next_sample
            now = time.time()
            bar.n = round(min(max(now - start, 0.0), duration), 1)
            bar.refresh()
            killer.tick(now)
            if now >= next_sample:
                next_sample = now + SAMPLE_EVERY_S
                procs = system.processes()
                if procs:
                    rss = sum(rss_bytes(procs).values())
                    samples.append([round(now - start, 1), rss, open_fds(procs)])

        time.sleep(max(start - time.time(), 0.0))
        pinger = stack.enter_context(_Ping(system, duration, interval=0.01))
        results = group.wait_for("result", start + duration + GRACE_S, tick)
        rtts, sent, got, _ = pinger.finish()
        restart_s = killer.restart_s()
        kills = killer.kills
        missing = [group.why(i) for i, line in enumerate(results) if not line]
    restarts = system.restarts() - restarts0
    out = [line["result"] for line in results if line]
    host = socket.inet_pton(socket.AF_INET6 if ":" in system.host else socket.AF_INET, system.host)

    def shard_of(addr: str, port: int) -> int:
        local = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
        return shard_for(6, local, port, host, echo_port, max(nshards, 1))

    verdict = judge_flows([row for r in out for row in r.get("flows", [])], kills, shard_of)
    streams, udp_, crr_ = Totals(), Totals(), Totals()
    for spec, line in zip(specs, results, strict=True):
        if line:
            {"streams": streams, "udp": udp_, "crr": crr_}[spec.kind].add(line["result"])
    slow = sum(r is None or r > RESTART_BOUND_S for r in restart_s)
    figures: dict[str, Any] = {
        "kills": len(kills),
        "restarts": restarts,
        "restart_s": restart_s,
        "restart_s_max": max((r for r in restart_s if r is not None), default=None),
        "reset_conns": verdict.reset,
        "reset_s_max": round(max(verdict.reset_s), 3) if verdict.reset_s else None,
        "connects_retried": verdict.retried,
        "connections_lost": verdict.lost,
        "hung": verdict.hung,
        "survived_conns": streams.ops,
        "mbytes_per_s_in": streams.bytes / streams.elapsed / 1e6,
        "conn_per_s": crr_.ops / crr_.elapsed,
        "success_rate": crr_.ops / max(crr_.ops + crr_.failed, 1),
        "pps": udp_.ops / udp_.elapsed,
        "udp_lost": udp_.lost,
        "ping_replies": got,
        "ping_lost": max(sent - got, 0),
        "corrupted": streams.corrupted + crr_.corrupted + udp_.corrupted,
    }
    figures["failed"] = (verdict.hung + verdict.lost + slow + len(missing)
                         + (restarts != len(kills)) + (len(kills) != len(plan)))  # fmt: skip
    if rtts:
        figures |= {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99)}
    if samples:
        figures |= {
            "rss_max_bytes": max(s[1] for s in samples),
            "rss_growth_bytes": samples[-1][1] - samples[0][1],
            "fd_growth": samples[-1][2] - samples[0][2],
            "samples": _thin(samples, SAMPLES_KEPT),
        }
    errors = [
        f"a new connection to the killed shard was echoed after {r} s, not within "
        f"{RESTART_BOUND_S:g} s"
        for r in restart_s
        if r is None or r > RESTART_BOUND_S
    ]
    errors += missing + (streams.errors + crr_.errors + udp_.errors if figures["failed"] else [])
    if errors:
        figures["error"] = errors[0]
    return figures


def relay(system: System, opts: Options) -> dict[str, Any]:
    """``bulk`` and ``crr`` from a client namespace to a server namespace
    through shardnet's ``--relay direct`` on a TUN (as many shards as the
    system measured has), or, for the kernel, through the kernel's own
    forwarding between the same namespaces; IPv4."""
    if system.name == "kernel":
        context = kernel_router(max(len(system.server_pids), 1))
    else:
        shards = sum(role.startswith("shard") for role in system.processes())
        context = relay_lab(max(shards, 1))
    with context as inner:
        into_out = bulk(inner, opts)
        inner.settle()
        conns = crr(inner, opts)
    figures: dict[str, Any] = {
        k: into_out[k] for k in ("mbytes_per_s_in", "mbytes_per_s_out") if k in into_out
    }
    figures |= {k: conns[k] for k in ("conn_per_s", "p50_us", "p99_us") if k in conns}
    figures["failed"] = into_out["failed"] + conns["failed"]
    figures["corrupted"] = into_out["corrupted"] + conns["corrupted"]
    errors = [f["error"] for f in (into_out, conns) if "error" in f]
    if errors:
        figures["error"] = errors[0]
    return figures


RUNNERS: dict[str, Callable[[System, Options], dict[str, Any]]] = {
    "bulk": bulk,
    "echo": echo,
    "crr": crr,
    "rr": rr,
    "udp": udp,
    "ping": ping,
    "conns": conns,
    "synflood": synflood,
    "fragflood": fragflood,
    "raflood": raflood,
    "injection": injection,
    "churn": churn,
    "soak": soak,
    "drain": drain,
    "relay": relay,
}
