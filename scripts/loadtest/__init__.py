"""``shardnet loadtest``: drives real kernel clients against shardnet (and,
with ``--against kernel``, against the kernel's own stack serving the same
apps, in the same command) and reports figures and ratios.

Scenarios: ``bulk`` (into discard, out of chargen), ``echo`` (SHA-256
checked), ``crr`` (connect, 100 B request, 100 B reply, close), ``rr``
(100-byte request/response on persistent connections), ``udp`` (UDP echo,
a window in flight), ``ping`` (ICMP echo RTT), ``conns`` (hold many
connections: RSS per connection, all still answer). Attacks, only when
named: ``synflood`` (spoofed SYNs at the sender's highest rate beside a
well-behaved connecting client: its success rate and latency),
``fragflood`` (never-completing fragments beside fragmented pings),
``raflood`` (Router Advertisements with random prefixes, NS and ARP from
ever new senders, beside pings; both families must answer afterwards),
``injection`` (blind RST, SYN, data and FIN segments into 100 live echo
transfers: none may break or corrupt),
``churn`` (connections opened and closed for as long as ``--duration``
says: the server's memory and descriptors before and after), ``soak``
(echo streams, crr, UDP and ping at once for ``--duration``, 30 min unless
given, while a shard other than 0 is killed with SIGKILL every
``--kill-every`` seconds: its connections must end with a reset, every other
connection go on intact, the new shard answer within a second), ``drain``
(SIGTERM to the server during 100 live transfers: each ends with FIN or
RST, the server exits 0 in its drain bound; it stops the server, so it
runs last). Gateway, only when named: ``relay`` (``bulk`` and ``crr`` from
a client namespace to a server namespace through shardnet's ``--relay
direct`` on a TUN; the kernel's baseline forwards between the same
namespaces through a router namespace).

Needs root for the namespaces it makes (and removes, also on failure); only
198.18.0.0/15 and 2001:db8::/32 are used. This module stays light: the
client processes import the package too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import NoReturn

SPEED = ("bulk", "echo", "crr", "rr", "udp", "ping", "conns")  # the default: all of these
HOSTILE = (
    "synflood",
    "fragflood",
    "raflood",
    "injection",
    "churn",
    "soak",
    "drain",
)  # attacks beside a well-behaved client; only when named
GATEWAY = ("relay",)  # its own namespaces, only when named
SCENARIOS = SPEED + HOSTILE + GATEWAY
PROG = "shardnet loadtest"
DURATION_S = 5.0  # --duration unless given: seconds per timed phase
SOAK_DURATION_S = 1800.0  # --duration unless given, for soak
KILL_MARGIN_S = 5.0  # soak: no kill later than this before its end (time to see the resets)


class UsageError(ValueError):
    """Bad command-line input: one line on stderr, exit code 2."""


@dataclass(frozen=True, slots=True)
class Settings:
    scenarios: tuple[str, ...]
    against_kernel: bool
    shards: tuple[int, ...]
    duration: float
    streams: int
    conns: int
    window: int
    size: int
    flood_rate: float
    json: str | None
    plot: str | None
    target: str | None
    netns: str | None
    control: str | None
    ipv6: bool
    multi_queue: bool = False  # the stack started with --multi-queue
    soak_duration: float = SOAK_DURATION_S
    kill_every: float = 120.0  # soak: seconds between two shard kills


def _usage_error(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.error = _usage_error  # type: ignore[method-assign]  # one line, not the usage block
    p.add_argument(
        "--scenario",
        default=",".join(SPEED),
        metavar="LIST",
        help=f"comma-separated, of {','.join(SCENARIOS)} ({','.join(SPEED)})",
    )
    p.add_argument(
        "--against", choices=("kernel",), help="also measure the kernel's stack, and the ratios"
    )
    p.add_argument("--shards", default="2", metavar="LIST", help="shard counts to sweep (2)")
    p.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds per timed phase ({DURATION_S:g}; soak: {SOAK_DURATION_S:g})",
    )
    p.add_argument(
        "--kill-every",
        type=float,
        default=120.0,
        metavar="S",
        help="soak: SIGKILL to a shard other than 0 this often (120)",
    )
    p.add_argument("--streams", type=int, default=4, help="client processes / streams (4)")
    p.add_argument("--conns", type=int, default=100_000, help="connections held by conns (100000)")
    p.add_argument("--window", type=int, default=32, help="udp: datagrams in flight (32)")
    p.add_argument(
        "--flood-rate",
        type=float,
        default=0.0,
        metavar="PPS",
        help="synflood/fragflood/raflood/injection: frames per second (0: as fast as it can)",
    )
    p.add_argument("--size", type=int, default=64, help="udp: payload bytes (64)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="a chart of the results (matplotlib)")
    p.add_argument(
        "--target", metavar="ADDR", help="a running stack serving echo:7, discard:9, chargen:19"
    )
    p.add_argument("--netns", metavar="NS", help="with --target: run the clients in this namespace")
    p.add_argument("--control", metavar="ENDPOINT", help="with --target: its control channel")
    p.add_argument("--ipv6", action="store_true", help="over IPv6 instead of IPv4")
    p.add_argument(
        "--multi-queue",
        action="store_true",
        help="start shardnet with --multi-queue (one TAP queue per shard, no dispatcher hop)",
    )


def settings_from_args(ns: argparse.Namespace) -> Settings:
    """Checks what argparse cannot; ``UsageError`` with what was wrong."""
    scenarios = tuple(s.strip() for s in ns.scenario.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if not scenarios or unknown:
        raise UsageError(
            f"--scenario: unknown {','.join(unknown) or '(empty)'}; of {','.join(SCENARIOS)}"
        )
    try:
        shards = tuple(int(s) for s in ns.shards.split(","))
    except ValueError:
        raise UsageError(f"--shards: {ns.shards!r} is not a list of numbers") from None
    if any(n < 1 for n in shards):
        raise UsageError("--shards: each shard count must be >= 1")
    if ns.duration is not None and not ns.duration > 0:
        raise UsageError("--duration must be > 0")
    duration = DURATION_S if ns.duration is None else ns.duration
    soak_duration = SOAK_DURATION_S if ns.duration is None else ns.duration
    if "soak" in scenarios:
        if not ns.kill_every > 0:
            raise UsageError("--kill-every must be > 0")
        if ns.kill_every + KILL_MARGIN_S > soak_duration:
            raise UsageError(
                f"--kill-every {ns.kill_every:g} leaves no kill in --duration "
                f"{soak_duration:g} (the last kill comes {KILL_MARGIN_S:g} s before the end)"
            )
        if ns.target is not None:
            raise UsageError("--scenario soak kills shards: not for a --target")
        if any(n < 2 for n in shards):
            raise UsageError("--scenario soak kills a shard other than 0: --shards must be >= 2")
    if ns.streams < 1 or ns.conns < 1 or ns.window < 1:
        raise UsageError("--streams, --conns and --window must be >= 1")
    if ns.flood_rate < 0:
        raise UsageError("--flood-rate must be >= 0")
    if not 8 <= ns.size <= 1400:
        raise UsageError("--size must be 8..1400")
    if ns.target is None and (ns.netns or ns.control):
        raise UsageError("--netns and --control go with --target")
    if ns.target is not None and ns.multi_queue:
        raise UsageError("--multi-queue is for a stack the harness starts, not a --target")
    if ns.target is not None and len(shards) > 1:
        raise UsageError("--shards sweeps stacks the harness starts, not a --target")
    if ns.target is not None and "relay" in scenarios:
        raise UsageError("--scenario relay starts its own relay: not for a --target")
    if ns.ipv6 and "relay" in scenarios:
        raise UsageError("--scenario relay is measured over IPv4 only")
    if ns.target is not None and "drain" in scenarios:
        raise UsageError("--scenario drain stops the server: not for a --target")
    # once each, in the order given, but conns and then drain last: closing
    # conns' many connections at once keeps a slow stack busy for minutes
    # afterwards, and drain stops the server
    last = ("conns", "drain")
    ordered = [s for s in dict.fromkeys(scenarios) if s not in last]
    ordered += [s for s in last if s in scenarios]
    return Settings(
        scenarios=tuple(ordered),
        against_kernel=ns.against == "kernel",
        shards=tuple(dict.fromkeys(shards)),
        duration=duration,
        streams=ns.streams,
        conns=ns.conns,
        window=ns.window,
        size=ns.size,
        flood_rate=ns.flood_rate,
        json=ns.json,
        plot=ns.plot,
        target=ns.target,
        netns=ns.netns,
        control=ns.control,
        ipv6=ns.ipv6,
        multi_queue=ns.multi_queue,
        soak_duration=soak_duration,
        kill_every=ns.kill_every,
    )


def main(ns: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(ns)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from .harness import run_settings  # the heavy part, not for the client processes

    return run_settings(settings)


def run(argv: list[str]) -> int:
    """``shardnet loadtest`` from an argv (``shardnet bench udp`` uses it)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_arguments(p)
    return main(p.parse_args(argv))
