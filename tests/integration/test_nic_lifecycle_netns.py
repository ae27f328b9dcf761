"""``ctl nic down`` / ``up`` on the link, as the kernel on the other side of
the TAP sees it: while down nothing is sent and IPv6 is not answered; up
again is a new attachment (RFC 4862 §5.3): DAD for every address, router
solicitations, MLD reports, and the addresses answer again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"


@pytest.fixture
def lab() -> Iterator[tuple[Netns, StackProcess]]:
    skip_unless_netns()
    args = ("--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64")
    with Netns("niclife") as ns, StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield ns, stack


def ping6(ns: Netns) -> bool:
    r = ns.run(["ping", "-6", "-c", "1", "-W", "1", SHARDNET_V6], check=False)
    return " 0% packet loss" in r.stdout


def test_the_link_down_then_up_is_a_new_attachment(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    assert wait_until(lambda: ping6(ns), timeout=10)
    # ICMPv6 seen on the kernel side from the moment the link comes back:
    # NS (135) from :: (DAD), RS (133), MLDv2 reports (143).
    sniffer = ns.popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, sys, threading
        from scapy.all import AsyncSniffer, IPv6
        ready = threading.Event()
        def icmp6_type(p):  # past a Hop-by-Hop header (MLD carries Router Alert)
            body = bytes(p[IPv6].payload)
            return body[(body[1] + 1) * 8] if p[IPv6].nh == 0 else body[0]
        s = AsyncSniffer(iface="{TAP}", lfilter=lambda p: IPv6 in p and p[IPv6].nh in (0, 58),
                         started_callback=ready.set)
        s.start()
        ready.wait(10)
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps([[p[IPv6].src, icmp6_type(p)] for p in s.stop()]), flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sniffer.stdout is not None and sniffer.stdin is not None
    assert sniffer.stdout.readline().strip() == "ready"
    stack.call("nic_set", name=TAP, enabled=False)
    assert not ping6(ns)  # down: no answer
    stack.call("nic_set", name=TAP, enabled=True)
    assert wait_until(lambda: ping6(ns), timeout=10)  # the addresses answer again
    time.sleep(2)  # MLD's robustness retransmissions, RS delay
    sniffer.stdin.write("\n")
    sniffer.stdin.flush()
    result = {"out": sniffer.stdout.readline()}
    sniffer.wait(10)
    seen = [(src, kind) for src, kind in json.loads(result["out"])]
    assert ("::", 135) in seen  # DAD again
    assert any(kind == 133 for _, kind in seen)  # router solicitation again
    assert any(kind == 143 for _, kind in seen)  # MLD reports again
