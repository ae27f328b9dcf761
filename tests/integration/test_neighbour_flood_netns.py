"""Thousands of new neighbours at once, as a scanner or a flood brings
them: ARP requests and neighbour solicitations from 3,000 senders each
(every one with a new link-layer address to learn). Learning one costs what
handling any frame costs, whatever the table's size, so the stack answers
ping at once afterwards instead of working through the flood for seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"
SENDERS = 3000


@pytest.fixture
def lab() -> Iterator[tuple[Netns, StackProcess]]:
    skip_unless_netns()
    args = ["--ipv4", f"{SHARDNET_V4}/16", "--ipv6", f"{SHARDNET_V6}/64"]
    with Netns("nflood") as ns, StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/16 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield ns, stack


def test_a_flood_of_new_neighbours_leaves_the_stack_answering(
    lab: tuple[Netns, StackProcess],
) -> None:
    ns, stack = lab
    assert (
        " 0% packet loss" in ns.run(["ping", "-c", "1", "-W", "5", SHARDNET_V4], check=False).stdout
    )
    ns.python(f"""
        from scapy.all import ARP, Ether, IPv6, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, conf, raw
        s = conf.L2socket(iface="{TAP}")
        for i in range({SENDERS}):
            mac = "02:5e:%02x:%02x:00:01" % (i >> 8, i & 255)
            s.send(raw(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
                op=1, hwsrc=mac, psrc="198.18.%d.%d" % (10 + (i >> 8), i & 255), pdst="{SHARDNET_V4}")))
            s.send(raw(Ether(src=mac, dst="33:33:ff:00:00:02") / IPv6(
                src="2001:db8::5e:%x" % i, dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(
                tgt="{SHARDNET_V6}") / ICMPv6NDOptSrcLLAddr(lladdr=mac)))
        s.close()
    """, timeout=120)  # fmt: skip
    # Right after the flood: answered within a second, every time.
    for target in (SHARDNET_V4, SHARDNET_V6):
        r = ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", target], check=False)
        assert " 0% packet loss" in r.stdout, r.stdout
    learnt = stack.call("neigh")
    assert len(learnt) > 100  # the flood was learnt (up to the table's bound), not ignored
    assert stack.call("stats")["processes"]["shards"][0]["restarts"] == 0
