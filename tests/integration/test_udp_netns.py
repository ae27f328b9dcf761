"""UDP against the kernel as the peer: echo over IPv4 and IPv6 with socat,
whoami reporting TOS and a v4-mapped peer on a dual-stack socket, and ICMP
port unreachable reaching a shardnet socket as ConnectionRefusedError."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("udp") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = (
        "--ipv4",
        f"{SHARDNET_V4}/24",
        "--ipv6",
        f"{SHARDNET_V6}/64",
        "--serve",
        "echo:7",
        "--serve",
        "whoami:5000",
    )
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield stack


@pytest.mark.parametrize("target", [f"UDP4:{SHARDNET_V4}:7", f"UDP6:[{SHARDNET_V6}]:7"])
def test_socat_echo(ns: Netns, stack: StackProcess, target: str) -> None:
    lines = "".join(f"line {i}\n" for i in range(5))
    out = ns.run(["socat", "-t", "2", "-T", "3", "-", target], input=lines).stdout
    assert out == lines


@pytest.mark.parametrize("broadcast", ["198.18.0.255", "255.255.255.255"])
def test_a_broadcast_reaches_the_wildcard_socket(
    ns: Netns, stack: StackProcess, broadcast: str
) -> None:
    """RFC 1122 §3.3.6: the echo service's socket (bound to the wildcard,
    without SO_BROADCAST) receives a datagram sent to the subnet-directed
    or limited broadcast address, and answers it from its own address."""
    out = ns.python(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"{TAP}")
        s.settimeout(1)
        for _ in range(5):
            s.sendto(b"to all", ("{broadcast}", 7))
            try:
                data, peer = s.recvfrom(100)
                print(data.decode(), peer[0])
                break
            except TimeoutError:
                continue
    """).stdout  # fmt: skip
    assert out.split() == ["to", "all", SHARDNET_V4]


def whoami(ns: Netns, family: str, target: str, setup: str) -> dict:
    out = ns.python(f"""
        import socket
        s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
        {setup}
        s.settimeout(1)
        for _ in range(5):
            s.sendto(b"?", ("{target}", 5000))
            try:
                print(s.recv(1000).decode())
                break
            except TimeoutError:
                continue
    """).stdout
    return json.loads(out)


def test_whoami_sees_tos_and_the_v4_mapped_peer(ns: Netns, stack: StackProcess) -> None:
    got = whoami(ns, "AF_INET", SHARDNET_V4, "s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xb8)")
    assert got["tos"] == 0xB8
    assert got["peer"] == f"::ffff:{KERNEL_V4}" and got["local"] == f"::ffff:{SHARDNET_V4}"
    assert got["shard"] in (0, 1)


def test_whoami_over_ipv6_sees_the_traffic_class(ns: Netns, stack: StackProcess) -> None:
    got = whoami(
        ns, "AF_INET6", SHARDNET_V6, "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x20)"
    )
    assert (got["peer"], got["local"], got["tos"]) == (KERNEL_V6, SHARDNET_V6, 0x20)


def test_icmp_unreachable_reaches_a_shardnet_socket_as_connection_refused() -> None:
    skip_unless_netns()
    with (
        Netns("udpicmp") as ns,
        StackProcess(ns, "--ipv4", f"{SHARDNET_V4}/24", "--app", "tests.apps.udp_probe:main"),
    ):
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        out = ns.python(
            f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("{KERNEL_V4}", 9999))
            s.settimeout(20)
            seen = set()
            while len(seen) < 2:
                seen.add(s.recv(100).decode())
            print("\\n".join(sorted(seen)))
        """,
            timeout=40,
        ).stdout.split("\n")
    assert [line.strip() for line in out if line.strip()] == [
        "shard 0 ConnectionRefusedError",
        "shard 1 ConnectionRefusedError",
    ]
