"""The network layer against the Linux kernel as the peer: ping over IPv4,
IPv6 global and link-local, fragmented pings both ways, ARP and NDP
resolution, ICMP port unreachable, routes and addresses changed with ctl."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"
KERNEL_V6 = "2001:db8::1"
SHARDNET_V6 = "2001:db8::2"
FAR_V4 = "198.19.0.1"  # a kernel address in a subnet shardnet reaches only through a route


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("net") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    with StackProcess(ns, "--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64") as stack:
        ns.run(f"sysctl -qw net.ipv6.conf.{TAP}.accept_dad=0")
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        ns.run(f"ip addr add {FAR_V4}/24 dev {TAP}")
        yield stack


def ping(ns: Netns, target: str, *args: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return ns.run(
        ["ping", "-c", str(count), "-i", "0.2", "-W", "2", *args, target], check=False, timeout=30
    )


def link_local(stack: StackProcess) -> str:
    (ll,) = [a["addr"] for a in stack.call("addrs") if a["addr"].startswith("fe80:")]
    return ll


@pytest.mark.parametrize("target", [SHARDNET_V4, SHARDNET_V6])
def test_kernel_pings_shardnet(ns: Netns, stack: StackProcess, target: str) -> None:
    r = ping(ns, target)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr


def test_kernel_pings_the_link_local_address(ns: Netns, stack: StackProcess) -> None:
    r = ping(ns, f"{link_local(stack)}%{TAP}")
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("target", [SHARDNET_V4, SHARDNET_V6])
def test_fragmented_pings_both_ways(ns: Netns, stack: StackProcess, target: str) -> None:
    """4000-byte echoes: the kernel fragments, the dispatcher reassembles,
    the shard fragments the reply to the MTU, the kernel reassembles."""
    r = ping(ns, target, "-s", "4000")
    assert " 0% packet loss" in r.stdout and "4008 bytes from" in r.stdout, r.stdout + r.stderr


def test_kernel_resolves_shardnet_with_arp_and_ndisc6(ns: Netns, stack: StackProcess) -> None:
    mac = stack.call("hello")["mac"]
    ping(ns, SHARDNET_V4, count=1)
    neigh = ns.run(f"ip -4 neigh show {SHARDNET_V4} dev {TAP}").stdout
    assert mac in neigh and "FAILED" not in neigh, neigh
    out = ns.run(["ndisc6", "-1", "-r", "3", SHARDNET_V6, TAP]).stdout
    assert f"Target link-layer address: {mac.upper()}" in out, out


def test_shardnet_learns_the_kernel_as_neighbour(ns: Netns, stack: StackProcess) -> None:
    ping(ns, SHARDNET_V4, count=1)
    ping(ns, SHARDNET_V6, count=1)
    kernel_mac = ns.run(f"cat /sys/class/net/{TAP}/address").stdout.strip()
    rows = {n["ip"]: n for n in stack.call("neigh")}
    assert rows[KERNEL_V4]["mac"] == kernel_mac and rows[KERNEL_V6]["mac"] == kernel_mac


@pytest.mark.parametrize(
    ("family", "target"), [("AF_INET", SHARDNET_V4), ("AF_INET6", SHARDNET_V6)]
)
def test_udp_to_a_closed_port_is_refused(
    ns: Netns, stack: StackProcess, family: str, target: str
) -> None:
    out = ns.python(f"""
        import socket, time
        s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect(("{target}", 9))
        s.send(b"anyone?")
        try:
            s.recv(100)
        except ConnectionRefusedError:
            print("refused")
        except TimeoutError:
            print("timeout")
    """).stdout
    assert out.strip() == "refused"


def test_a_route_added_with_ctl_is_used(ns: Netns, stack: StackProcess) -> None:
    """Pings from a kernel address outside shardnet's subnets get answers
    only once a route there exists (via the kernel as gateway)."""
    assert " 100% packet loss" in ping(ns, SHARDNET_V4, "-I", FAR_V4, count=2).stdout
    ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
    subprocess.run(
        [*ctl, "route", "add", "198.19.0.0/24", "--via", KERNEL_V4], check=True, capture_output=True
    )
    try:
        routes = json.loads(
            subprocess.run(
                [*ctl, "routes", "--json"], check=True, capture_output=True, text=True
            ).stdout
        )
        assert any(
            (r["dst"], r["prefix_len"], r["gateway"], r["nic_name"])
            == ("198.19.0.0", 24, KERNEL_V4, TAP)
            for r in routes
        )
        assert " 0% packet loss" in ping(ns, SHARDNET_V4, "-I", FAR_V4, count=2).stdout
    finally:
        subprocess.run(
            [*ctl, "route", "del", "198.19.0.0/24", "--via", KERNEL_V4],
            check=True,
            capture_output=True,
        )
    assert " 100% packet loss" in ping(ns, SHARDNET_V4, "-I", FAR_V4, count=2).stdout


def test_addresses_added_with_ctl_answer_and_replicate_fast(ns: Netns, stack: StackProcess) -> None:
    t0 = time.monotonic()
    stack.call("addr_add", nic=TAP, address="198.18.0.77/24")
    assert wait_until(
        lambda: "1/198.18.0.77" in stack.call("shard_table", shard=1, name="addrs"),
        timeout=2,
        interval=0.005,
    )
    elapsed = time.monotonic() - t0
    assert " 0% packet loss" in ping(ns, "198.18.0.77", count=2).stdout
    stack.call("addr_del", nic=TAP, address="198.18.0.77")
    assert " 100% packet loss" in ping(ns, "198.18.0.77", count=1).stdout
    assert elapsed < 1.0, f"replication took {elapsed:.3f} s"


def test_ctl_json_views_show_the_truth(stack: StackProcess) -> None:
    ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]

    def view(name: str) -> list[dict]:
        return json.loads(
            subprocess.run(
                [*ctl, name, "--json"], check=True, capture_output=True, text=True
            ).stdout
        )

    addrs = {(a["nic_name"], a["addr"], a["prefix_len"]) for a in view("addrs")}
    assert {
        (TAP, SHARDNET_V4, 24),
        (TAP, SHARDNET_V6, 64),
        ("lo", "127.0.0.1", 8),
        ("lo", "::1", 128),
    } <= addrs
    # no link-local on a loopback NIC, as Linux
    assert not any(n == "lo" and a.startswith("fe80:") for n, a, _ in addrs)
    routes = {(r["dst"], r["prefix_len"], r["nic_name"]) for r in view("routes")}
    assert {
        ("198.18.0.0", 24, TAP),
        ("2001:db8::", 64, TAP),
        ("fe80::", 64, TAP),
        ("127.0.0.0", 8, "lo"),
    } <= routes
    assert {n["name"] for n in view("nics")} == {TAP, "lo"}
    bad = subprocess.run(
        [*ctl, "addr", "add", TAP, "198.18.0.300/24"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "bad address" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_nud_probe_answered_by_the_kernel_keeps_the_neighbour() -> None:
    """RFC 4861 §7.3.3 against Linux: the kernel's NS teaches shardnet its
    MAC (STALE), the echo reply uses it (DELAY), 5 s later shardnet probes
    with a unicast NS, and the kernel's solicited NA (which Linux sends
    without a Target Link-Layer Address option, as §7.2.4 allows for an
    answer to a unicast NS) makes the entry REACHABLE instead of letting the
    probes run out."""
    skip_unless_netns()
    with (
        Netns("nud") as ns,
        StackProcess(ns, "--ipv6", f"{SHARDNET_V6}/64", shards=1) as stack,
    ):
        ns.run(f"sysctl -qw net.ipv6.conf.{TAP}.accept_dad=0")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        r = ping(ns, SHARDNET_V6, count=1)
        assert " 0% packet loss" in r.stdout, r.stdout + r.stderr

        def state() -> str | None:
            rows = [n for n in stack.call("neigh") if n["ip"] == KERNEL_V6]
            return rows[0]["state"] if rows else None

        assert wait_until(lambda: state() == "DELAY", timeout=3), state()
        # DELAY_FIRST_PROBE_TIME (5 s), then up to 3 probes 1 s apart.
        assert wait_until(lambda: state() == "REACHABLE", timeout=12), state()


def test_bad_ipv6_fragments_get_parameter_problem(ns: Netns, stack: StackProcess) -> None:
    """RFC 8200 §4.5, from scapy on the kernel side: a non-last fragment
    whose length is not a multiple of 8 points at the Payload Length (4); a
    fragment reaching past 65,535 bytes points at the Fragment Offset."""
    ping(ns, SHARDNET_V6, count=1)  # neighbours resolved both ways
    out = ns.python(f"""
        import json
        from scapy.all import IPv6, IPv6ExtHdrFragment, ICMPv6ParamProblem, Raw, conf, sr1
        conf.verb = 0
        answers = []
        for offset, data, more in ((0, bytes(12), 1), (65528, bytes(16), 0)):
            p = IPv6(src="{KERNEL_V6}", dst="{SHARDNET_V6}") / IPv6ExtHdrFragment(
                id=offset + 1, offset=offset // 8, m=more, nh=17) / Raw(data)
            r = sr1(p, iface="{TAP}", timeout=3)
            pp = r[ICMPv6ParamProblem] if r is not None and ICMPv6ParamProblem in r else None
            answers.append(None if pp is None else [pp.code, pp.ptr])
        print(json.dumps(answers))
    """, timeout=60).stdout  # fmt: skip
    assert json.loads(out) == [[0, 4], [0, 42]]


def test_an_ipv4_fragment_inside_data_held_is_ignored(ns: Netns, stack: StackProcess) -> None:
    """RFC 791 allows overlapping fragments: an echo request whose middle
    is sent twice (the second time with other bytes) is answered, with the
    bytes that came first, as Linux answers it."""
    ping(ns, SHARDNET_V4, count=1)
    out = ns.python(f"""
        import json
        from scapy.all import ICMP, IP, Raw, conf, fragment, raw, send, sniff, AsyncSniffer
        conf.verb = 0
        payload = bytes(range(48))
        whole = IP(raw(IP(src="{KERNEL_V4}", dst="{SHARDNET_V4}", id=4242) / ICMP(id=99, seq=1) / Raw(payload)))
        parts = fragment(whole, fragsize=16)
        dup = parts[1].copy()
        dup[Raw].load = bytes(len(dup[Raw].load))  # same place, other bytes
        sniffer = AsyncSniffer(iface="{TAP}", lfilter=lambda p: ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 99)
        sniffer.start()
        import time; time.sleep(0.3)
        for p in (parts[0], parts[1], dup, *parts[2:]):
            send(p, iface="{TAP}")
        time.sleep(1)
        got = sniffer.stop()
        print(json.dumps([bytes(p[Raw].load).hex() for p in got]))
    """, timeout=60).stdout  # fmt: skip
    assert json.loads(out) == [bytes(range(48)).hex()]


def test_ipv4_identification_is_per_destination(ns: Netns, stack: StackProcess) -> None:
    """RFC 7739 §5: the echo replies to one address carry identifications
    that advance steadily; those to another address, even answered by the
    same shard, follow their own sequence, not the same counter (which
    would tell one peer how much the stack sends to the other)."""
    from shardnet.common.addr import parse_ip
    from shardnet.common.flowhash import shard_for

    peers = (KERNEL_V4, "198.18.0.3")
    idents = []  # for each peer, an echo identifier whose flow hashes to shard 0
    for peer in peers:
        ident = next(i for i in range(1, 1000) if shard_for(
            1, parse_ip(peer), i, parse_ip(SHARDNET_V4), i, 2) == 0)  # fmt: skip
        idents.append(ident)
    ns.run(f"ip addr add {peers[1]}/24 dev {TAP}")
    try:
        out = ns.python(f"""
            import json
            from scapy.all import ICMP, IP, conf, sr1
            conf.verb = 0
            ids = {{}}
            for seq in range(4):
                for src, ident in zip({list(peers)!r}, {idents!r}):
                    r = sr1(IP(src=src, dst="{SHARDNET_V4}") / ICMP(id=ident, seq=seq), timeout=2)
                    ids.setdefault(src, []).append(r[IP].id if r is not None else None)
            print(json.dumps(ids))
        """, timeout=60).stdout  # fmt: skip
    finally:
        ns.run(f"ip addr del {peers[1]}/24 dev {TAP}", check=False)
    ids = json.loads(out)
    to_a, to_b = ids[peers[0]], ids[peers[1]]
    assert None not in to_a + to_b
    for seq in (to_a, to_b):  # each its own steady sequence
        steps = {(y - x) & 0xFFFF for x, y in zip(seq, seq[1:], strict=False)}
        assert len(steps) == 1 and steps.pop() <= 4, seq
    assert not {(b - a) & 0xFFFF for a, b in zip(to_a, to_b, strict=True)} <= set(range(1, 5))
