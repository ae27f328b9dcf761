"""--forwarding: shardnet as the router between two hosts on its link (two
subnets on one bridge), with TTL/hop-limit handling and ICMP errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

ROUTER_A, ROUTER_B = "198.18.1.254", "198.18.2.254"
HOST_A, HOST_B = "198.18.1.1", "198.18.2.1"
ROUTER_A6, ROUTER_B6 = "2001:db8:1::fe", "2001:db8:2::fe"
HOST_A6, HOST_B6 = "2001:db8:1::1", "2001:db8:2::1"


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Netns, Netns, Netns, StackProcess]]:
    """Namespace `hub` holds the TAP and a bridge; hosts A and B hang off the
    bridge by veth, each in its own namespace, each with shardnet as gateway."""
    skip_unless_netns()
    with Netns("fwhub") as hub, Netns("fwa") as a, Netns("fwb") as b:
        args = ["--forwarding", "--ipv4", f"{ROUTER_A}/24", "--ipv4", f"{ROUTER_B}/24",
                "--ipv6", f"{ROUTER_A6}/64", "--ipv6", f"{ROUTER_B6}/64"]  # fmt: skip
        with StackProcess(hub, *args) as stack:
            hub.run("ip link add snbr0 type bridge && ip link set snbr0 up")
            hub.run(f"ip link set {TAP} master snbr0")
            for host, addr, addr6, gw, gw6, name in (
                (a, HOST_A, HOST_A6, ROUTER_A, ROUTER_A6, "snfa"),
                (b, HOST_B, HOST_B6, ROUTER_B, ROUTER_B6, "snfb"),
            ):
                hub.run(f"ip link add {name}0 type veth peer name {name}1")
                hub.run(f"ip link set {name}1 netns {host.name}")
                hub.run(f"ip link set {name}0 master snbr0 && ip link set {name}0 up")
                host.run(f"ip link set {name}1 up && ip addr add {addr}/24 dev {name}1")
                host.run(f"ip addr add {addr6}/64 dev {name}1 nodad")
                host.run(f"ip route add default via {gw} && ip -6 route add default via {gw6}")
            yield hub, a, b, stack


def test_host_a_reaches_host_b_through_shardnet(lab) -> None:
    _, a, _, stack = lab
    for target in (HOST_B, HOST_B6):
        r = a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", target], check=False, timeout=30)
        assert " 0% packet loss" in r.stdout, r.stdout + r.stderr

    def forwarded() -> int:  # shards report their counters about once a second
        return sum(s["counters"].get("net/forwarded_v4", 0) for s in stack.call("stats")["shards"])

    assert wait_until(lambda: forwarded() >= 6, timeout=3)  # 3 requests and 3 replies


def test_ttl_1_gets_time_exceeded_from_the_router(lab) -> None:
    _, a, _, _ = lab
    r = a.run(["ping", "-c", "1", "-t", "1", "-W", "2", HOST_B], check=False, timeout=20)
    assert f"From {ROUTER_A}" in r.stdout and "Time to live exceeded" in r.stdout, r.stdout
    r6 = a.run(["ping", "-6", "-c", "1", "-t", "1", "-W", "2", HOST_B6], check=False, timeout=20)
    assert f"From {ROUTER_A6}" in r6.stdout and "Time exceeded" in r6.stdout, r6.stdout


def test_tcp_through_the_router(lab) -> None:
    _, a, b, _ = lab
    server = b.popen(["socat", "TCP-LISTEN:7000,reuseaddr", "EXEC:cat"], stdout=subprocess.DEVNULL)
    try:
        out = a.run(
            ["socat", "-t", "3", "-", f"TCP:{HOST_B}:7000,retry=20,interval=0.2"],
            input="through\n",
            timeout=30,
        ).stdout
        assert out == "through\n"
    finally:
        server.kill()
        server.wait()


def test_ctl_turns_forwarding_off_and_on_in_every_shard(lab) -> None:
    _, a, _, stack = lab
    ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
    subprocess.run([*ctl, "forwarding", "off"], check=True, capture_output=True)
    try:
        assert (
            " 100% packet loss"
            in a.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", HOST_B], check=False).stdout
        )
    finally:
        subprocess.run([*ctl, "forwarding", "on"], check=True, capture_output=True)
    assert (
        " 0% packet loss"
        in a.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", HOST_B], check=False).stdout
    )
