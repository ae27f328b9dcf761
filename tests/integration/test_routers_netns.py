"""IPv6 routers and redirects against a real link: two fake routers
(their own link-local addresses and MACs) played with scapy from the
kernel side of the TAP send RAs, answer shardnet's neighbour solicitations
and ping shardnet from off-link sources; where shardnet's replies go (the
destination MAC of the frames it writes) shows which router it uses.

* A router that stops answering NS is abandoned (RFC 4861 §6.3.6, §7.3.3):
  traffic moves to the other one, ``ctl routes`` says so.
* An NA with the Router flag clear takes a router off the list (§7.2.5).
* RFC 4191: a high-preference router takes the traffic; one never heard
  from but in its RA (no link-layer address) is probed while a worse
  router carries the traffic, and takes it once it answers (§3.5); a
  ::/0 Route Information option makes or unmakes a default router (§3.1);
  a Route Information option is installed only with ``accept_rio``;
  radvd's AdvDefaultPreference and ``route`` blocks read as radvd means
  them.
* An ICMPv6 Redirect (RFC 4861 §8) and an ICMPv4 Redirect (RFC 1122
  §3.2.2.2) move one destination; with ``accept_redirects`` off they are
  ignored and counted, and the routes they made are gone.
* A forwarding stack ignores RAs unless ``accept_ra_forwarding`` (Linux's
  accept_ra=2) is set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import TAP, StackProcess
from .test_ndp_netns import Radvd, kernel_link_local

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V6, SHARDNET_V4, KERNEL_V4 = "2001:db8::2", "198.18.0.2", "198.18.0.1"
R1, R1_MAC = "fe80::a", "02:00:00:00:00:0a"
R2, R2_MAC = "fe80::b", "02:00:00:00:00:0b"
FAR_A, FAR_B = "2001:db8:ff::1", "2001:db8:ff::2"  # off-link peers, through a router
FAR4, NEW_GW4, NEW_GW4_MAC = "198.19.0.1", "198.18.0.9", "02:00:00:00:00:09"

# The fake routers, run inside the namespace: commands as JSON lines on
# stdin, answers as JSON lines on stdout.
ROUTERS = textwrap.dedent(r"""
    import collections, json, sys, threading, time
    from scapy.all import (
        ARP, ICMP, IP, AsyncSniffer, Ether, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA,
        ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6ND_Redirect, ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptRedirectedHdr, ICMPv6NDOptRouteInfo, ICMPv6NDOptSrcLLAddr, IPerror, IPv6,
        TCPerror, conf, sendp,
    )
    conf.verb = 0
    tap, stack_mac, routers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    macs = dict(routers)  # link-local -> MAC
    dead = set()
    arp_hosts = {}  # IPv4 -> MAC we answer ARP for
    counts = collections.defaultdict(collections.Counter)  # peer -> {MAC: replies}
    pings = []  # (family, src, ident, eth src)
    lock = threading.Lock()

    def out(obj):
        print(json.dumps(obj), flush=True)

    def seen(p):
        if Ether not in p or p[Ether].src != stack_mac:
            return
        if ICMPv6ND_NS in p:
            tgt = p[ICMPv6ND_NS].tgt
            if tgt in macs and tgt not in dead:
                mac = macs[tgt]
                sendp(Ether(src=mac, dst=stack_mac) / IPv6(src=tgt, dst=p[IPv6].src, hlim=255)
                      / ICMPv6ND_NA(tgt=tgt, R=1, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac),
                      iface=tap)
        elif ICMPv6EchoReply in p:
            with lock:
                counts[p[IPv6].dst][p[Ether].dst] += 1
        elif ARP in p and p[ARP].op == 1 and p[ARP].pdst in arp_hosts:
            mac = arp_hosts[p[ARP].pdst]
            sendp(Ether(src=mac, dst=stack_mac) / ARP(op=2, hwsrc=mac, psrc=p[ARP].pdst,
                  hwdst=stack_mac, pdst=p[ARP].psrc), iface=tap)
        elif ICMP in p and p[ICMP].type == 0:
            with lock:
                counts[p[IP].dst][p[Ether].dst] += 1

    def pinger():
        seq = 0
        while True:
            seq += 1
            for family, src, ident, mac in list(pings):
                if family == 6:
                    pkt = IPv6(src=src, dst=sys.argv[4]) / ICMPv6EchoRequest(id=ident, seq=seq)
                else:
                    pkt = IP(src=src, dst=sys.argv[5]) / ICMP(type=8, id=ident, seq=seq)
                sendp(Ether(src=mac, dst=stack_mac) / pkt, iface=tap)
            time.sleep(0.2)

    ready = threading.Event()
    sniffer = AsyncSniffer(iface=tap, prn=seen, store=False, started_callback=ready.set)
    sniffer.start()
    ready.wait(10)
    threading.Thread(target=pinger, daemon=True).start()
    out("ready")
    for line in sys.stdin:
        c = json.loads(line)
        op = c["op"]
        if op == "ra":
            ll = c["router"]
            ra = (Ether(src=macs[ll], dst="33:33:00:00:00:01")
                  / IPv6(src=ll, dst="ff02::1", hlim=255)
                  / ICMPv6ND_RA(routerlifetime=c.get("lifetime", 1800), prf=c.get("prf", 0),
                                reachabletime=c.get("reachable_ms", 0)))
            if c.get("slla", True):
                ra = ra / ICMPv6NDOptSrcLLAddr(lladdr=macs[ll])
            for prefix, plen, prf, life in c.get("rio", []):
                ra = ra / ICMPv6NDOptRouteInfo(prefix=prefix, plen=plen, prf=prf,
                                               rtlifetime=life, len=3)
            sendp(ra, iface=tap)
        elif op == "dead":
            dead.add(c["router"])
        elif op == "na_not_router":
            ll = c["router"]
            sendp(Ether(src=macs[ll], dst=stack_mac) / IPv6(src=ll, dst="ff02::1", hlim=255)
                  / ICMPv6ND_NA(tgt=ll, R=0, S=0, O=1)
                  / ICMPv6NDOptDstLLAddr(lladdr=macs[ll]), iface=tap)
        elif op == "redirect6":
            ll, target, dst = c["router"], c["target"], c["dst"]
            sendp(Ether(src=macs[ll], dst=stack_mac) / IPv6(src=ll, dst=c["to"], hlim=255)
                  / ICMPv6ND_Redirect(tgt=target, dst=dst)
                  / ICMPv6NDOptDstLLAddr(lladdr=macs[target])
                  / ICMPv6NDOptRedirectedHdr(pkt=IPv6(src=c["to"], dst=dst) / ICMPv6EchoReply()),
                  iface=tap)
        elif op == "redirect4":
            sendp(Ether(src=c["mac"], dst=stack_mac) / IP(src=c["gateway"], dst=sys.argv[5])
                  / ICMP(type=5, code=1, gw=c["new"])
                  / IPerror(src=sys.argv[5], dst=c["dst"]) / TCPerror(sport=40000, dport=80),
                  iface=tap)
        elif op == "arp_host":
            arp_hosts[c["ip"]] = c["mac"]
        elif op == "ping":
            pings.append((c["family"], c["src"], c["ident"], c.get("mac", "02:00:00:00:00:01")))
        elif op == "counts":
            with lock:
                out({k: dict(v) for k, v in counts.items()})
                counts.clear()
        elif op == "quit":
            break
    sniffer.stop()
""")


class Routers:
    """The fake routers' process (see ``ROUTERS``)."""

    def __init__(self, ns: Netns, stack_mac: str, routers: list[tuple[str, str]]) -> None:
        self.proc = ns.popen(
            [sys.executable, "-c", ROUTERS, TAP, stack_mac, json.dumps(routers),
             SHARDNET_V6, SHARDNET_V4],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert json.loads(line) == "ready", line

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def counts(self) -> dict[str, dict[str, int]]:
        """Replies seen since the last call, per peer and destination MAC."""
        self.send("counts")
        assert self.proc.stdout is not None
        got: dict[str, dict[str, int]] = json.loads(self.proc.stdout.readline())
        return got

    def replies_go_to(self, peer: str, mac: str, *, timeout: float = 30.0) -> bool:
        """Wait until shardnet's replies to ``peer`` go to ``mac`` only
        (two reads in a row with replies, all of them to ``mac``)."""
        streak = [0]

        def only_mac() -> bool:
            got = self.counts().get(peer, {})
            streak[0] = streak[0] + 1 if got and set(got) == {mac} else 0
            return streak[0] >= 2

        return wait_until(only_mac, timeout=timeout, interval=0.5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("rtr") as ns:
        yield ns


def start(
    ns: Netns, tmp_path: Path, ndp: str = "", *args: str, kernel_ipv6: bool = False
) -> StackProcess:
    conf = tmp_path / "s.toml"
    conf.write_text(f"[ndp]\ndup_addr_detect_transmits = 0\n{ndp}\n")
    if kernel_ipv6:  # its link-local usable at once (for radvd)
        ns.run("sysctl -qw net.ipv6.conf.default.accept_dad=0")
    stack = StackProcess(
        ns, "--ipv6", f"{SHARDNET_V6}/64", "--ipv4", f"{SHARDNET_V4}/24",
        "--gateway4", KERNEL_V4, "--config", str(conf), *args,
    ).__enter__()  # fmt: skip
    if not kernel_ipv6:  # only the fake routers speak IPv6 on the link
        ns.run(f"sysctl -qw net.ipv6.conf.{TAP}.disable_ipv6=1")
    ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
    return stack


def default_routers(stack: StackProcess) -> dict[str, dict[str, Any]]:
    return {
        r["gateway"]: r
        for r in stack.call("routes")
        if r["prefix_len"] == 0 and r["dst"] == "::" and r["origin"] == "ra"
    }


def counted(stack: StackProcess, name: str) -> int:
    """The sum of every ``ctl stats`` counter whose key ends with ``name``
    (per shard and layer)."""

    def walk(value: Any) -> int:
        if isinstance(value, dict):
            return sum(
                v if isinstance(v, int) and str(k).endswith(name) else walk(v)
                for k, v in value.items()
            )
        if isinstance(value, list):
            return sum(walk(v) for v in value)
        return 0

    return walk(stack.call("stats"))


def ctl(stack: StackProcess, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control, *args],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


@pytest.fixture
def lab(ns: Netns, tmp_path: Path) -> Iterator[tuple[StackProcess, Routers]]:
    stack = start(ns, tmp_path)
    routers = Routers(ns, stack.call("hello")["mac"], [(R1, R1_MAC), (R2, R2_MAC)])
    try:
        yield stack, routers
    finally:
        routers.close()
        stack.stop()


def two_routers(stack: StackProcess, routers: Routers, **r1: Any) -> None:
    # A short Reachable Time (2 s, RFC 4861 §6.3.4): NUD notices a dead
    # router within seconds instead of 30.
    routers.send("ra", router=R1, reachable_ms=2000, **r1)
    routers.send("ra", router=R2, reachable_ms=2000)
    assert wait_until(lambda: len(default_routers(stack)) == 2, timeout=10), stack.call("routes")


def test_traffic_leaves_a_router_that_stops_answering(
    lab: tuple[StackProcess, Routers],
) -> None:
    stack, routers = lab
    two_routers(stack, routers)
    for ident in range(1, 5):  # several flows: replies from both shards
        routers.send("ping", family=6, src=FAR_A, ident=ident)
    assert routers.replies_go_to(FAR_A, R1_MAC), stack.call("routes")
    assert "in use" in ctl(stack, "routes")
    routers.send("dead", router=R1)
    # NUD: STALE after <= 3 s, used: DELAY 5 s, 3 unanswered probes 1 s apart.
    assert routers.replies_go_to(FAR_A, R2_MAC, timeout=40), (
        stack.call("routes"),
        stack.call("neigh"),
    )
    rows = default_routers(stack)
    assert rows[R2]["router"]["rank"] == 0 and rows[R2]["router"]["reachable"]
    assert rows[R1]["router"]["rank"] == 1 and not rows[R1]["router"]["reachable"]
    neigh = {n["ip"]: n for n in stack.call("neigh")}
    assert neigh[R2]["router"] is True and R1 not in neigh
    text = ctl(stack, "routes")
    assert any(R2 in line and "in use" in line for line in text.splitlines()), text


def test_na_without_router_flag_moves_traffic_at_once(
    lab: tuple[StackProcess, Routers],
) -> None:
    stack, routers = lab
    two_routers(stack, routers)
    routers.send("ping", family=6, src=FAR_A, ident=1)
    assert routers.replies_go_to(FAR_A, R1_MAC)
    routers.send("na_not_router", router=R1)  # RFC 4861 §7.2.5
    assert routers.replies_go_to(FAR_A, R2_MAC, timeout=10)
    assert list(default_routers(stack)) == [R2]


def test_router_preference_orders_routers(lab: tuple[StackProcess, Routers]) -> None:
    stack, routers = lab
    two_routers(stack, routers, prf=3)  # R1 low (RFC 4191 §2.2)
    routers.send("ping", family=6, src=FAR_A, ident=1)
    assert routers.replies_go_to(FAR_A, R2_MAC)
    routers.send("ra", router=R1, prf=1)  # R1 high now
    assert routers.replies_go_to(FAR_A, R1_MAC, timeout=10)
    assert default_routers(stack)[R1]["router"]["preference"] == "high"


def test_a_better_router_is_probed_and_default_route_information_counts(
    lab: tuple[StackProcess, Routers],
) -> None:
    """RFC 4191 §3.5: R1 (high) advertises without its link-layer address:
    nothing says it is reachable, and R2 (medium, from its SLLA) carries
    the replies; that traffic has shardnet probe R1 (an NS, which it
    answers), and the replies move to R1. §3.1: a ::/0 Route Information
    option with lifetime 0 then removes R1 though its header says 1800 s;
    one with 600 s and high preference makes it a default router again
    though its header says 0 (one stack for both: starting one costs more
    than the test)."""
    stack, routers = lab
    routers.send("ra", router=R2)
    routers.send("ra", router=R1, prf=1, slla=False)
    assert wait_until(lambda: len(default_routers(stack)) == 2, timeout=10), stack.call("routes")
    routers.send("ping", family=6, src=FAR_A, ident=1)
    assert routers.replies_go_to(FAR_A, R1_MAC, timeout=15), (
        stack.call("routes"),
        stack.call("neigh"),
    )
    rows = default_routers(stack)
    assert rows[R1]["router"]["rank"] == 0 and rows[R1]["router"]["reachable"]
    assert rows[R1]["router"]["preference"] == "high"
    # A ::/0 option's lifetime 0 overrides the header's 1800 s.
    routers.send("ra", router=R1, lifetime=1800, prf=1, rio=[["::", 0, 1, 0]])
    assert routers.replies_go_to(FAR_A, R2_MAC, timeout=10), stack.call("routes")
    assert list(default_routers(stack)) == [R2]
    # A ::/0 option's 600 s, high, override the header's 0 (and medium).
    routers.send("ra", router=R1, lifetime=0, rio=[["::", 0, 1, 600]])
    assert routers.replies_go_to(FAR_A, R1_MAC, timeout=10), stack.call("routes")
    row = default_routers(stack)[R1]["router"]
    assert row["preference"] == "high" and 590 < row["expires_s"] <= 600


def test_icmpv6_redirect_moves_one_destination(lab: tuple[StackProcess, Routers]) -> None:
    stack, routers = lab
    routers.send("ra", router=R1)
    assert wait_until(lambda: R1 in default_routers(stack), timeout=10)
    routers.send("ping", family=6, src=FAR_A, ident=1)
    routers.send("ping", family=6, src=FAR_B, ident=2)
    assert routers.replies_go_to(FAR_A, R1_MAC)
    routers.send("redirect6", router=R1, target=R2, dst=FAR_A, to=SHARDNET_V6)
    assert routers.replies_go_to(FAR_A, R2_MAC, timeout=10)
    assert routers.replies_go_to(FAR_B, R1_MAC, timeout=5)  # only FAR_A moved
    # A redirect from a router that is not the first hop is counted, not followed.
    routers.send("redirect6", router=R2, target=R1, dst=FAR_B, to=SHARDNET_V6)
    ctl(stack, "ndp", "--set", "accept_redirects=false")
    routers.send("redirect6", router=R1, target=R2, dst=FAR_B, to=SHARDNET_V6)

    def both_counted() -> bool:
        return all(
            counted(stack, r) for r in ("redirect_not_from_first_hop", "redirect_not_accepted")
        )

    assert wait_until(both_counted, timeout=10), stack.call("stats")
    assert routers.replies_go_to(FAR_B, R1_MAC, timeout=5)
    # Switched off, the redirect's route is gone: FAR_A goes back to R1.
    assert not [r for r in stack.call("routes") if r["origin"] == "redirect"]
    assert "redirect" not in ctl(stack, "routes")
    assert routers.replies_go_to(FAR_A, R1_MAC, timeout=5)


def test_route_information_needs_accept_rio(ns: Netns, tmp_path: Path) -> None:
    """RFC 4191 §3.1: R2, no default router (lifetime 0), advertises a
    route to 2001:db8:ff::/48; only with accept_rio do replies to it leave
    through R2."""
    for accept, mac in ((False, R1_MAC), (True, R2_MAC)):
        stack = start(ns, tmp_path, f"accept_rio = {'true' if accept else 'false'}")
        routers = Routers(ns, stack.call("hello")["mac"], [(R1, R1_MAC), (R2, R2_MAC)])
        try:
            routers.send("ra", router=R1)
            routers.send("ra", router=R2, lifetime=0, rio=[["2001:db8:ff::", 48, 0, 600]])
            routers.send("ping", family=6, src=FAR_A, ident=1)
            assert routers.replies_go_to(FAR_A, mac), stack.call("routes")
        finally:
            routers.close()
            stack.stop()


def kernel_mac(ns: Netns) -> str:
    mac: str = json.loads(ns.run(f"ip -j link show {TAP}").stdout)[0]["address"]
    return mac


def test_radvd_preference_and_route_information(ns: Netns, tmp_path: Path) -> None:
    """radvd (the kernel's link-local) advertises itself with low preference
    and a Route Information option for 2001:db8:ff::/48; the scapy router R1
    is medium. R1 carries the default traffic, radvd the /48's (RFC 4191)."""
    stack = start(ns, tmp_path, "accept_rio = true", kernel_ipv6=True)
    routers = Routers(ns, stack.call("hello")["mac"], [(R1, R1_MAC)])
    radvd = Radvd(ns, tmp_path, "2001:db8:1::")
    radvd.conf.write_text(f"""
interface {TAP} {{
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 600;
    AdvDefaultPreference low;
    route 2001:db8:ff::/48 {{
        AdvRoutePreference high;
        AdvRouteLifetime 600;
    }};
}};
""")
    try:
        radvd.start()
        kernel = kernel_link_local(ns)
        routers.send("ra", router=R1)
        assert wait_until(lambda: len(default_routers(stack)) == 2, timeout=15), (
            stack.call("routes"),
            radvd.output(),
        )
        rows = default_routers(stack)
        assert rows[kernel]["router"]["preference"] == "low"
        assert rows[R1]["router"] | {"expires_s": 0} == {
            "preference": "medium", "reachable": True, "rank": 0, "expires_s": 0,
        }  # fmt: skip
        rio = [r for r in stack.call("routes") if r["prefix_len"] == 48]
        assert [(r["dst"], r["gateway"]) for r in rio] == [("2001:db8:ff::", kernel)]
        routers.send("ping", family=6, src=FAR_A, ident=1)
        routers.send("ping", family=6, src="2001:db8:fe::1", ident=2)
        assert routers.replies_go_to(FAR_A, kernel_mac(ns))  # the /48, through radvd
        assert routers.replies_go_to("2001:db8:fe::1", R1_MAC)  # the default, through R1
    finally:
        radvd.stop()
        routers.close()
        stack.stop()


def test_icmpv4_redirect_from_the_gateway(lab: tuple[StackProcess, Routers]) -> None:
    stack, routers = lab
    gw_mac = kernel_mac(stack.ns)
    routers.send("arp_host", ip=NEW_GW4, mac=NEW_GW4_MAC)
    routers.send("ping", family=4, src=FAR4, ident=9, mac=gw_mac)
    assert routers.replies_go_to(FAR4, gw_mac)  # through --gateway4
    routers.send("redirect4", gateway=KERNEL_V4, mac=gw_mac, dst=FAR4, new=NEW_GW4)
    assert routers.replies_go_to(FAR4, NEW_GW4_MAC, timeout=10)
    host = [r for r in stack.call("routes") if r["origin"] == "redirect"]
    assert [(r["dst"], r["gateway"]) for r in host] == [(FAR4, NEW_GW4)]
    ctl(stack, "ndp", "--set", "accept_redirects=false")  # the route goes at once
    assert not [r for r in stack.call("routes") if r["origin"] == "redirect"]
    assert routers.replies_go_to(FAR4, gw_mac, timeout=5)


def test_forwarding_nic_takes_ras_only_with_accept_ra_forwarding(ns: Netns, tmp_path: Path) -> None:
    """Linux accept_ra=1 vs 2: a forwarding stack ignores RAs, unless told."""
    for accept in (False, True):
        stack = start(
            ns, tmp_path, f"accept_ra_forwarding = {'true' if accept else 'false'}", "--forwarding"
        )
        routers = Routers(ns, stack.call("hello")["mac"], [(R1, R1_MAC)])
        try:
            routers.send("ra", router=R1)
            if accept:
                assert wait_until(lambda s=stack: R1 in default_routers(s), timeout=10)
            else:
                # The RA arrived (counted as ignored) and taught nothing.
                assert wait_until(lambda s=stack: counted(s, "ras_ignored") > 0, timeout=10)
                assert default_routers(stack) == {}
        finally:
            routers.close()
            stack.stop()
