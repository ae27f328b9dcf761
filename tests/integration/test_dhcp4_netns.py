"""The DHCPv4 client (``--dhcp4``, RFC 2131) against real servers in a
namespace: dnsmasq on the kernel side of the TAP (address, default route,
DNS options, renewal at a short T1, DHCPRELEASE at shutdown, INIT-REBOOT
after a restart with the state directory), and a scapy server with a short
lease that goes away (the lease expires, the address and route go).
Addresses: 198.18.0.0/24 only."""

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

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

RANGE = ("198.18.0.50", "198.18.0.99")
MAC = "02:00:00:00:d0:01"  # the client's identity: the same MAC across the restart


@pytest.fixture
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (Debian's dnsmasq-base)")
    with Netns("dhcp") as ns:
        yield ns


def dnsmasq(ns: Netns, tmp: Path, *extra: str) -> subprocess.Popen[Any]:
    """dnsmasq as a DHCP server only (--port=0: no DNS), logging every
    exchange to ``tmp/dnsmasq.log``."""
    log = (tmp / "dnsmasq.log").open("a")
    return ns.popen(
        [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={TAP}",
            "--bind-interfaces", f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,2m",
            f"--dhcp-leasefile={tmp / 'leases'}", "--no-resolv", "--port=0", "--user=root",
            "--pid-file", "--log-dhcp", "--log-facility=-", "--dhcp-authoritative",
            f"--dhcp-option=option:router,{KERNEL_V4}",
            f"--dhcp-option=option:dns-server,{KERNEL_V4}",
            "--dhcp-option=option:domain-name,example.test", *extra,
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def kernel_side(ns: Netns) -> None:
    ns.run(f"ip addr replace {KERNEL_V4}/24 dev {TAP}")


def dhcp_address(stack: StackProcess) -> dict[str, Any] | None:
    """The leased address once in use: RFC 5227 probing (``--acd dhcp``, the
    default) keeps it tentative for a few seconds first."""
    rows = [a for a in stack.call("addrs") if a["origin"] == "dhcp" and a["kind"] != "tentative"]
    return rows[0] if rows else None


def wait_event(events: EventLog, kind: str, timeout: float) -> dict[str, Any]:
    assert wait_until(lambda: events.all(kind), timeout=timeout, interval=0.1), (
        f"no {kind} in {timeout} s; events: {events.all()}"
    )
    return events.all(kind)[0]


def test_lease_route_ping_release_and_init_reboot(ns: Netns, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StackProcess(ns, "--dhcp4", "--state-dir", str(state), "--mac", MAC) as stack:
        events = EventLog(stack.control)
        kernel_side(ns)
        server = dnsmasq(ns, tmp_path)
        # The first DISCOVER may go before dnsmasq listens: the next is 4 ± 1 s later.
        assert wait_until(lambda: dhcp_address(stack), timeout=20, interval=0.2), events.all()
        row = dhcp_address(stack)
        assert row is not None
        addr = row["addr"]
        assert RANGE[0] <= addr <= RANGE[1] and row["prefix_len"] == 24
        lease = row["dhcp4"]
        assert lease["state"] == "BOUND" and lease["server"] == KERNEL_V4
        assert lease["dns_servers"] == [KERNEL_V4] and lease["domain_name"] == "example.test"
        assert 100 <= lease["expires_s"] <= 120  # dnsmasq's 2 min lease
        routes = stack.call("routes")
        assert any(
            r["prefix_len"] == 0 and r["gateway"] == KERNEL_V4 and r["origin"] == "dhcp"
            for r in routes
        ), routes
        bound = wait_event(events, "dhcp4_bound", 5)
        assert bound["address"] == addr and bound["dns_servers"] == [KERNEL_V4]
        ns.run(f"ping -c 2 -W 2 {addr}")
        assert addr in (tmp_path / "leases").read_text()
        events.close()
        assert stack.stop() == 0
    # DHCPRELEASE at shutdown: dnsmasq forgot the lease.
    assert wait_until(lambda: addr not in (tmp_path / "leases").read_text(), timeout=5)
    assert "DHCPRELEASE" in (tmp_path / "dnsmasq.log").read_text()
    server.terminate()
    server.wait(timeout=5)
    before = len((tmp_path / "dnsmasq.log").read_text())
    # A restart with the state directory: INIT-REBOOT, a REQUEST for the
    # remembered address and no DISCOVER (RFC 2131 §3.2).
    with StackProcess(ns, "--dhcp4", "--state-dir", str(state), "--mac", MAC) as stack:
        kernel_side(ns)  # the TAP was made again
        server = dnsmasq(ns, tmp_path)
        assert wait_until(lambda: dhcp_address(stack), timeout=20, interval=0.2)
        row = dhcp_address(stack)
        assert row is not None and row["addr"] == addr
        log = (tmp_path / "dnsmasq.log").read_text()[before:]
        assert f"DHCPREQUEST({TAP}) {addr} {MAC}" in log and "DHCPDISCOVER" not in log, log
        assert stack.stop() == 0
    server.terminate()
    server.wait(timeout=5)


def test_renews_at_a_short_t1(ns: Netns, tmp_path: Path) -> None:
    # Without ACD: its 3-7 s of probing keep the address tentative past a 3 s
    # T1, so the unicast renewal could not leave before T2 (a real lease's T1
    # is hours; ACD has its own tests).
    with StackProcess(ns, "--dhcp4", "--acd", "off") as stack:
        events = EventLog(stack.control)
        kernel_side(ns)
        # RFC 2132 §9.11, §9.12: T1 3 s, T2 6 s of the 2 min lease.
        dnsmasq(ns, tmp_path, "--dhcp-option=58,3", "--dhcp-option=59,6")
        bound = wait_event(events, "dhcp4_bound", 20)
        assert bound["t1_s"] == 3 and bound["t2_s"] == 6
        renewed = wait_event(events, "dhcp4_renewed", 10)
        assert renewed["state"] == "RENEWING" and renewed["address"] == bound["address"]
        assert wait_until(lambda: dhcp_address(stack), timeout=10, interval=0.2)
        row = dhcp_address(stack)
        assert row is not None and row["dhcp4"]["expires_s"] > 110  # the lease was extended
        ns.run(f"ping -c 1 -W 2 {bound['address']}")
        events.close()


# A DHCP server that gives 198.18.0.60 for 10 s (T1 3 s, T2 6 s) to whoever asks.
SCAPY_SERVER = """
    from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, sendp, sniff
    conf.verb = 0
    mac = open("/sys/class/net/{tap}/address").read().strip()
    def answer(p):
        if DHCP not in p or p[BOOTP].op != 1:
            return
        kind = dict(o for o in p[DHCP].options if isinstance(o, tuple) and len(o) == 2).get("message-type")
        reply = {{1: "offer", 3: "ack"}}.get(kind)
        if reply is None:
            return
        sendp(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="{server}", dst="255.255.255.255")
              / UDP(sport=67, dport=68)
              / BOOTP(op=2, xid=p[BOOTP].xid, chaddr=p[BOOTP].chaddr, yiaddr="198.18.0.60",
                      flags=0x8000)
              / DHCP(options=[("message-type", reply), ("server_id", "{server}"),
                              ("subnet_mask", "255.255.255.0"), ("router", "{server}"),
                              ("lease_time", 10), ("renewal_time", 3), ("rebinding_time", 6),
                              "end"]), iface="{tap}")
    print("ready", flush=True)
    sniff(iface="{tap}", filter="udp and dst port 67", prn=answer, store=False)
"""


def test_a_server_that_goes_away_lets_the_lease_expire(ns: Netns) -> None:
    with StackProcess(ns, "--dhcp4") as stack:
        events = EventLog(stack.control)
        kernel_side(ns)
        code = textwrap.dedent(SCAPY_SERVER.format(tap=TAP, server=KERNEL_V4))
        server = ns.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        bound = wait_event(events, "dhcp4_bound", 20)
        assert bound["address"] == "198.18.0.60" and bound["lease_time_s"] == 10
        server.terminate()
        server.wait(timeout=5)
        # T1 (unicast, unanswered), T2 (broadcast, unanswered), then the end of the lease.
        expired = wait_event(events, "dhcp4_expired", 20)
        assert expired["address"] == "198.18.0.60"
        assert dhcp_address(stack) is None
        routes = stack.call("routes")
        assert not any(r["origin"] == "dhcp" for r in routes), routes
        assert ns.run("ping -c 1 -W 1 198.18.0.60", check=False).returncode != 0
        events.close()


def test_a_remembered_address_the_server_refuses_is_naked(ns: Netns, tmp_path: Path) -> None:
    """INIT-REBOOT for an address outside dnsmasq's range: the server
    (authoritative) answers DHCPNAK, the client forgets it and starts again
    with DISCOVER (RFC 2131 §3.2 step 3)."""
    state = tmp_path / "state"
    state.mkdir()
    lease = state / f"{TAP}.dhcp4"
    lease.write_text(f'{{"address": "198.18.0.200", "mac": "{MAC}", "server": null}}\n')
    with StackProcess(ns, "--dhcp4", "--state-dir", str(state), "--mac", MAC) as stack:
        events = EventLog(stack.control)
        kernel_side(ns)
        dnsmasq(ns, tmp_path)
        nak = wait_event(events, "dhcp4_nak", 20)
        assert nak["state"] == "REBOOTING" and nak["server"] == KERNEL_V4
        bound = wait_event(events, "dhcp4_bound", 20)
        assert RANGE[0] <= bound["address"] <= RANGE[1]
        log = (tmp_path / "dnsmasq.log").read_text()
        assert "DHCPNAK" in log and "DHCPDISCOVER" in log, log
        assert bound["address"] in lease.read_text()  # the new lease is kept
        events.close()


def test_a_restarted_shard_0_asks_for_its_lease_again(ns: Netns, tmp_path: Path) -> None:
    """Shard 0 owns the client: killed, it comes back and rebuilds its
    state from the configuration and the state directory (INIT-REBOOT)."""
    with StackProcess(ns, "--dhcp4", "--mac", MAC) as stack:
        kernel_side(ns)
        dnsmasq(ns, tmp_path)
        assert wait_until(lambda: dhcp_address(stack), timeout=20, interval=0.2)
        row = dhcp_address(stack)
        assert row is not None
        before = len((tmp_path / "dnsmasq.log").read_text())
        assert stack.kill_shard(0)
        assert wait_until(lambda: dhcp_address(stack), timeout=20, interval=0.2)
        again = dhcp_address(stack)
        assert again is not None and again["addr"] == row["addr"]
        log = (tmp_path / "dnsmasq.log").read_text()[before:]
        assert "DHCPREQUEST" in log and "DHCPDISCOVER" not in log, log
        ns.run(f"ping -c 1 -W 2 {row['addr']}")
