"""IP_RECVTOS / IPV6_RECVTCLASS and IP_TOS / IPV6_TCLASS on shardnet's UDP
sockets against the kernel (``tests/apps/tos_probe.py`` holds them): the
kernel sends with a TOS, shardnet's application reports it only when it
asked; shardnet sends with a TOS per datagram or from the socket option,
and the kernel reads it with its own IP_RECVTOS / IPV6_RECVTCLASS. The
two receive options are independent, as on a kernel socket: each
combination reports what a kernel dual-stack socket reports."""

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
    with Netns("udptos") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64", "--no-slaac",
            "--app", "tests.apps.tos_probe:main"]  # fmt: skip
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip addr add {KERNEL_V6}/64 dev {TAP} nodad")
        yield stack


def exchange(ns: Netns, v6: bool, port: int, tos: int, replies: int) -> list[tuple[str, int]]:
    """Send one datagram with ``tos`` from a kernel socket (several source
    ports: several shards), read ``replies`` answers with their TOS."""
    family, dst = ("AF_INET6", SHARDNET_V6) if v6 else ("AF_INET", SHARDNET_V4)
    level, send_opt, recv_opt, cmsg_type = (
        ("IPPROTO_IPV6", "IPV6_TCLASS", "IPV6_RECVTCLASS", "IPV6_TCLASS")
        if v6
        else ("IPPROTO_IP", "IP_TOS", "IP_RECVTOS", "IP_TOS")
    )
    out = ns.python(f"""
        import socket
        for _ in range(4):
            s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.setsockopt(socket.{level}, socket.{send_opt}, {tos})
            s.setsockopt(socket.{level}, getattr(socket, "{recv_opt}", 13), 1)
            s.sendto(b"hello", ("{dst}", {port}))
            for _ in range({replies}):
                data, anc, _, _ = s.recvmsg(100, 64)
                got = [d for lvl, t, d in anc if lvl == socket.{level} and t == socket.{cmsg_type}]
                print(data.decode().replace(" ", "_"), int.from_bytes(got[0], "little"))
            s.close()
    """).stdout
    return [(text, int(t)) for text, t in (line.split() for line in out.splitlines())]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_no_tos_reported_unless_asked(ns: Netns, stack: StackProcess, v6: bool) -> None:
    got = exchange(ns, v6, 7400, 0xB8, 1)
    assert {text for text, _ in got} == {"tos=None"} and len(got) == 4


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tos_both_ways(ns: Netns, stack: StackProcess, v6: bool) -> None:
    """The kernel's TOS reaches the app; the app's replies carry 0x28 (per
    datagram) and 0x10 (the socket's IP_TOS / IPV6_TCLASS) to the kernel."""
    got = exchange(ns, v6, 7401, 0xB8, 2)
    assert len(got) == 8 and set(got) == {("tos=184_per-datagram", 0x28), ("tos=184_socket", 0x10)}


def kernel_reports(ns: Netns, options: tuple[str, ...]) -> tuple[int | None, int | None]:
    """What a kernel dual-stack UDP socket with ``options`` on reports for an
    IPv4 and an IPv6 datagram sent with TOS / traffic class 0xB8 (over lo)."""
    out = ns.python(f"""
        import json, socket
        r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        r.bind(("::", 0))
        for name in {list(options)!r}:
            level = socket.IPPROTO_IP if name == "IP_RECVTOS" else socket.IPPROTO_IPV6
            r.setsockopt(level, getattr(socket, name, 13 if name == "IP_RECVTOS" else 66), 1)
        port = r.getsockname()[1]
        for family, level, opt, dst in (
            (socket.AF_INET, socket.IPPROTO_IP, socket.IP_TOS, "127.0.0.1"),
            (socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_TCLASS, "::1"),
        ):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(level, opt, 0xB8)
            s.sendto(b"x", (dst, port))
            _, anc, _, _ = r.recvmsg(10, 64)
            print(json.dumps(int.from_bytes(anc[0][2], "little") if anc else None))
    """).stdout.split()
    return json.loads(out[0]), json.loads(out[1])


@pytest.mark.parametrize(
    ("port", "options"),
    [
        (7400, ()),
        (7402, ("IP_RECVTOS",)),
        (7403, ("IPV6_RECVTCLASS",)),
        (7401, ("IP_RECVTOS", "IPV6_RECVTCLASS")),
    ],
    ids=["none", "ip_recvtos", "ipv6_recvtclass", "both"],
)
def test_recvtos_and_recvtclass_are_independent_as_on_the_kernel(
    ns: Netns, stack: StackProcess, port: int, options: tuple[str, ...]
) -> None:
    """A dual-stack socket reports an IPv4 datagram's TOS only with
    IP_RECVTOS, an IPv6 one's traffic class only with IPV6_RECVTCLASS:
    shardnet's app reports exactly what the kernel's socket does."""
    kernel = kernel_reports(ns, options)
    replies = 2 if port == 7401 else 1
    ours = tuple(
        {text.split("_")[0] for text, _ in exchange(ns, v6, port, 0xB8, replies)}
        for v6 in (False, True)
    )
    assert ours == tuple({f"tos={value}"} for value in kernel), (kernel, ours)
