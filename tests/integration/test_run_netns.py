"""``shardnet run`` as a user runs it: a TAP in a namespace, the kernel as the
peer, shard kills, a garbage flood, metrics and ctl, clean stops."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardnet.common.flowhash import shard_for

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess, pid_alive, wait_gone

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"
METRICS = "127.0.0.1:9100"


@pytest.fixture
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("run") as ns:
        yield ns


@pytest.fixture
def stack(ns: Netns) -> Iterator[StackProcess]:
    with StackProcess(ns, "--metrics", METRICS, "--ipv4", f"{SHARDNET_V4}/24") as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        yield stack


def shard_rx(stack: StackProcess) -> list[int]:
    return [s["counters"].get("rx_frames", 0) for s in stack.call("stats")["shards"]]


def metrics(ns: Netns) -> str:
    return ns.run(f"curl -sf http://{METRICS}/metrics").stdout


def send_udp(ns: Netns, sport: int, dport: int, count: int) -> None:
    ns.python(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{KERNEL_V4}", {sport}))
        for i in range({count}):
            s.sendto(b"x" * 32, ("{SHARDNET_V4}", {dport}))
    """)


def classified(stack: StackProcess) -> list[int]:
    """Frames the dispatcher put in each shard's ring by classification."""
    return [s["to_shard"] for s in stack.call("stats")["shards"]]


def test_frames_of_a_flow_reach_the_shard_the_hash_names(ns: Netns, stack: StackProcess) -> None:
    k, s = socket.inet_aton(KERNEL_V4), socket.inet_aton(SHARDNET_V4)
    for want in (0, 1):
        sport = next(p for p in range(40000, 41000) if shard_for(17, k, p, s, 7, 2) == want)
        before, rx_before = classified(stack), shard_rx(stack)
        send_udp(ns, sport, 7, 50)
        assert wait_until(lambda w=want, b=before: classified(stack)[w] - b[w] >= 50, timeout=5)
        assert wait_until(lambda w=want, b=rx_before: shard_rx(stack)[w] - b[w] >= 50, timeout=5)
        # The other shard's ring got none of them (shard 0 may get the kernel's
        # own NDP/MLD). Port 7 has no socket: a shard that does not own it
        # steers the datagrams to the one that does, which refuses them.
        if want == 0:
            assert classified(stack)[1] - before[1] < 50


def test_kill_9_of_a_shard_is_repaired_and_counted(ns: Netns, stack: StackProcess) -> None:
    for victim in (1, 0):
        old = stack.shard_pids()
        assert stack.kill_shard(victim, timeout=10), "the shard was not restarted"
        assert stack.shard_pids()[1 - victim] == old[1 - victim], (
            "the other shard must keep running"
        )
        text = metrics(ns)
        assert f'shardnet_shard_restarts_total{{shard="{victim}"}} 1.0' in text

    # After shard 0 came back with a new epoch, shard 1's replica resynchronised.
    def replicated(name: str) -> bool:
        return stack.call("shard_table", shard=1, name=name) == stack.call(
            "shard_table", shard=0, name=name
        )

    assert wait_until(lambda: replicated("nics") and replicated("addrs"), timeout=5)
    stack.call("addr_add", nic=TAP, address="198.18.0.9/24")  # a change after the restart
    assert wait_until(
        lambda: "1/198.18.0.9" in stack.call("shard_table", shard=1, name="addrs"), timeout=2
    )


def test_garbage_flood_crashes_nothing(ns: Netns, stack: StackProcess) -> None:
    mac = stack.call("hello")["mac"]
    pids = stack.shard_pids()
    ns.python(
        f"""
        import os, random, socket, struct
        random.seed(7)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("{TAP}", 0))
        dst = bytes.fromhex("{mac.replace(":", "")}")
        src = bytes.fromhex("020000000001")
        heads = [b"\\x08\\x00\\x45", b"\\x08\\x00\\x4f", b"\\x86\\xdd\\x60", b"\\x08\\x06",
                 b"\\x81\\x00", b"\\x86\\xdd\\x60\\x00\\x00\\x00\\x00\\x08\\x2c", b""]
        for i in range(5000):
            body = random.choice(heads) + os.urandom(random.randint(2, 1500))  # >= 14 B: AF_PACKET refuses less
            frame = (dst if i % 4 else os.urandom(6)) + src + body
            s.send(frame[:1514])
    """,
        timeout=60,
    )
    time.sleep(1.5)
    stats = stack.call("stats")
    assert stack.shard_pids() == pids and all(pid_alive(p) for p in pids)
    drops = sum(sum(s["drops"].values()) for s in stats["shards"])
    assert drops > 100, "malformed frames must be counted as drops"
    layers = set(
        re.findall(
            r'shardnet_drops_total\{layer="(\w+)",reason="\w+",shard="\d"\} [1-9]', metrics(ns)
        )
    )
    assert {"arp", "ipv4", "ipv6"} <= layers, layers  # counted by layer and reason
    assert stack.call("nics")  # still answering


def test_a_martian_from_the_kernel_side_is_a_network_layer_drop_in_metrics(
    ns: Netns, stack: StackProcess
) -> None:
    """RFC 1122 §3.2.1.3 (g): a datagram from 127/8 that arrives on a link is
    dropped by the IPv4 layer, and /metrics counts it by layer and reason
    (ctl stats keeps its old ``net/ipv4_martian`` key)."""
    mac = stack.call("hello")["mac"]
    ns.python(f"""
        from scapy.all import Ether, IP, UDP, sendp
        frame = Ether(dst="{mac}") / IP(src="127.0.0.9", dst="{SHARDNET_V4}") / UDP(dport=7)
        sendp(frame, iface="{TAP}", count=3, verbose=False)
    """)
    pattern = re.compile(
        r'shardnet_drops_total\{layer="ipv4",reason="ipv4_martian",shard="\d"\} ([0-9.]+)'
    )

    def martians() -> float:
        return sum(float(n) for n in pattern.findall(metrics(ns)))

    assert wait_until(lambda: martians() >= 3, timeout=10), metrics(ns)
    stats = stack.call("stats")["shards"]
    assert sum(s["counters"].get("net/ipv4_martian", 0) for s in stats) >= 3
    assert sum(s["drops"].get("ipv4/ipv4_martian", 0) for s in stats) >= 3


def test_a_control_plane_flood_queues_only_a_bounded_backlog(
    ns: Netns, stack: StackProcess
) -> None:
    """ARP requests from ever new senders while shard 0 cannot read: the
    dispatcher queues at most CONTROL_BACKLOG of them in its ring and drops
    the rest (counted), so when shard 0 reads again the datagrams of a flow
    that came after the flood are not behind thousands of stale requests."""
    from shardnet.dispatcher.backlog import CONTROL_BACKLOG

    mac = stack.call("hello")["mac"]
    k, s = socket.inet_aton(KERNEL_V4), socket.inet_aton(SHARDNET_V4)
    sport = next(p for p in range(40000, 41000) if shard_for(17, k, p, s, 9, 2) == 0)
    flood = 3 * CONTROL_BACKLOG
    shard0 = stack.shard_pids()[0]
    ns.run(f"ping -c 1 -W 2 {SHARDNET_V4}")  # the kernel knows our MAC: no ARP behind the flood
    rx_before = shard_rx(stack)[0]
    os.kill(shard0, signal.SIGSTOP)
    try:
        before = classified(stack)[0]
        ns.python(f"""
            import socket, struct, time
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("{TAP}", 0))
            dst = bytes.fromhex("{mac.replace(":", "")}")
            target = socket.inet_aton("{SHARDNET_V4}")
            for i in range({flood}):
                src = bytes((2, 0x5A, 0, 0, i >> 8, i & 0xFF))
                sender = bytes((198, 19, i >> 8, i & 0xFF))
                arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, sender, bytes(6), target)
                s.send(dst + src + b"\x08\x06" + arp)
                if i % 100 == 99:  # below the TAP's admission filter's rate
                    time.sleep(0.015)
        """)
        send_udp(ns, sport, 9, 50)  # discard: a flow's datagrams after the flood
        queued = lambda: classified(stack)[0] - before  # noqa: E731
        assert wait_until(lambda: queued() >= CONTROL_BACKLOG + 50, timeout=5), queued()
        backlog_drops = stack.call("stats")["shards"][0]["backlog_drops"]
        assert CONTROL_BACKLOG <= backlog_drops <= flood, backlog_drops
        assert queued() <= CONTROL_BACKLOG + 50 + 20, queued()
    finally:
        os.kill(shard0, signal.SIGCONT)
    pattern = re.compile(
        r'shardnet_drops_total\{layer="dispatcher",reason="control_backlog_full",shard="0"\} '
        r"([0-9.]+)"
    )
    assert [float(n) for n in pattern.findall(metrics(ns))] == [backlog_drops]
    assert wait_until(lambda: shard_rx(stack)[0] - rx_before >= CONTROL_BACKLOG + 50, timeout=5)
    ns.run(f"ping -c 1 -W 2 {SHARDNET_V4}")  # shard 0 answers ARP (and all) again


def test_metrics_and_ctl_answer(ns: Netns, stack: StackProcess) -> None:
    text = metrics(ns)
    for name in (
        "shardnet_link_rx_frames_total",
        'shardnet_link_tx_frames_total{shard="0"}',
        'shardnet_shard_rx_frames_total{shard="1"}',
        'shardnet_ring_drops_total{shard="0"}',
        "shardnet_tcp_segments_total",
        "shardnet_tcp_retransmits_total",
        'shardnet_process_cpu_seconds_total{role="dispatcher"',
        'shardnet_process_resident_memory_bytes{role="shard",shard="1"}',
        'shardnet_shard_restarts_total{shard="1"} 0.0',
    ):
        assert name in text, name
    ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
    nics = json.loads(
        subprocess.run([*ctl, "nics", "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert [(n["name"], n["mac"]) for n in nics] == [
        (TAP, stack.call("hello")["mac"]),
        ("lo", "00:00:00:00:00:00"),
    ]
    out = subprocess.run([*ctl, "stats"], capture_output=True, text=True, check=True).stdout
    assert "SHARD" in out and "link: rx" in out and "admission filter: ebpf" in out


def test_sigterm_exits_0_and_leaves_no_process(ns: Netns, stack: StackProcess) -> None:
    pids = stack.shard_pids()
    assert stack.stop(signal.SIGTERM) == 0
    assert wait_gone(pids, timeout=5)
    # multiprocess's resource tracker exits when it sees the dispatcher's pipe close.
    assert wait_until(lambda: ns.pids() == [], timeout=3), ns.pids()


def test_dispatcher_death_takes_the_shards_with_it(ns: Netns, stack: StackProcess) -> None:
    pids = stack.shard_pids()
    stack.stop(signal.SIGKILL)
    assert wait_gone(pids, timeout=5), "orphaned shards"


def test_ctl_without_a_stack_is_one_line_and_non_zero() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "ctl",
            "--control",
            "ipc:///run/shardnet/none.ctl",
            "nics",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "no shardnet is running" in r.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tap", "sntap0", "--ipv4", "198.18.0.300/24"], "bad address"),
        (["--tap", "sntap0", "--serve", "nope:80"], "unknown app"),
        (["--tap", "sntap0", "--shards", "0"], "--shards"),
        (["--tap", "sntap0", "--app", "nosuchmodule_x:main"], "no module"),
        ([], "exactly one of --tap"),
    ],
)
def test_bad_run_input_is_one_line_and_non_zero(args: list[str], fragment: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "run", *args], capture_output=True, text=True
    )
    assert r.returncode == 2 and fragment in r.stderr and r.stderr.count("\n") == 1


def test_metrics_port_in_use_is_a_clear_error(ns: Netns, tmp_path: Path) -> None:
    blocker = ns.popen(
        [
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 9100)); s.listen(); time.sleep(60)",
        ]
    )
    time.sleep(0.5)
    r = ns.run(
        [
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "run",
            "--tap",
            TAP,
            "--shards",
            "1",
            "--control",
            "ipc:///run/shardnet/inuse.ctl",
            "--metrics",
            METRICS,
            "--state-dir",
            str(tmp_path),
        ],
        check=False,
        timeout=30,
    )
    blocker.kill()
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().endswith(
        f"cannot serve metrics on {METRICS}: Address already in use"
    ), r.stderr
    assert wait_until(lambda: ns.pids() == [], timeout=3), ns.pids()


def test_tap_not_permitted_is_a_clear_error(ns: Netns, tmp_path: Path) -> None:
    """Without CAP_NET_ADMIN (dropped from the bounding set) the TAP cannot be made."""
    r = ns.run(
        [
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "run",
            "--tap",
            TAP,
            "--shards",
            "1",
            "--control",
            "ipc:///run/shardnet/noperm.ctl",
            "--state-dir",
            str(tmp_path),
        ],
        check=False,
        timeout=30,
    )
    assert r.returncode == 1
    assert (
        r.stderr
        == f"shardnet: error: no permission to attach TAP {TAP}: needs CAP_NET_ADMIN or the TAP's owner\n"
    )


def test_top_shows_every_shard(stack: StackProcess) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "top",
            "--control",
            stack.control,
            "--count",
            "2",
            "--interval",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    screens = r.stdout.split("shardnet top")
    assert len(screens) == 3  # two refreshes
    last = screens[-1].splitlines()
    assert last[1].split()[:3] == ["SHARD", "PID", "IN/s"]
    assert [row.split()[0] for row in last[2:]] == ["0", "1"]


def test_pcap_records_frames_in_and_config_file_is_read(ns: Netns, tmp_path) -> None:
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    pcap = tmp_path / "run.pcap"
    conf = tmp_path / "shardnet.toml"
    conf.write_text(f'pcap = "{pcap}"\n[stack]\nipv4 = ["{SHARDNET_V4}/24"]\n')
    with StackProcess(ns, "--config", str(conf)) as stack:
        mac = stack.call("hello")["mac"]
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        send_udp(ns, 40001, 9, 5)
        assert wait_until(lambda: sum(shard_rx(stack)) >= 5, timeout=5)
        assert stack.stop() == 0
    udp = [p for p in rdpcap(str(pcap)) if UDP in p and p[UDP].dport == 9]
    assert len(udp) == 5 and all(p.dst == mac for p in udp)
