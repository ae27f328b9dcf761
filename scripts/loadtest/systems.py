"""The systems under test, each as a ``System``: where the load-test clients
run (a network namespace), which address they talk to, and which processes
do the server's work (for CPU and memory figures).

* ``shardnet_lab``: a ``Lab`` (a namespace with a TAP and ``shardnet run
  --serve echo:7 --serve discard:9 --serve chargen:19``); the clients run on
  the kernel side of the TAP.
* ``kernel_pair``: the kernel's own stack both ways: two namespaces joined by
  a veth, the same address roles as the lab (clients 198.18.0.1 /
  2001:db8::1, server .2 / ::2), and ``kernel_apps`` serving the same apps.
* ``target``: a stack someone else runs (``--target ADDR``).
* ``relay_lab`` and ``kernel_router`` (the ``relay`` scenario): a client
  namespace reaching a server namespace (the same ``kernel_apps`` on
  198.19.0.10) through shardnet's ``--relay direct`` on a TUN, or through
  a third namespace where the kernel forwards between two veths.

Everything made is removed on exit, also on a failure or Ctrl-C. Only
198.18.0.0/15 and 2001:db8::/32 are used, in namespaces made here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from shardnet.common.client import Client, ControlError

from ..lab import KERNEL_V4, KERNEL_V6, SHARDNET_V4, SHARDNET_V6, Lab

RELAY_SERVER_V4 = "198.19.0.10"  # the relay scenario's server, beyond the relay or router
SERVE = ("echo:7", "discard:9", "chargen:19")  # echo also over UDP
PORTS = {"echo": 7, "discard": 9, "chargen": 19}
SERVER_READY_TIMEOUT_S = 15.0
SETTLE_MAX_S = 30.0  # the longest wait for a scenario's closes to end
# Client-side sysctls of the namespaces made here: crr closes from the
# client side, so its TIME-WAIT ports must be reusable (RFC 6191 with
# timestamps) and the range wide, or a fast stack runs out of ports in seconds.
CLIENT_SYSCTLS = {
    "net.ipv4.tcp_tw_reuse": "1",
    "net.ipv4.ip_local_port_range": "10000 65000",
}

CLOSING_STATES = [
    arg for state in ("fin-wait-1", "fin-wait-2", "closing", "last-ack") for arg in ("state", state)
]


DRAIN_WAIT_S = 20.0  # how long a stopped server may take to exit (shardnet drains 5 s)


@dataclass(slots=True)
class Stopped:
    """How a server ended after SIGTERM."""

    exit_codes: list[int | None]  # each server process's; None: killed after DRAIN_WAIT_S
    seconds: float  # from SIGTERM until the last one exited
    left_running: int  # its processes still alive after that (shardnet's shards)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(procs: list[subprocess.Popen[Any]], workers: list[int]) -> Stopped:
    """SIGTERM to ``procs``; waits for them (SIGKILL after DRAIN_WAIT_S);
    ``workers``: more pids that must be gone with them."""
    t0 = time.monotonic()
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(t0 + DRAIN_WAIT_S - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    seconds = time.monotonic() - t0
    time.sleep(0.2)  # orphaned children are reaped by init
    return Stopped(codes, seconds, sum(_alive(pid) for pid in workers))


@dataclass(slots=True)
class System:
    """One stack under test, as its clients see it."""

    name: str  # "shardnet" or "kernel"
    host: str  # the server address the clients connect to
    ns: str | None  # the clients' network namespace (None: this process's)
    control: str | None = None  # shardnet's control endpoint (CPU, RSS)
    server_pids: tuple[int, ...] = ()  # the kernel baseline's server processes
    # the baseline's "at least n server processes" (conns needs descriptors)
    grow: Callable[[int], None] | None = None
    label: str = ""  # e.g. "shardnet 2 shards", for progress bars
    # SIGTERM to the server, waiting for its end (None: not ours to stop, --target)
    stop: Callable[[], Stopped] | None = None
    _added: list[tuple[str, str]] = field(default_factory=list)

    def argv(self, cmd: list[str]) -> list[str]:
        """``cmd`` run in the clients' namespace."""
        return ["ip", "netns", "exec", self.ns, *cmd] if self.ns else cmd

    def processes(self) -> dict[str, int]:
        """Role -> pid of the processes doing the server's work: the
        dispatcher and every shard, or the baseline's server. Empty when a
        ``--target`` stack's control channel cannot be reached."""
        if self.server_pids:
            return {f"server{i}": pid for i, pid in enumerate(self.server_pids)}
        try:
            with Client(self.control, timeout_s=2) as client:
                procs = client.shards()
        except (ControlError, OSError):
            return {}
        out = {"dispatcher": int(procs["dispatcher"])}
        for shard in procs["shards"]:
            out[f"shard{shard['shard']}"] = int(shard["pid"])
        return out

    def settle(self) -> None:
        """Waits (at most SETTLE_MAX_S) until the connections a scenario closed
        are gone: no TCP socket of the clients' side still closing and, for
        shardnet, no retransmission for a second; else the next scenario
        would measure the end of this one (crr leaves closes in flight)."""
        watch_stack = bool(self.processes()) and not self.server_pids
        deadline = time.monotonic() + SETTLE_MAX_S
        last = self.stack_counters().get("tcp_retransmits") if watch_stack else 0
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.stack_counters().get("tcp_retransmits") if watch_stack else 0
            calm = now is not None and now == last and self.client_orphans() == 0
            quiet = quiet + 1 if calm else 0
            last = now

    def restarts(self) -> int:
        """Shard restarts so far: 0 for the kernel or an unreachable stack."""
        if self.server_pids:
            return 0
        try:
            with Client(self.control, timeout_s=2) as client:
                stats = client.stats()
        except (ControlError, OSError):
            return 0
        return sum(int(s.get("restarts", 0)) for s in stats["processes"]["shards"])

    def table_sizes(self) -> dict[str, int]:
        """shardnet's tables that a hostile link grows: routes learnt from
        RAs, addresses (SLAAC), neighbours. Empty for the kernel or an
        unreachable stack."""
        if self.server_pids:
            return {}
        try:
            with Client(self.control, timeout_s=5) as client:
                routes, addrs, neigh = client.routes(), client.addrs(), client.neigh()
        except (ControlError, OSError):
            return {}
        return {
            "ra_routes": sum(r.get("origin") == "ra" for r in routes),
            "addresses": len(addrs),
            "neighbours": len(neigh),
        }

    def stack_counters(self) -> dict[str, int]:
        """shardnet's own counts of trouble, summed over the shards (ring
        drops, TCP retransmissions, drops by reason): a scenario's deltas
        explain a poor figure. Empty for the kernel or an unreachable stack."""
        if self.server_pids:
            return {}
        try:
            with Client(self.control, timeout_s=2) as client:
                stats = client.stats()
        except (ControlError, OSError):
            return {}
        out = {
            "ring_drops": 0,
            "backlog_drops": 0,
            "tcp_retransmits": 0,
            "tx_drops": 0,
            "drops": 0,
            "syn_gate_drops": 0,
        }
        for shard in stats["shards"]:
            out["ring_drops"] += int(shard.get("ring_drops", 0))
            out["backlog_drops"] += int(shard.get("backlog_drops", 0))
            out["syn_gate_drops"] += int(shard["counters"].get("syn_gate_drops", 0))
            for name in ("syns_dropped", "acks_dropped", "resets_sent"):
                key = f"listen_{name}"
                out[key] = out.get(key, 0) + int(
                    shard.get("gauges", {}).get(f"tcp_listen/{name}", 0)
                )
            out["tcp_retransmits"] += int(shard["counters"].get("tcp_retransmits", 0))
            out["tx_drops"] += int(shard["counters"].get("tx_drops", 0))
            out["drops"] += sum(int(v) for v in shard.get("drops", {}).values())
        return out

    def client_orphans(self) -> int:
        """TCP sockets on the clients' side whose close is not over (FIN
        sent or received but the exchange unfinished), counted over netlink
        in their namespace (``/proc/net/sockstat``'s orphans are global);
        -1 if ``ss`` fails."""
        r = subprocess.run(
            self.argv(["ss", "-Htn", *CLOSING_STATES]), capture_output=True, text=True
        )
        return r.stdout.count("\n") if r.returncode == 0 else -1

    def sources(self, n: int) -> list[str]:
        """``n`` client source addresses: "" (the kernel's choice) and
        ``n - 1`` more, added on the clients' side of the link, taken from
        the top of the clients' own subnet (so the server reaches them
        on-link). Each address gives the conns scenario a port range."""
        if n <= 1:
            return [""]
        route = json.loads(self._ip("-j", "route", "get", self.host))[0]
        dev, primary = route["dev"], route["prefsrc"]
        prefix = 64 if ":" in primary else 24
        for info in json.loads(self._ip("-j", "addr", "show", "dev", dev)):
            for a in info.get("addr_info", []):
                if a.get("local") == primary:
                    prefix = int(a["prefixlen"])
        out = [""]
        for cand in extra_sources(primary, prefix, self.host, n - 1):
            extra = ["nodad"] if ":" in cand else []
            self._ip("addr", "add", f"{cand}/{prefix}", "dev", dev, *extra)
            self._added.append((f"{cand}/{prefix}", dev))
            out.append(cand)
        return out

    def remove_sources(self) -> None:
        for addr, dev in self._added:
            subprocess.run(self.argv(["ip", "addr", "del", addr, "dev", dev]), capture_output=True)
        self._added.clear()

    def _ip(self, *args: str) -> str:
        r = subprocess.run(self.argv(["ip", *args]), capture_output=True, text=True, check=True)
        return r.stdout


def extra_sources(primary: str, prefix: int, server: str, n: int) -> list[str]:
    """``n`` addresses of ``primary``'s subnet from its top down, skipping
    the broadcast address (in IPv6 the all-ones one) and the two in use."""
    net = ipaddress.ip_interface(f"{primary}/{prefix}").network
    taken = {ipaddress.ip_address(primary), ipaddress.ip_address(server)}
    out: list[str] = []
    k = 2
    while len(out) < n:
        if k > net.num_addresses - 1:
            raise RuntimeError(f"{net} has no room for {n} more client addresses")
        cand = net.network_address + (net.num_addresses - k)
        k += 1
        if cand not in taken:
            out.append(str(cand))
    return out


def _set_client_sysctls(ns: str) -> None:
    for key, value in CLIENT_SYSCTLS.items():
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
            capture_output=True,
        )


@contextlib.contextmanager
def shardnet_lab(shards: int, ipv6: bool, multi_queue: bool = False) -> Iterator[System]:
    """shardnet on a TAP in a fresh namespace; clients on the kernel side."""
    args = ("--multi-queue",) if multi_queue else ()
    tap = f"snlt{secrets.token_hex(3)}"
    with Lab("lt", tap=tap, serve=SERVE, shards=shards, args=args) as lab:
        _set_client_sysctls(lab.ns)
        system = System(
            "shardnet",
            SHARDNET_V6 if ipv6 else SHARDNET_V4,
            lab.ns,
            control=lab.control,
            label=f"shardnet {shards} shard{'s' if shards > 1 else ''}"
            + (", multi-queue" if multi_queue else ""),
        )

        def stop() -> Stopped:
            assert lab.stack is not None
            shards = [pid for role, pid in system.processes().items() if role != "dispatcher"]
            return _terminate([lab.stack], shards)

        system.stop = stop
        yield system


@contextlib.contextmanager
def target(addr: str, netns: str | None, control: str | None) -> Iterator[System]:
    """A stack that is already running (``--target``); nothing is made but
    the extra source addresses of conns, removed again."""
    system = System("shardnet", addr, netns, control=control, label=f"shardnet at {addr}")
    try:
        yield system
    finally:
        system.remove_sources()


@contextlib.contextmanager
def kernel_pair(ipv6: bool, workers: int) -> Iterator[System]:
    """The kernel both ways: client and server namespaces over a veth, and
    ``workers`` server processes sharing the ports (SO_REUSEPORT; more
    through ``System.grow``)."""
    tag = secrets.token_hex(3)
    client_ns, server_ns = f"sn-ltk-{tag}-c", f"sn-ltk-{tag}-s"
    made: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(ns)
            _ns_run(ns, "ip", "link", "set", "lo", "up")
        veth = (f"snltk{tag}a", f"snltk{tag}b")
        subprocess.run(
            ["ip", "link", "add", veth[0], "netns", client_ns, "type", "veth",
             "peer", "name", veth[1], "netns", server_ns],
            check=True, capture_output=True,
        )  # fmt: skip
        for ns, dev, v4, v6 in (
            (client_ns, veth[0], KERNEL_V4, KERNEL_V6),
            (server_ns, veth[1], SHARDNET_V4, SHARDNET_V6),
        ):
            _ns_run(ns, "ip", "addr", "add", f"{v4}/24", "dev", dev)
            _ns_run(ns, "ip", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _ns_run(ns, "ip", "link", "set", dev, "up")
        _set_client_sysctls(client_ns)
        system = System("kernel", SHARDNET_V6 if ipv6 else SHARDNET_V4, client_ns, label="kernel")

        def grow(n: int) -> None:
            _start_servers(server_ns, servers, n)
            system.server_pids = tuple(s.pid for s in servers)  # ip netns exec execs

        grow(workers)
        system.grow = grow
        system.stop = lambda: _terminate(servers, [])
        yield system
    finally:
        _terminate(servers, [])  # those drain has not stopped already
        for ns in made:  # the veth goes with its namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _start_servers(ns: str, servers: list[subprocess.Popen[bytes]], n: int) -> None:
    """``kernel_apps`` server processes in ``ns`` until there are ``n``."""
    started = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m",
             "shardnet.scripts.loadtest.kernel_apps"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop them ourselves
        )
        for _ in range(n - len(servers))
    ]  # fmt: skip
    servers.extend(started)
    for server in started:
        _wait_ready(server)


def _namespaces(tag: str, roles: str, made: list[str]) -> list[str]:
    """One namespace per letter of ``roles`` (lo up), recorded in ``made``."""
    out = []
    for role in roles:
        ns = f"sn-ltr-{tag}-{role}"
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        made.append(ns)
        _ns_run(ns, "ip", "link", "set", "lo", "up")
        out.append(ns)
    return out


def _veth(tag: str, a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    """A veth between (namespace, device, address/len) ``a`` and ``b``."""
    subprocess.run(
        ["ip", "link", "add", a[1], "netns", a[0], "type", "veth", "peer", "name", b[1],
         "netns", b[0]],
        check=True, capture_output=True,
    )  # fmt: skip
    for ns, dev, addr in (a, b):
        _ns_run(ns, "ip", "addr", "add", addr, "dev", dev)
        _ns_run(ns, "ip", "link", "set", dev, "up")


@contextlib.contextmanager
def relay_lab(shards: int) -> Iterator[System]:
    """A client namespace routing 198.19.0.0/16 into shardnet's TUN, and
    shardnet relaying every flow (``--relay direct``) from a server
    namespace where ``shards`` kernel_apps processes serve 198.19.0.10."""
    tag = secrets.token_hex(3)
    made: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        client_ns, server_ns = _namespaces(tag, "cs", made)
        _ns_run(server_ns, "ip", "addr", "add", f"{RELAY_SERVER_V4}/32", "dev", "lo")
        _start_servers(server_ns, servers, shards)
        tun = f"snltr{tag}"
        args = ("--relay", "direct", "--relay-netns", server_ns)
        with Lab("ltr", tap=tun, shards=shards, args=args, tun_netns=client_ns) as lab:
            _ns_run(client_ns, "ip", "route", "add", "198.19.0.0/16", "dev", tun)
            _set_client_sysctls(client_ns)
            yield System(
                "shardnet", RELAY_SERVER_V4, client_ns, control=lab.control,
                label=f"shardnet relay {shards} shard{'s' if shards > 1 else ''}",
            )  # fmt: skip
    finally:
        _terminate(servers, [])  # those drain has not stopped already
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def kernel_router(workers: int) -> Iterator[System]:
    """The same client and server namespaces, joined through a third where
    the kernel forwards (``net.ipv4.ip_forward=1``) between two veths."""
    tag = secrets.token_hex(3)
    made: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        client_ns, router_ns, server_ns = _namespaces(tag, "crs", made)
        _veth(tag, (client_ns, f"snltr{tag}c", "198.18.0.1/24"),
              (router_ns, f"snltr{tag}a", "198.18.0.2/24"))  # fmt: skip
        _veth(tag, (router_ns, f"snltr{tag}b", "198.18.1.2/24"),
              (server_ns, f"snltr{tag}s", "198.18.1.1/24"))  # fmt: skip
        _ns_run(router_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        _ns_run(router_ns, "ip", "route", "add", f"{RELAY_SERVER_V4}/32", "via", "198.18.1.1")
        _ns_run(client_ns, "ip", "route", "add", "198.19.0.0/16", "via", "198.18.0.2")
        _ns_run(server_ns, "ip", "addr", "add", f"{RELAY_SERVER_V4}/32", "dev", "lo")
        _ns_run(server_ns, "ip", "route", "add", "default", "via", "198.18.1.2")
        _set_client_sysctls(client_ns)
        _start_servers(server_ns, servers, workers)
        yield System(
            "kernel", RELAY_SERVER_V4, client_ns, label="kernel forwarding",
            server_pids=tuple(s.pid for s in servers),
        )  # fmt: skip
    finally:
        _terminate(servers, [])  # those drain has not stopped already
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _ns_run(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)


def _wait_ready(server: subprocess.Popen[bytes]) -> None:
    assert server.stdout is not None
    fd = server.stdout.fileno()
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    seen = ""
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 4096)
            seen += chunk.decode(errors="replace")
            if "ready" in seen:
                return
            if not chunk:
                raise RuntimeError(f"the kernel baseline's server exited: {seen.strip()}")
    raise RuntimeError(f"the kernel baseline's server did not start: {seen.strip()}")


def fd_budget() -> int:
    """Descriptors one process may hold here, less room for the rest: the
    hard RLIMIT_NOFILE cannot be raised without CAP_SYS_RESOURCE, so the
    conns scenario spreads its connections over enough processes."""
    return max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 512)


def cpu_seconds(pids: dict[str, int]) -> float:
    """User + system CPU of these processes so far."""
    total = 0.0
    for pid in pids.values():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def rss_bytes(pids: dict[str, int]) -> dict[str, int]:
    out = {}
    for role, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            out[role] = psutil.Process(pid).memory_info().rss
    return out


def open_fds(pids: dict[str, int]) -> int:
    """Descriptors these processes hold open, together."""
    total = 0
    for pid in pids.values():
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).num_fds()
    return total
