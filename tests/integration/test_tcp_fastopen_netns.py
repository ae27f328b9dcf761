"""TCP Fast Open (RFC 7413) against the kernel, both ways.

The kernel as client (``net.ipv4.tcp_fastopen=1``, ``sendto(MSG_FASTOPEN)``)
of a shardnet listener with TCP_FASTOPEN, over IPv4 and IPv6: the first connection gets a
cookie, the second carries its data in the SYN, which shardnet's
application reads before the handshake completes (in SYN-RECEIVED); the
kernel counts it acknowledged (TcpExt TCPFastOpenActive). The two
connections go to different shards: the cookie is the same in all.

The kernel as server (``tcp_fastopen=2``, ``setsockopt(TCP_FASTOPEN)``) of
shardnet's ``open_connection(fastopen=True)``: the first connect asks for a
cookie, the next ones send their data in the SYN, which the kernel takes
(TcpExt TCPFastOpenPassive, TCPFastOpenCookieReqd). When the kernel's
listener is replaced by one without TCP_FASTOPEN, the next SYN's data is
not acknowledged: shardnet sends it again at once, and falls back to plain
connects for that server (RFC 7413 §4.1.3)."""

from __future__ import annotations

import subprocess

import pytest

from shardnet.common.addr import parse_ip
from shardnet.common.flowhash import shard_for

from ..apps.fastopen_probe import CONNECTS, KERNEL_PORT, SERVER_PORT
from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TCPEXT = """
def tcpext():
    with open("/proc/net/netstat") as f:
        lines = f.read().split("\\n")
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:])))
    return {}
"""


def gauge(stack: StackProcess, name: str) -> int:
    """A ``ctl stats`` gauge summed over the shards."""
    return sum(s["gauges"].get(name, 0) for s in stack.call("stats")["shards"])


@pytest.mark.parametrize(
    ("kernel", "shardnet", "family"),
    [(KERNEL_V4, "198.18.0.2", "AF_INET"), ("2001:db8::1", "2001:db8::2", "AF_INET6")],
)
def test_kernel_client_sends_data_in_syn_to_shardnet(
    kernel: str, shardnet: str, family: str
) -> None:
    skip_unless_netns()
    with (
        Netns("tfo") as ns,
        StackProcess(
            ns, "--ipv4", "198.18.0.2/24", "--ipv6", "2001:db8::2/64", "--tcp", "fastopen=3",
            "--app", "tests.apps.fastopen_probe:serve",
        ) as stack,
    ):  # fmt: skip
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add 2001:db8::1/64 dev {TAP} nodad")
        ns.run("sysctl -qw net.ipv4.tcp_fastopen=1")
        # the cookie from shard 0, the data SYN to shard 1: one cookie for all
        k, us = parse_ip(kernel), parse_ip(shardnet)
        ports = [
            next(p for p in range(41000, 42000) if shard_for(6, k, p, us, SERVER_PORT, 2) == i)
            for i in (0, 1)
        ]
        out = ns.python(
            TCPEXT
            + f"""
import socket
for i in range(2):
    s = socket.socket(socket.{family})  # blocking: with a timeout, sendto gives EINPROGRESS
    s.bind(("{kernel}", {ports}[i]))
    s.sendto(b"hello %d" % i, socket.MSG_FASTOPEN, ("{shardnet}", {SERVER_PORT}))
    s.settimeout(10)
    answer = b""
    while chunk := s.recv(100):
        answer += chunk
    s.close()
    print(answer.decode())
ext = tcpext()
print(ext["TCPFastOpenActive"], ext.get("TCPFastOpenActiveFail", 0))
"""
        )
        lines = out.stdout.split("\n")
        assert lines[0] == "got hello 0 in ESTABLISHED"  # cookie request: a normal handshake
        assert lines[1] == "got hello 1 in SYN-RECEIVED"  # the data came in the SYN
        assert lines[2] == "1 0"  # the kernel saw its SYN data acknowledged

        # shardnet's listeners: shard 0 issued the cookie, shard 1 took the data
        def per_shard(name: str) -> list[int]:
            return [sh["gauges"].get(name, 0) for sh in stack.call("stats")["shards"]]

        assert wait_until(
            lambda: (
                per_shard("tcp_listen/tfo_cookies_sent") == [1, 0]
                and per_shard("tcp_listen/tfo_accepted") == [0, 1]
            ),
            timeout=5,
        )


def test_shardnet_client_sends_data_in_syn_to_kernel() -> None:
    skip_unless_netns()
    with Netns("tfo") as ns:
        ns.run("sysctl -qw net.ipv4.tcp_fastopen=3")
        server = ns.popen(
            [
                "python3",
                "-c",
                TCPEXT
                + f"""
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.SOL_TCP, socket.TCP_FASTOPEN, 16)
srv.bind(("0.0.0.0", {KERNEL_PORT}))
srv.listen(16)
srv.settimeout(60)
print("listening", flush=True)
for i in range({CONNECTS}):
    c, _ = srv.accept()
    c.settimeout(10)
    data = c.recv(100)
    c.sendall(b"kernel got " + data)
    c.close()
    print(data.decode(), flush=True)
ext = tcpext()
print(ext["TCPFastOpenPassive"], ext["TCPFastOpenCookieReqd"], flush=True)
""",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        with StackProcess(
            ns, "--ipv4", "198.18.0.2/24", "--app", "tests.apps.fastopen_probe:connect"
        ) as stack:
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
            lines = [server.stdout.readline().strip() for _ in range(CONNECTS + 1)]
            server.wait(timeout=10)
            assert lines[:CONNECTS] == [f"hello {i}" for i in range(CONNECTS)]
            passive, cookie_reqd = map(int, lines[CONNECTS].split())
            assert cookie_reqd == 1  # the first connect asked for a cookie
            assert passive == CONNECTS - 1  # the others carried their data in the SYN
            assert wait_until(
                lambda: gauge(stack, "tcp_fastopen/syn_data_acked") == CONNECTS - 1, timeout=5
            )
            assert gauge(stack, "tcp_fastopen/fallbacks") == 0


def test_shardnet_client_falls_back_when_the_kernel_ignores_the_data() -> None:
    skip_unless_netns()
    with Netns("tfo") as ns:
        ns.run("sysctl -qw net.ipv4.tcp_fastopen=3")
        server = ns.popen(
            [
                "python3",
                "-c",
                TCPEXT
                + f"""
import socket
def listener(fastopen):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fastopen:
        srv.setsockopt(socket.SOL_TCP, socket.TCP_FASTOPEN, 16)
    srv.bind(("0.0.0.0", {KERNEL_PORT}))
    srv.listen(16)
    srv.settimeout(60)
    return srv
def serve(srv):
    c, _ = srv.accept()
    c.settimeout(10)
    data = c.recv(100)
    c.sendall(b"kernel got " + data)
    c.close()
    print(data.decode(), flush=True)
srv = listener(True)
print("listening", flush=True)
serve(srv)  # asks for the cookie
serve(srv)  # data in the SYN
srv.close()
srv = listener(False)  # no Fast Open any more: the SYN's data is ignored
serve(srv)
serve(srv)
ext = tcpext()
print(ext["TCPFastOpenPassive"], ext["TCPFastOpenCookieReqd"], flush=True)
""",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        with StackProcess(
            ns, "--ipv4", "198.18.0.2/24", "--app", "tests.apps.fastopen_probe:connect_more"
        ) as stack:
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
            n = CONNECTS + 1
            lines = [server.stdout.readline().strip() for _ in range(n + 1)]
            server.wait(timeout=10)
            # every request arrived whole, the refused SYN data sent again
            assert lines[:n] == [f"hello {i}" for i in range(n)]
            assert lines[n] == "1 1"
            # two SYNs with data (the second ignored), then no Fast Open
            assert wait_until(lambda: gauge(stack, "tcp_fastopen/fallbacks") == 1, timeout=5)
            assert gauge(stack, "tcp_fastopen/syn_data") == 2
            assert gauge(stack, "tcp_fastopen/syn_data_acked") == 1
