"""A TUN link (``--tun``) against the kernel: an L3 point-to-point link with
no ARP or NDP, moved into a client namespace (``--tun-netns``) from which
ping and curl reach shardnet over IPv4 and IPv6; ``--pcap`` records it as
LINKTYPE_RAW."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.utils import rdpcap

from ..netns import Netns, skip_unless_netns
from ..stack import StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TUN = "sntun0"
SHARDNET_V4, KERNEL_V4 = "198.18.0.2", "198.18.0.1"
SHARDNET_V6, KERNEL_V6 = "2001:db8::2", "2001:db8::1"
SIZE = 5_000_000  # bytes, some hundred TSO super-segments


@pytest.fixture
def tun(tmp_path: Path) -> Iterator[tuple[Netns, StackProcess, Path]]:
    skip_unless_netns()
    pcap = tmp_path / "tun.pcap"
    with (
        Netns("tun") as ns,
        Netns("tcl") as client,
        StackProcess(
            ns,
            "--tun", TUN, "--tun-netns", client.name,
            "--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64",
            "--serve", "http:80", "--pcap", str(pcap),
            tap=None,
        ) as stack,
    ):  # fmt: skip
        client.run(f"ip addr add {KERNEL_V4}/24 dev {TUN}")
        client.run(f"ip addr add {KERNEL_V6}/64 dev {TUN}")
        yield client, stack, pcap


def test_the_tun_is_a_point_to_point_device_in_the_client_namespace(
    tun: tuple[Netns, StackProcess, Path],
) -> None:
    client, stack, _ = tun
    link = client.run(f"ip link show {TUN}").stdout
    assert "POINTOPOINT" in link and "NOARP" in link and "UP" in link
    assert "link/none" in link
    nics = {n["name"]: n for n in stack.call("nics")}
    assert nics[TUN]["kind"] == "tun"
    # No NDP on it: no link-local address, the static ones usable at once.
    addrs = [a for a in stack.call("addrs") if a["nic"] == nics[TUN]["id"]]
    assert sorted(a["addr"] for a in addrs) == [SHARDNET_V4, SHARDNET_V6]
    assert all(a["kind"] == "permanent" for a in addrs)


@pytest.mark.parametrize("target", [SHARDNET_V4, SHARDNET_V6])
def test_ping_and_curl_over_the_tun(tun: tuple[Netns, StackProcess, Path], target: str) -> None:
    client, stack, _ = tun
    ping = client.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", target])
    assert " 0% packet loss" in ping.stdout
    host = f"[{target}]" if ":" in target else target
    out = client.run(
        ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
         f"http://{host}/bytes/{SIZE}"]
    ).stdout  # fmt: skip
    assert out == f"200 {SIZE}"
    assert stack.call("neigh") == []  # nothing resolved on a point-to-point link


def test_pcap_holds_raw_ip_packets(tun: tuple[Netns, StackProcess, Path]) -> None:
    client, stack, pcap = tun
    client.run(["ping", "-c", "2", "-i", "0.2", SHARDNET_V4])
    stack.stop()  # every process has written its records
    assert struct.unpack_from("<I", pcap.read_bytes(), 20)[0] == 101  # LINKTYPE_RAW
    echoes = [(p[IP].src, p[ICMP].type) for p in rdpcap(str(pcap)) if IP in p and ICMP in p]
    assert echoes.count((KERNEL_V4, 8)) == 2 and echoes.count((SHARDNET_V4, 0)) == 2
