"""RFC 3168 ECN against the kernel: with net.ipv4.tcp_ecn=1 in the test's
namespace the kernel's ECN-setup SYN is accepted (shardnet's default is
Linux's 2), the kernel's TCP_INFO says ECN (``ss -ti``'s ``ecn``), shardnet's data arrives ECT(0); with
CE marks injected both ways (``--fault ce=``) shardnet echoes the kernel's
and halves its window on the kernel's ECE, and the data stays intact."""

from __future__ import annotations

import subprocess

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess, echo_client

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

CLIENT = echo_client(
    "198.18.0.2",
    3_000_000,
    then="""
    # struct tcp_info's tcpi_options (byte 5): TCPI_OPT_ECN = 8, what
    # ``ss -ti`` shows as "ecn" (this ss is older than the kernel's layout)
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    print("ECN" if info[5] & 8 else "NO-ECN")
    ext = {}
    with open("/proc/net/netstat") as f:
        lines = f.read().split("\\n")
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("IpExt:"):
            ext = dict(zip(names.split()[1:], map(int, values.split()[1:])))
    print(ext.get("InECT0Pkts", 0), ext.get("InCEPkts", 0))
    print("done", flush=True)
    sys.stdin.readline()  # the test reads shardnet's view of the connection first
    s.close()
""",
)


def run_echo(kernel_ecn: int, *extra: str) -> tuple[list[str], dict]:
    """3 MB through shardnet's echo server from a kernel client with
    tcp_ecn=``kernel_ecn``: the client's report (bytes and sha256 match,
    ECN in ss, ECT(0) and CE packets the kernel received) and shardnet's
    row for the connection."""
    with (
        Netns("ecn") as ns,
        StackProcess(ns, "--ipv4", "198.18.0.2/24", "--serve", "echo:7", *extra) as stack,
    ):
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"sysctl -qw net.ipv4.tcp_ecn={kernel_ecn}")
        proc = ns.popen(
            ["python3", "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdin is not None
        lines = []
        while (line := proc.stdout.readline()) and line.strip() != "done":
            lines.append(line.strip())
        rows = [r for r in stack.call("conns") if r.get("remote", "").startswith(KERNEL_V4)]
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
        assert len(rows) == 1, rows
        return lines, rows[0]


def test_kernel_ecn_setup_syn_is_accepted_and_data_goes_ect0() -> None:
    skip_unless_netns()
    report, row = run_echo(1)
    assert report[:2] == ["3000000 True", "ECN"]
    ect0, ce = map(int, report[2].split())
    assert ect0 > 0 and ce == 0  # shardnet's data, ECN-capable, unmarked
    assert row["ecn"] and row["ecn_reductions"] == 0 and row["ecn_ce_in"] == 0


def test_no_ecn_when_the_kernel_does_not_ask() -> None:
    skip_unless_netns()
    report, row = run_echo(0)
    assert report[:2] == ["3000000 True", "NO-ECN"]
    assert report[2].split()[0] == "0"  # nothing ECN-capable from shardnet
    assert not row["ecn"]


def test_ce_marks_are_echoed_and_answered_both_ways() -> None:
    """CE on 2 % of ECN-capable frames both ways (MTU frames, no offload): the kernel's data marked
    on its way in is echoed with ECE (the kernel slows down: nothing is
    lost, nothing breaks), and the kernel's ECE for shardnet's marked data
    makes shardnet reduce its window, with no retransmission, and send
    CWR."""
    skip_unless_netns()
    report, row = run_echo(1, "--fault", "ce=0.02,seed=3", "--no-offload")
    assert report[:2] == ["3000000 True", "ECN"]
    _, ce = map(int, report[2].split())
    assert ce > 0  # marks reached the kernel
    assert row["ecn"] and row["ecn_ce_in"] > 0 and row["ecn_reductions"] > 0
    assert row["retransmits"] == 0
    # CWR stops the kernel's echo: about one reduction per mark (without
    # CWR the kernel echoes on every ACK, a reduction every round trip).
    assert row["ecn_reductions"] <= ce + 5
