"""``--multi-queue``: one TAP queue per shard, against the kernel.

Each shard reads its own queue and writes on it; the kernel puts each
flow's frames on the queue of the shard that owns it from the first frame
(the steering program), and ARP, NDP, fragments and ICMP errors on the
dispatcher's. From outside nothing differs: ping, HTTP, many connections
and large transfers work over IPv4 and IPv6, intact, and the shards do read
frames from their queues themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess
from .test_offload_netns import transfer

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Netns, StackProcess]]:
    skip_unless_netns()
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64", "--multi-queue"]
    args += ["--serve", "echo:7", "--serve", "http:80", "--app", "tests.apps.bulk_probe:main"]
    with Netns("mq") as ns, StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield ns, stack


@pytest.mark.parametrize("target", [SHARDNET_V4, SHARDNET_V6])
def test_ping_http_and_bulk_through_the_shards_queues(
    lab: tuple[Netns, StackProcess], target: str
) -> None:
    ns, _ = lab
    r = ns.run(["ping", "-c", "5", "-i", "0.05", "-W", "2", target], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout
    url = f"http://[{target}]/" if ":" in target else f"http://{target}/"
    assert "<h1>shardnet</h1>" in ns.run(["curl", "-sS", "-m", "10", url]).stdout
    assert transfer(ns, target, 100_000_000, seed=3) == ["True", "True"]


def test_many_connections_each_intact(lab: tuple[Netns, StackProcess]) -> None:
    ns, _ = lab
    out = ns.python(f"""
        import hashlib, os, socket
        from concurrent.futures import ThreadPoolExecutor
        def one(i):
            data = os.urandom(200_000)
            s = socket.create_connection(("{SHARDNET_V4}", 7), timeout=20)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(1 << 16):
                got += chunk
            s.close()
            return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        with ThreadPoolExecutor(16) as pool:
            print(sum(pool.map(one, range(64))))
    """, timeout=120).stdout.strip()  # fmt: skip
    assert out == "64"


def test_every_shard_reads_its_own_queue(lab: tuple[Netns, StackProcess]) -> None:
    ns, stack = lab
    # Flows to both shards (the kernel spreads them over the queues).
    ns.python(f"""
        import socket
        for i in range(32):
            s = socket.create_connection(("{SHARDNET_V4}", 7), timeout=10)
            s.sendall(b"x"); s.recv(1); s.close()
    """, timeout=60)  # fmt: skip

    def read() -> list[int]:
        shards = stack.call("stats")["shards"]
        return [s["gauges"].get("queue_rx_frames", 0) for s in shards]

    assert wait_until(lambda: all(n > 0 for n in read()), timeout=5), read()


def test_new_flows_go_straight_to_their_shard(lab: tuple[Netns, StackProcess]) -> None:
    """Every connection is a new flow: none of its frames takes the
    dispatcher hop (a shard hands the dispatcher what is not its own)."""
    ns, stack = lab
    before = stack.call("stats")["dispatcher"]
    assert before["steering"] == "ebpf"
    ns.python(f"""
        import socket
        for i in range(64):
            s = socket.create_connection(("{SHARDNET_V4}", 7), timeout=10)
            s.sendall(b"x"); s.recv(1); s.close()
    """, timeout=60)  # fmt: skip
    assert stack.call("stats")["dispatcher"]["from_queues"] == before["from_queues"]
