"""``shardnet loadtest``: every scenario once, briefly, against shardnet and
against the kernel, in one command; correctness only (nothing corrupted, no
connection failed, every figure there and positive, the JSON's shape, no
namespace left), never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..netns import skip_unless_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]

FIGURES = {
    "bulk": {"mbytes_per_s_in", "mbytes_per_s_out", "cpu_ms_per_mb"},
    "echo": {"mbytes_per_s_in", "mbytes_per_s_out"},
    "crr": {"conn_per_s", "p50_us", "p99_us"},
    "rr": {"tps", "p50_us", "p99_us"},
    "udp": {"pps"},
    "ping": {"p50_us", "p99_us"},
    "conns": {"conn_per_s", "rss_per_conn_bytes"},
}

# A few thousand connections may fit in memory the allocator already had.
MAY_BE_ZERO = {"rss_per_conn_bytes"}


def loadtest_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    made = ("sn-lt-", "sn-ltk-", "sn-ltr-")
    return [line.split()[0] for line in out.splitlines() if line.startswith(made)]


def loadtest(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "loadtest", *argv],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_every_scenario_against_shardnet_and_the_kernel(tmp_path: Path) -> None:
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest(
        "--scenario", ",".join(FIGURES), "--against", "kernel", "--duration", "1",
        "--streams", "2", "--conns", "2000", "--json", str(out),
        timeout=140,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["scenarios"]) == set(FIGURES)
    for name, figures in FIGURES.items():
        entry = doc["scenarios"][name]
        assert set(entry) == {"shardnet", "kernel", "ratio"}, name
        for system in ("shardnet", "kernel"):
            got = entry[system]
            assert got["failed"] == 0 and got["corrupted"] == 0, (name, system, got)
            for figure in figures - MAY_BE_ZERO:
                assert got[figure] > 0, (name, system, figure, got)
            for figure in figures & MAY_BE_ZERO:
                assert got[figure] >= 0, (name, system, figure, got)
        assert figures - MAY_BE_ZERO <= set(entry["ratio"]) <= figures, name
    conns = doc["scenarios"]["conns"]
    assert conns["shardnet"]["answered"] == conns["kernel"]["answered"] == 2000
    assert set(conns["shardnet"]["rss_bytes"]) == {"shard0", "shard1"}
    # the table names every scenario, with its ratio column
    assert "ratio" in r.stdout.splitlines()[1]
    assert all(f"\n{name} " in r.stdout for name in FIGURES)
    assert loadtest_namespaces() == []


def test_a_shard_sweep_names_each_count(tmp_path: Path) -> None:
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest("--scenario", "rr", "--shards", "1,2", "--duration", "0.5", "--streams", "1",
                 "--json", str(out), timeout=100)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["scenarios"]) == {"rr@1s", "rr@2s"}
    for entry in doc["scenarios"].values():
        assert set(entry) == {"shardnet"}
        assert entry["shardnet"]["tps"] > 0 and entry["shardnet"]["failed"] == 0
    assert loadtest_namespaces() == []


@pytest.mark.timeout(450)
def test_floods_beside_a_well_behaved_client(tmp_path: Path) -> None:
    """Each flood runs (frames sent), the well-behaved client's view is
    reported, no shard restarts, the run itself does not fail: blind
    injected segments break none of the live connections."""
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest("--scenario", "synflood,fragflood,raflood,injection", "--against", "kernel",
                 "--duration", "2", "--json", str(out), timeout=400)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())["scenarios"]
    for name in ("synflood", "fragflood", "raflood", "injection"):
        for system in ("shardnet", "kernel"):
            got = doc[name][system]
            assert got["failed"] == 0 and got["corrupted"] == 0, (name, system, got)
            assert got["flood_pps"] > 1000 and got["restarts"] == 0, (name, system, got)
            assert 0 <= got["success_rate"] <= 1 and got["rss_max_bytes"] > 0, (name, system, got)
    assert "syn_gate_drops" in doc["synflood"]["shardnet"]["stack"]
    ra = doc["raflood"]["shardnet"]  # both families answer again; the tables stay bounded
    assert ra["recovery_s_v4"] is not None and ra["recovery_s_v6"] is not None, ra
    # 10 routers and 10 prefixes; 16 SLAAC addresses beside the lab's 2, the
    # link-local and the loopback's 2; 512 neighbours per family
    assert ra["ra_routes"] <= 20 and ra["addresses"] <= 16 + 5 and ra["neighbours"] <= 1024, ra
    assert loadtest_namespaces() == []


def test_drain_ends_every_live_transfer(tmp_path: Path) -> None:
    """SIGTERM during 100 live echo transfers: each ends with the stack's
    FIN or RST well before the client's timeout, the stack exits 0 within
    its drain bound and leaves no shard running."""
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest("--scenario", "drain", "--duration", "2", "--json", str(out), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(out.read_text())["scenarios"]["drain"]["shardnet"]
    assert got["ended_fin"] + got["ended_rst"] == 100 and got["hung"] == 0, got
    assert got["exit_codes"] == [0] and got["left_running"] == 0, got
    assert got["drain_s"] < 10, got
    assert loadtest_namespaces() == []


def test_soak_kills_a_shard_under_load(tmp_path: Path) -> None:
    """A short soak with one kill of shard 1: its connections end with a
    reset, every other connection goes on intact, a new connection to shard
    1 is echoed within a second, the restart is counted, RSS and descriptors
    are sampled all along."""
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest("--scenario", "soak", "--duration", "12", "--kill-every", "6", "--streams", "2",
                 "--json", str(out), timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(out.read_text())["scenarios"]["soak"]["shardnet"]
    assert got["kills"] == got["restarts"] == 1, got
    assert (got["failed"], got["corrupted"], got["hung"], got["connections_lost"]) == (0, 0, 0, 0)
    # 18 held connections over 2 shards: some on shard 1 (all on shard 0: 1 in 2^18)
    assert got["reset_conns"] >= 1 and got["reset_s_max"] < 10, got
    assert got["survived_conns"] >= 1 and got["mbytes_per_s_in"] > 0, got
    assert got["restart_s_max"] <= 1.0, got
    assert got["conn_per_s"] > 0 and 0 < got["success_rate"] <= 1 and got["ping_replies"] > 0
    assert len(got["samples"]) >= 10 and got["rss_max_bytes"] > 0, got
    assert loadtest_namespaces() == []


def test_relay_against_the_kernels_forwarding(tmp_path: Path) -> None:
    """bulk and crr through ``--relay direct`` on a TUN, and through the
    kernel forwarding between the same namespaces: both measured, intact."""
    skip_unless_netns()
    out = tmp_path / "lt.json"
    r = loadtest(
        "--scenario", "relay", "--against", "kernel", "--duration", "1", "--streams", "2",
        "--json", str(out), timeout=140,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads(out.read_text())["scenarios"]["relay"]
    for system in ("shardnet", "kernel"):
        got = entry[system]
        assert got["failed"] == 0 and got["corrupted"] == 0, (system, got)
        for figure in ("mbytes_per_s_in", "mbytes_per_s_out", "conn_per_s", "p99_us"):
            assert got[figure] > 0, (system, figure, got)
    assert entry["ratio"]["conn_per_s"] > 0
    assert loadtest_namespaces() == []


def test_refuses_bad_options() -> None:
    r = loadtest("--scenario", "bulk,nope", timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "shardnet loadtest: error: --scenario: unknown nope; of bulk,echo,crr,rr,udp,ping,conns,synflood,fragflood,raflood,injection,churn,soak,drain,relay"
    ]
