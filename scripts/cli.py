"""The ``shardnet`` command: one entry point, argparse subcommands.

Each subcommand lives in its own module under ``shardnet.scripts`` with
``add_arguments(parser)`` and ``main(namespace) -> int``; the heavy imports
(dispatcher, shards) happen inside ``main``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("shardnet")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


# bench target -> module exposing run(argv) -> int
BENCHES = {
    "codecs": "shardnet.scripts.bench_codecs",
    "ring": "shardnet.scripts.bench_ring",
    "udp": "shardnet.scripts.bench_udp",  # loadtest --scenario udp --against kernel
}


# subcommand -> module with add_arguments(parser) and main(namespace) -> int
COMMANDS = (
    ("run", "shardnet.scripts.run", "run the stack on a TAP or an interface"),
    ("ctl", "shardnet.scripts.ctl", "show the state of a running stack"),
    ("top", "shardnet.scripts.top", "live per-shard view of a running stack"),
    (
        "demo",
        "shardnet.scripts.demo",
        "see it work: a namespace, a TAP, ping, HTTP, 50 MB each way",
    ),
    (
        "loadtest",
        "shardnet.scripts.loadtest",
        "load test: bulk, echo, crr, rr, udp, ping, conns; ratios to the kernel",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardnet",
        description="A user-space TCP/IP stack in Python, sharded over processes.",
    )
    parser.add_argument("--version", action="version", version=f"shardnet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_ in COMMANDS:
        cmd = sub.add_parser(name, help=help_)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_parser=cmd)
    bench = sub.add_parser("bench", help="benchmarks (codecs, ring, udp against the kernel)")
    bench.add_argument("target", choices=sorted(BENCHES), help="what to measure")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options of the benchmark")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    own_parser = vars(ns).pop("_parser", parser)  # not a setting of the subcommand
    if extra:
        # the subcommand's parser reports it, in that subcommand's own way
        own_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command is None:
        parser.print_help()
        return 2
    if ns.command == "bench":
        module = importlib.import_module(BENCHES[ns.target])
        return int(module.run(ns.args))
    module = importlib.import_module(dict((n, m) for n, m, _ in COMMANDS)[ns.command])
    return int(module.main(ns))


if __name__ == "__main__":
    sys.exit(main())
