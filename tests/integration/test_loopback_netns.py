"""Loopback routing in the real processes: an app in every
shard of a 2-shard stack talks TCP and UDP to the stack's own IPv4 and IPv6
addresses and 127.0.0.1; every flow comes back to the shard that opened
it (the dispatcher classifies looped frames like wire frames), and no frame of
that traffic appears on the TAP."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4, SHARDNET_V6, KERNEL_V6 = "198.18.0.2", "2001:db8::2", "2001:db8::1"
TARGETS = (SHARDNET_V4, SHARDNET_V6, "127.0.0.1")  # as tests/apps/loopback_probe.py


def test_traffic_to_our_own_addresses_is_looped_never_on_the_wire() -> None:
    skip_unless_netns()
    args = ["--ipv4", f"{SHARDNET_V4}/24", "--ipv6", f"{SHARDNET_V6}/64"]
    args += ["--serve", "echo:7", "--serve", "whoami:5000"]
    args += ["--app", "tests.apps.loopback_probe:main"]
    with Netns("loop") as ns, StackProcess(ns, *args, shards=2) as stack:
        # Sniff the TAP from before the apps start (they wait for port 9997).
        out = ns.python(f"""
            import json, socket, subprocess, threading, time
            from scapy.all import AsyncSniffer, conf
            conf.verb = 0
            sniffer = AsyncSniffer(iface="{TAP}", store=True)
            sniffer.start()
            time.sleep(0.5)
            subprocess.run(["ip", "addr", "add", "{KERNEL_V4}/24", "dev", "{TAP}"], check=True)
            subprocess.run(
                ["ip", "addr", "add", "{KERNEL_V6}/64", "dev", "{TAP}", "nodad"], check=True
            )
            rep = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rep.bind(("{KERNEL_V4}", 9999))
            rep.settimeout(60)
            go = socket.create_server(("{KERNEL_V4}", 9997))
            def serve():
                while True:
                    conn, _ = go.accept()
                    conn.close()
            threading.Thread(target=serve, daemon=True).start()
            reports = {{}}
            while len(reports) < 2:
                report = json.loads(rep.recv(4000))
                reports[report["shard"]] = report
            time.sleep(0.5)
            frames = [bytes(p) for p in sniffer.stop()]
            print(json.dumps({{"reports": reports, "frames": [f.hex() for f in frames]}}))
        """, timeout=90).stdout  # fmt: skip
        got = json.loads(out.strip().splitlines()[-1])
        stats = stack.call("stats")
    for shard in ("0", "1"):
        report = got["reports"][shard]
        for target in TARGETS:
            assert report[target] == {
                "echo": f"hello {target}",
                "who_shard": int(shard),
                "who_peer": target
                if ":" in target
                else f"::ffff:{target}",  # a dual-stack listener
                "udp": f"udp {target}",
            }, (shard, target, report[target])
    frames = [bytes.fromhex(f) for f in got["frames"]]
    assert any(_is_report(f) for f in frames), "the sniffer saw nothing: it proves nothing"
    leaked = [f.hex() for f in frames if _is_loop_traffic(f)]
    assert not leaked, f"{len(leaked)} looped frame(s) on the wire, e.g. {leaked[0]}"
    assert _looped_in(stats) > 0, stats


def _is_loop_traffic(frame: bytes) -> bool:
    """A frame of the probes' traffic: ports 7 or 5000, or addressed from one
    of our addresses to another (or 127/8, ::1)."""
    pkt = Ether(frame)
    ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
    if ip is None:
        return False
    ours = {SHARDNET_V4, SHARDNET_V6, "::1"}
    if (ip.src in ours and ip.dst in ours) or str(ip.src).startswith("127."):
        return True
    if str(ip.dst).startswith("127.") or ip.dst == "::1":
        return True
    for layer in (TCP, UDP):
        if layer in pkt and {pkt[layer].sport, pkt[layer].dport} & {7, 5000}:
            return True
    return False


def _is_report(frame: bytes) -> bool:
    pkt = Ether(frame)
    return UDP in pkt and pkt[UDP].dport == 9999


def _looped_in(stats: object) -> int:
    """The shards' ``net/ipv4_looped_in`` + ``net/ipv6_looped_in`` counters,
    wherever the stats reply puts them."""
    total = 0

    def walk(node: object) -> None:
        nonlocal total
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, int) and str(key).endswith("_looped_in"):
                    total += value
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(stats)
    return total
