"""SO_BINDTODEVICE on TCP sockets, against the kernel on the other end of
the TAP (``tests/apps/bind_probe.py`` holds the sockets): a listener bound
to another NIC does not take the link's SYNs; of two listeners on one port
the one bound to the receiving NIC wins over the unbound one, while a
connection arriving on ``lo`` goes to the unbound one; an active open bound
to a NIC leaves by it, or fails with ENETUNREACH when it has no route; an
open connection bound to ``lo`` takes no more segments from the TAP (they
are reset, as the kernel's own sockets do)."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("bindev") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--no-slaac", "--app", "tests.apps.bind_probe:main"]
    with StackProcess(ns, *args) as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        yield stack


def kernel_client(ns: Netns, port: int, line: str = "") -> str:
    """What the kernel reads from shardnet's ``port`` (after sending
    ``line``), or the error's name."""
    return ns.python(f"""
        import socket
        try:
            s = socket.create_connection(("{SHARDNET_V4}", {port}), timeout=5)
            s.sendall({line!r}.encode())
            print(s.makefile().readline().strip())
        except OSError as exc:
            print(type(exc).__name__)
    """).stdout.strip()


def test_a_listener_bound_elsewhere_takes_no_syn(ns: Netns, stack: StackProcess) -> None:
    """Bound to ``lo``: the kernel's SYNs over the TAP are refused (RST),
    from every shard (several connections, several source ports)."""
    assert {kernel_client(ns, 7300) for _ in range(6)} == {"ConnectionRefusedError"}


def test_the_listener_bound_to_the_receiving_nic_wins(ns: Netns, stack: StackProcess) -> None:
    """Port 7301 has an unbound listener and one bound to the TAP: the
    kernel's connections (arriving on the TAP) reach the bound one in every
    shard; shardnet's own connection over ``lo`` reaches the unbound one."""
    assert {kernel_client(ns, 7301) for _ in range(6)} == {"link"}
    assert kernel_client(ns, 7302, "- 127.0.0.1 7301\n") == "any"
    assert kernel_client(ns, 7302, "lo 127.0.0.1 7301\n") == "any"


def test_a_bound_active_open_leaves_by_its_nic(ns: Netns, stack: StackProcess) -> None:
    server = ns.popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import socket
            srv = socket.create_server(("{KERNEL_V4}", 9300))
            while True:
                c, _ = srv.accept()
                c.sendall(b"kernel\\n")
                c.close()
        """)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: "9300" in ns.run("ss -ltn").stdout)
    assert kernel_client(ns, 7302, f"{TAP} {KERNEL_V4} 9300\n") == "kernel"
    assert kernel_client(ns, 7302, f"- {KERNEL_V4} 9300\n") == "kernel"
    # No route to the kernel's address out of lo: ENETUNREACH, as Linux.
    assert kernel_client(ns, 7302, f"lo {KERNEL_V4} 9300\n") == f"errno={errno.ENETUNREACH}"
    assert kernel_client(ns, 7302, f"nope {KERNEL_V4} 9300\n") == f"errno={errno.ENODEV}"
    server.kill()
    server.wait()


def sends_until_reset(ns: Netns, host: str, port: int, nic: str) -> str:
    """A kernel client asks the server at ``host:port`` to bind its end of
    the connection to ``nic``, then sends a byte every 50 ms: "reset" once
    that fails with a reset, "open" if it still works after 1.5 s."""
    return ns.python(f"""
        import socket, time
        s = socket.create_connection(("{host}", {port}), timeout=5)
        s.sendall(b"{nic}\\n")
        deadline = time.monotonic() + 1.5
        try:
            while time.monotonic() < deadline:
                s.sendall(b"x")
                time.sleep(0.05)
            print("open")
        except (ConnectionResetError, BrokenPipeError):
            print("reset")
    """).stdout.strip()


def test_a_connection_bound_to_another_nic_takes_no_segment(ns: Netns, stack: StackProcess) -> None:
    """Linux's demux matches a bound socket only for segments arriving on
    its device: a kernel server's accepted socket bound to ``lo`` resets
    what its client sends to the TAP's address (Linux counts that local
    traffic as arriving on the TAP), bound to the TAP it takes it.
    shardnet's connection bound to ``lo`` resets what the kernel sends over
    the TAP (7303's listener is not bound: the segment is one for no
    connection), bound to the TAP it takes it."""
    server = ns.popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import socket
            srv = socket.create_server(("{KERNEL_V4}", 9301))
            while True:
                c, _ = srv.accept()
                nic = c.makefile("rb").readline().strip()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, nic)
        """)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: "9301" in ns.run("ss -ltn").stdout)
    assert sends_until_reset(ns, KERNEL_V4, 9301, "lo") == "reset"  # the kernel's own
    assert sends_until_reset(ns, KERNEL_V4, 9301, TAP) == "open"
    server.kill()
    server.wait()
    before = counted_net(stack, "tcp_bound_elsewhere")
    assert sends_until_reset(ns, SHARDNET_V4, 7303, "lo") == "reset"
    assert sends_until_reset(ns, SHARDNET_V4, 7303, TAP) == "open"
    # Shards report their counters about once a second.
    assert wait_until(lambda: counted_net(stack, "tcp_bound_elsewhere") > before, timeout=5)


def counted_net(stack: StackProcess, name: str) -> int:
    """A ``net`` counter of ``ctl stats``, summed over the shards."""
    return sum(int(s["counters"].get(f"net/{name}", 0)) for s in stack.call("stats")["shards"])
