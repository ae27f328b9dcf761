"""UDP clients inside shardnet: unconnected sockets on ephemeral ports in
every shard ask the kernel peer, whose answers hash to either shard; every
socket gets its answer (steered to the shard that owns its port), as a
socket on a kernel stack would."""

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
