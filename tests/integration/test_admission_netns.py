"""The TAP's admission filter against floods sent from the kernel side:
the flood is cut down in the kernel, counted, and the traffic of flows
(pings here) still gets through while it lasts."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"
METRICS = "127.0.0.1:9100"


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("adm") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = ("--metrics", METRICS, "--ipv4", f"{SHARDNET_V4}/24", "--serve", "echo:7")
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ping -c 1 -W 2 {SHARDNET_V4}")  # the kernel knows our MAC before any flood
        yield stack


def link_drops(ns: Netns, reason: str) -> float:
    text = ns.run(f"curl -sf http://{METRICS}/metrics").stdout
    pattern = (
        rf'shardnet_drops_total\{{layer="link",reason="{reason}",shard="dispatcher"\}} ([0-9.e+]+)'
    )
    return sum(float(n) for n in re.findall(pattern, text))


def ping_loss_during(ns: Netns, flood: str) -> float:
    """Percent of 300 pings (every 10 ms) lost while ``flood`` runs."""
    ping = ns.popen(
        ["ping", "-c", "300", "-i", "0.01", "-W", "1", SHARDNET_V4],
        stdout=subprocess.PIPE,
        text=True,
    )
    ns.python(flood, timeout=60)
    out, _ = ping.communicate(timeout=30)
    m = re.search(r"([0-9.]+)% packet loss", out)
    assert m is not None, out
    return float(m.group(1))


def flood(stack: StackProcess, frame_code: str) -> str:
    """Python that sends 160,000 frames built by ``frame_code`` (``i`` is
    the frame's number) as fast as one process can."""
    mac = stack.call("hello")["mac"].replace(":", "")
    return f"""
        import os, socket, struct
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("{TAP}", 0))
        dst = bytes.fromhex("{mac}")
        frames = []
        for i in range(20000):
            src = bytes((2, 0x5A, 0, i >> 16, (i >> 8) & 255, i & 0xFF))
            {frame_code}
        for _ in range(8):
            for f in frames:
                s.send(f)
    """


def test_the_filter_is_on(stack: StackProcess) -> None:
    assert stack.call("stats")["dispatcher"]["link_filter"] == "ebpf"


def test_an_arp_flood_is_cut_down_in_the_kernel_and_pings_pass(
    ns: Netns, stack: StackProcess
) -> None:
    """ARP requests from 20,000 ever new senders: without the filter the
    TAP's queue overflows and drops pings with the flood (14 % of them in
    one run), with it next to none."""
    arp = f"""target = socket.inet_aton("{SHARDNET_V4}")
            sender = bytes((198, 19, (i >> 8) & 255, i & 0xFF))
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, sender, bytes(6), target)
            frames.append(dst + src + b"\\x08\\x06" + arp)"""
    before = link_drops(ns, "control_over_rate")
    loss = ping_loss_during(ns, flood(stack, arp))
    assert link_drops(ns, "control_over_rate") - before > 10_000
    assert loss <= 10.0, f"{loss} % of the pings lost"


def test_a_syn_flood_is_cut_down_in_the_kernel_and_pings_pass(
    ns: Netns, stack: StackProcess
) -> None:
    """Spoofed SYNs to the echo port: the filter passes what the shards'
    SYN gates can judge, and a new connection still opens afterwards."""
    syn = f"""ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, 64, 6, 0,
                             bytes((198, 19, (i >> 8) & 255, i & 0xFF)), socket.inet_aton("{SHARDNET_V4}"))
            tcp = struct.pack("!HHIIBBHHH", 1024 + i % 60000, 7, i, 0, 0x50, 0x02, 65535, 0, 0)
            frames.append(dst + src + b"\\x08\\x00" + ip + tcp)"""
    before = link_drops(ns, "syn_over_rate")
    loss = ping_loss_during(ns, flood(stack, syn))
    assert link_drops(ns, "syn_over_rate") - before > 10_000
    assert loss <= 10.0, f"{loss} % of the pings lost"
    out = ns.python(f"""
        import socket
        s = socket.create_connection(("{SHARDNET_V4}", 7), timeout=10)
        s.sendall(b"after the flood")
        print(s.recv(100).decode())
    """).stdout
    assert out.strip() == "after the flood"
