"""Stack-wide TCP and IP settings: parsing and validation (the [tcp] and [ip]
tables, ``--tcp``/``--ip``, ``ctl tcp|ip --set``), and their effect at run
time on the embedded stack (one shard in this process, driven with crafted
frames or a second stack on the cable). Addresses: 198.18.0.0/15 only."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from shardnet.common.config import ConfigError, StackConfig, build_config, load_toml
from shardnet.common.control_api import ControlError
from shardnet.common.ipconfig import IpConfig
from shardnet.common.settings import apply_settings, parse_pairs
from shardnet.dispatcher.journal import ControlJournal
from shardnet.embedded import Stack
from shardnet.scripts import ctl
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.transport.tcp import config_with

OUR_MAC, PEER_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
OUR4, PEER4 = "198.18.0.2", "198.18.0.1"
FAST_NDP = {"dup_addr_detect_transmits": 0, "max_rtr_solicitations": 0}


def run(coro: Coroutine[Any, Any, None], timeout: float = 15.0) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(guarded())


async def until(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := pred()):
            await asyncio.sleep(0.005)
        return value


# --- parsing and validation -------------------------------------------------------------


def test_values_are_converted_by_the_field_type() -> None:
    cfg = TcpConfig.from_settings(
        {"fin_timeout_s": "5", "retries2": "3", "rack": "off", "cc": "newreno", "linger2_s": "none"}
    )
    assert (cfg.fin_timeout_s, cfg.retries2, cfg.rack, cfg.cc) == (5.0, 3, False, "newreno")
    assert cfg.linger2_s is None
    # TOML gives typed values: they pass as they are.
    assert TcpConfig.from_settings({"keepalive_cnt": 4, "sack": False}).keepalive_cnt == 4
    base = TcpConfig(time_wait_s=7.0)
    assert TcpConfig.from_settings({"retries2": 4}, base).time_wait_s == 7.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"no_such": 1}, "unknown TCP setting 'no_such'"),
        ({"retries2": "many"}, "TCP setting retries2: bad value 'many'"),
        ({"retries2": "1.5"}, "TCP setting retries2: bad value"),
        ({"rack": "maybe"}, "TCP setting rack: bad value"),
        ({"fin_timeout_s": "nan"}, "TCP setting fin_timeout_s: bad value"),
        ({"fin_timeout_s": True}, "TCP setting fin_timeout_s: bad value"),
        ({"time_wait_s": "none"}, "TCP setting time_wait_s: bad value"),
        ({"cc": "bbr"}, "congestion control 'bbr' unknown"),
        ({"keepalive_cnt": 0}, "keepalive_cnt must be 1..127"),
        ({"keepalive_idle_s": 0.5}, "at least 1"),
        ({"syn_backlog": 0}, "syn_backlog"),
        ({"time_wait_s": -1}, "times must not be negative"),
        ({"snd_buf": 8 << 20}, "snd_buf <= snd_buf_max"),
        ({"rcv_buf_max": 1000}, "rcv_buf <= rcv_buf_max"),
        ({"min_rto_s": 5}, "min_rto_s <= initial_rto_s"),
    ],
)
def test_bad_tcp_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as exc:
        TcpConfig.from_settings(settings)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"default_ttl": 0},
        {"default_ttl": 256},
        {"default_hop_limit": "x"},
        {"icmp_burst": 0},
        {"icmp_rate_per_s": -1},
        {"frag_time_v4_s": 0},
        {"frag_high_thresh": 0},
        {"ttl": 3},
    ],
)
def test_bad_ip_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="IP setting"):
        IpConfig.from_settings(settings)


def test_nothing_is_half_applied() -> None:
    """A good setting beside a bad one: the base record is untouched and no
    new one comes out."""
    base = IpConfig()
    with pytest.raises(ValueError):
        apply_settings(base, {"default_ttl": 9, "icmp_burst": 0}, "IP")
    assert base.default_ttl == 64


def test_pairs_and_tables_from_flags_and_file(tmp_path: Path) -> None:
    assert parse_pairs(["a=1", "fin-timeout-s = 2"], "--tcp") == {"a": "1", "fin_timeout_s": "2"}
    with pytest.raises(ValueError, match="--ip wants NAME=VALUE"):
        parse_pairs(["default_ttl"], "--ip")
    path = tmp_path / "sn.toml"
    path.write_text(
        'tap = "sntap0"\n[ip]\ndefault_ttl = 40\nicmp_burst = 5\n[tcp]\ncc = "newreno"\n'
    )
    cfg = build_config(load_toml(str(path)), {"ip": ["default_ttl=41"], "tcp": None})
    assert cfg.ip == {"default_ttl": "41", "icmp_burst": 5} and cfg.tcp == {"cc": "newreno"}
    with pytest.raises(ConfigError, match="--ip wants NAME=VALUE"):
        build_config({}, {"tap": "sntap0", "ip": ["x"]})
    path.write_text("[ip]\ndefault_ttl = [1]\n")
    with pytest.raises(ConfigError, match=r"\[ip\] must be a table"):
        build_config(load_toml(str(path)), {"tap": "sntap0"})


def test_socket_buffers_are_clamped_to_the_maxima() -> None:
    """socket(7): SO_SNDBUF/SO_RCVBUF above the stack's maxima are clamped, not refused."""
    cfg = TcpConfig(snd_buf_max=2 << 20, rcv_buf_max=1 << 20)
    got = config_with(cfg, {"SO_SNDBUF": 64 << 20, "SO_RCVBUF": 64 << 20})
    assert (got.snd_buf, got.rcv_buf) == (2 << 20, 1 << 20)
    assert config_with(cfg, {"SO_RCVBUF": 4096}).rcv_buf == 4096


def test_ctl_sends_the_settings_and_refuses_a_bad_pair_itself() -> None:
    p = argparse.ArgumentParser()
    ctl.add_arguments(p)
    assert ctl.request_of(p.parse_args(["tcp"])) == ("tcp_get", {})
    ns = p.parse_args(["ip", "--set", "default_ttl=9", "--set", "icmp_burst=3"])
    assert ctl.request_of(ns) == ("ip_set", {"settings": {"default_ttl": "9", "icmp_burst": "3"}})
    with pytest.raises(ControlError, match="NAME=VALUE"):
        ctl.request_of(p.parse_args(["tcp", "--set", "fin_timeout_s"]))


def test_the_journal_keeps_the_latest_of_each_setting() -> None:
    """A restarted shard 0 gets the run-time settings back, merged."""
    j = ControlJournal()
    j.record("tcp_set", {"settings": {"fin_timeout_s": "5", "cc": "newreno"}})
    j.record("tcp_set", {"settings": {"fin_timeout_s": "7"}})
    j.record("ip_set", {"settings": {"default_ttl": "9"}})
    assert j.entries() == [
        ("tcp_set", {"settings": {"fin_timeout_s": "7", "cc": "newreno"}}),
        ("ip_set", {"settings": {"default_ttl": "9"}}),
    ]


# --- at run time, on the embedded stack ------------------------------------------------


def ping(stack: Stack, seq: int) -> None:
    frame = Ether(src=PEER_MAC, dst=OUR_MAC) / IP(src=PEER4, dst=OUR4) / ICMP(id=7, seq=seq)
    stack.link.inject(bytes(frame))


async def reply_ttl(stack: Stack, seq: int) -> int:
    got: list[Ether] = []

    def seen() -> list[Ether]:
        got.extend(p for p in map(Ether, stack.link.collect()) if ICMP in p and p[ICMP].seq == seq)
        return got

    ping(stack, seq)
    (pong,) = await until(seen)
    return int(pong[IP].ttl)


def test_ip_settings_change_at_run_time_all_or_nothing() -> None:
    """``ip_set``: the next echo reply leaves with the new TTL; a request
    with a bad value beside a good one changes nothing; the dispatcher's
    part (the reassembly limits) follows too."""

    async def go() -> None:
        config = StackConfig(ip={"default_ttl": 50})
        async with Stack(mac=OUR_MAC, ipv4=[OUR4 + "/24"], ndp=FAST_NDP, config=config) as stack:
            stack.link.inject(
                bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=PEER4, pdst=OUR4))
            )
            assert await reply_ttl(stack, 1) == 50
            value = stack.ip_set({"default_ttl": "33", "frag_time_v4_s": "4"})
            assert value["default_ttl"] == 33 and stack.ip_get() == value
            assert await reply_ttl(stack, 2) == 33
            assert stack.reassembler.config.timeout_v4 == 4.0
            with pytest.raises(ControlError) as exc:
                stack.ip_set({"default_ttl": "20", "icmp_burst": "0"})
            assert exc.value.errno == errno.EINVAL
            assert stack.ip_get()["default_ttl"] == 33
            assert await reply_ttl(stack, 3) == 33

    run(go())


def test_tcp_settings_reach_open_and_new_connections() -> None:
    """``tcp_set`` on a running stack: a connection opened before takes the
    new TIME-WAIT time when it gets there (60 s by default: it would still
    be listed); the settings read back; a bad name changes nothing."""

    async def go() -> None:
        a, b = Stack.pair(ndp=FAST_NDP)
        async with a, b:

            async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                await r.read()
                w.close()

            await b.start_server(echo, None, 7)
            reader, writer = await a.open_connection("198.18.0.2", 7)
            value = a.tcp_set({"time_wait_s": "0.3", "syn_backlog": "16", "cc": "newreno"})
            assert (value["time_wait_s"], value["syn_backlog"], value["cc"]) == (0.3, 16, "newreno")
            with pytest.raises(ControlError, match="unknown TCP setting"):
                a.tcp_set({"time_wait_s": "9", "tcp_fin_timeout": "1"})
            assert a.tcp_get()["time_wait_s"] == 0.3
            writer.write_eof()  # we close first: TIME-WAIT is ours
            await reader.read()
            writer.close()
            await until(lambda: [c for c in a.conns() if c["state"] == "TIME-WAIT"])
            await until(lambda: not [c for c in a.conns() if c["state"] != "LISTEN"], timeout=3)

    run(go())


def test_ctl_shows_the_settings_as_set_takes_them() -> None:
    """Each row reads back through ``--set`` to the same value."""

    async def go() -> None:
        async with Stack(mac=OUR_MAC, ipv4=[OUR4 + "/24"], ndp=FAST_NDP) as stack:
            value = stack.tcp_set({"fin_timeout_s": "12"})
            rows = [line.split() for line in ctl.render_settings(value).splitlines()[1:]]
            assert ["fin_timeout_s", "12.0"] in rows and ["linger2_s", "none"] in rows
            assert TcpConfig.from_settings(dict(rows)) == TcpConfig.from_settings(value)
            assert json.loads(json.dumps(stack.ip_get())) == stack.ip_get()

    run(go())


@pytest.mark.parametrize(
    "flag",
    [["--ip", "default_ttl=0"], ["--ip", "ttl=3"], ["--tcp", "cc=bbr"], ["--tcp", "retries2"]],
)
def test_shardnet_run_refuses_a_bad_setting_in_one_line(flag: list[str]) -> None:
    """Before anything is opened: exit code 2, one line on stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "shardnet.scripts.cli", "run", "--tap", "snbad0", *flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("shardnet: error: ")
