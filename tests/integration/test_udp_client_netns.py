"""Sockets on ephemeral ports in one shard, reached by flows that hash to
either shard: unconnected UDP sockets asking the kernel peer get every
answer, and an ephemeral TCP listener in each shard takes every connection
(steered to the shard that owns the port), as on a kernel stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..apps.udp_client_probe import ASK, REPORT, SOCKETS
from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("udpcli") as ns:
        yield ns


def test_every_unconnected_socket_gets_its_answers(ns: Netns) -> None:
    with StackProcess(
        ns, "--ipv4", "198.18.0.2/24", "--app", "tests.apps.udp_client_probe:main"
    ) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(
            f"""
            import socket, time
            ask = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            ask.bind(("{KERNEL_V4}", {ASK}))
            ask.setblocking(False)
            report = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            report.bind(("{KERNEL_V4}", {REPORT}))
            report.setblocking(False)
            done, askers = {{}}, set()
            end = time.time() + 20
            while time.time() < end and not (
                len(done) == 2 and all(v == "{SOCKETS}/{SOCKETS}" for v in done.values())
            ):
                try:
                    data, peer = ask.recvfrom(100)
                    askers.add(peer)
                    ask.sendto(b"answer", peer)
                except BlockingIOError:
                    pass
                try:
                    data, _ = report.recvfrom(100)
                    shard, _, result = data.decode().partition(": ")
                    done[shard] = result
                except BlockingIOError:
                    time.sleep(0.005)
            print(sorted(done.items()), len(askers))
            """,
            timeout=40,
        ).stdout
        assert (
            out.strip()
            == f"[('shard 0', '{SOCKETS}/{SOCKETS}'), ('shard 1', '{SOCKETS}/{SOCKETS}')] {2 * SOCKETS}"
        ), out
        stats = stack.call("stats")
        steered = stats["dispatcher"]["steered"]
        assert steered > 0  # some answers did hash to the other shard


def test_an_ephemeral_listener_in_each_shard_takes_every_connection(ns: Netns) -> None:
    with StackProcess(
        ns, "--ipv4", "198.18.0.2/24", "--app", "tests.apps.ephemeral_server_probe:main"
    ) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}", check=False)
        out = ns.python(
            f"""
            import socket, time
            report = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            report.bind(("{KERNEL_V4}", 9997))
            report.settimeout(5)
            ports = {{}}
            while len(ports) < 2:
                data, _ = report.recvfrom(100)
                _, shard, _, port = data.decode().split()
                ports[shard] = int(port)
            ok = 0
            for shard, port in sorted(ports.items()):
                for i in range(8):
                    c = socket.create_connection(("198.18.0.2", port), timeout=5)
                    c.sendall(b"hello %d" % i)
                    ok += c.recv(100) == b"hello %d" % i
                    c.close()
            print(sorted(p % 2 for p in ports.values()), ok)
            """,
            timeout=60,
        ).stdout
        assert out.strip() == "[0, 1] 16", out  # each shard owns its port; all 16 echoed
        assert stack.call("stats")["dispatcher"]["steered"] > 0
