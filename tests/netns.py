"""Network namespaces for tests that need a real kernel peer.

``Netns`` creates a namespace with a random ``sn-`` name, runs commands and
Python code in it through ``ip netns exec``, and deletes it on exit, even
when the test failed. The pytest process itself never enters the namespace.

    with Netns("lnk") as ns:                 # sn-lnk-1a2b3c4d
        ns.run("ip link add snveth0 type veth peer name snveth1")
        out = ns.python("print('hello')").stdout
        proc = ns.popen(["ping", "-c", "1", "198.18.0.2"])

Processes started with ``popen`` are ended (by pid: SIGTERM, then SIGKILL)
when the namespace is left; so is any process still inside the namespace,
since only the test put processes there.

Tests that use it are marked ``@pytest.mark.netns`` and skip themselves
with ``skip_unless_netns()`` when not root or without ``ip``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


def skip_unless_netns() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def _argv(cmd: str | Sequence[str]) -> list[str]:
    return ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


class Netns:
    """A network namespace that exists between ``__enter__`` and ``__exit__``."""

    def __init__(self, tag: str = "t") -> None:
        self.name = f"sn-{tag}-{secrets.token_hex(4)}"
        self._procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Self:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.run("ip link set lo up")
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def exec_argv(self, cmd: str | Sequence[str]) -> list[str]:
        """The argv that runs ``cmd`` (a shell string or an argv) inside."""
        return ["ip", "netns", "exec", self.name, *_argv(cmd)]

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside and wait; stdout and stderr captured as text.
        A failure with ``check`` raises an AssertionError showing both."""
        result = subprocess.run(
            self.exec_argv(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=_env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {cmd!r} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def python(
        self, code: str, *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (dedented) inside with this interpreter."""
        return self.run([sys.executable, "-c", textwrap.dedent(code)], check=check, timeout=timeout)

    def popen(self, cmd: str | Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside without waiting; ended on exit."""
        kwargs.setdefault("env", _env())
        proc = subprocess.Popen(self.exec_argv(cmd), **kwargs)
        self._procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """The processes inside the namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def delete(self) -> None:
        """End what runs inside and delete the namespace; safe to repeat."""
        for proc in self._procs:
            _end(proc)
        self._procs.clear()
        for pid in self.pids():  # what the test's processes left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def _end(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=3)


def _env() -> dict[str, str]:
    """The environment for processes inside: this one, with the project
    root on PYTHONPATH so ``tests.*`` helpers import too."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
