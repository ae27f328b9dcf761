"""The load-test harness's pure parts: percentiles, ratios, the JSON
document, the table, failures, argument checking, ping parsing; and the
client's scenario loops against kernel servers on the loopback (ephemeral
ports, a fraction of a second each), which checks their corruption checks."""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shardnet.common.flowhash import shard_for
from shardnet.scripts import bench_udp, cli
from shardnet.scripts.loadtest import UsageError, settings_from_args
from shardnet.scripts.loadtest import client as lt_client
from shardnet.scripts.loadtest.kernel_apps import UdpEcho
from shardnet.scripts.loadtest.report import (
    build,
    failures,
    percentile,
    ratios,
    rows,
    scenario_key,
    table,
)
from shardnet.scripts.loadtest.scenarios import (
    RECOVERY_S,
    RESET_BOUND_S,
    Totals,
    judge_flows,
    parse_ping,
    probe_ports,
)
from shardnet.scripts.loadtest.systems import extra_sources
from shardnet.shards.apps import TcpChargen, TcpEcho, chargen_block

# --- report ----------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    samples = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10]
    assert percentile(samples, 50) == 5
    assert percentile(samples, 99) == 10
    assert percentile(samples, 0) == 1
    assert percentile([42], 99) == 42
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_ratios_only_for_figures_both_measured() -> None:
    ours = {"tps": 50.0, "p50_us": 300.0, "failed": 0, "conns": 10, "mbytes_per_s_in": 1.0}
    theirs = {"tps": 100.0, "p50_us": 100.0, "failed": 0, "conns": 10, "mbytes_per_s_in": 0}
    assert ratios(ours, theirs) == {"tps": 0.5, "p50_us": 3.0}


def test_document_shape_with_kernel_and_sweep() -> None:
    ours = {
        scenario_key("rr", 1, True): {"tps": 10.0, "failed": 0, "corrupted": 0},
        scenario_key("rr", 2, True): {"tps": 20.0, "failed": 0, "corrupted": 0},
    }
    doc = build(ours, {"rr": {"tps": 40.0, "failed": 0, "corrupted": 0}}, {"duration_s": 1})
    assert set(doc["scenarios"]) == {"rr@1s", "rr@2s"}
    entry = doc["scenarios"]["rr@2s"]
    assert set(entry) == {"shardnet", "kernel", "ratio"}
    assert entry["ratio"] == {"tps": 0.5}
    assert doc["config"] == {"duration_s": 1}
    alone = build({"udp": {"pps": 5.0}}, None, {})
    assert alone["scenarios"]["udp"] == {"shardnet": {"pps": 5.0}}


def test_failures_name_the_scenario_system_and_error() -> None:
    doc = build(
        {"crr": {"conn_per_s": 1.0, "failed": 2, "corrupted": 0, "error": "ConnectionRefused"}},
        {"crr": {"conn_per_s": 2.0, "failed": 0, "corrupted": 1}},
        {},
    )
    assert failures(doc) == [
        "crr shardnet: 2 failed (ConnectionRefused)",
        "crr kernel: 1 corrupted",
    ]
    clean = build({"crr": {"conn_per_s": 1.0, "failed": 0, "corrupted": 0}}, None, {})
    assert failures(clean) == []


def test_table_lists_each_figure_with_its_ratio() -> None:
    doc = build(
        {"bulk": {"mbytes_per_s_in": 12.5, "mbytes_per_s_out": 20.0, "streams": 4}},
        {"bulk": {"mbytes_per_s_in": 1250.0, "mbytes_per_s_out": 400.0, "streams": 4}},
        {},
    )
    assert [(r.figure, r.ratio) for r in rows(doc)] == [
        ("mbytes_per_s_in", 0.01),
        ("mbytes_per_s_out", 0.05),
    ]
    text = table(doc).splitlines()
    assert text[0].split() == ["scenario", "figure", "unit", "shardnet", "kernel", "ratio"]
    assert text[1].split() == ["bulk", "mbytes_per_s_in", "MB/s", "12.5", "1,250", "0.010"]
    assert "ratio" not in table(build({"bulk": {"mbytes_per_s_in": 1.0}}, None, {}))


def test_plot_writes_a_png(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    from shardnet.scripts.loadtest.report import plot

    doc = build({"rr": {"tps": 10.0, "p50_us": 90.0}}, {"rr": {"tps": 40.0, "p50_us": 30.0}}, {})
    path = tmp_path / "lt.png"
    plot(doc, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_totals_add_up_clients() -> None:
    t = Totals()
    t.add({"ops": 3, "bytes": 300, "failed": 1, "t_start": 10.0, "t_end": 12.0, "lat_us": [5]})
    t.add({"ops": 1, "bytes": 100, "t_start": 10.5, "t_end": 14.0, "error": "boom"})
    assert (t.ops, t.bytes, t.failed, t.elapsed, t.lat_us) == (4, 400, 1, 4.0, [5])
    assert t.counts() == {"failed": 1, "corrupted": 0, "error": "boom"}


PING = b"""PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.
64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=0.210 ms
64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=1.05 ms

--- 198.18.0.2 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 4ms
"""


def test_parse_ping() -> None:
    rtts, sent, got = parse_ping(PING)
    assert rtts == pytest.approx([210.0, 1050.0])
    assert (sent, got) == (3, 2)


def test_extra_sources_from_the_top_of_the_subnet() -> None:
    assert extra_sources("198.18.0.1", 24, "198.18.0.2", 3) == [
        "198.18.0.254",
        "198.18.0.253",
        "198.18.0.252",
    ]
    assert extra_sources("2001:db8::1", 64, "2001:db8::2", 1) == ["2001:db8::ffff:ffff:ffff:fffe"]
    assert extra_sources("198.18.0.1", 30, "198.18.0.2", 0) == []
    with pytest.raises(RuntimeError):
        extra_sources("198.18.0.1", 30, "198.18.0.2", 1)


def test_probe_ports_hash_to_the_shard() -> None:
    for client, server in (("198.18.0.1", "198.18.0.2"), ("2001:db8::1", "2001:db8::2")):
        ports = probe_ports(client, server, 2, 3, 50)
        assert len(set(ports)) == 50 and all(10_000 <= p <= 65_000 for p in ports)
        fam = socket.AF_INET6 if ":" in client else socket.AF_INET
        a, b = socket.inet_pton(fam, client), socket.inet_pton(fam, server)
        assert {shard_for(6, a, p, b, 7, 3) for p in ports} == {2}


def test_judge_flows_allows_breaks_only_on_a_killed_shard() -> None:
    """Port 1xxx flows are on shard 1, the others on shard 0; shard 1 was
    killed at t=100."""
    kills = [(100.0, 1)]

    def shard_of(addr: str, port: int) -> int:
        return 1 if 1000 <= port < 2000 else 0

    a = "198.18.0.1"
    rows = [
        [a, 1001, 10.0, 102.5, "rst", 500],  # killed, reset 2.5 s later
        [a, 1002, 100.5, 101.0, "connect", 0],  # a connect while it was down
        [a, 1003, 10.0, 200.0, "ok", 900],  # opened again after the kill: fine
        [a, 5001, 10.0, 200.0, "ok", 900],
        [a, 5002, 10.0, 100.2, "rst", 10],  # shard 0 was never killed: lost
        [a, 1004, 10.0, 100.0 + RESET_BOUND_S + 1, "rst", 10],  # reset too late
        [a, 1005, 100.0 + RECOVERY_S + 1, 112.0, "connect", 0],  # should have worked by then
        [a, 1006, 10.0, 99.0, "rst", 10],  # before the kill
        [a, 5003, 10.0, 100.1, "fin", 10],
        [a, 1007, 10.0, 110.0, "hang", 10],
        [a, 5004, 10.0, 50.0, "corrupt", 10],
    ]
    v = judge_flows(rows, kills, shard_of)
    assert (v.reset, v.retried, v.lost, v.hung) == (1, 1, 5, 1)
    assert v.reset_s == [2.5]
    # a connection that lived through an earlier kill (of another shard, or
    # before it was opened) is judged by the last kill of its own shard
    kills = [(20.0, 1), (40.0, 2), (60.0, 1)]
    v = judge_flows([[a, 1001, 5.0, 60.5, "rst", 9]], kills, shard_of)
    assert (v.reset, v.lost, v.reset_s) == (1, 0, [0.5])


# --- command line ----------------------------------------------------------------------


def _settings(*argv: str) -> Any:
    return settings_from_args(cli.build_parser().parse_args(["loadtest", *argv]))


def test_defaults() -> None:
    s = _settings()
    assert s.scenarios == ("bulk", "echo", "crr", "rr", "udp", "ping", "conns")
    assert (s.shards, s.duration, s.conns, s.against_kernel) == ((2,), 5.0, 100_000, False)
    s = _settings("--scenario", "rr,udp,rr", "--shards", "1,2", "--against", "kernel")
    assert (s.scenarios, s.shards, s.against_kernel) == (("rr", "udp"), (1, 2), True)
    assert _settings("--scenario", "conns,ping,bulk").scenarios == ("ping", "bulk", "conns")
    assert _settings("--scenario", "drain,conns,rr").scenarios == ("rr", "conns", "drain")
    assert s.flood_rate == 0.0 and _settings("--flood-rate", "5000").flood_rate == 5000.0
    s = _settings("--scenario", "soak,rr")
    assert (s.scenarios, s.duration, s.soak_duration, s.kill_every) == (
        ("soak", "rr"),
        5.0,
        1800.0,
        120.0,
    )
    s = _settings("--scenario", "soak", "--duration", "20", "--kill-every", "8")
    assert (s.duration, s.soak_duration, s.kill_every) == (20.0, 20.0, 8.0)


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--scenario", "bulk,nope"], "--scenario"),
        (["--scenario", ""], "--scenario"),
        (["--shards", "1,x"], "--shards"),
        (["--shards", "0"], "--shards"),
        (["--duration", "0"], "--duration"),
        (["--conns", "0"], "--conns"),
        (["--size", "2"], "--size"),
        (["--netns", "sn-x"], "--target"),
        (["--target", "198.18.0.2", "--shards", "1,2"], "--shards"),
        (["--flood-rate", "-1"], "--flood-rate"),
        (["--target", "198.18.0.2", "--scenario", "drain"], "drain"),
        (["--target", "198.18.0.2", "--scenario", "relay"], "relay"),
        (["--ipv6", "--scenario", "relay"], "relay"),
        (["--scenario", "soak", "--duration", "20", "--kill-every", "16"], "--kill-every"),
        (["--scenario", "soak", "--kill-every", "0"], "--kill-every"),
        (["--scenario", "soak", "--shards", "1,2"], "--shards"),
        (["--target", "198.18.0.2", "--scenario", "soak"], "soak"),
    ],
)
def test_bad_settings(argv: list[str], word: str) -> None:
    with pytest.raises(UsageError, match=word):
        _settings(*argv)


@pytest.mark.parametrize(
    "argv",
    [["--scenario", "nope"], ["--duration", "abc"], ["--against", "linux"], ["--bogus"]],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], capsys: Any) -> None:
    try:
        code = cli.main(["loadtest", *argv])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("shardnet loadtest: error:")


def test_bench_udp_is_the_udp_scenario_against_the_kernel(monkeypatch: Any) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(bench_udp, "loadtest", lambda argv: seen.append(argv) or 0)
    assert bench_udp.run(["--duration", "1"]) == 0
    assert seen == [["--scenario", "udp", "--against", "kernel", "--duration", "1"]]


# --- the client's loops on the loopback ------------------------------------------------


def test_chargen_oracle_matches_the_shard_app() -> None:
    block = chargen_block()
    assert lt_client.chargen_pattern(10).startswith(block + block)


class _Servers:
    """Kernel TCP echo, chargen (the shard's apps) and a UDP echo on
    127.0.0.1 ephemeral ports, in a thread's event loop."""

    def __init__(self, chargen: type[asyncio.Protocol] = TcpChargen) -> None:
        self.chargen = chargen
        self.ports: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            echo = await self.loop.create_server(TcpEcho, "127.0.0.1", 0)
            chargen = await self.loop.create_server(self.chargen, "127.0.0.1", 0)
            udp, _ = await self.loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
            self.ports = {
                "echo": echo.sockets[0].getsockname()[1],
                "chargen": chargen.sockets[0].getsockname()[1],
                "udp": udp.get_extra_info("sockname")[1],
            }
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> _Servers:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def servers() -> Iterator[_Servers]:
    with _Servers() as s:
        yield s


def _run(kind: str, port: int, **kw: Any) -> lt_client.Outcome:
    spec = lt_client.Spec(kind, "127.0.0.1", port, start_at=time.time(), duration=0.2, **kw)
    out = lt_client.Outcome()
    lt_client.SCENARIOS[kind](spec, out)
    return out


@pytest.mark.parametrize(("kind", "app"), [("echo", "echo"), ("crr", "echo"), ("rr", "echo"),
                                           ("udp", "udp"), ("bulk_out", "chargen")])  # fmt: skip
def test_client_loops_move_checked_data(servers: _Servers, kind: str, app: str) -> None:
    out = _run(kind, servers.ports[app])
    assert (out.failed, out.corrupted, out.error) == (0, 0, "")
    assert out.bytes > 0 and out.t_end > out.t_start
    if kind in ("crr", "rr"):
        assert out.ops > 0 and len(out.lat_us) == min(out.ops, lt_client.MAX_SAMPLES)


def test_client_echo_many_checks_every_connection(servers: _Servers) -> None:
    out = _run("echo_many", servers.ports["echo"], conns=20)
    assert (out.ops, out.failed, out.corrupted, out.error) == (20, 0, 0, "")
    assert out.bytes > 0


def test_client_echo_many_tells_a_servers_fin_from_its_reset() -> None:
    """One server closes each connection after the first chunk (FIN), the
    other resets it: echo_many counts each as failed, and which it was."""
    for linger, field in ((None, "fin"), (lt_client._LINGER_RST, "rst")):
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)

            def serve(srv: socket.socket = srv, linger: bytes | None = linger) -> None:
                for _ in range(3):
                    conn, _ = srv.accept()
                    conn.recv(1)
                    if linger is not None:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    else:  # FIN at once; unread data at close would reset
                        conn.shutdown(socket.SHUT_WR)
                        while conn.recv(65536):
                            pass
                    conn.close()

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            out = _run("echo_many", srv.getsockname()[1], conns=3)
            t.join(5)
        assert out.failed == 3 and getattr(out, field) == 3, (field, out)


def test_client_conns_hold_and_check(servers: _Servers, monkeypatch: Any) -> None:
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(lt_client, "emit", lines.append)
    monkeypatch.setattr("sys.stdin", type("In", (), {"readline": staticmethod(lambda: "\n")}))
    out = lt_client.Outcome()
    spec = lt_client.Spec("conns", "127.0.0.1", servers.ports["echo"], conns=50)
    lt_client.conns(spec, out)
    assert [list(line)[0] for line in lines if "progress" not in line] == ["opened", "result"]
    assert lines[-2]["opened"] == 50 and lines[-1]["result"]["ops"] == 50
    assert (out.ops, out.failed) == (50, 0)


class _BadChargen(TcpChargen):
    BLOCK = chargen_block().replace(b"A", b"a")


def test_bulk_out_sees_corruption() -> None:
    with _Servers(chargen=_BadChargen) as s:
        out = _run("bulk_out", s.ports["chargen"])
    assert out.corrupted == 1


def test_client_streams_note_every_connection(servers: _Servers) -> None:
    out = _run("streams", servers.ports["echo"], conns=4, size=4096)
    assert (out.ops, out.failed, out.corrupted, out.error) == (4, 0, 0, "")
    assert out.bytes > 0 and len(out.flows) == 4
    for addr, port, opened, ended, how, moved in out.flows:
        assert addr == "127.0.0.1" and port > 0 and opened <= ended and how == "ok" and moved > 0


def test_client_streams_replace_a_reset_connection() -> None:
    """A server that resets every connection after its first echo: each
    reset is a row saying so, with its local port, and a new connection
    follows."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        stop = threading.Event()

        def serve() -> None:
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.sendall(conn.recv(65536))
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, lt_client._LINGER_RST)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        out = _run("streams", srv.getsockname()[1], conns=1, size=1)
        stop.set()
        t.join(5)
    hows = [row[4] for row in out.flows]
    assert len(hows) >= 2 and set(hows) == {"rst"}, out.flows
    assert out.failed == len(hows) and all(row[1] > 0 for row in out.flows)


def test_client_probe_times_the_first_echo(servers: _Servers, monkeypatch: Any) -> None:
    monkeypatch.setattr("sys.stdin", type("In", (), {"readline": staticmethod(lambda: "go\n")}))
    with socket.socket() as taken:  # a port another connection holds is skipped
        taken.bind(("127.0.0.1", 0))
        spec = lt_client.Spec("probe", "127.0.0.1", servers.ports["echo"], duration=2.0,
                              ports=[taken.getsockname()[1], 0, 0])  # fmt: skip
        out = lt_client.Outcome()
        lt_client.probe(spec, out)
    assert (out.ops, out.failed) == (1, 0) and out.t_start <= out.t_end < out.t_start + 1


def test_client_probe_gives_up(monkeypatch: Any) -> None:
    monkeypatch.setattr("sys.stdin", type("In", (), {"readline": staticmethod(lambda: "go\n")}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: every attempt refused
        spec = lt_client.Spec("probe", "127.0.0.1", s.getsockname()[1], duration=0.2,
                              ports=[0] * 30)  # fmt: skip
        out = lt_client.Outcome()
        lt_client.probe(spec, out)
    assert (out.ops, out.failed) == (0, 1) and "no new connection" in out.error


def test_a_refused_connection_counts_as_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        out = _run("crr", port)
    assert out.failed > 0 and out.ops == 0 and "ConnectionRefused" in out.error


def test_plot_without_matplotlib_is_one_clear_line(monkeypatch: Any, capsys: Any) -> None:
    from shardnet.scripts.loadtest import harness

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    settings = _settings("--scenario", "rr", "--plot", "x.png")
    assert harness.run_settings(settings) == 2
    assert capsys.readouterr().err == (
        "shardnet loadtest: --plot needs matplotlib: pip install 'shardnet[plot]'\n"
    )
