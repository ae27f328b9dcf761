"""The DHCPv6 client (RFC 8415, ``--dhcp6 auto``, the default) against real
servers in a namespace: dnsmasq on the kernel side of the TAP, its RAs
setting M (an address by Solicit/Request, pinged from the kernel, Released
at shutdown: dnsmasq logs it and forgets the lease) or O only (stateless:
the Information-request's DNS server and search list); and a scapy server
with short lifetimes (T1 2 s, T2 4 s; dnsmasq's shortest lease is two
minutes, a T1 of 60 s): the kernel holding the address it hands out makes
DAD fail and the client Decline it; then a Renew answered, and one not,
so that the client Rebinds at T2. The lifetimes' end is the unit tests'
(tests/unit/net/test_dhcp6.py): waiting for it here would cost 10 s.
Addresses: 2001:db8:6::/64 .. 2001:db8:8::/64 and fe80::/10 only."""

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
from ..stack import TAP, StackProcess
from .test_ndp_netns import EventLog

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

KERNEL_V6 = "2001:db8:6::1"
RANGE = ("2001:db8:6::100", "2001:db8:6::1ff")
STATELESS_KERNEL = "2001:db8:7::1"
DNS = "2001:db8:6::53"
MAC = "02:00:00:00:d6:01"


@pytest.fixture
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (Debian's dnsmasq-base)")
    with Netns("dhcp6") as ns:
        yield ns


def dnsmasq(ns: Netns, tmp: Path, dhcp_range: str) -> subprocess.Popen[Any]:
    """dnsmasq as DHCPv6 server and router advertiser only (--port=0: no
    DNS), logging every exchange to ``tmp/dnsmasq.log``."""
    log = (tmp / "dnsmasq.log").open("a")
    return ns.popen(
        [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={TAP}",
            "--bind-interfaces", f"--dhcp-range={dhcp_range}", "--enable-ra",
            f"--dhcp-leasefile={tmp / 'leases'}", "--no-resolv", "--port=0", "--user=root",
            "--pid-file", "--log-dhcp", "--log-facility=-",
            f"--dhcp-option=option6:dns-server,[{DNS}]",
            "--dhcp-option=option6:domain-search,example.test",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def dhcp6_address(stack: StackProcess) -> dict[str, Any] | None:
    """The assigned address once DAD is over."""
    rows = [
        a
        for a in stack.call("addrs")
        if a["origin"] == "dhcp" and ":" in a["addr"] and a["kind"] == "permanent"
    ]
    return rows[0] if rows else None


def test_stateful_address_ping_and_release(ns: Netns, tmp_path: Path) -> None:
    with StackProcess(ns, "--mac", MAC) as stack:
        events = EventLog(stack.control)
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        server = dnsmasq(ns, tmp_path, f"{RANGE[0]},{RANGE[1]},64,2m")
        assert wait_until(lambda: dhcp6_address(stack), timeout=25, interval=0.2), (
            events.all(),
            (tmp_path / "dnsmasq.log").read_text(),
        )
        row = dhcp6_address(stack)
        assert row is not None
        addr = row["addr"]
        assert RANGE[0] <= addr <= RANGE[1] and row["prefix_len"] == 128  # RFC 8415 §21.4
        lease = row["dhcp6"]
        assert lease["state"] == "BOUND" and lease["server"].startswith("fe80::")
        assert lease["dns_servers"] == [DNS] and lease["domains"] == ["example.test"]
        assert 100 <= lease["valid_s"] <= 120  # dnsmasq's 2 min lease
        bound = events.wait("dhcp6_bound")
        assert bound["addresses"] == [addr]
        # Reachable from the kernel: on-link by the RA's prefix (L flag), not by the /128.
        ns.run(f"ping -6 -c 2 -W 2 {addr}")
        assert addr in (tmp_path / "leases").read_text()
        events.close()
        assert stack.stop() == 0
    # Release at shutdown (RFC 8415 §18.2.7): dnsmasq logs it and drops the lease.
    assert wait_until(lambda: "DHCPRELEASE" in (tmp_path / "dnsmasq.log").read_text(), timeout=5)
    assert wait_until(lambda: addr not in (tmp_path / "leases").read_text(), timeout=5)
    server.terminate()
    server.wait(timeout=5)


def test_stateless_information_request(ns: Netns, tmp_path: Path) -> None:
    with StackProcess(ns) as stack:
        events = EventLog(stack.control)
        ns.run(f"ip addr add {STATELESS_KERNEL}/64 dev {TAP} nodad")
        # RAs with O and A (SLAAC for the address), DHCPv6 for the rest.
        server = dnsmasq(ns, tmp_path, "2001:db8:7::,ra-stateless")
        informed = events.wait("dhcp6_informed")
        assert informed["dns_servers"] == [DNS] and informed["domains"] == ["example.test"]
        rows = [a for a in stack.call("addrs") if a.get("dhcp6")]
        assert rows and rows[0]["origin"] == "linklocal", rows
        assert rows[0]["dhcp6"]["state"] == "INFORMED"
        assert not any(a["origin"] == "dhcp" for a in stack.call("addrs"))
        log = (tmp_path / "dnsmasq.log").read_text()
        assert "DHCPINFORMATION-REQUEST" in log, log
        events.close()
    server.terminate()
    server.wait(timeout=5)


# A DHCPv6 server (and router advertising M) that gives 2001:db8:8::60 with
# T1 2 s, T2 4 s, preferred 8 s, valid 10 s to whoever asks; it answers the
# first Renew only.
SCAPY_ADDR = "2001:db8:8::60"
SCAPY_SERVER = """
    import threading, time
    from scapy.all import Ether, IPv6, UDP, conf, sendp, sniff
    from scapy.layers.dhcp6 import (DHCP6_Advertise, DHCP6_Reply, DHCP6_Solicit, DHCP6_Request,
        DHCP6_Renew, DHCP6_Rebind, DHCP6_Decline, DHCP6OptClientId, DHCP6OptServerId, DHCP6OptIA_NA,
        DHCP6OptIAAddress, DHCP6OptPref, DUID_LL)
    from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr
    conf.verb = 0
    mac = open("/sys/class/net/{tap}/address").read().strip()
    def advertise():
        while True:
            sendp(Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1")
                  / ICMPv6ND_RA(M=1, O=1, routerlifetime=0) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
                  / ICMPv6NDOptPrefixInfo(prefix="2001:db8:8::", prefixlen=64, L=1, A=0),
                  iface="{tap}")
            time.sleep(1)
    threading.Thread(target=advertise, daemon=True).start()
    renews = []
    def answer(p):
        msg = p[UDP].payload
        if isinstance(msg, DHCP6_Renew):
            renews.append(msg)
            if len(renews) > 1:
                print("ignored", flush=True)  # the second Renew goes unanswered: Rebind at T2
                return
        for kind, reply in ((DHCP6_Solicit, DHCP6_Advertise), (DHCP6_Request, DHCP6_Reply),
                            (DHCP6_Renew, DHCP6_Reply), (DHCP6_Rebind, DHCP6_Reply),
                            (DHCP6_Decline, DHCP6_Reply)):
            if isinstance(msg, kind):
                break
        else:
            return
        print(kind.__name__, flush=True)
        sendp(Ether(src=mac, dst=p[Ether].src) / IPv6(src="fe80::1", dst=p[IPv6].src)
              / UDP(sport=547, dport=546)
              / reply(trid=msg.trid) / DHCP6OptClientId(duid=msg[DHCP6OptClientId].duid)
              / DHCP6OptServerId(duid=DUID_LL(lladdr=mac)) / DHCP6OptPref(prefval=255)
              / DHCP6OptIA_NA(iaid=msg[DHCP6OptIA_NA].iaid, T1=2, T2=4, ianaopts=[
                  DHCP6OptIAAddress(addr="2001:db8:8::60", preflft=8, validlft=10)]),
              iface="{tap}")
    print("ready", flush=True)
    sniff(iface="{tap}", filter="udp and dst port 547", prn=answer, store=False)
"""


def test_decline_renew_and_rebind(ns: Netns) -> None:
    with StackProcess(ns) as stack:
        events = EventLog(stack.control)
        # The kernel holds the address the server hands out: our DAD probe
        # draws its NA, the address is Declined (RFC 8415 §18.2.8).
        ns.run(f"ip addr add {SCAPY_ADDR}/64 dev {TAP} nodad")
        code = textwrap.dedent(SCAPY_SERVER.format(tap=TAP))
        server = ns.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        bound = events.wait("dhcp6_bound")
        assert bound["addresses"] == [SCAPY_ADDR] and bound["t1_s"] == 2
        assert events.wait("dhcp6_declined")["addr"] == SCAPY_ADDR
        heard = [server.stdout.readline().strip() for _ in range(3)]
        assert heard[:2] == ["DHCP6_Solicit", "DHCP6_Request"], heard
        while heard[-1] != "DHCP6_Decline":  # a Renew may come first (T1 2 s)
            heard.append(server.stdout.readline().strip())
        ns.run(f"ip addr del {SCAPY_ADDR}/64 dev {TAP}")
        # Solicit again: the same address, this time through DAD.
        assert wait_until(
            lambda: any(
                a["addr"] == SCAPY_ADDR and a["kind"] == "permanent" for a in stack.call("addrs")
            ),
            timeout=15,
            interval=0.1,
        ), events.all()
        renewed = events.wait("dhcp6_renewed")  # §18.2.4: Renew at T1, answered
        assert renewed["state"] == "RENEW" and renewed["addresses"] == [SCAPY_ADDR]
        # The next Renew goes unanswered: Rebind at T2 (§18.2.5), answered by any server.
        rebound = events.wait("dhcp6_renewed", lambda e: e["state"] == "REBIND")
        assert rebound["addresses"] == [SCAPY_ADDR]
        row = next(a for a in stack.call("addrs") if a["addr"] == SCAPY_ADDR)
        assert row["dhcp6"]["state"] == "BOUND" and row["dhcp6"]["valid_s"] > 8
        events.close()
