"""Kernel offloads through the TAP's virtio-net header, against the kernel.

With offloads (the default) the kernel hands shardnet TCP super-frames and
cuts shardnet's super-segments itself: 1 GB each way over IPv4 and IPv6
arrives intact (sha256 at both ends) and the average frame on the link is
far above the MTU both ways. With ``--no-offload`` every frame fits the MTU
and every checksum is shardnet's own, which the kernel verifies (its
``InCsumErrors`` stays 0 while the transfer is intact).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..netns import PROJECT_ROOT, Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"
GB = 1_000_000_000

CLIENT = """
import hashlib, socket, sys
sys.path.insert(0, {root!r})
from tests.apps.bulk_probe import SINK_PORT, SOURCE_PORT, stream
target, total, seed = {target!r}, {total}, {seed}
# kernel -> shardnet: the sink answers with its count and digest
s = socket.create_connection((target, SINK_PORT), timeout=60)
sent = hashlib.sha256()
for block in stream(seed, total):
    sent.update(block)
    s.sendall(block)
s.shutdown(socket.SHUT_WR)
answer = s.makefile().readline().split()
s.close()
up_ok = answer == [str(total), sent.hexdigest()]
# shardnet -> kernel: the source sends stream(seed + 1)
s = socket.create_connection((target, SOURCE_PORT), timeout=60)
s.sendall(f"{{total}} {{seed + 1}}\\n".encode())
got, count = hashlib.sha256(), 0
while chunk := s.recv(1 << 20):
    got.update(chunk)
    count += len(chunk)
want = hashlib.sha256()
for block in stream(seed + 1, total):
    want.update(block)
print(up_ok, count == total and got.hexdigest() == want.hexdigest())
"""


def transfer(ns: Netns, target: str, total: int, seed: int) -> list[str]:
    code = CLIENT.format(root=str(PROJECT_ROOT), target=target, total=total, seed=seed)
    return ns.python(code, timeout=240).stdout.split()


def kernel_csum_errors(ns: Netns) -> int:
    """The kernel's TCP checksum errors (``/proc/net/snmp`` InCsumErrors)."""
    lines = [ln.split() for ln in ns.run("cat /proc/net/snmp").stdout.splitlines()]
    tcp = [ln for ln in lines if ln and ln[0] == "Tcp:"]
    return int(dict(zip(tcp[0], tcp[1], strict=True))["InCsumErrors"])


def average_frames(stack: StackProcess) -> tuple[float, float]:
    """Mean bytes per frame the shards read from their rings and wrote."""
    rx_b = rx_f = tx_b = tx_f = 0
    for shard in stack.call("stats")["shards"]:
        c = shard["counters"]
        rx_b, rx_f = rx_b + c["rx_bytes"], rx_f + c["rx_frames"]
        tx_b, tx_f = tx_b + c["tx_bytes"], tx_f + c["tx_frames"]
    return rx_b / max(rx_f, 1), tx_b / max(tx_f, 1)


@pytest.fixture(scope="module", params=["tap", "tap-no-offload", "packet"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[Netns, StackProcess, bool]]:
    """The stack on a TAP with and without offloads, and on a veth through
    AF_PACKET with the virtio-net header (the kernel's veth sends TSO
    super-frames and takes GSO ones)."""
    skip_unless_netns()
    offload = request.param != "tap-no-offload"
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64"]
    args += ["--app", "tests.apps.bulk_probe:main"]
    if not offload:
        args.append("--no-offload")
    with Netns("off") as ns:
        peer = TAP
        if request.param == "packet":
            ns.run("ip link add snpk0 type veth peer name snpk1")
            ns.run("ip link set snpk0 up && ip link set snpk1 up")
            args += ["--packet", "snpk0"]
            peer = "snpk1"
        with StackProcess(ns, *args, tap=None if request.param == "packet" else TAP) as stack:
            ns.run(f"ip addr add {KERNEL_V4}/24 dev {peer}")
            ns.run(f"ip addr add {KERNEL_V6}/64 dev {peer} nodad")
            yield ns, stack, offload


@pytest.mark.parametrize("target", [SHARDNET_V4, SHARDNET_V6])
def test_bulk_both_ways_is_intact(lab: tuple[Netns, StackProcess, bool], target: str) -> None:
    ns, stack, offload = lab
    total = GB if offload else 20_000_000  # software checksums: a short transfer
    if stack.tap is None:
        total = GB // 5  # AF_PACKET: the same paths, a shorter run
    assert transfer(ns, target, total, seed=len(target)) == ["True", "True"]
    assert kernel_csum_errors(ns) == 0


def test_frames_are_super_frames_only_with_offloads(
    lab: tuple[Netns, StackProcess, bool],
) -> None:
    ns, stack, offload = lab
    transfer(ns, SHARDNET_V4, 20_000_000, seed=7)

    def settled() -> bool:  # the shards report their counters every second
        return average_frames(stack)[0] > 0

    assert wait_until(settled, timeout=5)
    rx, tx = average_frames(stack)
    if offload:
        assert rx > 8000 and tx > 8000  # GRO super-frames in, TSO super-segments out
    else:
        assert (
            rx <= 1514 + 11 and tx <= 1514
        )  # Ethernet frames (+ the ring record's tag and header)
