"""Run the real ``shardnet run`` inside a test namespace and talk to it.

The control channel is an ipc:// socket in the filesystem, so the test
process reaches it with ``Client`` from outside the namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, Self

from shardnet.common.client import Client, ControlError

from .netns import Netns, wait_until

TAP = "sntap0"
KERNEL_V4 = "198.18.0.1"


def echo_client(target: str, size: int, *, timeout: float = 60, then: str = "") -> str:
    """Python for ``Netns.python``: a kernel client that sends ``size``
    random bytes to the echo server at ``target`` port 7 while a thread
    reads them back, then prints the bytes received and whether their
    sha256 matches what was sent (``4000000 True``). ``then`` runs after
    that, with the socket ``s`` still open."""
    code = f"""
        import hashlib, os, socket, sys, threading
        data = os.urandom({size})
        s = socket.create_connection(({target!r}, 7), timeout={timeout})
        got = bytearray()
        def reader():
            while len(got) < len(data):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join({2 * timeout})
        print(len(got), hashlib.sha256(got).digest() == hashlib.sha256(data).digest())
    """
    return textwrap.dedent(code) + textwrap.dedent(then)


class StackProcess:
    """``shardnet run --tap sntap0 ...`` in ``ns``; stopped on exit."""

    def __init__(self, ns: Netns, *args: str, shards: int = 2, tap: str | None = TAP) -> None:
        """``tap`` None: the link is in ``args`` (``--packet IFACE`` or ``--tun NAME``)."""
        self.ns = ns
        self.tap = tap
        flag = "--packet" if "--packet" in args else "--tun"
        self.link = tap if tap is not None else args[list(args).index(flag) + 1]
        self.control = f"ipc:///run/shardnet/test-{secrets.token_hex(4)}.ctl"
        # Tests keep nothing in /var/lib/shardnet unless they name a directory.
        self._state_dir = None if "--state-dir" in args else tempfile.mkdtemp(prefix="sn-test-")
        self.argv = [
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "run",
            *(["--tap", tap] if tap is not None else []),
            "--shards",
            str(shards),
            "--control",
            self.control,
            *(["--state-dir", self._state_dir] if self._state_dir else []),
            *args,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.client: Client | None = None

    def __enter__(self) -> Self:
        self.proc = self.ns.popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ok = wait_until(self._ready, timeout=30, interval=0.1)
        if not ok:
            self.stop()
            raise AssertionError(f"shardnet did not become ready:\n{self.output()}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"shardnet exited {self.proc.returncode}:\n{self.output()}")
        try:
            if self.client is None:
                self.client = Client(self.control, timeout_s=1.0)
            shards = self.client.call("shards")["shards"]
        except ControlError:
            if self.client is not None:
                self.client.close()
                self.client = None
            return False
        if not all(s["ready"] for s in shards):
            return False
        # IPv6 addresses are tentative until DAD is over (RFC 4862 §5.4).
        return not any(a["kind"] == "tentative" for a in self.client.call("addrs"))

    def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None
        return self.client.call(op, **args)

    def shard_pids(self) -> list[int]:
        return [s["pid"] for s in self.call("shards")["shards"]]

    def kill_shard(self, index: int, timeout: float = 15) -> bool:
        """``kill -9`` shard ``index``; True once the supervisor has started
        a new one (another pid) and it is ready."""
        old = self.shard_pids()[index]
        os.kill(old, signal.SIGKILL)

        def restarted() -> bool:
            shard = self.call("shards")["shards"][index]
            return shard["pid"] != old and shard["ready"]

        return wait_until(restarted, timeout=timeout)

    def stop(self, sig: int = 15, timeout: float = 20) -> int | None:
        """Signal the stack and wait for it; returns its exit code. Removes
        what a killed stack could not (its ipc sockets)."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, sig)
                try:
                    return self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise
            return self.proc.returncode
        finally:
            if self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
            # ``ip netns exec`` execs: the pid is the dispatcher's.
            shutil.rmtree(f"/run/shardnet/{self.link}.{self.proc.pid}.d", ignore_errors=True)
            for path in (self.control[len("ipc://") :], self.control[len("ipc://") :] + ".events"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def output(self) -> str:
        if self.proc is None or self.proc.stdout is None:
            return ""
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False
