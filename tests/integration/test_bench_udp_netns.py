"""``shardnet bench udp``: measures shardnet's UDP echo against the kernel's
in the same command, reports the ratio, and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..netns import skip_unless_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def bench_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("sn-bench-")]


def test_bench_udp_measures_both_stacks_and_cleans_up() -> None:
    skip_unless_netns()
    r = subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "bench", "udp", "--count", "500", "--json"],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["family"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"ipv4", "ipv6"}
    for row in rows.values():
        assert row["shardnet_per_s"] > 0 and row["kernel_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["shardnet_per_s"] / row["kernel_per_s"])
    assert bench_namespaces() == []


def test_bench_udp_refuses_bad_options() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "bench", "udp", "--size", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "--size" in r.stderr
