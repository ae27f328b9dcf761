"""``--relay direct`` against real programs: a client namespace routes
198.19.0.0/16 and 2001:db8:19::/48 through shardnet's TUN; shardnet
terminates every flow and opens it again with kernel sockets in a server
namespace (``--relay-netns``), where the servers listen. The client sees
the servers' own addresses answer."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

TUN = "sntun0"
SERVER_V4, SERVER_V6 = "198.19.0.10", "2001:db8:19::10"


@dataclass
class Lab:
    ns: Netns  # where shardnet runs
    client: Netns
    server: Netns
    stack: StackProcess
    tmp: Path

    def serve(self, code: str, port: int) -> subprocess.Popen[str]:
        """A Python server in the server namespace, once it listens on ``port``."""
        proc = self.server.popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        listening = wait_until(
            lambda: f":{port} " in self.server.run(["ss", "-lntuH"]).stdout, timeout=10
        )
        assert listening, f"server on port {port} did not start"
        return proc


@contextlib.contextmanager
def relay_lab(tmp_path: Path, *extra: str, shards: int = 2) -> Iterator[Lab]:
    skip_unless_netns()
    with Netns("gw") as ns, Netns("gcl") as client, Netns("gsv") as server:
        server.run(f"ip addr add {SERVER_V4}/32 dev lo")
        server.run(f"ip addr add {SERVER_V6}/128 dev lo")
        with StackProcess(
            ns,
            "--tun", TUN, "--tun-netns", client.name,
            "--ipv4", "198.18.0.2/24", "--ipv6", "2001:db8::2/64",
            "--relay", "direct", "--relay-netns", server.name, *extra,
            tap=None, shards=shards,
        ) as stack:  # fmt: skip
            client.run(f"ip addr add 198.18.0.1/24 dev {TUN}")
            client.run(f"ip addr add 2001:db8::1/64 dev {TUN}")
            client.run(f"ip route add 198.19.0.0/16 dev {TUN}")
            client.run(f"ip route add 2001:db8:19::/48 dev {TUN}")
            yield Lab(ns, client, server, stack, tmp_path)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with relay_lab(tmp_path) as lab:
        yield lab


@pytest.mark.parametrize("server", [SERVER_V4, SERVER_V6])
def test_curl_downloads_100_mb_through_the_relay(lab: Lab, server: str) -> None:
    blob = lab.tmp / "blob"
    with blob.open("wb") as f:
        f.write(hashlib.shake_256(b"shardnet relay").digest(100_000_000))
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    lab.server.popen(
        [sys.executable, "-m", "http.server", "8080", "--bind", "::", "--directory", str(lab.tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: ":8080 " in lab.server.run(["ss", "-lntH"]).stdout, timeout=10)
    host = f"[{server}]" if ":" in server else server
    got = lab.tmp / "got"
    out = lab.client.run(
        ["curl", "-sS", "--max-time", "120", "-o", str(got), "-w", "%{http_code} %{remote_ip}",
         f"http://{host}:8080/blob"],
        timeout=150,
    ).stdout  # fmt: skip
    assert out == f"200 {server}"  # the client talked to the server's address
    assert hashlib.sha256(got.read_bytes()).hexdigest() == expected


def test_half_close_passes_through(lab: Lab) -> None:
    # The server reads to the client's FIN, then answers and closes: the
    # answer can only come back if the FIN went through as shutdown(SHUT_WR)
    # and the other direction stayed open.
    lab.serve(
        f"""
        import hashlib, socket
        s = socket.create_server(("{SERVER_V4}", 7000))
        c, _ = s.accept()
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        c.sendall(b"got %d bytes %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))
        c.close()
        """,
        7000,
    )
    sent = b"x" * 300_000
    r = subprocess.run(
        lab.client.exec_argv(["socat", "-t", "10", "-", f"TCP:{SERVER_V4}:7000,shut-down"]),
        input=sent, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert r.stdout == b"got 300000 bytes " + hashlib.sha256(sent).hexdigest().encode()


@pytest.mark.parametrize("server", [SERVER_V4, SERVER_V6])
def test_a_refused_destination_is_refused_for_the_client(lab: Lab, server: str) -> None:
    out = lab.client.python(
        f"""
        import socket
        try:
            socket.create_connection(("{server}", 9), timeout=10)
        except OSError as exc:
            print(type(exc).__name__)
        """
    ).stdout
    assert out.strip() == "ConnectionRefusedError"


def test_refusals_as_icmp_unreachable(tmp_path: Path) -> None:
    # --relay-refused icmp: a refused destination is ICMP port unreachable
    # (ECONNREFUSED for the client, RFC 1122 §4.2.3.9), an unreachable one
    # host unreachable (EHOSTUNREACH); the server namespace has no route to 198.19.99.0/24.
    with relay_lab(tmp_path, "--relay-refused", "icmp") as lab:
        out = lab.client.python(
            f"""
            import socket
            for host in ("{SERVER_V4}", "198.19.99.1", "{SERVER_V6}"):
                try:
                    socket.create_connection((host, 9), timeout=15)
                except OSError as exc:
                    print(type(exc).__name__, exc.errno)
            """,
            timeout=60,
        ).stdout.split("\n")
        assert out[:3] == [
            "ConnectionRefusedError 111",
            "OSError 113",
            "ConnectionRefusedError 111",
        ]


def test_udp_query_and_answer(lab: Lab) -> None:
    # A DNS-like responder: one answer per query, from port 53.
    lab.serve(
        """
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 53))
        while True:
            query, peer = s.recvfrom(2048)
            s.sendto(query[:2] + b"answer to " + query[2:], peer)
        """,
        53,
    )
    out = lab.client.python(
        f"""
        import socket
        for host, family in (("{SERVER_V4}", socket.AF_INET), ("{SERVER_V6}", socket.AF_INET6)):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.settimeout(5)
            for i in range(3):
                s.sendto(b"%02d%s" % (i, host.encode()), (host, 53))
                data, peer = s.recvfrom(2048)
                print(data.decode(), peer[0], peer[1])
        """
    ).stdout.splitlines()
    assert out == [
        f"{i:02d}answer to {host} {host} 53" for host in (SERVER_V4, SERVER_V6) for i in range(3)
    ]

    def flows_opened() -> int:
        shards = lab.stack.call("stats")["shards"]
        return sum(s["gauges"].get("relay/udp_opened", 0) for s in shards)

    assert wait_until(lambda: flows_opened() == 2, timeout=5)  # one per client socket


def test_ping_to_any_address_is_answered(lab: Lab) -> None:
    r = lab.client.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.77.1"], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout


def test_ping_relayed_to_the_destination(tmp_path: Path) -> None:
    # --relay-icmp relay: an address that exists in the server namespace
    # answers; one it has no route to gets no echo reply, only the
    # unreachable the kernel reports (with the default, local, shardnet
    # would answer both).
    with relay_lab(tmp_path, "--relay-icmp", "relay") as lab:
        # Linux's ping sockets need the group in ping_group_range (both families).
        lab.server.run(["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])
        # The server's replies leave with TTL / hop limit 33, shardnet's own with 64.
        lab.server.run(["sysctl", "-qw", "net.ipv4.ip_default_ttl=33"])
        lab.server.run(["sysctl", "-qw", "net.ipv6.conf.lo.hop_limit=33"])
        for there, nowhere in ((SERVER_V4, "198.19.77.1"), (SERVER_V6, "2001:db8:19::77")):
            ok = lab.client.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "100", there])
            assert " 0% packet loss" in ok.stdout and "108 bytes from" in ok.stdout, ok.stdout
            assert ok.stdout.count("ttl=33 ") == 3, ok.stdout
            lost = lab.client.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", nowhere], check=False)
            assert " 100% packet loss" in lost.stdout, lost.stdout
            # No route in the server namespace: the kernel's ENETUNREACH, told as ICMP.
            assert "unreachable" in lost.stdout.lower(), lost.stdout
        assert lab.stack.client is not None
        rows = [r for r in lab.stack.client.relays() if r["proto"] == "icmp"]
        assert {r["destination"] for r in rows} >= {SERVER_V4, SERVER_V6}, rows

        def counted() -> tuple[int, int]:
            shards = lab.stack.call("stats")["shards"]
            return (
                sum(s["gauges"].get("relay/icmp_replies", 0) for s in shards),
                sum(s["gauges"].get("relay/icmp_errors", 0) for s in shards),
            )

        assert wait_until(lambda: counted() == (6, 4), timeout=5), counted()


def test_a_thousand_concurrent_connections(lab: Lab) -> None:
    lab.serve(
        f"""
        import asyncio
        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
        async def main():
            server = await asyncio.start_server(echo, "{SERVER_V4}", 7001, backlog=4096)
            await server.serve_forever()
        asyncio.run(main())
        """,
        7001,
    )
    out = lab.client.python(
        f"""
        import asyncio, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        N = 1000
        async def main():
            conns = await asyncio.gather(*(
                asyncio.open_connection("{SERVER_V4}", 7001) for _ in range(N)
            ))
            # every connection is open at once before any is used
            for i, (_, w) in enumerate(conns):
                w.write(b"%d\\n" % i)
            lines = await asyncio.gather(*(r.readline() for r, _ in conns))
            ok = sum(line == b"%d\\n" % i for i, line in enumerate(lines))
            for _, w in conns:
                w.close()
            print(ok)
        asyncio.run(main())
        """,
        timeout=120,
    ).stdout
    assert out.strip() == "1000"


def test_relays_are_listed_and_counted(tmp_path: Path) -> None:
    with relay_lab(tmp_path, "--metrics", "127.0.0.1:9109") as lab:
        lab.serve(
            f"""
            import socket
            s = socket.create_server(("{SERVER_V4}", 7002))
            c, _ = s.accept()
            c.sendall(b"hello")
            while c.recv(65536):
                pass
            """,
            7002,
        )
        socat = lab.client.popen(
            ["socat", "-", f"TCP:{SERVER_V4}:7002"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert socat.stdin is not None and socat.stdout is not None
        socat.stdin.write(b"abc")
        socat.stdin.flush()
        assert socat.stdout.read(5) == b"hello"
        assert lab.stack.client is not None

        def row() -> dict | None:
            assert lab.stack.client is not None
            rows = [r for r in lab.stack.client.relays() if r["proto"] == "tcp"]
            return rows[0] if rows else None

        assert wait_until(lambda: (r := row()) is not None and r["bytes_up"] == 3)
        r = row()
        assert r is not None
        assert r["destination"] == f"{SERVER_V4}:7002" and r["client"].startswith("198.18.0.1:")
        assert (r["state"], r["bytes_down"]) == ("open", 5)

        def relayed_down() -> float:
            text = lab.ns.run(["curl", "-s", "http://127.0.0.1:9109/metrics"]).stdout
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("shardnet_relay_bytes_total{")
                and 'proto="tcp"' in line and 'dir="down"' in line
            )  # fmt: skip

        assert wait_until(lambda: relayed_down() == 5.0, timeout=5)
        socat.stdin.close()  # the client's FIN: the server ends, and so does the flow
        assert wait_until(lambda: row() is None, timeout=10)
        assert socat.wait(timeout=10) == 0


def test_a_client_that_does_not_read_stops_the_relay_reading(lab: Lab) -> None:
    size = 100_000_000
    lab.serve(
        f"""
        import socket
        s = socket.create_server(("{SERVER_V4}", 7003))
        c, _ = s.accept()
        chunk = b"z" * 65536
        sent = 0
        while sent < {size}:
            sent += c.send(chunk[: {size} - sent])
        c.close()
        """,
        7003,
    )
    client = lab.client.popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import socket, sys
            c = socket.create_connection(("{SERVER_V4}", 7003))
            sys.stdin.readline()  # read nothing until told
            got = 0
            while data := c.recv(1 << 20):
                got += len(data)
            print(got)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    assert lab.stack.client is not None

    def down() -> int:
        assert lab.stack.client is not None
        rows = [r for r in lab.stack.client.relays() if r["proto"] == "tcp"]
        return int(rows[0].get("bytes_down", 0)) if rows else 0

    assert wait_until(lambda: down() > 1_000_000, timeout=10)
    seen: list[int] = []

    def stalled() -> bool:  # the same figure three polls in a row
        seen.append(down())
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    assert wait_until(stalled, timeout=20, interval=0.5)
    # What the relay took from the server is what the client's window, the
    # shardnet connection's buffers and its own write buffer hold: not 100 MB.
    assert seen[-1] < 32_000_000
    client.stdin.write("go\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == str(size)


def test_relay_rules_deny_by_prefix_and_port(tmp_path: Path) -> None:
    rules = ("--relay-rule", "deny,198.19.0.10/32,7004", "--relay-rule", "deny,2001:db8:19::/48")
    with relay_lab(tmp_path, *rules) as lab:
        lab.serve(
            f"""
            import socket, threading
            def serve(port):
                s = socket.create_server(("{SERVER_V4}", port))
                while True:
                    c, _ = s.accept()
                    c.sendall(b"%d" % port)
                    c.close()
            threading.Thread(target=serve, args=(7004,), daemon=True).start()
            serve(7005)
            """,
            7005,
        )
        out = lab.client.python(
            f"""
            import socket
            for port in (7004, 7005):
                try:
                    c = socket.create_connection(("{SERVER_V4}", port), timeout=10)
                    print(c.recv(16).decode())
                except OSError as exc:
                    print(type(exc).__name__)
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.connect(("{SERVER_V6}", 53))
            u.send(b"query")
            try:
                u.recv(64)
            except OSError as exc:  # ICMP port unreachable on a connected socket
                print(type(exc).__name__)
            """,
            timeout=60,
        ).stdout.split()
        assert out == ["ConnectionRefusedError", "7005", "ConnectionRefusedError"]

        def denied() -> tuple[int, int]:
            shards = lab.stack.call("stats")["shards"]
            return (
                sum(s["gauges"].get("relay/tcp_denied", 0) for s in shards),
                sum(s["gauges"].get("relay/udp_denied", 0) for s in shards),
            )

        seen = []
        ok = wait_until(lambda: seen.append(denied()) or seen[-1] == (1, 1), timeout=5)
        assert ok, seen


SOCKS = "198.19.0.20"


def test_through_a_socks5_upstream(tmp_path: Path) -> None:
    # The upstream (tests/socks5_server.py, user/password) runs in the server
    # namespace; the relay's sockets go to it only, and it opens the flows.
    upstream = f"socks5://ann:s3cret@{SOCKS}:1080"
    with relay_lab(tmp_path, "--relay", upstream) as lab:
        lab.server.run(f"ip addr add {SOCKS}/32 dev lo")
        socks = lab.server.popen(
            [sys.executable, "-m", "tests.socks5_server", SOCKS, "1080", "ann", "s3cret"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert wait_until(lambda: ":1080 " in lab.server.run(["ss", "-lntH"]).stdout, timeout=10)
        lab.serve(
            f"""
            import socket, threading
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("{SERVER_V4}", 53))
            def answer():
                while True:
                    query, peer = u.recvfrom(2048)
                    u.sendto(b"answer to " + query, peer)
            threading.Thread(target=answer, daemon=True).start()
            s = socket.create_server(("{SERVER_V4}", 7006))
            while True:
                c, _ = s.accept()
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                c.sendall(b"%d" % len(data))
                c.close()
            """,
            7006,
        )
        out = lab.client.python(
            f"""
            import socket
            c = socket.create_connection(("{SERVER_V4}", 7006), timeout=10)
            c.sendall(b"y" * 1_000_000)
            c.shutdown(socket.SHUT_WR)
            print(c.recv(64).decode())
            try:
                socket.create_connection(("{SERVER_V4}", 9), timeout=10)
            except OSError as exc:
                print(type(exc).__name__)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.sendto(b"q", ("{SERVER_V4}", 53))
            data, peer = u.recvfrom(64)
            print(data.decode(), peer[0], peer[1])
            """,
            timeout=60,
        ).stdout.splitlines()
        assert out == ["1000000", "ConnectionRefusedError", f"answer to q {SERVER_V4} 53"]
        socks.terminate()
        log = socks.communicate(timeout=10)[0]
        assert f"CONNECT {SERVER_V4} 7006" in log and f"CONNECT {SERVER_V4} 9" in log
        assert "ASSOCIATE" in log


def test_a_destination_over_its_limit_is_refused(tmp_path: Path) -> None:
    # One shard, so that its limits are the stack's.
    with relay_lab(tmp_path, "--relay-limits", "per_destination=2", shards=1) as lab:
        lab.server.run("ip addr add 198.19.0.11/32 dev lo")
        lab.serve(
            """
            import socket, threading
            s = socket.create_server(("0.0.0.0", 7007))
            held = []
            while True:
                held.append(s.accept()[0])  # held open
            """,
            7007,
        )
        out = lab.client.python(
            f"""
            import socket
            held = []
            for host in ("{SERVER_V4}", "{SERVER_V4}", "{SERVER_V4}", "198.19.0.11"):
                try:
                    held.append(socket.create_connection((host, 7007), timeout=10))
                    print("connected")
                except OSError as exc:
                    print(type(exc).__name__)
            """,
            timeout=60,
        ).stdout.split()
        assert out == ["connected", "connected", "ConnectionRefusedError", "connected"]


def test_own_addresses_keep_their_apps_and_others_are_relayed(tmp_path: Path) -> None:
    # A listener on port 80 of every address of ours serves 198.18.0.2; port
    # 80 of any other address is relayed (nothing listens there: refused).
    with relay_lab(tmp_path, "--serve", "http:80") as lab:
        page = lab.client.run(["curl", "-sS", "--max-time", "10", "http://198.18.0.2/"]).stdout
        assert "<h1>shardnet</h1>" in page
        r = lab.client.run(["curl", "-sS", "--max-time", "10", f"http://{SERVER_V4}/"], check=False)
        assert r.returncode == 7, r.stderr  # couldn't connect: the destination refused


def test_udp_flows_end_when_idle_dns_sooner(lab: Lab) -> None:
    lab.serve(
        f"""
        import socket, selectors
        sel = selectors.DefaultSelector()
        for port in (53, 5300):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("{SERVER_V4}", port))
            sel.register(s, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                data, peer = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(data, peer)
        """,
        5300,
    )
    sent = time.monotonic()
    lab.client.python(
        f"""
        import socket
        for port in (53, 5300):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.sendto(b"q", ("{SERVER_V4}", port))
            assert u.recvfrom(64)[0] == b"q"
        """
    )
    assert lab.stack.client is not None

    def udp_ports() -> list[str]:
        assert lab.stack.client is not None
        rows = lab.stack.client.relays()
        return sorted(r["destination"].rsplit(":", 1)[1] for r in rows if r["proto"] == "udp")

    assert udp_ports() == ["53", "5300"]
    # DNS flows end after 10 s idle, others after 60 s.
    assert wait_until(lambda: udp_ports() == ["5300"], timeout=15, interval=0.5)
    assert time.monotonic() - sent >= 9.5  # not before its idle time
