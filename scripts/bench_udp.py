"""``shardnet bench udp``: UDP echo through shardnet against the kernel, as a
ratio to the kernel itself, measured in the same command.

A lab namespace (``lab.py``) runs ``shardnet run --serve echo:7``. A kernel
client on the other side of the TAP keeps ``--window`` datagrams of
``--size`` bytes in flight until ``--count`` echoes came back, over IPv4 and
IPv6. The baseline is the same client against a kernel echo server (the same
Python loop the client uses) in a second namespace over a veth pair, IPv4
and IPv6. The client gives up on a silent window after 0.5 s and sends it
again; those are reported as ``lost``.

Needs root (namespaces, a TAP, a veth). Uses 198.18.0.0/15 and 2001:db8::/32
only, inside the namespaces it makes and removes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from .lab import SHARDNET_V4, SHARDNET_V6, Lab

TAP = "snbench0"
VETH = ("snbv0", "snbv1")
BASE_V4 = ("198.19.0.1", "198.19.0.2")
BASE_V6 = ("2001:db8:1::1", "2001:db8:1::2")
PORT = 7

# The client, run by the kernel side: prints "<echoes/s> <lost>".
CLIENT = """
import socket, sys, time
host, port, count, window, size = sys.argv[1], *map(int, sys.argv[2:6])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
payload, dst, sent, got, lost = b"x" * size, (host, port), 0, 0, 0
for _ in range(50):  # the peer answers (neighbour resolution done) before timing
    s.sendto(payload, dst)
    try:
        s.recv(65536)
        break
    except TimeoutError:
        continue
t0 = time.perf_counter()
while got < count:
    while sent - got < window and sent < count:
        s.sendto(payload, dst)
        sent += 1
    try:
        s.recv(65536)
        got += 1
    except TimeoutError:
        lost += sent - got
        sent = got
print(count / (time.perf_counter() - t0), lost)
"""

# The baseline's echo server: the kernel stack under the same Python loop.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""


@dataclass(slots=True)
class Result:
    family: str
    shardnet_per_s: float
    kernel_per_s: float
    shardnet_lost: int
    kernel_lost: int

    @property
    def ratio(self) -> float:
        return self.shardnet_per_s / self.kernel_per_s if self.kernel_per_s else 0.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shardnet bench udp", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20_000, help="echoes per case (20000)")
    p.add_argument("--window", type=int, default=32, help="datagrams in flight (32)")
    p.add_argument("--size", type=int, default=64, help="payload bytes (64)")
    p.add_argument("--shards", type=int, default=2, help="shardnet shards (2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    if args.count < 1 or args.window < 1 or not 1 <= args.size <= 1400 or args.shards < 1:
        p.error("--count, --window and --shards must be >= 1, --size 1..1400")
    return args


def _client(lab: Lab, ns: str, host: str, args: argparse.Namespace) -> tuple[float, int]:
    r = lab.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            host,
            str(PORT),
            str(args.count),
            str(args.window),
            str(args.size),
        ],  # fmt: skip
        ns=ns,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"the client failed against {host}: {r.stderr.strip()}")
    rate, lost = r.stdout.split()
    return float(rate), int(lost)


def _baseline(lab: Lab, args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """The kernel on both sides: a veth pair between the lab and a peer."""
    peer = lab.add_namespace("peer")
    subprocess.run(
        ["ip", "link", "add", VETH[0], "netns", lab.ns, "type", "veth", "peer", "name", VETH[1],
         "netns", peer],
        check=True, capture_output=True,
    )  # fmt: skip
    for ns, dev, v4, v6 in ((lab.ns, VETH[0], BASE_V4[0], BASE_V6[0]),
                            (peer, VETH[1], BASE_V4[1], BASE_V6[1])):  # fmt: skip
        lab.run(["ip", "addr", "add", f"{v4}/24", "dev", dev], ns=ns, check=True)
        lab.run(["ip", "addr", "add", f"{v6}/64", "dev", dev, "nodad"], ns=ns, check=True)
        lab.run(["ip", "link", "set", dev, "up"], ns=ns, check=True)
    out = {}
    for family, server in (("ipv4", BASE_V4[1]), ("ipv6", BASE_V6[1])):
        echo = subprocess.Popen(
            ["ip", "netns", "exec", peer, sys.executable, "-c", ECHO, server, str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            out[family] = _client(lab, lab.ns, server, args)
        finally:
            echo.terminate()
            echo.wait(timeout=5)
    return out


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``shardnet bench udp``; returns the exit status."""
    args = _parse(argv)
    if os.geteuid() != 0:
        print("shardnet bench udp: needs root (namespaces, a TAP, a veth)", file=sys.stderr)
        return 1
    if shutil.which("ip") is None:
        print("shardnet bench udp: needs ip (apt-get install iproute2)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        with Lab("bench", tap=TAP, serve=(f"echo:{PORT}",), shards=args.shards) as lab:
            ours = {
                "ipv4": _client(lab, lab.ns, SHARDNET_V4, args),
                "ipv6": _client(lab, lab.ns, SHARDNET_V6, args),
            }
            kernel = _baseline(lab, args)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"shardnet bench udp: {exc}", file=sys.stderr)
        return 1
    results = [
        Result(f, ours[f][0], kernel[f][0], ours[f][1], kernel[f][1]) for f in ("ipv4", "ipv6")
    ]
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio} for r in results], indent=1))
        return 0
    print(
        f"shardnet bench udp: {args.count} echoes of {args.size} B, {args.window} in flight, "
        f"{args.shards} shard(s), {time.monotonic() - t0:.0f} s"
    )
    print(f"{'family':8}{'shardnet/s':>12}{'kernel/s':>12}{'ratio':>8}{'lost':>12}")
    for r in results:
        print(
            f"{r.family:8}{r.shardnet_per_s:12,.0f}{r.kernel_per_s:12,.0f}{r.ratio:8.1%}"
            f"{r.shardnet_lost:>6}/{r.kernel_lost:<5}"
        )
    return 0
