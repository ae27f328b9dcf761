"""The DHCPv4 lease kept in the state directory for INIT-REBOOT."""

from __future__ import annotations

from pathlib import Path

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.shards.net.leasefile import LeaseFile

MAC, OTHER = parse_mac("02:00:00:00:00:01"), parse_mac("02:00:00:00:00:02")
ADDR, SERVER = parse_ip("198.18.0.50"), parse_ip("198.18.0.1")


def test_kept_read_back_and_forgotten(tmp_path: Path) -> None:
    f = LeaseFile(str(tmp_path / "state"), "sntap0", MAC)
    assert f.load() is None
    f.store(ADDR, SERVER)
    assert LeaseFile(str(tmp_path / "state"), "sntap0", MAC).load() == ADDR
    assert LeaseFile(str(tmp_path / "state"), "sntap0", OTHER).load() is None  # another client
    f.store(None, None)
    assert f.load() is None and not (tmp_path / "state" / "sntap0.dhcp4").exists()


def test_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    for text in ("not json", "[]", '{"mac": "02:00:00:00:00:01", "address": "x"}',
                 '{"mac": "02:00:00:00:00:01", "address": "2001:db8::1"}'):  # fmt: skip
        (tmp_path / "sntap0.dhcp4").write_text(text)
        assert LeaseFile(str(tmp_path), "sntap0", MAC).load() is None


def test_an_unwritable_directory_only_costs_the_reboot(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    f = LeaseFile(str(tmp_path / "file" / "sub"), "sntap0", MAC)
    f.store(ADDR, SERVER)  # no exception: a warning
    assert f.load() is None
