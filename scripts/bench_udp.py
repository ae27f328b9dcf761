"""``shardnet bench udp``: UDP echo through shardnet against the kernel's, as
a ratio measured in the same command. An alias of ``shardnet loadtest
--scenario udp --against kernel`` (every option of ``loadtest`` applies)."""

from __future__ import annotations

from .loadtest import run as loadtest


def run(argv: list[str]) -> int:
    return loadtest(["--scenario", "udp", "--against", "kernel", *argv])
