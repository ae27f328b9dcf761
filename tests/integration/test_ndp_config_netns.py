"""Per-NIC NDP configuration in a running stack: the config file's [ndp]
table applies, and ``shardnet ctl ndp --set`` changes it at run time."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.utils6 import in6_mactoifaceid

from ..netns import Netns, skip_unless_netns, wait_until
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
        # Modified EUI-64 link-local (RFC 4291 App. A; scapy is the oracle) from
        # the configured iid_mode, usable as soon as it exists (no DAD).
        want = ipaddress.IPv6Address(f"fe80::{in6_mactoifaceid(mac)}")

        def link_local_permanent() -> bool:
            return any(
                ipaddress.ip_address(a["addr"]) == want and a["kind"] == "permanent"
                for a in stack.call("addrs")
            )

        assert wait_until(link_local_permanent), (want, stack.call("addrs"))
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
