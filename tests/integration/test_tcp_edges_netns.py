"""TCP and IP edge cases against the kernel as the peer, with packets crafted
by scapy where the kernel would not send them: answers to out-of-window
segments rate limited per connection, segments without ACK, RST or SYN
dropped, the right edge of the window, an RST ending TIME-WAIT, the
TCP_CORK ceiling, ICMP unreachable failing a connect, and SYNs to
broadcast and multicast addresses never answered."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"

# Shared by the scapy snippets: wait for a condition, sniff in the background.
PRELUDE = f"""
import socket, threading, time
from scapy.all import AsyncSniffer, Ether, IP, TCP, sendp, conf
conf.verb = 0
mac = open("/sys/class/net/{TAP}/address").read().strip()

def wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()

def sniffing(filter):
    seen, ready = [], threading.Event()
    sniffer = AsyncSniffer(iface="{TAP}", filter=filter, prn=seen.append, store=False,
                           started_callback=ready.set)
    sniffer.start()
    assert ready.wait(5), "sniffer not started"
    return sniffer, seen
"""


def scapy(ns: Netns, code: str, timeout: float = 30) -> str:
    """Run ``code`` after PRELUDE in the namespace; its standard output."""
    return ns.python(PRELUDE + textwrap.dedent(code), timeout=timeout).stdout


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("tcpedge") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64",
            "--gateway4", KERNEL_V4, "--gateway6", KERNEL_V6, "--no-slaac",
            "--serve", "echo:7", "--serve", "http:80", "--app", "tests.apps.edge_probe:main"]  # fmt: skip
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield stack


def test_invalid_segments_are_answered_as_linux_does(ns: Netns, stack: StackProcess) -> None:
    """On an open connection: two out-of-window ACKs 20 ms apart draw one
    ACK, and another after 500 ms draws one more (tcp_invalid_ratelimit); a
    segment with no ACK, RST or SYN is not answered; an empty segment at
    exactly RCV.NXT + RCV.WND is acceptable (no answer), one byte further it
    is not (one ACK)."""
    out = scapy(ns, f"""
        sniffer, packets = sniffing("tcp port 7")
        s = socket.create_connection(("{SHARDNET_V4}", 7), timeout=5)
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        wait(lambda: any(p[IP].src == "{KERNEL_V4}" and p[TCP].ack > 0 and not p[TCP].payload
                         and p[TCP].ack == (max(q[TCP].seq for q in packets if q[IP].src == "{SHARDNET_V4}") + 4) % 2**32
                         for p in packets))
        time.sleep(0.3)  # the exchange settles (delayed ACKs)
        sniffer.stop()
        synack = next(p for p in packets if p[TCP].flags == "SA")
        wscale = dict((o[0], o[1]) for o in synack[TCP].options).get("WScale", 0)
        ours = [p for p in packets if p[IP].src == "{KERNEL_V4}"]
        theirs = [p for p in packets if p[IP].src == "{SHARDNET_V4}"]
        last, peer = ours[-1], theirs[-1]
        rcv_nxt = (last[TCP].seq + len(last[TCP].payload)) % 2**32
        snd_nxt = (peer[TCP].seq + len(peer[TCP].payload)) % 2**32
        edge = (rcv_nxt + (peer[TCP].window << wscale)) % 2**32
        sport = last[TCP].sport

        def inject(payload=b"", **kw):
            sendp(Ether(src=mac, dst=peer.src) / IP(src="{KERNEL_V4}", dst="{SHARDNET_V4}")
                  / TCP(sport=sport, dport=7, **kw) / payload, iface="{TAP}")

        def answers(action, settle=0.4):
            sniffer, replies = sniffing("tcp and src host {SHARDNET_V4} and port 7")
            action()
            time.sleep(settle)
            sniffer.stop()
            return len(replies)

        far = (rcv_nxt + 50_000_000) % 2**32
        twice = answers(lambda: (inject(flags="A", seq=far, ack=snd_nxt), time.sleep(0.02),
                                 inject(flags="A", seq=far, ack=snd_nxt)))
        time.sleep(0.2)
        later = answers(lambda: inject(flags="A", seq=far, ack=snd_nxt))
        time.sleep(0.6)
        no_ack = answers(lambda: inject(b"no ack", flags="P", seq=far))
        at_edge = answers(lambda: inject(flags="A", seq=edge, ack=snd_nxt))
        past_edge = answers(lambda: inject(flags="A", seq=(edge + 1) % 2**32, ack=snd_nxt))
        s.sendall(b"still here")
        alive = s.recv(10) == b"still here"
        print(twice, later, no_ack, at_edge, past_edge, alive)
    """, timeout=60).split()  # fmt: skip
    assert out == ["1", "1", "0", "0", "1", "True"]


def test_an_rst_ends_time_wait(ns: Netns, stack: StackProcess) -> None:
    """Linux's default (tcp_rfc1337=0): shardnet closed first and sits in
    TIME-WAIT; an RST at its RCV.NXT ends it at once."""
    port, seq, dst_mac = scapy(ns, f"""
        sniffer, packets = sniffing("tcp port 80")
        s = socket.create_connection(("{SHARDNET_V4}", 80), timeout=5)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        while s.recv(65536):
            pass
        s.close()
        fin = lambda: [p for p in packets if p[IP].src == "{KERNEL_V4}" and "F" in p[TCP].flags]
        assert wait(fin)
        sniffer.stop()
        f = fin()[-1]
        print(f[TCP].sport, (f[TCP].seq + len(f[TCP].payload) + 1) % 2**32, f.dst)
    """).split()  # fmt: skip
    remote = f"{KERNEL_V4}:{port}"

    def in_time_wait() -> bool:
        return any(r["state"] == "TIME-WAIT" and r["remote"] == remote for r in stack.call("conns"))

    assert wait_until(in_time_wait, timeout=3)
    scapy(ns, f"""
        sendp(Ether(src=mac, dst="{dst_mac}") / IP(src="{KERNEL_V4}", dst="{SHARDNET_V4}")
              / TCP(sport={port}, dport=80, flags="R", seq={seq}), iface="{TAP}")
    """)  # fmt: skip
    assert wait_until(lambda: not in_time_wait(), timeout=3)


def test_a_corked_partial_segment_leaves_within_200_ms(ns: Netns, stack: StackProcess) -> None:
    """tcp(7): output corked with TCP_CORK is sent after at most 200 ms (here
    with the shard loop's timer slack); it is held until then."""
    out = ns.python(f"""
        import socket, time
        s = socket.create_connection(("{SHARDNET_V4}", 7100), timeout=3)
        start = time.monotonic()
        got = b""
        while len(got) < 100:
            got += s.recv(100)
        print(len(got), round(time.monotonic() - start, 3))
    """).stdout.split()  # fmt: skip
    assert out[0] == "100"
    assert 0.15 <= float(out[1]) <= 0.5, out


def test_icmp_unreachable_fails_a_connect_at_once(ns: Netns, stack: StackProcess) -> None:
    """The kernel routes for shardnet and answers SYNs it cannot forward with
    ICMP host unreachable (an unreachable route), network unreachable and
    ICMPv6 no route (no route): each connect fails with EHOSTUNREACH or
    ENETUNREACH well before the first SYN retransmission (1 s), as a
    connect() on Linux does."""
    ns.run("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
    ns.run("ip route add unreachable 198.18.1.0/24")
    out = ns.python(f"""
        import socket
        s = socket.create_connection(("{SHARDNET_V4}", 7200), timeout=15)
        s.sendall(b"198.18.1.5,80 198.19.0.5,80 2001:db8:ff::5,80\\n")
        print(s.makefile().readline())
    """, timeout=30).stdout.split()  # fmt: skip
    got = [r.split(":") for r in out]
    assert [r[0] for r in got] == ["errno=113", "errno=101", "errno=101"], out  # EHOSTUNREACH...
    assert all(float(r[1]) < 0.9 for r in got), out


def test_syns_to_broadcast_and_multicast_are_never_answered(ns: Netns, stack: StackProcess) -> None:
    """RFC 1122 §4.2.3.10: a SYN to the subnet-directed broadcast, the
    limited broadcast or a multicast group gets neither SYN-ACK nor RST, and
    is counted; the same SYN to shardnet's address is answered."""

    def dropped() -> int:
        return sum(s["counters"].get("net/tcp_dropped_non_unicast", 0)
                   for s in stack.call("stats")["shards"])  # fmt: skip

    before = dropped()
    out = scapy(ns, f"""
        sniffer, replies = sniffing("tcp and src port 7")
        for dst, dmac in (("198.18.0.255", "ff:ff:ff:ff:ff:ff"), ("255.255.255.255", "ff:ff:ff:ff:ff:ff"),
                          ("224.0.0.1", "01:00:5e:00:00:01")):
            sendp(Ether(src=mac, dst=dmac) / IP(src="{KERNEL_V4}", dst=dst)
                  / TCP(sport=42000, dport=7, flags="S", seq=1000), iface="{TAP}")
        time.sleep(1.0)
        sniffer.stop()
        syn = TCP(sport=42001, dport=7, flags="S", seq=1000)
        from scapy.all import sr1
        answer = sr1(IP(dst="{SHARDNET_V4}") / syn, timeout=2)
        print(len(replies), answer is not None and answer[TCP].flags == "SA")
    """, timeout=30).split()  # fmt: skip
    assert out == ["0", "True"]
    assert wait_until(lambda: dropped() >= before + 3, timeout=5)


def test_a_listen_backlog_holds_connections_until_the_server_serves() -> None:
    """``create_server(backlog=2, start_serving=False)`` (tests/apps/
    backlog_probe.py): two connections complete and their data waits, a third
    connect gets no answer (its SYN is dropped, as Linux does when the accept
    queue is full); once the server starts serving, both are echoed."""
    skip_unless_netns()
    args = ("--ipv4", f"{SHARDNET_V4}/24", "--app", "tests.apps.backlog_probe:main")
    with Netns("backlog") as ns, StackProcess(ns, *args, shards=1):
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(f"""
            import socket
            held = []
            for i in range(2):
                s = socket.create_connection(("{SHARDNET_V4}", 7100), timeout=5)
                s.sendall(b"hello %d" % i)
                held.append(s)
            try:
                socket.create_connection(("{SHARDNET_V4}", 7100), timeout=0.8)
                print("third connected")
            except TimeoutError:
                print("third timed out")
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"serve", ("{SHARDNET_V4}", 7101))
            for s in held:
                s.settimeout(5)
                print(s.recv(100).decode())
        """, timeout=60).stdout  # fmt: skip
    assert out.splitlines() == ["third timed out", "hello 0", "hello 1"]


def test_tcp_user_timeout_ends_a_connection_to_a_silent_peer() -> None:
    """RFC 5482 ``TCP_USER_TIMEOUT`` (tests/apps/user_timeout_probe.py): the
    kernel peer accepts, says go, then vanishes (its address removed: no
    answer, no reset); the stack's connection ends with ETIMEDOUT about
    1.5 s later, not after minutes of retransmissions."""
    skip_unless_netns()
    args = ("--ipv4", f"{SHARDNET_V4}/24", "--app", "tests.apps.user_timeout_probe:main")
    with Netns("usertimeout") as ns, StackProcess(ns, *args, shards=1) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.python(f"""
            import socket, subprocess, time
            srv = socket.create_server(("{KERNEL_V4}", 7200))
            conn, _ = srv.accept()
            conn.sendall(b"go\\n")
            time.sleep(0.3)
            subprocess.run(["ip", "addr", "del", "{KERNEL_V4}/24", "dev", "{TAP}"], check=True)
            time.sleep(4)
        """, timeout=60)  # fmt: skip
        assert stack.stop() == 0
        out = stack.output()
    (line,) = [x for x in out.splitlines() if "user-timeout-probe:" in x]
    assert "TimeoutError errno=110" in line, line
    took = float(line.split("after ")[1].split()[0])
    assert 1.0 <= took <= 3.5, line


def test_so_linger_zero_resets_on_close() -> None:
    """socket(7) SO_LINGER {on, 0}: the server's close resets the connection
    (the kernel client's read fails with ECONNRESET); without it the close
    is a FIN (the read returns end of file)."""
    skip_unless_netns()
    args = ("--ipv4", f"{SHARDNET_V4}/24", "--app", "tests.apps.linger_probe:main")
    with Netns("linger") as ns, StackProcess(ns, *args):
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(f"""
            import socket
            for port in (7300, 7301):
                s = socket.create_connection(("{SHARDNET_V4}", port), timeout=5)
                s.sendall(b"x")
                try:
                    print(port, "eof" if s.recv(100) == b"" else "data")
                except ConnectionResetError:
                    print(port, "reset")
        """, timeout=60).stdout  # fmt: skip
    assert out.splitlines() == ["7300 reset", "7301 eof"]
