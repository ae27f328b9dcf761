"""Fronts for host programs against real clients: curl through ``--socks5``
and ``--http-proxy``, socat through ``--forward`` both ways. Shardnet runs
on a TAP in a namespace; the host programs there reach, through shardnet's
stack, its own ``--serve http:80`` and a kernel server on the TAP's kernel
side (198.18.0.1), which sees shardnet's address as its peer (a direct
kernel connection would show its own)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"
SOCKS, PROXY = "127.0.0.1:1080", "127.0.0.1:3128"
# A kernel HTTP server answering with the address of its peer.
PEER_SERVER = """
import http.server, socket
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
Server(("::", 8080), Peer).serve_forever()
"""
ECHO_SERVER = """
import socket, sys, threading
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
def echo(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""

# A kernel UDP server answering each datagram with its peer's address and the datagram.
UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(peer[0].encode() + b" " + data, peer)
"""


@dataclass
class Lab:
    ns: Netns
    stack: StackProcess

    def curl(self, *args: str) -> str:
        """curl's output (the peer server's dual-stack answer in IPv4 form)."""
        out = self.ns.run(["curl", "-sS", "--max-time", "20", *args], timeout=30).stdout
        return out.removeprefix("::ffff:")

    def listen(self, code: str, *args: str, port: int, udp: bool = False) -> None:
        self.ns.popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ss = ["ss", "-lnuH" if udp else "-lntH"]
        assert wait_until(lambda: f":{port} " in self.ns.run(ss).stdout, timeout=10)

    def fronts(self) -> list[dict[str, Any]]:
        assert self.stack.client is not None
        return self.stack.client.fronts()  # ctl fronts, a page at a time

    def front_stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for shard in self.stack.call("stats")["shards"]:
            for name, n in shard.get("gauges", {}).items():
                if name.startswith("front/"):
                    totals[name] = totals.get(name, 0) + n
        return totals


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    skip_unless_netns()
    with Netns("front") as ns:
        with StackProcess(
            ns,
            "--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64", "--no-slaac",
            "--serve", "http:80", "--serve", "chargen:19", "--metrics", "127.0.0.1:9109",
            "--socks5", SOCKS, "--http-proxy", PROXY,
            "--forward", f"tcp:127.0.0.1:7100={KERNEL_V4}:7000",
            "--forward", "tcp:shardnet:7200=127.0.0.1:7001",
            "--forward", f"udp:127.0.0.1:7300={KERNEL_V4}:7000",
            "--forward", f"tcp:127.0.0.1:7500={SHARDNET_V4}:19",
            "--forward", "udp:shardnet:7400=127.0.0.1:7001",
        ) as stack:  # fmt: skip
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
            ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
            lab = Lab(ns, stack)
            lab.listen(PEER_SERVER, port=8080)
            lab.listen(ECHO_SERVER, KERNEL_V4, "7000", port=7000)
            lab.listen(ECHO_SERVER, "127.0.0.1", "7001", port=7001)
            lab.listen(UDP_SERVER, KERNEL_V4, "7000", port=7000, udp=True)
            lab.listen(UDP_SERVER, "127.0.0.1", "7001", port=7001, udp=True)
            yield lab


def test_socks5_hostname_reaches_shardnets_own_http(lab: Lab) -> None:
    out = lab.curl("--socks5-hostname", SOCKS, f"http://{SHARDNET_V4}/")
    assert "<h1>shardnet</h1>" in out


@pytest.mark.parametrize(("server", "peer"), [(KERNEL_V4, SHARDNET_V4), (KERNEL_V6, SHARDNET_V6)])
def test_socks5_reaches_a_kernel_server_from_shardnets_address(
    lab: Lab, server: str, peer: str
) -> None:
    host = f"[{server}]" if ":" in server else server
    before = lab.front_stats().get("front/dialled", 0)
    out = lab.curl("--socks5-hostname", SOCKS, f"http://{host}:8080/")
    assert out == peer  # the server's peer is shardnet, not the kernel
    # The shards report their counters every second.
    assert wait_until(lambda: lab.front_stats().get("front/dialled", 0) > before, timeout=5)


def test_socks5_refused_destination(lab: Lab) -> None:
    r = lab.ns.run(
        ["curl", "-sS", "--max-time", "20", "--socks5-hostname", SOCKS, f"http://{KERNEL_V4}:9/"],
        check=False,
    )
    assert r.returncode == 97, r.stderr  # curl: the proxy handshake failed
    assert "(5)" in r.stderr, r.stderr  # RFC 1928 §6: X'05' Connection refused


def test_http_proxy_absolute_uri_and_connect(lab: Lab) -> None:
    assert lab.curl("-x", f"http://{PROXY}", f"http://{KERNEL_V4}:8080/x") == SHARDNET_V4
    # -p: CONNECT, then the request inside the tunnel
    assert lab.curl("-p", "-x", f"http://{PROXY}", f"http://{KERNEL_V4}:8080/") == SHARDNET_V4
    out = lab.curl("-x", f"http://{PROXY}", f"http://{SHARDNET_V4}/bytes/1000000", "-o", "-")
    assert len(out) == 1_000_000


def test_http_proxy_bad_gateway(lab: Lab) -> None:
    out = lab.curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://{PROXY}",
                   f"http://{KERNEL_V4}:9/")  # fmt: skip
    assert out == "502"


def _socat(lab: Lab, target: str, data: bytes) -> bytes:
    r = subprocess.run(
        lab.ns.exec_argv(["socat", "-t", "10", "-", f"TCP:{target},shut-down"]),
        input=data, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return r.stdout


def test_forward_a_kernel_port_through_shardnet(lab: Lab) -> None:
    data = hashlib.shake_256(b"forward").digest(2_000_000)
    assert _socat(lab, "127.0.0.1:7100", data) == data


def test_forward_shardnets_port_to_a_kernel_address(lab: Lab) -> None:
    data = hashlib.shake_256(b"reverse").digest(2_000_000)
    assert _socat(lab, f"{SHARDNET_V4}:7200", data) == data
    assert _socat(lab, f"[{SHARDNET_V6}]:7200", data[:1000]) == data[:1000]


def _udp(lab: Lab, target: str, data: bytes) -> bytes:
    r = subprocess.run(
        lab.ns.exec_argv(["socat", "-T", "5", "-", f"UDP:{target}"]),
        input=data, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    return r.stdout


def test_udp_forward_a_kernel_port_through_shardnet(lab: Lab) -> None:
    # The kernel server's peer is shardnet's address: the datagram crossed the TAP.
    assert _udp(lab, "127.0.0.1:7300", b"ping") == f"{SHARDNET_V4} ping".encode()


def test_udp_forward_shardnets_port_to_a_kernel_address(lab: Lab) -> None:
    assert _udp(lab, f"{SHARDNET_V4}:7400", b"pong") == b"127.0.0.1 pong"


def test_socks5_udp_associate(lab: Lab) -> None:
    out = lab.ns.python(
        f"""
        import socket, struct
        c = socket.create_connection(("127.0.0.1", 1080), timeout=10)
        c.sendall(b"\\x05\\x01\\x00")
        assert c.recv(2) == b"\\x05\\x00"
        c.sendall(b"\\x05\\x03\\x00\\x01" + bytes(6))  # UDP ASSOCIATE, address unknown yet
        reply = c.recv(10)
        assert reply[:4] == b"\\x05\\x00\\x00\\x01", reply
        relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        head = b"\\x00\\x00\\x00\\x01" + socket.inet_aton("{KERNEL_V4}") + struct.pack("!H", 7000)
        u.sendto(head + b"hello", relay)
        data, _ = u.recvfrom(2048)
        assert data[:10] == head, data  # RFC 1928 §7: the answer names its source
        print(data[10:].decode())
        """
    ).stdout
    assert out.strip() == f"{SHARDNET_V4} hello"


def test_socks5_udp_datagrams_to_names(lab: Lab) -> None:
    # RFC 1928 §7 ATYP 3. Nothing in the namespace resolves a real name:
    # "198.18.1" is not an address literal to shardnet, and the host's
    # getaddrinfo resolves it (inet_aton's a.b.c form) to 198.18.0.1; a
    # name under .invalid (RFC 6761 §6.4) never resolves.
    before = lab.front_stats().get("front/resolve_failed", 0)
    out = lab.ns.python(
        """
        import socket, struct
        c = socket.create_connection(("127.0.0.1", 1080), timeout=10)
        c.sendall(b"\\x05\\x01\\x00")
        assert c.recv(2) == b"\\x05\\x00"
        c.sendall(b"\\x05\\x03\\x00\\x01" + bytes(6))
        reply = c.recv(10)
        relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        def named(name, payload):
            return b"\\x00\\x00\\x00\\x03" + bytes([len(name)]) + name + struct.pack("!H", 7000) + payload
        u.sendto(named(b"nowhere.invalid", b"lost"), relay)
        for i in range(3):  # the first waits for the lookup, the others hit the cache
            u.sendto(named(b"198.18.1", b"hello%d" % i), relay)
        got = sorted(u.recvfrom(2048)[0] for _ in range(3))
        for data in got:
            assert data[:10] == b"\\x00\\x00\\x00\\x01" + socket.inet_aton("198.18.0.1") + struct.pack("!H", 7000)
            print(data[10:].decode())
        """
    ).stdout
    assert out.split("\n")[:3] == [f"{SHARDNET_V4} hello{i}" for i in range(3)]
    assert wait_until(lambda: lab.front_stats().get("front/resolve_failed", 0) > before, timeout=5)


def test_ctl_fronts_lists_the_live_flows(lab: Lab) -> None:
    holder = lab.ns.popen(
        [sys.executable, "-c", textwrap.dedent("""
            import socket, sys
            c = socket.create_connection(("127.0.0.1", 7100))
            c.sendall(b"x" * 1000)
            got = 0
            while got < 1000:
                got += len(c.recv(4096))
            print(c.getsockname()[1], flush=True)
            sys.stdin.readline()  # held open until told
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    port = holder.stdout.readline().strip()
    rows = [r for r in lab.fronts() if r["client"] == f"127.0.0.1:{port}"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["proto"] == "tcp-forward" and row["target"] == f"{KERNEL_V4}:7000"
    assert (row["bytes_up"], row["bytes_down"]) == (1000, 1000) and row["age_s"] >= 0
    out = lab.ns.run([sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control",
                      lab.stack.control, "fronts"]).stdout  # fmt: skip
    assert "PROTO" in out.splitlines()[0]
    assert any(f"127.0.0.1:{port}" in line and "tcp-forward" in line for line in out.splitlines())
    holder.stdin.write("done\n")
    holder.stdin.flush()
    holder.wait(timeout=10)
    gone = lambda: all(r["client"] != f"127.0.0.1:{port}" for r in lab.fronts())  # noqa: E731
    assert wait_until(gone, timeout=5)


def test_fronts_in_metrics(lab: Lab) -> None:
    lab.curl("--socks5-hostname", SOCKS, f"http://{SHARDNET_V4}/")

    def dialled() -> float:
        text = lab.curl("http://127.0.0.1:9109/metrics")
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("shardnet_front_dialled_total{")
        )

    assert wait_until(lambda: dialled() > 0, timeout=5)


def test_proxies_with_a_username_and_password() -> None:
    skip_unless_netns()
    with Netns("fauth") as ns:
        with StackProcess(
            ns, "--ipv4", f"{SHARDNET_V4}/24", "--serve", "http:80",
            "--socks5", "ann:s3cret@127.0.0.1:1081", "--http-proxy", "bob:pa:ss@127.0.0.1:3129",
        ):  # fmt: skip
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
            url = f"http://{SHARDNET_V4}/"
            ok = ns.run(["curl", "-sS", "--max-time", "10", "-x",
                         "socks5h://ann:s3cret@127.0.0.1:1081", url])  # fmt: skip
            assert "<h1>shardnet</h1>" in ok.stdout
            bad = ns.run(["curl", "-sS", "--max-time", "10", "-x",
                          "socks5h://ann:guess@127.0.0.1:1081", url], check=False)  # fmt: skip
            assert bad.returncode == 97, bad.stderr  # RFC 1929 §2: refused, connection closed
            anonymous = ns.run(["curl", "-sS", "--max-time", "10", "--socks5-hostname",
                                "127.0.0.1:1081", url], check=False)  # fmt: skip
            assert anonymous.returncode == 97, anonymous.stderr  # no acceptable method
            # RFC 7617: Proxy-Authorization: Basic, for absolute URIs and CONNECT.
            proxy = ["-x", "http://127.0.0.1:3129"]
            for tunnel in ([], ["-p"]):
                ok = ns.run(["curl", "-sS", "--max-time", "10", *tunnel, *proxy,
                             "--proxy-user", "bob:pa:ss", url])  # fmt: skip
                assert "<h1>shardnet</h1>" in ok.stdout
            for creds in ([], ["--proxy-user", "bob:guess"]):
                bad = ns.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-",
                              *proxy, *creds, url])  # fmt: skip
                assert bad.stdout.startswith("HTTP/1.1 407 "), bad.stdout
                assert 'Proxy-Authenticate: Basic realm="shardnet"' in bad.stdout


def test_a_host_program_that_does_not_read_stops_the_front_reading(lab: Lab) -> None:
    # chargen (RFC 864) sends for ever; a client of the forward that reads
    # nothing must stop the splice from reading shardnet's side.
    client = lab.ns.popen(
        [sys.executable, "-c", textwrap.dedent("""
            import socket, sys
            c = socket.create_connection(("127.0.0.1", 7500))
            sys.stdin.readline()  # read nothing until told
            got = 0
            while got < 20_000_000:
                got += len(c.recv(1 << 20))
            print(got)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    up = lambda: lab.front_stats().get("front/bytes_up", 0)  # noqa: E731
    start = up()
    assert wait_until(lambda: up() > start + 100_000, timeout=10)
    seen: list[int] = []

    def stalled() -> bool:  # the same figure three reports in a row
        seen.append(up())
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    assert wait_until(stalled, timeout=20, interval=1.1), seen
    assert seen[-1] - start < 16_000_000  # socket buffers and a window, not the stream
    client.stdin.write("go\n")
    client.stdin.flush()
    out, _ = client.communicate(timeout=30)
    assert int(out) >= 20_000_000  # it flows again once read


def test_every_shard_accepts_and_dials_its_own_connections(lab: Lab) -> None:
    # SO_REUSEPORT spreads the host's connections over the shards' listeners;
    # each shard dials from a port whose replies hash back to it, or the
    # connections would be reset.
    def per_shard() -> list[int]:
        return [
            int(shard.get("gauges", {}).get("front/dialled", 0))
            for shard in lab.stack.call("stats")["shards"]
        ]

    before = per_shard()
    out = lab.ns.python(
        """
        import socket
        conns = [socket.create_connection(("127.0.0.1", 7100), timeout=10) for _ in range(32)]
        for i, c in enumerate(conns):
            c.sendall(b"%d" % i)
        print(sum(c.recv(16) == b"%d" % i for i, c in enumerate(conns)))
        """
    ).stdout
    assert out.strip() == "32"
    assert wait_until(
        lambda: all(after > b for after, b in zip(per_shard(), before, strict=True)), timeout=5
    ), (before, per_shard())
