"""Neighbor Discovery against a real router: radvd on the kernel side of the
TAP gives shardnet a SLAAC address with an RFC 7217 opaque IID, a default
route and the RA's events (RDNSS, DNSSL, the O flag); radvd's final RA
(router lifetime 0) invalidates the router; the kernel holding an address
makes shardnet's DAD fail, and an opaque SLAAC address is then regenerated
with the next DAD counter (RFC 7217 §6).

The events are watched the way a newcomer would: ``Client.events`` and
``shardnet ctl events --json``, both subscribed before radvd starts.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardnet.common.addr import format_ip, parse_ip, parse_mac
from shardnet.common.client import Client
from shardnet.shards.net.iid import eui64_address, stable_address

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

SECRET = "5e" * 16  # the stack's RFC 7217 key (StackConfig.secret): addresses are predictable
PREFIX = "2001:db8:1::"  # advertised by radvd, /64
KERNEL_IN_PREFIX = "2001:db8:1::1"  # the kernel's own address there, to ping from
REGEN_PREFIX = "2001:db8:2::"  # the DAD-regeneration test's prefix
RDNSS = "2001:db8::53"
DNSSL = "example.org"
STATIC_DUP = "2001:db8::5"  # held by the kernel, then asked of shardnet
EVENT_WAIT_S = 12.0  # RAs every 3-4 s, DAD up to 2 s: generous but bounded


def radvd_config(prefix: str) -> str:
    """RFC 4861 §6.2.1 variables shortened so that the test sees RAs every
    3-4 s; O flag set (other configuration by DHCPv6, RFC 4861 §4.2)."""
    return f"""
interface {TAP} {{
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 30;
    AdvOtherConfigFlag on;
    prefix {prefix}/64 {{
        AdvOnLink on;
        AdvAutonomous on;
        AdvValidLifetime 3600;
        AdvPreferredLifetime 1800;
    }};
    RDNSS {RDNSS} {{ AdvRDNSSLifetime 8; }};
    DNSSL {DNSSL} {{ AdvDNSSLLifetime 8; }};
}};
"""


class Radvd:
    """radvd on the kernel side of the TAP, in the foreground; SIGTERM (by
    pid) makes it send its final RA with Router Lifetime 0."""

    def __init__(self, ns: Netns, workdir: Path, prefix: str) -> None:
        self.ns = ns
        self.conf = workdir / "radvd.conf"
        self.conf.write_text(radvd_config(prefix))
        self.log = workdir / "radvd.log"
        self.pidfile = workdir / "radvd.pid"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        # A router forwards (radvd refuses to advertise otherwise).
        self.ns.run("sysctl -qw net.ipv6.conf.all.forwarding=1")
        with open(self.log, "ab") as log:
            # ``ip netns exec`` execs: the pid is radvd's.
            self.proc = self.ns.popen(
                ["radvd", "-n", "-C", str(self.conf), "-p", str(self.pidfile), "-m", "stderr"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class EventLog:
    """The stack's events, collected on a thread through ``Client.events``
    (its own client: zmq sockets stay in one thread). The thread ends at
    the first event after ``close`` or after ``IDLE_S`` without any."""

    IDLE_S = 10.0

    def __init__(self, endpoint: str) -> None:
        self._client = Client(endpoint, timeout_s=3.0)
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ndp-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._client.events(timeout_s=self.IDLE_S):
                with self._lock:
                    self._events.append({"type": event.type, **event.data})
                if self._closed.is_set():
                    break
        finally:
            self._client.close()

    def close(self) -> None:
        self._closed.set()

    def all(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if type_ is None or e["type"] == type_]

    def wait(
        self, type_: str, match: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.all(type_) if match(e)]
            return bool(found)

        assert wait_until(seen, timeout=EVENT_WAIT_S, interval=0.05), (
            f"no {type_} event in {EVENT_WAIT_S} s; events: {self.all()}"
        )
        return found[0]


class CtlEvents:
    """``shardnet ctl events --json`` as a newcomer runs it (outside the
    namespace: the control channel is an ipc socket), its lines read on a
    thread. Ended by pid."""

    def __init__(self, endpoint: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardnet.scripts.cli", "ctl", "--control", endpoint]
            + ["events", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="ctl-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    def seen(self, addr: str) -> bool:
        """``addr`` was printed, or the command has ended (then the test of
        its output shows why)."""
        return f'"addr": "{addr}"' in self.text() or self.proc.poll() is not None

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def events(self) -> list[dict[str, Any]]:
        """The JSON objects printed so far (AssertionError on any other line)."""
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}\n{self.text()}") from None
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._thread.join(timeout=5)


def until_subscribed(stack: StackProcess, *seen: Callable[[str], bool]) -> None:
    """Wait until every watcher hears the stack's events (a zmq SUB socket
    misses what is published before its subscription arrives): add and
    remove a tentative address, which reports ``dad_result`` (resolved
    false, "removed") at once, until each ``seen(address)`` is true."""
    deadline = time.monotonic() + 10
    for n in range(1, 1000):
        probe = f"2001:db8:ff::{n:x}"
        stack.call("addr_add", nic=TAP, address=f"{probe}/64")
        stack.call("addr_del", nic=TAP, address=probe)
        if wait_until(lambda p=probe: all(s(p) for s in seen), timeout=0.5, interval=0.02):
            return
        assert time.monotonic() < deadline, "the event watchers never heard the stack"


def in_prefix(addr: str, prefix: str) -> bool:
    return ipaddress.IPv6Address(addr) in ipaddress.IPv6Network(f"{prefix}/64")


def addr_rows(stack: StackProcess) -> dict[str, dict[str, Any]]:
    return {a["addr"]: a for a in stack.call("addrs") if a["nic_name"] == TAP}


def usable_in(stack: StackProcess, prefix: str) -> list[str]:
    return [
        a
        for a, row in addr_rows(stack).items()
        if in_prefix(a, prefix) and row["kind"] == "permanent"
    ]


def default_routes(stack: StackProcess) -> list[dict[str, Any]]:
    return [r for r in stack.call("routes") if r["dst"] == "::" and r["prefix_len"] == 0]


def kernel_link_local(ns: Netns) -> str:
    out = json.loads(ns.run(f"ip -6 -j addr show dev {TAP} scope link").stdout)
    # ``ip -j`` leaves an empty object for each address the filter skips.
    (addr,) = [a["local"] for iface in out for a in iface["addr_info"] if "local" in a]
    return addr


def ping(ns: Netns, target: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return ns.run(
        ["ping", "-c", str(count), "-i", "0.2", "-W", "2", target], check=False, timeout=20
    )


def opaque(prefix: str, dad_counter: int) -> str:
    """The address shardnet generates for ``prefix`` (RFC 7217 F() with the
    NIC's name, the DAD counter and the stack's secret)."""
    addr, counter = stable_address(parse_ip(prefix), TAP, dad_counter, bytes.fromhex(SECRET))
    assert counter == dad_counter  # a reserved IID would skip a counter (p ~ 2^-40)
    return format_ip(addr)


def start_stack(ns: Netns, workdir: Path) -> StackProcess:
    config = workdir / "shardnet.toml"
    config.write_text(f'secret = "{SECRET}"\n')
    # The kernel side: no DAD of its own (its link-local is usable at once
    # for radvd) and routers forward.
    ns.run("sysctl -qw net.ipv6.conf.default.accept_dad=0")
    return StackProcess(ns, "--config", str(config))


# --------------------------------------------------------------------------- one router


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("ndp") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    with start_stack(ns, tmp_path_factory.mktemp("ndp")) as stack:
        yield stack


@dataclass
class RouterRun:
    radvd: Radvd
    events: EventLog
    ctl: CtlEvents
    router: str  # radvd's source: the kernel's link-local address
    slaac: str  # shardnet's address in PREFIX


def probe_seen(events: EventLog) -> Callable[[str], bool]:
    return lambda addr: any(e["addr"] == addr for e in events.all("dad_result"))


@pytest.fixture(scope="module")
def router(
    ns: Netns, stack: StackProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterRun]:
    """radvd advertising PREFIX, with both event watchers subscribed first,
    until shardnet's SLAAC address is usable. The last test stops radvd."""
    ns.run(f"ip addr add {KERNEL_IN_PREFIX}/64 dev {TAP} nodad")
    events = EventLog(stack.control)
    ctl = CtlEvents(stack.control)
    radvd = Radvd(ns, tmp_path_factory.mktemp("radvd"), PREFIX)
    try:
        until_subscribed(stack, probe_seen(events), ctl.seen)
        radvd.start()
        ok = wait_until(lambda: usable_in(stack, PREFIX), timeout=EVENT_WAIT_S, interval=0.1)
        assert ok, (
            f"no SLAAC address in {PREFIX}/64: {stack.call('addrs')}\n"
            f"events: {events.all()}\nradvd:\n{radvd.output()}\nctl:\n{ctl.text()}"
        )
        (slaac,) = usable_in(stack, PREFIX)
        yield RouterRun(radvd, events, ctl, kernel_link_local(ns), slaac)
    finally:
        radvd.stop()
        events.close()
        ctl.stop()
        ns.run(f"ip addr del {KERNEL_IN_PREFIX}/64 dev {TAP}", check=False)


def test_slaac_address_has_an_opaque_iid_and_answers_pings(
    ns: Netns, stack: StackProcess, router: RouterRun
) -> None:
    mac = parse_mac(stack.call("hello")["mac"])
    assert in_prefix(router.slaac, PREFIX)
    assert router.slaac != format_ip(eui64_address(parse_ip(PREFIX), mac))  # not EUI-64
    assert router.slaac == opaque(PREFIX, 0)  # RFC 7217 with this stack's secret
    assert addr_rows(stack)[router.slaac]["origin"] == "slaac"
    r = ping(ns, router.slaac)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr


def test_ra_events_arrive(router: RouterRun) -> None:
    ev = router.events
    assert ev.wait("router_discovered", lambda e: e["addr"] == router.router)["lifetime_s"] == 30
    prefix = ev.wait("prefix_discovered", lambda e: e["prefix"] == PREFIX)
    assert prefix["prefix_len"] == 64 and prefix["valid_lifetime_s"] == 3600
    auto = ev.wait("address_autogenerated", lambda e: e["addr"] == router.slaac)
    assert (auto["prefix_len"], auto["origin"]) == (64, "slaac")
    assert ev.wait("dad_result", lambda e: e["addr"] == router.slaac)["resolved"] is True
    rdnss, dnssl = ev.wait("rdnss"), ev.wait("dnssl")
    assert (rdnss["servers"], rdnss["lifetime_s"]) == ([RDNSS], 8)
    assert (dnssl["domains"], dnssl["lifetime_s"]) == ([DNSSL], 8)
    assert ev.wait("dhcpv6_configuration")["configuration"] == "other"  # the O flag


def test_default_route_via_the_router_link_local(stack: StackProcess, router: RouterRun) -> None:
    routes = default_routes(stack)
    assert [(r["gateway"], r["nic_name"], r["origin"]) for r in routes] == [
        (router.router, TAP, "ra")
    ]
    on_link = [r for r in stack.call("routes") if (r["dst"], r["prefix_len"]) == (PREFIX, 64)]
    assert [(r["gateway"], r["origin"]) for r in on_link] == [(None, "ra")]  # the L flag


def test_ctl_events_json_prints_them(router: RouterRun) -> None:
    """What a newcomer sees with ``shardnet ctl events --json`` while radvd
    runs: one JSON object per line with a ``type``."""
    wanted = {
        "router_discovered",
        "prefix_discovered",
        "address_autogenerated",
        "dad_result",
        "rdnss",
        "dnssl",
        "dhcpv6_configuration",
    }
    assert wait_until(
        lambda: wanted <= {e["type"] for e in router.ctl.events()}, timeout=EVENT_WAIT_S
    ), router.ctl.text()
    lines = router.ctl.events()
    assert {"type": "rdnss", "nic": 1, "servers": [RDNSS], "lifetime_s": 8} in lines
    assert any(e["type"] == "address_autogenerated" and e["addr"] == router.slaac for e in lines)


def test_stopping_radvd_invalidates_the_router(stack: StackProcess, router: RouterRun) -> None:
    """radvd's last RA has Router Lifetime 0 (RFC 4861 §6.2.5): shardnet
    drops the router at once, long before the advertised 30 s. Runs last."""
    assert default_routes(stack)
    t0 = time.monotonic()
    assert router.radvd.stop() == 0, router.radvd.output()
    router.events.wait("router_invalidated", lambda e: e["addr"] == router.router)
    assert wait_until(lambda: not default_routes(stack), timeout=2)
    # radvd withdraws its DNS options too (RFC 8106 §5.1: lifetime 0).
    router.events.wait("rdnss", lambda e: e["lifetime_s"] == 0)
    assert time.monotonic() - t0 < 10
    assert router.slaac in usable_in(stack, PREFIX)  # the prefix itself is still valid


# --------------------------------------------------------------------------- DAD failures


def test_static_address_held_by_the_kernel_fails_dad(ns: Netns, stack: StackProcess) -> None:
    """RFC 4862 §5.4.3: the kernel answers shardnet's DAD probe for an
    address it owns; the address is never usable in shardnet."""
    ns.run(f"ip addr add {STATIC_DUP}/64 dev {TAP} nodad")
    events = EventLog(stack.control)
    try:
        until_subscribed(stack, probe_seen(events))
        stack.call("addr_add", nic=TAP, address=f"{STATIC_DUP}/64")
        result = events.wait("dad_result", lambda e: e["addr"] == STATIC_DUP)
        assert (result["resolved"], result["reason"]) == (False, "duplicate")
        assert wait_until(lambda: STATIC_DUP not in addr_rows(stack), timeout=2)
    finally:
        events.close()
        ns.run(f"ip addr del {STATIC_DUP}/64 dev {TAP}", check=False)


def test_opaque_address_is_regenerated_after_a_dad_failure(tmp_path: Path) -> None:
    """RFC 7217 §6: the kernel holds the address shardnet will generate
    first (DAD counter 0) before radvd advertises the prefix; shardnet's DAD
    fails and the address with DAD counter 1 becomes usable and answers."""
    skip_unless_netns()
    first, second = opaque(REGEN_PREFIX, 0), opaque(REGEN_PREFIX, 1)
    with Netns("ndpdad") as ns, start_stack(ns, tmp_path) as stack:
        ns.run(f"ip addr add {first}/64 dev {TAP} nodad")
        events = EventLog(stack.control)
        radvd = Radvd(ns, tmp_path, REGEN_PREFIX)
        try:
            until_subscribed(stack, probe_seen(events))
            radvd.start()
            failed = events.wait("dad_result", lambda e: e["addr"] == first)
            assert (failed["resolved"], failed["reason"]) == (False, "duplicate")
            ok = events.wait("dad_result", lambda e: e["addr"] == second)
            assert ok["resolved"] is True, events.all()
            assert [e["addr"] for e in events.all("address_autogenerated")] == [first, second]
            assert usable_in(stack, REGEN_PREFIX) == [second]
            r = ping(ns, second)
            assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
        finally:
            radvd.stop()
            events.close()
