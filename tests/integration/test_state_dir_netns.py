"""Opaque IPv6 addresses (RFC 7217) survive a restart: the secret is made
once per link, kept in the state directory (mode 0600) and read again; a
configured ``secret`` wins; a damaged secret file is a one-line error."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def link_local(ns: Netns, *args: str) -> str:
    with StackProcess(ns, "--ipv4", "198.18.0.2/24", *args) as stack:
        rows = stack.call("addrs")
        assert stack.stop() == 0
    (ll,) = [r["addr"] for r in rows if r["nic_name"] == TAP and r["addr"].startswith("fe80:")]
    return ll


def test_the_link_local_address_survives_a_restart(tmp_path: Path) -> None:
    skip_unless_netns()
    state = tmp_path / "state"
    with Netns("state") as ns:
        first = link_local(ns, "--state-dir", str(state))
        secret = state / f"{TAP}.secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(bytes.fromhex(secret.read_text().strip())) >= 16
        assert link_local(ns, "--state-dir", str(state)) == first
        # Another directory: another secret, another address.
        assert link_local(ns, "--state-dir", str(tmp_path / "other")) != first


def test_a_configured_secret_wins_and_nothing_is_written(tmp_path: Path) -> None:
    skip_unless_netns()
    conf = tmp_path / "shardnet.toml"
    conf.write_text(f'secret = "{"ab" * 16}"\n')
    with Netns("state") as ns:
        first = link_local(ns, "--config", str(conf), "--state-dir", str(tmp_path / "s"))
        assert not (tmp_path / "s").exists()
        assert link_local(ns, "--config", str(conf), "--state-dir", str(tmp_path / "t")) == first


def test_a_damaged_secret_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / f"{TAP}.secret").write_text("not hex\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardnet.scripts.cli",
            "run",
            "--tap",
            TAP,
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and f"{TAP}.secret holds no secret" in r.stderr, r.stderr
