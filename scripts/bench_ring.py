"""``shardnet bench ring``: frames/s and MB/s through one dispatcher -> shard
hop, for the shared-memory ring and, in the same run, the alternatives it
was chosen over (a pipe, zmq).

Every case runs a producer (this process) and a consumer (a child started
with ``multiprocess``'s spawn method), each pinned to its own CPU when two are
available, for ``--duration`` seconds of producing; throughput is measured on
the consumer from its first record to the end marker. Mechanisms:

* ``ring``: common.ring, batched publish, consumer takes zero-copy views;
* ``ring-copy``: the same, consumer copies each record out (``bytes(view)``);
* ``pipe``: os.pipe, 4-byte length prefix, writes batched to 64 KiB;
* ``zmq``: pyzmq PUSH/PULL over ipc://.

A full ring makes the producer retry (it counts ``full``): the benchmark
measures capacity, not drop behaviour.

    python -m shardnet.scripts.bench_ring [--duration S] [--sizes 64,1500,65536]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import multiprocess

from shardnet.common.fdpass import PassedFd
from shardnet.common.ring import DEFAULT_CAPACITY, DEFAULT_SPIN_US, Ring, RingHandle

MECHANISMS = ("ring", "ring-copy", "pipe", "zmq")
DEFAULT_SIZES = (64, 1500, 65536)
PIPE_BATCH = 65536  # bytes per os.write (the pipe's best batch, measured here)
PIPE_END = 0xFFFF_FFFF  # length prefix that ends a pipe run
ZMQ_COPY_THRESHOLD = 16384  # bytes: zero-copy sends/receives above this
_LEN = struct.Struct("<I")
_READY_TIMEOUT_S = 60.0


@dataclass(slots=True)
class CaseResult:
    mechanism: str
    size: int
    frames: int
    nbytes: int
    seconds: float
    notes: str = ""
    error: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# --- consumers (run in the child) -------------------------------------------


def _consume_ring(
    handle: RingHandle, conn: Any, copy: bool, spin_us: float, cpu: int | None
) -> None:
    _pin(cpu)
    ring = Ring.attach(handle)
    cons = ring.consumer(spin_us=spin_us)
    conn.send("ready")
    frames = nbytes = 0
    t0 = 0.0
    done = False
    while not done:
        views = cons.read_batch(256)
        if not views:
            cons.wait(1.0)
            continue
        if not frames:
            t0 = time.perf_counter()
        for v in views:
            n = len(v)
            if n == 0:  # end marker
                done = True
                break
            if copy:
                bytes(v)
            frames += 1
            nbytes += n
        del views, v
        cons.release()
    elapsed = time.perf_counter() - t0
    conn.send((frames, nbytes, elapsed, f"wakeups {cons.wakeups}"))
    ring.close()


def _consume_pipe(rfd: PassedFd, conn: Any, cpu: int | None) -> None:
    _pin(cpu)
    fd = rfd.fd
    buf = bytearray(1 << 21)
    mv = memoryview(buf)
    have = start = 0
    frames = nbytes = 0
    t0 = 0.0
    conn.send("ready")
    done = False
    while not done:
        got = os.readv(fd, [mv[have:]])
        if got == 0:
            break
        if not frames:
            t0 = time.perf_counter()
        have += got
        while have - start >= 4:
            n = _LEN.unpack_from(buf, start)[0]
            if n == PIPE_END:
                done = True
                break
            if have - start < 4 + n:
                break
            mv[start + 4 : start + 4 + n]  # the record, as a view (like ring)
            start += 4 + n
            frames += 1
            nbytes += n
        if start:
            buf[: have - start] = buf[start:have]
            have -= start
            start = 0
    elapsed = time.perf_counter() - t0
    os.close(fd)
    conn.send((frames, nbytes, elapsed, ""))


def _consume_zmq(endpoint: str, conn: Any, copy: bool, cpu: int | None) -> None:
    import zmq

    _pin(cpu)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.connect(endpoint)
    conn.send("ready")
    frames = nbytes = 0
    t0 = 0.0
    recv = sock.recv
    while True:
        msg = recv(copy=copy)
        n = len(msg) if isinstance(msg, bytes) else len(msg.buffer)
        if n == 0:
            break
        if not frames:
            t0 = time.perf_counter()
        frames += 1
        nbytes += n
    elapsed = time.perf_counter() - t0
    sock.close(linger=0)
    ctx.term()
    conn.send((frames, nbytes, elapsed, ""))


# --- producers (this process) -----------------------------------------------


def _produce_ring(ring: Ring, size: int, duration: float, batch: int) -> str:
    prod = ring.producer()
    payload = bytes(size)
    put, publish = prod.try_put, prod.publish
    deadline = time.perf_counter() + duration
    while True:
        for _ in range(batch):
            while not put(payload):
                publish()  # full: let the consumer see what we have, retry
        publish()
        if time.perf_counter() >= deadline:
            break
    while not put(b""):
        publish()
    publish()
    return f"full {prod.drops}, doorbells {prod.doorbells}"


def _produce_pipe(wfd: int, size: int, duration: float) -> str:
    payload = bytes(size)
    hdr = _LEN.pack(size)
    buf = bytearray()
    deadline = time.perf_counter() + duration
    writes = 0
    while True:
        for _ in range(32):
            buf += hdr
            buf += payload
            if len(buf) >= PIPE_BATCH:
                _write_all(wfd, buf)
                writes += 1
                buf.clear()
        if time.perf_counter() >= deadline:
            break
    buf += _LEN.pack(PIPE_END)
    _write_all(wfd, buf)
    return f"writes {writes + 1}"


def _write_all(fd: int, buf: bytearray) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]
    view.release()


def _produce_zmq(sock: Any, size: int, duration: float, copy: bool) -> str:
    payload = bytes(size)
    send = sock.send
    deadline = time.perf_counter() + duration
    while True:
        for _ in range(32):
            send(payload, copy=copy)
        if time.perf_counter() >= deadline:
            break
    send(b"")
    return ""


# --- one case ---------------------------------------------------------------


def _run_case(
    ctx: Any,
    mechanism: str,
    size: int,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
) -> CaseResult:
    parent_cpu, child_cpu = cpus
    conn, child_conn = ctx.Pipe()
    saved = os.sched_getaffinity(0)
    cleanup: list[Any] = []
    proc = None
    try:
        if mechanism in ("ring", "ring-copy"):
            ring = Ring.create(args.capacity)
            cleanup.append(ring.close)
            proc = ctx.Process(
                target=_consume_ring,
                args=(ring.handle, child_conn, mechanism == "ring-copy", args.spin_us, child_cpu),
            )
            proc.start()
            _await_ready(conn)
            _pin(parent_cpu)
            notes = _produce_ring(ring, size, args.duration, args.batch)
        elif mechanism == "pipe":
            rfd, wfd = os.pipe()
            cleanup.append(lambda: os.close(wfd))
            proc = ctx.Process(target=_consume_pipe, args=(PassedFd(rfd), child_conn, child_cpu))
            proc.start()
            os.close(rfd)
            _await_ready(conn)
            _pin(parent_cpu)
            notes = _produce_pipe(wfd, size, args.duration)
        elif mechanism == "zmq":
            import zmq

            tmp = tempfile.TemporaryDirectory(prefix="shardnet-bench-")
            cleanup.append(tmp.cleanup)
            endpoint = f"ipc://{tmp.name}/push.sock"
            copy = size < ZMQ_COPY_THRESHOLD
            proc = ctx.Process(target=_consume_zmq, args=(endpoint, child_conn, copy, child_cpu))
            proc.start()
            # Context made after the child started (DESIGN.md: never before a fork).
            zctx = zmq.Context()
            sock = zctx.socket(zmq.PUSH)
            sock.bind(endpoint)
            cleanup.append(zctx.term)
            cleanup.append(lambda: sock.close(linger=0))
            _await_ready(conn)
            _pin(parent_cpu)
            notes = _produce_zmq(sock, size, args.duration, copy)
        else:
            raise ValueError(f"unknown mechanism {mechanism!r}")
        if not conn.poll(args.duration + 30):
            raise TimeoutError("consumer did not report")
        frames, nbytes, seconds, child_notes = conn.recv()
        notes = ", ".join(x for x in (notes, child_notes) if x)
        return CaseResult(mechanism, size, frames, nbytes, seconds, notes)
    except Exception as exc:  # a failed case is reported, the run goes on
        return CaseResult(mechanism, size, 0, 0, 0.0, error=f"{type(exc).__name__}: {exc}")
    finally:
        os.sched_setaffinity(0, saved)
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for fn in reversed(cleanup):
            fn()
        conn.close()
        child_conn.close()


def _await_ready(conn: Any) -> None:
    if not conn.poll(_READY_TIMEOUT_S) or conn.recv() != "ready":
        raise TimeoutError("consumer did not start")


def _cpus(pin: bool) -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def format_table(results: list[CaseResult]) -> str:
    lines = [f"{'mechanism':<10} {'size':>6} {'frames/s':>12} {'MB/s':>9}  notes"]
    for r in results:
        if r.error:
            lines.append(f"{r.mechanism:<10} {r.size:>6} {'-':>12} {'-':>9}  ERROR {r.error}")
        else:
            lines.append(
                f"{r.mechanism:<10} {r.size:>6} {r.fps:>12,.0f} {r.mbps:>9,.1f}  {r.notes}"
            )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="shardnet bench ring",
        description="Frames/s and MB/s through one shared-memory ring, against a pipe and zmq.",
    )
    p.add_argument(
        "--duration", type=float, default=1.0, help="seconds of producing per case (default 1)"
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(DEFAULT_SIZES),
        help="record sizes in bytes, comma-separated (default 64,1500,65536)",
    )
    p.add_argument(
        "--mechanisms",
        type=lambda s: s.split(","),
        default=list(MECHANISMS),
        help=f"comma-separated subset of {','.join(MECHANISMS)}",
    )
    p.add_argument(
        "--capacity", type=int, default=DEFAULT_CAPACITY, help="ring data bytes (power of two)"
    )
    p.add_argument("--batch", type=int, default=32, help="records per ring publish (default 32)")
    p.add_argument(
        "--spin-us", type=float, default=DEFAULT_SPIN_US, help="consumer spin before sleeping"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin producer and consumer to CPUs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    bad = [m for m in args.mechanisms if m not in MECHANISMS]
    if bad:
        p.error(f"unknown mechanism(s): {', '.join(bad)}")
    if args.duration <= 0 or args.batch < 1 or any(s < 1 for s in args.sizes):
        p.error("--duration, --batch and --sizes must be positive")
    if args.capacity < 64 or args.capacity & (args.capacity - 1):
        p.error("--capacity must be a power of two >= 64")
    too_big = [s for s in args.sizes if s > args.capacity // 4]
    if too_big and any(m.startswith("ring") for m in args.mechanisms):
        p.error(f"sizes {too_big} exceed the ring's largest record ({args.capacity // 4} B)")
    return args


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``shardnet bench ring``; returns the exit status."""
    args = _parse(argv)
    ctx = multiprocess.get_context("spawn")
    cpus = _cpus(not args.no_pin)
    results: list[CaseResult] = []
    for size in args.sizes:
        for mechanism in args.mechanisms:
            results.append(_run_case(ctx, mechanism, size, args, cpus))
    if args.json:
        print(json.dumps([asdict(r) | {"fps": r.fps, "mbps": r.mbps} for r in results], indent=1))
    else:
        pin = (
            f"producer cpu {cpus[0]}, consumer cpu {cpus[1]}" if cpus[0] is not None else "unpinned"
        )
        print(f"shardnet bench ring: {args.duration:g} s per case, {pin}, ring {args.capacity} B")
        print(format_table(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    # Re-enter through the package so that spawned children import the
    # consumers from shardnet.scripts.bench_ring, not __main__.
    from shardnet.scripts.bench_ring import run as _run

    sys.exit(_run())
