"""TCP recovery against the kernel with faults injected both ways
(``--fault``: the kernel here has no netem): transfers stay intact with 5 %
drop and reordering, and the recovery shows in the retransmit counters."""

from __future__ import annotations

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess, echo_client

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]


def test_transfers_stay_intact_with_drops_and_reordering() -> None:
    skip_unless_netns()
    with (
        Netns("fault") as ns,
        StackProcess(
            ns, "--ipv4", "198.18.0.2/24", "--serve", "echo:7", "--serve", "http:80",
            "--fault", "drop=0.05,reorder=0.05,dup=0.01,seed=7",
            # MTU frames: with TSO a 3 MB transfer is ~50 super-segments, and
            # with RACK-TLP none of ours may need resending when none of
            # them happens to be dropped.
            "--no-offload",
        ) as stack,
    ):  # fmt: skip
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(echo_client("198.18.0.2", 3_000_000), timeout=150).stdout.split()
        assert out == ["3000000", "True"]
        size = ns.run(
            ["curl", "-sS", "-m", "120", "-o", "/dev/null", "-w", "%{size_download}", "http://198.18.0.2/bytes/3000000"],
            timeout=150,
        ).stdout  # fmt: skip
        assert size == "3000000"
        retransmits = sum(
            s["counters"].get("tcp_retransmits", 0) for s in stack.call("stats")["shards"]
        )
        assert retransmits > 0, "with 5 % loss shardnet must have retransmitted"
