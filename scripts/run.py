"""``shardnet run``: parse flags and the config file, start the dispatcher.

Bad input (flags, config, a TAP that cannot be made, a port in use) is one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import logging
import os
import sys

from shardnet.common.config import (
    ACD_MODES,
    DHCP6_MODES,
    ConfigError,
    StackConfig,
    build_config,
    load_toml,
)

EXIT_CONFIG = 2  # bad flags or config (argparse's own code)
EXIT_RUNTIME = 1  # the stack could not start


def add_arguments(p: argparse.ArgumentParser) -> None:
    link = p.add_mutually_exclusive_group()
    link.add_argument("--tap", metavar="NAME", help="TAP device to attach to (created if missing)")
    link.add_argument(
        "--packet", metavar="IFACE", help="attach to an existing interface with AF_PACKET"
    )
    link.add_argument(
        "--tun", metavar="NAME", help="TUN device (an L3 point-to-point link) to attach to"
    )
    p.add_argument(
        "--tun-netns",
        metavar="NS",
        help="move the TUN device into network namespace NS once created (the fd stays here)",
    )
    p.add_argument(
        "--relay",
        metavar="MODE",
        help="accept TCP/UDP flows to any address and relay each one"
        " (MODE: direct, or socks5://[USER:PASSWORD@]HOST:PORT)",
    )
    p.add_argument(
        "--relay-netns",
        metavar="NS",
        help="open the relay's kernel sockets in network namespace NS",
    )
    p.add_argument(
        "--relay-rule",
        dest="relay_rules",
        action="append",
        metavar="ACTION,PREFIX[,PORTS]",
        help="allow or deny relayed destinations, e.g. deny,198.19.5.0/24,25 (first match wins)",
    )
    p.add_argument(
        "--relay-limits",
        metavar="NAME=N,...",
        help="per shard: in_flight, per_source, per_destination (TCP flows), udp_flows",
    )
    p.add_argument(
        "--relay-refused",
        choices=("rst", "icmp"),
        help="how a client learns the relay could not connect (default rst)",
    )
    p.add_argument(
        "--relay-icmp",
        choices=("local", "relay"),
        help="ICMP echo to any address: answered by shardnet (local, the default) or sent on"
        " to the destination with a kernel ICMP socket, answered when it answers (relay)",
    )
    p.add_argument(
        "--socks5",
        metavar="[USER:PASSWORD@]HOST:PORT",
        help="a SOCKS5 server on a kernel socket; each CONNECT is dialled through shardnet",
    )
    p.add_argument(
        "--http-proxy",
        metavar="[USER:PASSWORD@]HOST:PORT",
        help="an HTTP proxy (CONNECT and http:// URIs) on a kernel socket, dialled through"
        " shardnet (with credentials, Proxy-Authorization: Basic is required)",
    )
    p.add_argument(
        "--forward",
        dest="forwards",
        action="append",
        metavar="tcp|udp:LISTEN=TARGET",
        help="forward a kernel port to TARGET through shardnet (LISTEN HOST:PORT),"
        " or shardnet's port to TARGET on the host (LISTEN shardnet:PORT); repeatable",
    )
    p.add_argument("--mac", help="shardnet's own MAC on the link (default: random 02:xx:..)")
    p.add_argument("--mtu", type=int, help="link MTU (default 1500)")
    p.add_argument("--ipv4", action="append", metavar="A/L", help="an IPv4 address (repeatable)")
    p.add_argument("--ipv6", action="append", metavar="A/L", help="an IPv6 address (repeatable)")
    p.add_argument("--gateway4", metavar="IP", help="IPv4 default gateway")
    p.add_argument("--gateway6", metavar="IP", help="IPv6 default gateway")
    p.add_argument("--shards", type=int, help="shard processes (default: number of CPUs)")
    p.add_argument("--serve", action="append", metavar="APP:PORT", help="run a built-in app")
    p.add_argument(
        "--app", metavar="MODULE:CALLABLE", help="run async def main(stack) in every shard"
    )
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics")
    p.add_argument(
        "--control", metavar="ENDPOINT", help="control endpoint (ipc://PATH or tcp://HOST:PORT)"
    )
    p.add_argument("--no-slaac", dest="slaac", action="store_const", const=False, help="no SLAAC")
    p.add_argument(
        "--dhcp4",
        action="store_const",
        const=True,
        help="IPv4 address, default route and DNS servers from a DHCP server (RFC 2131)",
    )
    p.add_argument(
        "--dhcp6",
        choices=DHCP6_MODES,
        help="DHCPv6 (RFC 8415) when an RA sets the M or O flag: auto (default), off",
    )
    p.add_argument(
        "--acd",
        choices=ACD_MODES,
        help="IPv4 address conflict detection (RFC 5227) for: DHCP leases (default), all, off",
    )
    p.add_argument("--forwarding", action="store_const", const=True, help="forward between NICs")
    p.add_argument(
        "--drain", dest="drain_s", type=float, metavar="SECONDS", help="bound on graceful close"
    )
    p.add_argument(
        "--no-offload",
        dest="offload",
        action="store_const",
        const=False,
        help="no checksum or segmentation offload: MTU frames, checksums in software",
    )
    p.add_argument(
        "--multi-queue",
        dest="multi_queue",
        action="store_const",
        const=True,
        help="one TAP queue per shard: shards read their flows from the kernel (no dispatcher hop)",
    )
    p.add_argument("--pcap", metavar="FILE", help="record every frame in and out")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the link's RFC 7217 secret and DHCPv4 lease are kept across restarts"
        " (/var/lib/shardnet)",
    )
    p.add_argument(
        "--fault",
        metavar="SPEC",
        help="inject faults both ways: drop=P,dup=P,reorder=P,delay=P,delay_ms=MS,latency_ms=MS,ce=P,seed=N",
    )
    p.add_argument(
        "--tcp",
        metavar="NAME=VALUE",
        action="append",
        help="a TCP setting for every connection (repeatable), e.g. rack=false, rfc1337=true",
    )
    p.add_argument(
        "--ip",
        metavar="NAME=VALUE",
        action="append",
        help="an IPv4/IPv6 setting (repeatable), e.g. default_ttl=32, frag_time_v4_s=10",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same settings (flags win)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def config_from_args(ns: argparse.Namespace) -> StackConfig:
    flags = {k: v for k, v in vars(ns).items() if k not in ("config", "verbose", "command")}
    file_settings = load_toml(ns.config) if ns.config else {}
    return build_config(file_settings, flags)


def check_settings(config: StackConfig) -> None:
    """Checks that need more than the config module knows: the [ndp], [tcp]
    and [ip] tables against NdpConfig, TcpConfig and IpConfig, and that the
    --app module can be found."""
    from shardnet.shards.net.ndp import NdpConfig

    try:
        NdpConfig.from_settings(config.ndp)
    except ValueError as exc:
        raise ConfigError(f"[ndp]: {exc}") from None
    from shardnet.shards.tcp.config import TcpConfig

    try:
        TcpConfig.from_settings(config.tcp)
    except ValueError as exc:
        raise ConfigError(f"[tcp]: {exc}") from None
    from shardnet.common.ipconfig import IpConfig

    try:
        IpConfig.from_settings(config.ip)
    except ValueError as exc:
        raise ConfigError(f"[ip]: {exc}") from None
    from shardnet.shards.relay.limits import RelayLimits
    from shardnet.shards.relay.rules import RelayRules
    from shardnet.shards.relay.socks5 import Upstream

    try:
        RelayRules.parse(config.relay_rules)
    except ValueError as exc:
        raise ConfigError(f"--relay-rule: {exc}") from None
    try:
        RelayLimits.parse(config.relay_limits)
    except ValueError as exc:
        raise ConfigError(f"--relay-limits: {exc}") from None
    if config.relay is not None and config.relay != "direct":
        try:
            Upstream.parse(config.relay)
        except ValueError as exc:
            raise ConfigError(f"--relay: {exc}") from None
    from shardnet.shards.fronts.forward import ForwardSpec, ProxySpec

    try:
        proxies = [
            (flag, ProxySpec.parse(text, flag))
            for flag, text in (("--socks5", config.socks5), ("--http-proxy", config.http_proxy))
            if text is not None
        ]
        kernel_side = [
            ("--forward", f.proto, f.listen_host, f.listen_port)
            for f in map(ForwardSpec.parse, config.forwards)
            if not f.stack_side
        ]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kernel_side += [(flag, "tcp", spec.host, spec.port) for flag, spec in proxies]
    for what, proto, host, port in kernel_side:
        _check_free(what, proto, host, port)
    for what, ns in (("--tun-netns", config.tun_netns), ("--relay-netns", config.relay_netns)):
        if ns is not None and not os.path.exists(os.path.join("/run/netns", ns)):
            raise ConfigError(f"{what}: no network namespace {ns!r} (ip netns add {ns})")
    if config.app is not None:
        module = config.app.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"--app: no module {module!r} (is it on PYTHONPATH?)")


def _check_free(what: str, proto: str, host: str, port: int) -> None:
    """A front's kernel port must be free now (each shard binds it with
    SO_REUSEPORT later; a port someone else holds would only be logged)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"{what}: cannot listen on {host}:{port}: {exc.strerror}") from None


def main(ns: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="shardnet: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(ns)
        check_settings(config)
        if config.secret is None:
            from shardnet.dispatcher.secret import stable_secret

            secret, warning = stable_secret(config.state_dir, config.link_name)
            if warning is not None:
                logging.getLogger("shardnet").warning("%s", warning)
            config = dataclasses.replace(config, secret=secret)
    except ConfigError as exc:
        print(f"shardnet: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from shardnet.dispatcher.app import Dispatcher
    from shardnet.shards.main import shard_main  # the launcher hands the entry point over

    try:
        return asyncio.run(Dispatcher(config, shard_main).run())
    except OSError as exc:  # LinkError, port in use, another stack on the endpoint
        print(f"shardnet: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 0
