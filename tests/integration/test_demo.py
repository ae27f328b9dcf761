"""``shardnet demo``: runs with no set-up, reports, and leaves nothing behind
(also when interrupted)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ..netns import skip_unless_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def demo_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("sn-demo-")]


def test_demo_reports_and_cleans_up() -> None:
    skip_unless_netns()
    r = subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "demo", "--bytes", "2000000"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "ping 198.18.0.2: 5/5 replies" in out and "ping 2001:db8::2: 5/5 replies" in out
    assert "answered ::ffff:198.18.0.1" in out
    assert "download over IPv6: 2 MiB" in out and "upload over IPv4 to discard: 2 MiB" in out
    assert demo_namespaces() == []


def test_demo_interrupted_still_cleans_up() -> None:
    skip_unless_netns()
    # Transfers far larger than it can finish before the signal, however
    # slowly this process gets to send it on a loaded machine.
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardnet.scripts.cli", "demo", "--bytes", str(1 << 40)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "shardnet is up in namespace ..."
    assert "shardnet is up" in line
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert demo_namespaces() == []
