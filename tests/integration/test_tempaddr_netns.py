"""RFC 8981 temporary addresses against a real router: radvd on the kernel
side advertises a prefix; shardnet with ``use_tempaddr`` 1 or 2 gets a
stable (RFC 7217) and a temporary address in it, ``ctl addrs`` shows both,
and a TCP connection that shardnet's app opens to the kernel comes from the
temporary address with 2 (RFC 6724 rule 7) and from the stable one with 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import TAP, StackProcess
from .test_ndp_netns import KERNEL_IN_PREFIX, PREFIX, SECRET, Radvd, addr_rows, in_prefix, opaque


def rows_in_prefix(stack: StackProcess) -> dict[str, dict]:
    return {a: row for a, row in addr_rows(stack).items() if in_prefix(a, PREFIX)}


@pytest.mark.netns
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", [1, 2])
def test_temporary_address_from_radvd_and_the_source_it_gives(mode: int, tmp_path: Path) -> None:
    skip_unless_netns()
    config = tmp_path / "shardnet.toml"
    config.write_text(f'secret = "{SECRET}"\n[ndp]\nuse_tempaddr = {mode}\n')
    with Netns("tmpa") as ns:
        ns.run("sysctl -qw net.ipv6.conf.default.accept_dad=0")
        with StackProcess(
            ns, "--config", str(config), "--app", "tests.apps.tempaddr_probe:main"
        ) as stack:
            ns.run(f"ip addr add {KERNEL_IN_PREFIX}/64 dev {TAP} nodad")
            radvd = Radvd(ns, tmp_path, PREFIX)
            radvd.start()
            try:

                def both_usable() -> bool:
                    rows = rows_in_prefix(stack)
                    return sorted(
                        r["origin"] for r in rows.values() if r["kind"] == "permanent"
                    ) == [
                        "slaac",
                        "temporary",
                    ]

                assert wait_until(both_usable, timeout=30), (
                    f"{rows_in_prefix(stack)}\nradvd:\n{radvd.output()}"
                )
                rows = rows_in_prefix(stack)
                by_origin = {r["origin"]: a for a, r in rows.items()}
                assert by_origin["slaac"] == opaque(PREFIX, 0)
                temporary = by_origin["temporary"]
                assert temporary != opaque(PREFIX, 0)
                # The app has been trying to connect all along: the first
                # connection that succeeds is the one the kernel sees.
                out = ns.python(
                    f"""
                    import socket
                    srv = socket.create_server(("{KERNEL_IN_PREFIX}", 8000), family=socket.AF_INET6)
                    srv.settimeout(60)
                    conn, peer = srv.accept()
                    conn.makefile().readline()
                    conn.close()
                    print(peer[0])
                    """,
                    timeout=90,
                ).stdout.strip()
            finally:
                radvd.stop()
    assert out == (temporary if mode == 2 else opaque(PREFIX, 0))
