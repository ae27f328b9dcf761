"""Settings from a TOML file and flags: flags win, bad values are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.common.config import ConfigError, ServeSpec, build_config, load_toml


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\nshards = 3\nipv4 = ["198.18.0.2/24"]\n[stack]\ndrain = 2\n')
    cfg = build_config(load_toml(str(path)), {"shards": 2, "serve": ["http:80"]})
    assert (cfg.tap, cfg.shards, cfg.ipv4, cfg.drain_s) == ("sntap0", 2, ("198.18.0.2/24",), 2.0)
    assert cfg.serve == (ServeSpec("http", 80),)
    assert cfg.control_endpoint == "ipc:///run/shardnet/sntap0.ctl"


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({}, "exactly one of --tap"),
        ({"tap": "a", "packet": "b"}, "exactly one of --tap"),
        ({"tap": "x" * 16}, "bad interface name"),
        ({"tap": "t", "ipv4": ["198.18.0.300/24"]}, "bad address"),
        ({"tap": "t", "ipv4": ["2001:db8::1/64"]}, "not an IPv4"),
        ({"tap": "t", "ipv6": ["2001:db8::1"]}, "needs a prefix length"),
        ({"tap": "t", "serve": ["gopher:70"]}, "unknown app"),
        ({"tap": "t", "serve": ["http:0"]}, "out of range"),
        ({"tap": "t", "metrics": "127.0.0.1"}, "HOST:PORT"),
        ({"tap": "t", "shards": 0}, "--shards"),
        ({"tap": "t", "mac": "02:00:00"}, "not a MAC"),
        ({"tap": "t", "app": "nomodule"}, "MODULE:CALLABLE"),
        ({"tap": "t", "gateway4": "2001:db8::1"}, "not an IPv4"),
        ({"packet": "p", "multi_queue": True}, "--multi-queue needs --tap"),
        ({"tap": "t", "multi_queue": True, "pcap": "x.pcap"}, "do not go together"),
        ({"tap": "t", "offload": "yes"}, "want true or false"),
        ({"tap": "a", "tun": "b"}, "exactly one of --tap"),
        ({"tap": "t", "tun_netns": "sn-x"}, "--tun-netns needs --tun"),
        ({"tun": "t", "tun_netns": "a/b"}, "bad namespace name"),
        ({"tun": "t", "multi_queue": True}, "--multi-queue needs --tap"),
        ({"tun": "t", "relay": "socks9"}, "unknown mode"),
        ({"tun": "t", "relay_rules": ["deny,198.19.0.0/16"]}, "--relay-rule needs --relay"),
        ({"tun": "t", "relay_netns": "sn-x"}, "--relay-netns needs --relay"),
        ({"tun": "t", "relay": "direct", "relay_refused": "drop"}, "rst or icmp"),
        ({"tun": "t", "relay": "direct", "relay_icmp": "raw"}, "local or relay"),
        ({"tun": "t", "relay_icmp": "relay"}, "--relay-icmp needs --relay"),
        ({"tun": "t", "relay": "direct", "relay_netns": ".."}, "bad namespace name"),
        ({"tun": "t", "dhcp4": True}, "--dhcp4 needs an Ethernet link"),
        ({"tap": "t", "dhcp4": "yes"}, "want true or false"),
        ({"tap": "t", "acd": "static"}, "acd: want one of off, dhcp, all"),
        ({"tap": "t", "dhcp6": "on"}, "dhcp6: want one of off, auto"),
    ],
)
def test_bad_values_are_one_line_errors(flags: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({}, flags)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_acd_from_the_file_or_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\nacd = "all"\n')
    assert build_config(load_toml(str(path)), {}).acd == "all"
    assert build_config(load_toml(str(path)), {"acd": "off"}).acd == "off"
    assert build_config({}, {"tap": "sntap0"}).acd == "dhcp"  # leases probed by default


def test_dhcp6_from_the_file_or_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\ndhcp6 = "off"\n')
    assert build_config(load_toml(str(path)), {}).dhcp6 == "off"
    assert build_config(load_toml(str(path)), {"dhcp6": "auto"}).dhcp6 == "auto"
    assert build_config({}, {"tap": "sntap0"}).dhcp6 == "auto"  # RAs start it by default


def test_dhcp4_from_the_file_or_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\ndhcp4 = true\n')
    assert build_config(load_toml(str(path)), {}).dhcp4 is True
    assert build_config({}, {"tap": "sntap0", "dhcp4": True}).dhcp4 is True
    assert build_config({}, {"tap": "sntap0"}).dhcp4 is False


def test_unknown_file_setting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\nshardz = 2\n')
    with pytest.raises(ConfigError, match="unknown setting 'shardz'"):
        load_toml(str(path))


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("tap = \n")
    with pytest.raises(ConfigError):
        load_toml(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(str(tmp_path / "missing.toml"))


def test_tcp_table_and_flags_build_the_connection_config(tmp_path: Path) -> None:
    """[tcp] in the file, --tcp NAME=VALUE on top; TcpConfig converts."""
    from shardnet.shards.tcp.config import TcpConfig

    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\n[tcp]\nrack = false\nrfc1337 = true\ncork_s = 0.1\n')
    cfg = build_config(load_toml(str(path)), {"tcp": ["rack=true", "user-mss=1200"]})
    assert cfg.tcp == {"rack": "true", "rfc1337": True, "cork_s": 0.1, "user_mss": "1200"}
    tcp = TcpConfig.from_settings(cfg.tcp)
    assert (tcp.rack, tcp.rfc1337, tcp.cork_s, tcp.user_mss) == (True, True, 0.1, 1200)
    assert not TcpConfig.from_settings({"rack": "off"}).rack
    with pytest.raises(ValueError, match="unknown TCP setting 'nope'"):
        TcpConfig.from_settings({"nope": 1})
    with pytest.raises(ValueError, match="rack: bad value"):
        TcpConfig.from_settings({"rack": "maybe"})
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        build_config({}, {"tap": "sntap0", "tcp": ["rack"]})


def test_a_relay_table_sets_the_relay(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        'tun = "sngw0"\n[relay]\nmode = "direct"\nnetns = "sn-srv"\nrefused = "icmp"\n'
        'rules = ["deny,198.19.5.0/24", "allow,0.0.0.0/0"]\nicmp = "relay"\n'
    )
    config = build_config(load_toml(str(path)), {"relay_rules": ["deny,198.19.6.0/24"]})
    assert (config.relay, config.relay_netns, config.relay_refused) == ("direct", "sn-srv", "icmp")
    assert config.relay_rules == ("deny,198.19.6.0/24",)  # flags win
    assert config.relay_icmp == "relay"
    path.write_text('tun = "sngw0"\n[relay]\nmodel = "direct"\n')
    with pytest.raises(ConfigError, match="unknown \\[relay\\] setting 'model'"):
        load_toml(str(path))
