"""IPv4 address conflict detection (RFC 5227, ``--acd all``) against real
peers in a namespace: the kernel holding the address on its side of the TAP
(its answer to our ARP probe is the conflict), a scapy host that answers the
probes for an address it claims, and a scapy host that claims an address in
use by gratuitous ARP (defended once, given up at the second claim within
DEFEND_INTERVAL). Addresses: 198.18.0.0/24 only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess
from .test_ndp_netns import EventLog

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

OURS = "198.18.0.2"
CLAIMED = "198.18.0.9"
HOLDER_MAC = "02:00:00:00:ac:d1"  # the scapy host's MAC


@pytest.fixture
def lab() -> Iterator[tuple[Netns, StackProcess]]:
    skip_unless_netns()
    with Netns("acd") as ns, StackProcess(ns, "--acd", "all", "--ipv4", f"{OURS}/24") as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        yield ns, stack


def addr_row(stack: StackProcess, addr: str) -> dict[str, Any] | None:
    rows = [a for a in stack.call("addrs") if a["addr"] == addr]
    return rows[0] if rows else None


def test_static_address_probed_then_usable(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    # StackProcess waited for no tentative address: probing is over.
    row = addr_row(stack, OURS)
    assert row is not None and row["kind"] == "permanent" and row["acd"]["state"] == "in-use"
    r = ns.run(["ping", "-c", "2", "-W", "5", OURS], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout


def test_kernel_holding_the_address_is_a_conflict(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    events = EventLog(stack.control)
    try:
        held = "198.18.0.7"
        ns.run(f"ip addr add {held}/24 dev {TAP}")
        kernel_mac = ns.run(f"cat /sys/class/net/{TAP}/address").stdout.strip()
        row = stack.call("addr_add", nic=TAP, address=f"{held}/24")
        assert row["kind"] == "tentative"
        conflict = events.wait("acd_conflict", lambda e: e["addr"] == held)
        assert conflict["mac"] == kernel_mac
        assert addr_row(stack, held) is None
    finally:
        events.close()


HOLDER = """
    from scapy.all import ARP, Ether, sniff, sendp
    # Answers every probe for {addr} (RFC 5227 §2.1.1: an ARP request with
    # sender IP 0.0.0.0) as the host that has it.
    def answer(p):
        a = p[ARP]
        if a.op == 1 and a.psrc == "0.0.0.0" and a.pdst == "{addr}":
            sendp(Ether(src="{mac}", dst=p.src) / ARP(op=2, hwsrc="{mac}", psrc="{addr}",
                  hwdst=p.src, pdst="0.0.0.0"), iface="{tap}", verbose=False)
    print("ready", flush=True)
    sniff(iface="{tap}", lfilter=lambda p: ARP in p, prn=answer, timeout=30)
"""


def test_scapy_host_answering_the_probes(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    events = EventLog(stack.control)
    code = textwrap.dedent(HOLDER.format(addr=CLAIMED, mac=HOLDER_MAC, tap=TAP))
    holder = ns.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        stack.call("addr_add", nic=TAP, address=f"{CLAIMED}/24")
        conflict = events.wait("acd_conflict", lambda e: e["addr"] == CLAIMED)
        assert conflict["mac"] == HOLDER_MAC
        assert addr_row(stack, CLAIMED) is None
    finally:
        events.close()
        holder.kill()
        holder.wait()


CLAIM = """
    import sys
    from scapy.all import ARP, Ether, sendp
    # A gratuitous ARP (RFC 5227 §3) from another MAC claiming {addr}, and
    # another one for every line read.
    frame = Ether(src="{mac}", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc="{mac}",
                                                             psrc="{addr}", pdst="{addr}")
    sendp(frame, iface="{tap}", verbose=False)
    for _ in sys.stdin:
        sendp(frame, iface="{tap}", verbose=False)
"""


def test_defended_once_then_given_up(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    events = EventLog(stack.control)
    r = ns.run(["ping", "-c", "1", "-W", "5", OURS], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout
    code = textwrap.dedent(CLAIM.format(addr=OURS, mac=HOLDER_MAC, tap=TAP))
    claimer = ns.popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
    try:
        defended = events.wait("acd_defended", lambda e: e["addr"] == OURS)
        assert defended["mac"] == HOLDER_MAC
        # Defended: still ours, resolved afresh (the claim may have moved
        # the kernel's entry) and answered.
        ns.run(f"ip neigh flush dev {TAP}")
        r = ns.run(["ping", "-c", "1", "-W", "5", OURS], check=False)
        assert " 0% packet loss" in r.stdout, r.stdout
        assert claimer.stdin is not None
        claimer.stdin.write("again\n")  # a second claim within DEFEND_INTERVAL (10 s)
        claimer.stdin.flush()
        events.wait("acd_abandoned", lambda e: e["addr"] == OURS)
        assert addr_row(stack, OURS) is None
        assert not events.all("acd_conflict")
        # Given up: no longer answered for.
        ns.run(f"ip neigh flush dev {TAP}")
        r = ns.run(["ping", "-c", "1", "-W", "2", OURS], check=False)
        assert " 0% packet loss" not in r.stdout, r.stdout
    finally:
        events.close()
        claimer.kill()
        claimer.wait()


def test_dhcp_lease_held_by_the_kernel_is_declined(tmp_path: Path) -> None:
    """dnsmasq (told not to ping first) offers the one address of its range,
    which the kernel holds: the probe meets the kernel's reply, the lease is
    declined (RFC 2131 §3.1 step 5) and dnsmasq logs the DHCPDECLINE."""
    skip_unless_netns()
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (Debian's dnsmasq-base)")
    taken = "198.18.0.50"
    with Netns("acdhcp") as ns, StackProcess(ns, "--dhcp4") as stack:
        events = EventLog(stack.control)
        try:
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
            ns.run(f"ip addr add {taken}/24 dev {TAP}")
            log = tmp_path / "dnsmasq.log"
            ns.popen(
                [
                    "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={TAP}",
                    "--bind-interfaces", f"--dhcp-range={taken},{taken},255.255.255.0,2m",
                    f"--dhcp-leasefile={tmp_path / 'leases'}", "--no-resolv", "--port=0",
                    "--user=root", "--pid-file", "--log-dhcp", "--log-facility=-", "--no-ping",
                ],
                stdout=log.open("a"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            # The first DISCOVER may go before dnsmasq listens: the next is 4 ± 1 s later.
            assert wait_until(lambda: events.all("dhcp4_bound"), timeout=20), events.all()
            conflict = events.wait("acd_conflict", lambda e: e["addr"] == taken)
            assert conflict["mac"] == ns.run(f"cat /sys/class/net/{TAP}/address").stdout.strip()
            assert wait_until(lambda: "DHCPDECLINE" in log.read_text(), timeout=5), log.read_text()
            assert not any(a["addr"] == taken for a in stack.call("addrs"))
        finally:
            events.close()
