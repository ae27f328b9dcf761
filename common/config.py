"""The stack's settings: one frozen record built from a TOML file and CLI flags.

Every timer a test needs to shorten is a field here, never a
patched module global. Bad values raise ``ConfigError`` with a one-line
message that the CLI prints as it is.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .addr import parse_mac
from .settings import parse_pairs

BUILTIN_APPS = ("echo", "discard", "chargen", "http", "whoami")


ACD_MODES = ("off", "dhcp", "all")  # the ``acd`` setting's values
DHCP6_MODES = ("off", "auto")  # the ``dhcp6`` setting's values


class ConfigError(ValueError):
    """A bad setting; the message is one line, fit to print."""


@dataclass(frozen=True, slots=True)
class ServeSpec:
    app: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ServeSpec:
        app, sep, port = text.rpartition(":")
        if not sep or not app:
            raise ConfigError(f"--serve wants APP:PORT, got {text!r}")
        if app not in BUILTIN_APPS:
            raise ConfigError(f"unknown app {app!r} (built-in apps: {', '.join(BUILTIN_APPS)})")
        return cls(app, _port(port, "--serve"))


@dataclass(frozen=True, slots=True)
class StackConfig:
    tap: str | None = None
    packet: str | None = None  # attach to an existing interface with AF_PACKET
    # A TUN device (IFF_TUN): an L3 point-to-point link, IP packets without
    # an Ethernet header, no ARP or NDP resolution.
    tun: str | None = None
    tun_netns: str | None = None  # move the TUN into this network namespace once made
    # --relay direct: accept TCP and UDP flows to any address and open each
    # one with a kernel socket (shards/relay/), from --relay-netns if given.
    relay: str | None = None
    relay_netns: str | None = None
    # What a client is told when the relay cannot connect: "rst" (a reset
    # answering its SYN) or "icmp" (ICMP destination unreachable).
    relay_refused: str = "rst"
    # ICMP echo to an address not ours: "local" (the stack answers it) or
    # "relay" (sent on with a kernel ICMP socket, shards/relay/echo.py).
    relay_icmp: str = "local"
    # --relay-rule ACTION,PREFIX[,PORT[-PORT]]: first match wins, default
    # allow (checked by ``shards/relay/rules.py``).
    relay_rules: tuple[str, ...] = ()
    # --relay-limits in_flight=N,per_source=N,per_destination=N,udp_flows=N
    # per shard (checked by ``shards/relay/limits.py``).
    relay_limits: str | None = None
    # Fronts for host programs (shards/fronts/): a SOCKS5 server and an HTTP
    # proxy on kernel sockets, each "[USER:PASSWORD@]HOST:PORT", and
    # --forward PROTO:LISTEN=TARGET (checked by ``shards/fronts/forward.py``).
    socks5: str | None = None
    http_proxy: str | None = None
    forwards: tuple[str, ...] = ()
    mac: bytes | None = None  # shardnet's own MAC; random locally administered if None
    mtu: int = 1500
    ipv4: tuple[str, ...] = ()  # "198.18.0.2/24" (validated, normalised)
    ipv6: tuple[str, ...] = ()
    gateway4: str | None = None
    gateway6: str | None = None
    shards: int = field(default_factory=lambda: os.cpu_count() or 1)
    serve: tuple[ServeSpec, ...] = ()
    app: str | None = None  # MODULE:CALLABLE
    metrics: tuple[str, int] | None = None  # (host, port)
    control: str | None = None  # zmq endpoint; default under /run/shardnet/
    slaac: bool = True
    # --dhcp4: the link's IPv4 address, router and DNS servers from a DHCP
    # server (RFC 2131, shards/net/dhcp4.py); the lease kept in ``state_dir``.
    dhcp4: bool = False
    # --acd: which IPv4 addresses are probed before use and defended (RFC
    # 5227, shards/net/acd.py): "dhcp" (leases only: a server may hand out
    # an address someone holds), "all" (static ones too), or "off" (as
    # Linux, which does no conflict detection of its own).
    acd: str = "dhcp"
    # --dhcp6: "auto" (default, as Linux's user-space clients) runs a DHCPv6
    # client (RFC 8415, shards/net/dhcp6.py) when an RA sets M (addresses)
    # or O (DNS servers and search list only); "off" never does.
    dhcp6: str = "auto"
    forwarding: bool = False
    pcap: str | None = None
    drain_s: float = 5.0  # bound on the graceful close at shutdown
    ring_bytes: int = 8 << 20  # data area of each dispatcher -> shard ring
    vnet_hdr: bool = True
    # Kernel offloads through the virtio-net header: checksums and TCP
    # segmentation both ways (GRO super-frames in, TSO super-segments out).
    # Off (--no-offload): MTU frames, checksums computed in Python.
    offload: bool = True
    # One TAP queue per shard (IFF_MULTI_QUEUE): each shard reads and writes
    # its own queue, the kernel steers flows to it (no dispatcher hop;
    # dispatcher/link/steering.py).
    multi_queue: bool = False
    stats_interval_s: float = 1.0  # shard -> dispatcher counter snapshots
    restart_backoff_s: float = 0.2  # first delay before restarting a dead shard
    # RFC 7217 secret key (hex, >= 16 bytes) for stable opaque IPv6 addresses;
    # when not given, ``shardnet run`` keeps one per link in ``state_dir``.
    secret: str | None = None
    state_dir: str = "/var/lib/shardnet"
    fault: str | None = None  # --fault: drop/dup/reorder/delay injection (common/fault.py)
    # Per-NIC NDP configuration (gVisor's NDPConfigurations) for the link:
    # NdpConfig field -> value,
    # from the config file's [ndp] table; checked by ``NdpConfig.from_settings``.
    ndp: dict[str, Any] = field(default_factory=dict)
    # TCP settings for every connection (TcpConfig field -> value), from the
    # config file's [tcp] table and --tcp NAME=VALUE; checked by
    # ``TcpConfig.from_settings``.
    tcp: dict[str, Any] = field(default_factory=dict)
    # IPv4/IPv6 settings (common/ipconfig.py ``IpConfig`` field -> value),
    # from the config file's [ip] table and --ip NAME=VALUE.
    ip: dict[str, Any] = field(default_factory=dict)

    @property
    def link_name(self) -> str:
        return self.tap or self.packet or self.tun or "shardnet"

    @property
    def link_kind(self) -> str:
        """The link NIC's kind: "tap", "packet" or "tun"."""
        return "tap" if self.tap else "tun" if self.tun else "packet"

    @property
    def control_endpoint(self) -> str:
        return self.control or default_control_endpoint(self.link_name)

    def validate(self) -> StackConfig:
        """Checks that need several fields; returns self for chaining."""
        if (bool(self.tap) + bool(self.packet) + bool(self.tun)) != 1:
            raise ConfigError("give exactly one of --tap NAME, --tun NAME or --packet IFACE")
        if self.tun_netns is not None and not self.tun:
            raise ConfigError("--tun-netns needs --tun")
        if self.acd not in ACD_MODES:
            raise ConfigError(f"acd: want one of {', '.join(ACD_MODES)}, got {self.acd!r}")
        if self.dhcp6 not in DHCP6_MODES:
            raise ConfigError(f"dhcp6: want one of {', '.join(DHCP6_MODES)}, got {self.dhcp6!r}")
        if self.dhcp4 and self.tun:
            raise ConfigError("--dhcp4 needs an Ethernet link (--tap or --packet), not --tun")
        if self.relay is not None and not (
            self.relay == "direct" or self.relay.startswith("socks5://")
        ):
            raise ConfigError(
                f"--relay: unknown mode {self.relay!r} (modes: direct, socks5://HOST:PORT)"
            )
        if self.relay_rules and self.relay is None:
            raise ConfigError("--relay-rule needs --relay")
        if self.relay_limits is not None and self.relay is None:
            raise ConfigError("--relay-limits needs --relay")
        if self.relay_netns is not None and self.relay is None:
            raise ConfigError("--relay-netns needs --relay")
        if self.relay_icmp not in ("local", "relay"):
            raise ConfigError(f"--relay-icmp must be local or relay, not {self.relay_icmp!r}")
        if self.relay_icmp != "local" and self.relay is None:
            raise ConfigError("--relay-icmp needs --relay")
        if self.relay_refused not in ("rst", "icmp"):
            raise ConfigError(f"--relay-refused must be rst or icmp, not {self.relay_refused!r}")
        for what, ns in (("--tun-netns", self.tun_netns), ("--relay-netns", self.relay_netns)):
            if ns is not None and (not 0 < len(ns) < 256 or "/" in ns or ns in (".", "..")):
                raise ConfigError(f"{what}: bad namespace name {ns!r}")
        name = self.link_name
        if len(name) > 15 or not name.isprintable() or "/" in name or " " in name:
            raise ConfigError(f"bad interface name {name!r} (at most 15 characters, no '/')")
        if not 1 <= self.shards <= 64:
            raise ConfigError(f"--shards must be 1..64, got {self.shards}")
        if not 1280 <= self.mtu <= 65535 - 14:
            raise ConfigError(f"mtu must be 1280..65521, got {self.mtu}")
        if self.ring_bytes < 1 << 18 or self.ring_bytes & (self.ring_bytes - 1):
            raise ConfigError("ring size must be a power of two of at least 256 KiB")
        if self.multi_queue and not self.tap:
            raise ConfigError("--multi-queue needs --tap (a multi-queue TAP)")
        if self.multi_queue and self.pcap:
            raise ConfigError("--multi-queue and --pcap do not go together (shards read the TAP)")
        if self.drain_s < 0:
            raise ConfigError("--drain must not be negative")
        if self.secret is not None:
            try:
                key = bytes.fromhex(self.secret)
            except ValueError:
                raise ConfigError("secret must be hex") from None
            if len(key) < 16:
                raise ConfigError("secret must be at least 16 bytes (RFC 7217 §5)")
        return self


def default_control_endpoint(link_name: str) -> str:
    return f"ipc:///run/shardnet/{link_name}.ctl"


def _port(text: str | int, what: str) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: bad port {text!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} out of range 1..65535")
    return port


def parse_interface_address(text: str, version: int, what: str) -> str:
    """'198.18.0.2/24' -> normalised text; ConfigError otherwise."""
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(f"{what}: bad address {text!r} (want ADDRESS/PREFIXLEN)") from None
    if iface.version != version:
        raise ConfigError(f"{what}: {text!r} is not an IPv{version} address")
    if "/" not in text:
        raise ConfigError(f"{what}: {text!r} needs a prefix length")
    return iface.with_prefixlen


def parse_gateway(text: str, version: int, what: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{what}: bad address {text!r}") from None
    if addr.version != version:
        raise ConfigError(f"{what}: {text!r} is not an IPv{version} address")
    return str(addr)


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what} wants HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"{what}: bad host {host!r}") from None
    return host, _port(port, what)


def parse_app(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr or not attr.isidentifier():
        raise ConfigError(f"--app wants MODULE:CALLABLE, got {text!r}")
    return text


# Setting name (TOML key and CLI dest) -> how to turn raw input into the field.
def _convert(name: str, value: Any) -> Any:
    if value is None:
        return None
    match name:
        case "mac":
            try:
                return parse_mac(str(value))
            except ValueError as exc:
                raise ConfigError(f"--mac: {exc}") from None
        case "ipv4" | "ipv6":
            items = [value] if isinstance(value, str) else list(value)
            version = 4 if name == "ipv4" else 6
            return tuple(parse_interface_address(str(a), version, f"--{name}") for a in items)
        case "gateway4" | "gateway6":
            return parse_gateway(str(value), 4 if name == "gateway4" else 6, f"--{name}")
        case "relay_rules" | "forwards":
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(r) for r in items)
        case "serve":
            items = [value] if isinstance(value, str) else list(value)
            return tuple(ServeSpec.parse(str(s)) for s in items)
        case "metrics":
            return parse_hostport(str(value), "--metrics")
        case "app":
            return parse_app(str(value))
        case "shards" | "mtu" | "ring_bytes":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ConfigError(f"{name}: want an integer, got {value!r}")
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{name}: want an integer, got {value!r}") from None
        case "drain_s" | "stats_interval_s" | "restart_backoff_s":
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: want a number, got {value!r}") from None
        case "ndp":
            if not isinstance(value, dict) or any(
                isinstance(v, dict | list) for v in value.values()
            ):
                raise ConfigError("[ndp] must be a table of settings (name = value)")
            return dict(value)
        case "tcp" | "ip":
            if isinstance(value, list | tuple):
                try:
                    return parse_pairs(value, f"--{name}")
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            if not isinstance(value, dict) or any(
                isinstance(v, dict | list) for v in value.values()
            ):
                raise ConfigError(f"[{name}] must be a table of settings (name = value)")
            return dict(value)
        case "fault":
            from .fault import FaultSpec  # fault.py needs ConfigError from here

            FaultSpec.parse(str(value))
            return str(value)
        case "slaac" | "forwarding" | "vnet_hdr" | "offload" | "multi_queue" | "dhcp4":
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: want true or false, got {value!r}")
            return value
        case _:
            return str(value)


_FIELDS = {f.name for f in fields(StackConfig)}
_TOML_ALIASES = {"drain": "drain_s", "forward": "forwards"}
_RELAY_KEYS = {"mode": "relay", "netns": "relay_netns", "refused": "relay_refused",
               "rules": "relay_rules", "limits": "relay_limits", "icmp": "relay_icmp"}  # fmt: skip


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file into raw settings (top-level keys or a
    ``[stack]`` table). Unknown keys are an error, not silently ignored."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path}: {exc}") from None
    stack = data.pop("stack", {})
    ndp = data.pop("ndp", None)
    tables = {name: data.pop(name, None) for name in ("tcp", "ip")}
    relay = data.pop("relay", None)
    if not isinstance(stack, dict):
        raise ConfigError(f"--config: {path}: [stack] must be a table")
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(
                f"--config: {path}: unknown table [{key}]"
                " (tables: [stack], [ndp], [tcp], [ip], [relay])"
            )
    raw = dict(data) | stack
    if ndp is not None:
        raw["ndp"] = ndp
    raw.update({name: table for name, table in tables.items() if table is not None})
    if relay is not None:
        # [relay] mode = "direct", netns = "NS", refused = "icmp", rules = [...]
        if not isinstance(relay, dict):
            raise ConfigError(f"--config: {path}: [relay] must be a table")
        for key, value in relay.items():
            name = _RELAY_KEYS.get(key.replace("-", "_"))
            if name is None:
                raise ConfigError(f"--config: {path}: unknown [relay] setting {key!r}")
            raw[name] = value
    settings = {}
    for key, value in raw.items():
        name = _TOML_ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in _FIELDS:
            raise ConfigError(f"--config: {path}: unknown setting {key!r}")
        settings[name] = value
    return settings


def build_config(file_settings: dict[str, Any], flag_settings: dict[str, Any]) -> StackConfig:
    """Merge settings (flags win over the file), convert, validate."""
    merged = dict(file_settings)
    merged.update({k: v for k, v in flag_settings.items() if v is not None})
    converted = {name: _convert(name, value) for name, value in merged.items()}
    for table in ("tcp", "ip"):
        if table in file_settings and flag_settings.get(table) is not None:
            # --tcp/--ip add to (and override) the file's [tcp]/[ip] table
            converted[table] = _convert(table, file_settings[table]) | converted[table]
    return replace(StackConfig(), **converted).validate()
