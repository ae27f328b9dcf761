"""Stack-wide TCP and IP settings changed at run time with ``shardnet ctl
tcp|ip --set``, seen from outside by the kernel on the other end of the TAP:
the TTL and hop limit of shardnet's packets, how long its connections stay
in TIME-WAIT and FIN-WAIT-2 (``ctl conns``), the window its SYN-ACK
advertises, SYN cookies once the SYN backlog is full. A bad setting is one
line on stderr, exit code 1, and no shard changes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("tunable") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64", "--no-slaac",
            "--serve", "http:80", "--ip", "default_ttl=50"]  # fmt: skip
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield stack


def ctl(stack: StackProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
    return subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=30)


def replicas(stack: StackProcess, table: str) -> list[object]:
    """Every shard's copy of the run-time ``table`` settings row."""
    shards = len(stack.call("shards")["shards"])
    return [stack.call("shard_table", shard=i, name="settings").get(table) for i in range(shards)]


def ping_ttls(ns: Netns, dst: str, count: int = 6) -> set[int]:
    """The TTL / hop limit of the echo replies to ``count`` pings, each its
    own process (its own identifier: the replies come from several shards)."""
    ttls = set()
    for _ in range(count):
        out = ns.run(f"ping -c 1 -W 2 {dst}", check=False).stdout
        ttls.update(int(t) for t in re.findall(r"(?:ttl|hlim)=(\d+)", out))
    return ttls


def test_ttl_and_hop_limit_reach_the_kernel(ns: Netns, stack: StackProcess) -> None:
    """``--ip default_ttl=50`` at start; ``ctl ip --set`` then changes the
    TTL and the hop limit of every shard's packets."""
    assert ping_ttls(ns, SHARDNET_V4) == {50}
    assert ping_ttls(ns, SHARDNET_V6) == {64}
    out = ctl(stack, "ip", "--set", "default_ttl=33", "--set", "default_hop_limit=44")
    assert out.returncode == 0, out.stderr
    assert ["default_ttl", "33"] in [line.split() for line in out.stdout.splitlines()]
    assert ping_ttls(ns, SHARDNET_V4) == {33}
    assert ping_ttls(ns, SHARDNET_V6) == {44}
    assert replicas(stack, "ip") == [{"default_ttl": 33, "default_hop_limit": 44}] * 2


def test_a_bad_setting_changes_nothing_anywhere(stack: StackProcess) -> None:
    before = replicas(stack, "tcp")
    for argv in (
        ("tcp", "--set", "fin_timeout_s=5", "--set", "no_such_setting=1"),
        ("tcp", "--set", "keepalive_cnt=0"),
        ("tcp", "--set", "cc=nope"),
        ("tcp", "--set", "fin_timeout_s"),
        ("ip", "--set", "default_ttl=300"),
    ):
        out = ctl(stack, *argv)
        assert out.returncode == 1 and out.stdout == "", (argv, out)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert replicas(stack, "tcp") == before
    assert ctl(stack, "tcp", "--json").returncode == 0
    assert stack.call("tcp_get")["fin_timeout_s"] == 60.0


def test_time_wait_and_fin_wait_2_last_what_is_set(ns: Netns, stack: StackProcess) -> None:
    """shardnet closes first (HTTP with ``Connection: close``). With the
    times set to 1.5 s a connection leaves TIME-WAIT (the peer closed too)
    and FIN-WAIT-2 (the peer never closes) within a few seconds, where the
    defaults keep them 60 s."""
    out = ctl(stack, "tcp", "--set", "time_wait_s=1.5", "--set", "fin_timeout_s=1.5", "--json")
    assert out.returncode == 0, out.stderr
    assert replicas(stack, "tcp") == [{"time_wait_s": 1.5, "fin_timeout_s": 1.5}] * 2
    client = textwrap.dedent(f"""
        import socket, sys, time
        s = socket.create_connection(("{SHARDNET_V4}", 80), timeout=5)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        while s.recv(65536):
            pass
        print(s.getsockname()[1], flush=True)
        if sys.argv[1] == "close":
            s.close()
        time.sleep(30)
    """)
    gone_after: dict[str, str] = {}
    for how in ("close", "hold"):
        proc = ns.popen([sys.executable, "-c", client, how], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        remote = f"{KERNEL_V4}:{proc.stdout.readline().strip()}"
        start = time.monotonic()

        def state(remote: str = remote) -> str | None:
            return next((c["state"] for c in stack.call("conns") if c["remote"] == remote), None)

        want = "TIME-WAIT" if how == "close" else "FIN-WAIT-2"
        assert wait_until(lambda want=want: state() == want, timeout=3), state()
        assert wait_until(lambda: state() is None, timeout=8), state()
        gone_after[want] = f"{time.monotonic() - start:.1f} s"
        assert proc.poll() is None  # the peer is still there
        proc.kill()
        proc.wait()
    print("gone after", gone_after)


GHOST_V4, GHOST_MAC = "198.18.0.77", "02:00:00:00:00:77"

# SYNs from a host that is not the kernel (the kernel would answer the
# SYN-ACKs with RSTs and empty the SYN queue): shardnet learns its MAC from an
# ARP request (RFC 826), sends it SYN-ACKs the kernel drops (not its MAC) and
# the sniffer sees.
GHOST_SYNS = f"""
import random, threading, time
from scapy.all import ARP, AsyncSniffer, Ether, IP, TCP, conf, sendp
conf.verb = 0
seen, ready = [], threading.Event()
sniffer = AsyncSniffer(iface="{TAP}", filter="tcp and src port 80 and dst host {GHOST_V4}",
                       prn=seen.append, store=False, started_callback=ready.set)
sniffer.start()
assert ready.wait(5)
sendp(Ether(src="{GHOST_MAC}", dst="ff:ff:ff:ff:ff:ff")
      / ARP(op=1, hwsrc="{GHOST_MAC}", psrc="{GHOST_V4}", pdst="{SHARDNET_V4}"), iface="{TAP}")
time.sleep(0.3)
"""


def syn_acks(
    ns: Netns, stack: StackProcess, connections: int, settle: float = 0.5
) -> list[dict[str, object]]:
    """The first SYN-ACK shardnet sends to each of ``connections`` SYNs
    (with window scaling and timestamps offered): its window and options.
    Nobody completes the handshakes: they stay half-open."""
    out = ns.python(
        GHOST_SYNS
        + textwrap.dedent(f"""
        opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)]
        sports = random.sample(range(20000, 60000), {connections})
        for sport in sports:
            sendp(Ether(src="{GHOST_MAC}", dst="{stack.call("hello")["mac"]}") / IP(src="{GHOST_V4}", dst="{SHARDNET_V4}")
                  / TCP(sport=sport, dport=80, flags="S", seq=1000, options=opts), iface="{TAP}")
        time.sleep({settle})
        sniffer.stop()
        first = {{}}
        for p in seen:
            if p[TCP].flags == "SA" and p[TCP].dport in sports:  # not an earlier call's
                first.setdefault(p[TCP].dport, p)
        for p in first.values():
            opts = dict((o[0], o[1]) for o in p[TCP].options)
            print(p[TCP].window, "WScale" in opts, "Timestamp" in opts)
    """),
        timeout=30,
    ).stdout
    return [
        {"window": int(w), "wscale": ws == "True", "ts": ts == "True"}
        for w, ws, ts in (line.split() for line in out.splitlines())
    ]


def test_receive_buffer_and_syn_backlog(ns: Netns, stack: StackProcess) -> None:
    """``rcv_buf`` is the window of the SYN-ACK (RFC 7323 §2.2: never
    scaled); with ``syn_backlog=1`` each shard's listener keeps one
    half-open connection and answers the other SYNs with cookies (RFC 4987
    §3.6: no window scale, no timestamps)."""
    before = syn_acks(ns, stack, 2)
    assert len(before) == 2 and all(a["window"] == 65535 and a["wscale"] for a in before), before
    out = ctl(stack, "tcp", "--set", "rcv_buf=20000", "--set", "syn_backlog=1")
    assert out.returncode == 0, out.stderr
    after = syn_acks(ns, stack, 8)
    assert len(after) == 8, after
    stateful = [a for a in after if a["wscale"]]
    cookies = [a for a in after if not a["wscale"] and not a["ts"]]
    # Two shards: at most one half-open connection in each, the rest cookies.
    assert len(stateful) <= 2 and len(cookies) == 8 - len(stateful), after
    assert all(a["window"] == 20000 for a in stateful), after


ICMP_SNIFF = f"""
import threading, time
from scapy.all import AsyncSniffer, Ether, ICMP, IP, UDP, conf, sendp
conf.verb = 0
mac = open("/sys/class/net/{TAP}/address").read().strip()
seen, ready = [], threading.Event()
sniffer = AsyncSniffer(iface="{TAP}", filter="icmp and src host {SHARDNET_V4}",
                       prn=seen.append, store=False, started_callback=ready.set)
sniffer.start()
assert ready.wait(5)
"""


def test_reassembly_time_is_the_dispatchers(ns: Netns, stack: StackProcess) -> None:
    """``frag_time_v4_s`` set at run time: a datagram whose first fragment
    came alone is given up after it, with an ICMP time exceeded (RFC 792
    code 1) back to the kernel, where the default waits 30 s."""
    out = ctl(stack, "ip", "--set", "frag_time_v4_s=1")
    assert out.returncode == 0, out.stderr
    shardnet_mac = stack.call("hello")["mac"]
    got = ns.python(
        ICMP_SNIFF
        + textwrap.dedent(f"""
        start = time.monotonic()
        sendp(Ether(src=mac, dst="{shardnet_mac}")
              / IP(src="{KERNEL_V4}", dst="{SHARDNET_V4}", id=4242, flags="MF")
              / UDP(sport=4000, dport=9) / (b"x" * 64), iface="{TAP}")
        while not any(p[ICMP].type == 11 for p in seen) and time.monotonic() - start < 8:
            time.sleep(0.05)
        sniffer.stop()
        late = [p for p in seen if p[ICMP].type == 11]
        print(late[0][ICMP].code if late else "none", round(time.monotonic() - start, 1))
    """),
        timeout=30,
    ).stdout.split()
    assert got[0] == "1", got
    print("time exceeded after", got[1], "s")
    assert ctl(stack, "ip", "--set", "frag_time_v4_s=30").returncode == 0


def test_icmp_rate_limit(ns: Netns, stack: StackProcess) -> None:
    """Datagrams to a closed port draw one port unreachable each; with the
    bucket set to one token and no refill, at most one per shard."""

    def unreachables() -> int:
        shardnet_mac = stack.call("hello")["mac"]
        return int(
            ns.python(
                ICMP_SNIFF
                + textwrap.dedent(f"""
            for sport in range(4100, 4108):
                sendp(Ether(src=mac, dst="{shardnet_mac}") / IP(src="{KERNEL_V4}", dst="{SHARDNET_V4}")
                      / UDP(sport=sport, dport=9) / b"x", iface="{TAP}")
            time.sleep(0.5)
            sniffer.stop()
            print(sum(1 for p in seen if p[ICMP].type == 3 and p[ICMP].code == 3))
        """),
                timeout=30,
            ).stdout
        )

    assert unreachables() == 8
    assert ctl(stack, "ip", "--set", "icmp_rate_per_s=0", "--set", "icmp_burst=1").returncode == 0
    assert 1 <= unreachables() <= 2
    assert (
        ctl(stack, "ip", "--set", "icmp_rate_per_s=1000", "--set", "icmp_burst=50").returncode == 0
    )
    assert unreachables() == 8


def test_settings_survive_shard_restarts(ns: Netns, stack: StackProcess) -> None:
    """A restarted shard gets the run-time settings from shard 0's tables; a
    restarted shard 0 gets them from the dispatcher's journal."""
    assert ctl(stack, "ip", "--set", "default_ttl=21").returncode == 0
    for index in (1, 0):
        assert stack.kill_shard(index)
        assert wait_until(lambda i=index: replicas(stack, "ip")[i] is not None, timeout=10)
        assert stack.call("ip_get")["default_ttl"] == 21
        assert wait_until(lambda: ping_ttls(ns, SHARDNET_V4, count=4) == {21}, timeout=10)
    assert stack.call("tcp_get")["syn_backlog"] == 1
