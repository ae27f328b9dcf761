"""Per-NIC NDP configuration (B33) in a running stack: the config file's
[ndp] table applies, and ``shardnet ctl ndp --set`` changes it at run time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def test_config_file_and_ctl_ndp(tmp_path: Path) -> None:
    skip_unless_netns()
    conf = tmp_path / "s.toml"
    conf.write_text(
        'ipv6 = ["2001:db8::2/64"]\n[ndp]\ndup_addr_detect_transmits = 0\niid_mode = "eui64"\n'
    )
    with Netns("ndpconf") as ns, StackProcess(ns, "--config", str(conf)) as stack:
        mac = stack.call("hello")["mac"]
        ctl = [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", stack.control]
        got = json.loads(
            subprocess.run(
                [*ctl, "ndp", "--json"], check=True, capture_output=True, text=True
            ).stdout
        )
        assert got["dup_addr_detect_transmits"] == 0 and got["iid_mode"] == "eui64"
        # EUI-64 link-local (B20) from the configured iid_mode, usable at once (no DAD).
        b = bytes.fromhex(mac.replace(":", ""))
        iid = f"{(b[0] ^ 2) << 8 | b[1]:x}:{b[2]:x}ff:fe{b[3]:02x}:{b[4] << 8 | b[5]:x}"
        assert any(
            a["addr"] == f"fe80::{iid}" and a["kind"] == "permanent" for a in stack.call("addrs")
        )
        out = subprocess.run(
            [*ctl, "ndp", "--set", "max_routers=2", "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert json.loads(out.stdout)["max_routers"] == 2
        bad = subprocess.run(
            [*ctl, "ndp", "--set", "max_routers=lots"], capture_output=True, text=True
        )
        assert bad.returncode == 1 and "bad value" in bad.stderr
