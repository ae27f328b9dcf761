"""Per-NIC NDP configuration (gVisor's NDPConfigurations): from the config file's [ndp]
table, and read or changed at run time through the control channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.common.config import ConfigError, build_config, load_toml
from shardnet.shards.net.ndp import IidMode, NdpConfig
from shardnet.shards.net.state import NetError

from .harness import Net


def test_settings_convert_by_field_type() -> None:
    cfg = NdpConfig.from_settings(
        {
            "dup_addr_detect_transmits": "3",
            "retrans_timer_s": 0.5,
            "iid_mode": "eui64",
            "handle_ras": "off",
        }
    )
    assert (cfg.dup_addr_detect_transmits, cfg.retrans_timer_s, cfg.iid_mode, cfg.handle_ras) == (
        3, 0.5, IidMode.EUI64, False
    )  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"no_such": 1}, "unknown NDP setting"),
        ({"max_routers": "many"}, "bad value"),
        ({"iid_mode": "mac"}, "bad value"),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        NdpConfig.from_settings(settings)


def test_the_config_file_ndp_table(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('tap = "sntap0"\n[ndp]\ndup_addr_detect_transmits = 0\nmax_routers = 3\n')
    cfg = build_config(load_toml(str(path)), {})
    assert NdpConfig.from_settings(cfg.ndp).max_routers == 3
    path.write_text('tap = "sntap0"\n[nope]\nx = 1\n')
    with pytest.raises(ConfigError, match=r"unknown table \[nope\]"):
        load_toml(str(path))


def test_get_and_set_at_run_time() -> None:
    net = Net()
    assert net.request("ndp_get")["max_routers"] == 10
    after = net.request("ndp_set", settings={"max_routers": "2", "retrans_timer_s": "0.25"})
    assert (after["max_routers"], after["retrans_timer_s"]) == (2, 0.25)
    assert net.control.ndp[1].config.max_routers == 2  # the machine uses it from now on
    with pytest.raises(NetError, match="unknown NDP setting"):
        net.request("ndp_set", settings={"bogus": 1})
    with pytest.raises(NetError, match="runs no NDP"):
        net.request("ndp_get", nic="lo")
