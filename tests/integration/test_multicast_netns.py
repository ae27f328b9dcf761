"""Multicast against the kernel as the peer: the TAP hangs off a Linux bridge
with IGMP/MLD snooping and a querier, and unregistered multicast is not
flooded to it — so shardnet receives a group only if the bridge accepted
its IGMPv3 / MLDv2 reports (the real-world case: switches with snooping).

Groups: 234.198.18.7 (RFC 6034 unicast-prefix-based group of 198.18.0.0/24)
and ff3e:40:2001:db8::7 (RFC 3306 group of 2001:db8::/64). Everything stays
inside the test's namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardnet.common.addr import format_ip, parse_ip
from shardnet.common.wire.ipv6 import solicited_node_multicast

from ..apps.multicast_probe import GROUP4, GROUP6, PORT
from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"
BRIDGE = "snbr0"


# The bridge's querier speaks IGMPv3/MLDv2, or IGMPv2/MLDv1 (Linux's
# defaults), which puts shardnet in its compatibility modes (RFC 3376 §7,
# RFC 3810 §8). A namespace and a control folder per variant.
@pytest.fixture(scope="module", params=[(3, 2), (2, 1)], ids=["igmpv3-mldv2", "igmpv2-mldv1"])
def versions(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param


@pytest.fixture(scope="module")
def control_dir(tmp_path_factory: pytest.TempPathFactory, versions: tuple[int, int]) -> Path:
    return tmp_path_factory.mktemp("mcast")


@pytest.fixture(scope="module")
def ns(versions: tuple[int, int]) -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("mcast") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns, control_dir: Path, versions: tuple[int, int]) -> Iterator[StackProcess]:
    args = ("--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64")
    os.environ["SN_MCAST_DIR"] = str(control_dir)  # the app's control files
    try:
        with StackProcess(ns, *args, "--app", "tests.apps.multicast_probe:main") as stack:
            # Times in centiseconds: a query every 5 s answered within 1 s; a
            # left group is dropped 2 x 0.5 s after the leave report.
            ns.run(
                f"ip link add {BRIDGE} type bridge mcast_snooping 1 mcast_querier 1 "
                f"mcast_igmp_version {versions[0]} mcast_mld_version {versions[1]} "
                "mcast_query_interval 500 "
                "mcast_query_response_interval 100 mcast_last_member_interval 50 "
                "mcast_startup_query_interval 100"
            )
            ns.run(f"ip link set {TAP} master {BRIDGE}")
            ns.run(f"bridge link set dev {TAP} mcast_flood off")
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {BRIDGE}")
            ns.run(f"ip addr add {KERNEL_V6}/64 dev {BRIDGE} nodad")
            ns.run(f"ip link set {BRIDGE} up")
            # The kernel's routes to the groups (IPv6 has one only once the
            # bridge is running; explicit ones make sends independent of that).
            ns.run(f"ip route add 234.198.18.0/24 dev {BRIDGE}")
            ns.run(f"ip -6 route add ff3e::/16 dev {BRIDGE}")
            assert wait_until(
                lambda: "state UP" in ns.run(f"ip link show {BRIDGE}").stdout, timeout=10
            )
            yield stack
    finally:
        os.environ.pop("SN_MCAST_DIR", None)


def tap_groups(ns: Netns) -> set[str]:
    """The groups the bridge forwards to the TAP (its snooping table)."""
    out = ns.run(f"bridge -j mdb show dev {BRIDGE}").stdout
    groups = set()
    for entry in json.loads(out or "[]"):
        for row in entry.get("mdb", []):
            if row.get("port") == TAP:
                groups.add(format_ip(parse_ip(row["grp"])))
    return groups


def test_the_bridge_learns_our_groups_from_our_reports(
    ns: Netns, stack: StackProcess, versions: tuple[int, int]
) -> None:
    solicited = format_ip(solicited_node_multicast(parse_ip(SHARDNET_V6)))
    wanted = {GROUP4, GROUP6, solicited}
    assert wait_until(lambda: wanted <= tap_groups(ns), timeout=20), tap_groups(ns)
    igmp, mld = f"igmpv{versions[0]}", f"mldv{versions[1]}"  # what the querier speaks

    def rows() -> list[tuple[str, list[int], str]]:
        return [(r["group"], r["shards"], r["protocol"]) for r in stack.call("groups")]

    expected = [(GROUP4, [0, 1], igmp), (GROUP6, [0, 1], mld)]
    assert wait_until(lambda: rows() == expected, timeout=10), rows()
    ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
    table = subprocess.run([*ctl, "groups"], capture_output=True, text=True, check=True).stdout
    assert [line.split() for line in table.splitlines()][1:] == [
        ["1", GROUP4, "0,1", igmp],
        ["1", GROUP6, "0,1", mld],
    ]


def ask_group(ns: Netns, v6: bool, payload: str = "hello") -> str:
    """Send ``payload`` to the group from the kernel; the unicast answer
    (empty when none came)."""
    family, group, iface = (
        ("AF_INET6", GROUP6, f"socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex('{BRIDGE}')")
        if v6
        else ("AF_INET", GROUP4, f"socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('{KERNEL_V4}')")
    )  # fmt: skip
    out = ns.python(f"""
        import socket
        s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
        s.setsockopt({iface})
        s.settimeout(0.5)
        for _ in range(4):
            s.sendto(b"{payload}", ("{group}", {PORT}))
            try:
                data, peer = s.recvfrom(1000)
                print(data.decode(), peer[0])
                break
            except TimeoutError:
                continue
    """).stdout
    return out.strip()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_kernel_datagram_to_the_group_reaches_the_member_socket(
    ns: Netns, stack: StackProcess, v6: bool
) -> None:
    assert wait_until(lambda: {GROUP4, GROUP6} <= tap_groups(ns), timeout=20)
    answer = ask_group(ns, v6)
    text, _, peer = answer.rpartition(" ")
    assert text.startswith("shard ") and text.endswith(" got hello"), answer
    assert peer == (SHARDNET_V6 if v6 else SHARDNET_V4)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_shardnet_sends_to_the_group_with_ttl_1(
    ns: Netns, stack: StackProcess, control_dir: Path, v6: bool
) -> None:
    if v6:
        setup = [
            "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
            f"s.bind(('::', {PORT + 1}))",
            f"mreq = socket.inet_pton(socket.AF_INET6, '{GROUP6}')"
            f" + struct.pack('@I', socket.if_nametoindex('{BRIDGE}'))",
            "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)",
            "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)",
            "want = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)",
        ]
    else:
        setup = [
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
            f"s.bind(('0.0.0.0', {PORT + 1}))",
            f"mreq = socket.inet_aton('{GROUP4}') + socket.inet_aton('{KERNEL_V4}')",
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)",
            "s.setsockopt(socket.IPPROTO_IP, 12, 1)",  # IP_RECVTTL (not in Python's socket)
            "want = (socket.IPPROTO_IP, socket.IP_TTL)",
        ]
    code = "\n".join(
        [
            "import socket, struct",
            *setup,
            "s.settimeout(5)",
            "data, anc, _, peer = s.recvmsg(1000, 100)",
            "ttl = [struct.unpack('@i', d)[0] for lvl, k, d in anc if (lvl, k) == want]",
            "print(peer[0], ttl, data.decode())",
        ]
    )
    (control_dir / "send").touch()
    try:
        out = ns.python(code).stdout.strip()
    finally:
        (control_dir / "send").unlink()
    peer, ttl, text = out.split(" ", 2)
    assert peer == (SHARDNET_V6 if v6 else SHARDNET_V4), out
    assert ttl == "[1]", out  # RFC 1112 §6.1 / RFC 3493 §5.2: TTL 1 by default
    assert text.startswith("from shard "), out


def test_memberships_come_back_after_shard_restarts(ns: Netns, stack: StackProcess) -> None:
    """A restarted shard's old sockets' groups are forgotten and its app
    joins again; a restarted shard 0 learns the groups of the others again."""

    def members() -> list[tuple[str, list[int]]]:
        return [(r["group"], r["shards"]) for r in stack.call("groups")]

    for victim in (1, 0):
        assert stack.kill_shard(victim)
        assert wait_until(lambda: members() == [(GROUP4, [0, 1]), (GROUP6, [0, 1])], timeout=10), (
            members()
        )
    assert ask_group(ns, False).startswith("shard ")


def test_leaving_stops_the_traffic(ns: Netns, stack: StackProcess, control_dir: Path) -> None:
    assert wait_until(lambda: {GROUP4, GROUP6} <= tap_groups(ns), timeout=20)
    (control_dir / "leave").touch()
    # The leave reports make the bridge query the group and drop the TAP.
    assert wait_until(lambda: not ({GROUP4, GROUP6} & tap_groups(ns)), timeout=15), tap_groups(ns)
    assert stack.call("groups") == []
    assert ask_group(ns, False) == "" and ask_group(ns, True) == ""
