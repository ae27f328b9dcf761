"""``shardnet demo``: the whole picture in under a minute, with no set-up.

It makes a network namespace with a TAP, starts the stack in it (two shards,
the http, echo and discard apps), and from the kernel side of the TAP pings
it over IPv4 and IPv6, fetches a page, and moves 50 MB each way; then it
prints what happened and removes everything it made, also on Ctrl-C.
Only 198.18.0.0/15 and 2001:db8::/32 are used, inside the namespace.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from shardnet.common.client import Client

from .lab import SHARDNET_V4, SHARDNET_V6, Lab

TAP = "sndemo0"
BULK = 50 * 1024 * 1024  # bytes each way


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bytes", type=int, default=BULK, help=argparse.SUPPRESS)  # tests use less


class Demo:
    def __init__(self, bulk: int) -> None:
        self.bulk = bulk
        self.lab = Lab("demo", tap=TAP, serve=("http:80", "echo:7", "discard:9"))
        self.control = self.lab.control

    def run_in_ns(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.lab.run(argv, **kw)

    def say(self, line: str) -> None:
        print(line, flush=True)

    # --- steps ----------------------------------------------------------------------
    def setup(self) -> None:
        self.lab.start()
        self.say(
            f"shardnet is up in namespace {self.lab.ns}: 2 shards on TAP {TAP}, MAC {self.lab.mac}"
        )

    def ping(self, target: str) -> None:
        r = self.run_in_ns(["ping", "-c", "5", "-i", "0.2", "-W", "2", target], timeout=30)
        m = re.search(r"(\d+) received.*\n.*= [\d.]+/([\d.]+)/", r.stdout)
        if m:
            self.say(f"ping {target}: {m.group(1)}/5 replies, average {m.group(2)} ms")
        else:
            self.say(f"ping {target}: no replies")

    def page(self) -> None:
        r = self.run_in_ns(["curl", "-sS", "-m", "10", f"http://{SHARDNET_V4}/"], timeout=20)
        text = re.sub(r"<[^>]+>", " ", r.stdout).split()
        self.say(
            "GET http://198.18.0.2/ -> "
            + (" ".join(text) if text else f"failed: {r.stderr.strip()}")
        )

    def download(self) -> None:
        r = self.run_in_ns(
            ["curl", "-sS", "-m", "120", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
             f"http://[{SHARDNET_V6}]/bytes/{self.bulk}"],
            timeout=150,
        )  # fmt: skip
        size, secs = (r.stdout.split() + ["0", "0"])[:2]
        rate = int(size) / max(float(secs), 1e-6) / 1e6
        self.say(
            f"download over IPv6: {int(size) / 2**20:.0f} MiB in {float(secs):.1f} s ({rate * 8:.0f} Mbit/s)"
        )

    def upload(self) -> None:
        code = (
            "import socket, time\n"
            f"s = socket.create_connection(('{SHARDNET_V4}', 9), timeout=30)\n"
            "chunk = b'x' * 65536\n"
            f"left = {self.bulk}\n"
            "t = time.monotonic()\n"
            "while left > 0:\n"
            "    s.sendall(chunk[:left])\n"
            "    left -= 65536\n"
            "s.shutdown(socket.SHUT_WR)\n"
            "s.recv(1)\n"
            "print(time.monotonic() - t)\n"
        )
        r = self.run_in_ns([sys.executable, "-c", code], timeout=150)
        secs = float(r.stdout.strip() or "0")
        rate = self.bulk / max(secs, 1e-6) / 1e6
        self.say(
            f"upload over IPv4 to discard: {self.bulk / 2**20:.0f} MiB in {secs:.1f} s ({rate * 8:.0f} Mbit/s)"
        )

    def report(self) -> None:
        with Client(self.control) as client:
            stats = client.stats()
        for s in stats["shards"]:
            c = s["counters"]
            self.say(
                f"shard {s['shard']}: {c.get('rx_frames', 0)} frames in, {c.get('tx_frames', 0)} out, "
                f"{c.get('tcp_retransmits', 0)} TCP retransmits, {sum(s['drops'].values())} drops"
            )

    def cleanup(self) -> None:
        self.lab.close()


def main(ns: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("shardnet demo: needs root (it makes a network namespace and a TAP)", file=sys.stderr)
        return 1
    for tool in ("ip", "ping", "curl"):
        if shutil.which(tool) is None:
            print(
                f"shardnet demo: needs {tool} (apt-get install iproute2 iputils-ping curl)",
                file=sys.stderr,
            )
            return 1
    # Ctrl-C and SIGTERM end it through the same clean-up, also when it was
    # started with SIGINT ignored (as a shell starts background jobs: Python
    # then leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = Demo(ns.bytes)
    t0 = time.monotonic()
    try:
        demo.setup()
        demo.ping(SHARDNET_V4)
        demo.ping(SHARDNET_V6)
        demo.page()
        demo.download()
        demo.upload()
        demo.report()
        demo.say(f"done in {time.monotonic() - t0:.0f} s; cleaning up")
        return 0
    except KeyboardInterrupt:
        demo.say("interrupted; cleaning up")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"shardnet demo: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.cleanup()
