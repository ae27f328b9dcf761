"""RACK-TLP (RFC 8985) against the kernel: with frames reordered both ways
by ``--fault`` (no loss), shardnet's sender takes far fewer reorderings
for losses with RACK (the default) than with RFC 6675 DupThresh
(``--tcp rack=false``), and the data stays intact (sha256)."""

from __future__ import annotations

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess, echo_client

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

ECHO = echo_client("198.18.0.2", 4_000_000)


def echo_retransmits(*extra: str) -> int:
    """4 MB through the echo server over a reordering link: the segments
    shardnet retransmitted. Without offloads, so that frames are single
    segments (a reordered super-segment would be one event in 44)."""
    with (
        Netns("rack") as ns,
        StackProcess(
            ns, "--ipv4", "198.18.0.2/24", "--serve", "echo:7",
            "--fault", "reorder=0.03,latency_ms=5,seed=5", "--no-offload", *extra, shards=1,
        ) as stack,
    ):  # fmt: skip
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(ECHO, timeout=150).stdout.split()
        assert out == ["4000000", "True"]
        shards = stack.call("stats")["shards"]
        return sum(s["counters"].get("tcp_retransmits", 0) for s in shards)


def test_reordering_costs_fewer_retransmissions_with_rack() -> None:
    skip_unless_netns()
    with_rack = echo_retransmits()
    without = echo_retransmits("--tcp", "rack=false")
    print("retransmits with RACK", with_rack, "without", without)
    assert without >= 20, "the reordering must have fooled DupThresh"
    assert with_rack * 3 <= without
