"""A throw-away lab for the commands that show or measure the stack
(``shardnet demo``, ``shardnet bench udp``): a network namespace holding a
TAP with shardnet on one side and the kernel on the other, removed again
with everything in it, also on Ctrl-C or a failure.

Only 198.18.0.0/15 and 2001:db8::/32 are used, inside the namespace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from shardnet.common.client import Client, ControlError

KERNEL_V4, SHARDNET_V4 = "198.18.0.1", "198.18.0.2"
KERNEL_V6, SHARDNET_V6 = "2001:db8::1", "2001:db8::2"
READY_TIMEOUT_S = 30.0


class Lab:
    """``with Lab("demo", tap="sndemo0", serve=("echo:7",)) as lab:`` — the
    stack is up (every shard ready, no tentative address) and the kernel
    side of the TAP has its addresses."""

    def __init__(
        self,
        name: str,
        *,
        tap: str,
        serve: tuple[str, ...] = (),
        shards: int = 2,
        args: tuple[str, ...] = (),
        tun_netns: str | None = None,
    ) -> None:
        """``tun_netns``: the link is a TUN named ``tap`` moved into that
        namespace (``--tun-netns``), whose end gets the kernel's addresses."""
        self.tap = tap
        self.tun_netns = tun_netns
        self.serve = serve
        self.args = args  # more ``shardnet run`` flags (--multi-queue, --no-offload)
        self.shards = shards
        self.ns = f"sn-{name}-{secrets.token_hex(3)}"
        self.control = f"ipc:///run/shardnet/{name}-{secrets.token_hex(3)}.ctl"
        self.stack: subprocess.Popen[str] | None = None
        self.mac = ""
        self._extra_ns: list[str] = []
        self._state_dir = tempfile.mkdtemp(prefix="shardnet-lab-")

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, argv: list[str], ns: str | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the lab's namespace (or ``ns``)."""
        return subprocess.run(
            ["ip", "netns", "exec", ns or self.ns, *argv], capture_output=True, text=True, **kw
        )

    def add_namespace(self, tag: str) -> str:
        """Another namespace, removed with the lab (a baseline's peer)."""
        name = f"{self.ns}-{tag}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self._extra_ns.append(name)
        self.run(["ip", "link", "set", "lo", "up"], ns=name, check=True)
        return name

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        self.run(["ip", "link", "set", "lo", "up"], check=True)
        argv = [
            sys.executable, "-m", "shardnet.scripts.cli", "run",
            *(["--tap", self.tap] if self.tun_netns is None else
              ["--tun", self.tap, "--tun-netns", self.tun_netns]),
            "--shards", str(self.shards), "--ipv4", f"{SHARDNET_V4}/24",
            "--ipv6", f"{SHARDNET_V6}/64", "--control", self.control,
            "--state-dir", self._state_dir,  # a throw-away stack keeps nothing
        ]  # fmt: skip
        for serve in self.serve:
            argv += ["--serve", serve]
        argv += self.args
        self.stack = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us; we stop the stack ourselves
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.stack.poll() is not None:
                output = self.stack.stdout.read() if self.stack.stdout else ""
                raise RuntimeError(f"the stack exited: {output}")
            try:
                with Client(self.control, timeout_s=1) as client:
                    shards = client.shards()["shards"]
                    addrs = client.addrs()
                    if all(s["ready"] for s in shards) and not any(
                        a["kind"] == "tentative" for a in addrs
                    ):
                        self.mac = client.hello()["mac"]
                        break
            except ControlError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the stack did not become ready in {READY_TIMEOUT_S:.0f} s")
        kernel_ns = self.tun_netns or self.ns
        self.run(
            ["ip", "addr", "add", f"{KERNEL_V4}/24", "dev", self.tap], ns=kernel_ns, check=True
        )
        self.run(
            ["ip", "addr", "add", f"{KERNEL_V6}/64", "dev", self.tap, "nodad"],
            ns=kernel_ns,
            check=True,
        )

    def close(self) -> None:
        if self.stack is not None and self.stack.poll() is None:
            os.kill(self.stack.pid, signal.SIGTERM)
            try:
                self.stack.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.stack.kill()
                self.stack.wait()
        for name in [*self._extra_ns, self.ns]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._extra_ns = []
        shutil.rmtree(self._state_dir, ignore_errors=True)
        if self.stack is not None:
            shutil.rmtree(f"/run/shardnet/{self.tap}.{self.stack.pid}.d", ignore_errors=True)
        for suffix in ("", ".events"):
            path = self.control[len("ipc://") :] + suffix
            if os.path.exists(path):
                os.unlink(path)
