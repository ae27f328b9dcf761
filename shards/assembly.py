"""One shard's stack, wired from the settings: the one place that builds a
shard (DESIGN.md "Processes").

``ShardAssembly`` builds the network layer (``NetStack``; in shard 0 also
the ``NetOwner`` tables and the ``ControlPlane``: ARP, NDP, neighbours; in
the others a ``TableReplica`` and its ``NetView``), the transports (UDP, TCP,
ICMP errors routed to them), the application API (``ShardStack``) and the
``Ingress`` that feeds them frames. It also holds what every host of a
shard runs the same way: the protocol timers, the answers to control
requests, the built-in and user apps, the graceful TCP close and the
counters snapshot.

It does no I/O of its own. Its host supplies the frame writer, the clock,
where looped frames go (``loop_back``), where replication patches and events
go (``publish``, ``emit_event``) and, in shards other than 0, how to reach
shard 0 (``ToShard0``). Two hosts use it: ``ShardRuntime`` (a process behind
the dispatcher, fed from its ring) and the embedded ``Stack`` (shard 0 of 1
in the caller's process over a channel link).

A shard-0 service that other shards need (neighbour resolution, NUD
confirmations, multicast memberships) is one method of ``ToShard0``: shard 0 calls its control
plane directly, the others send a message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
from collections.abc import Callable
from typing import Any, Protocol

from shardnet.common.config import StackConfig
from shardnet.common.fault import FaultInjector, FaultSpec, FaultyWriter
from shardnet.common.ipconfig import IpConfig
from shardnet.common.link_tx import FrameWriter
from shardnet.common.messages import Patch, Stats
from shardnet.common.replica import TableOwner, TableReplica
from shardnet.common.settings import as_settings
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from shardnet.common.wire.ipv4 import IPPROTO_IGMP

from .api import ShardStack
from .apps import TCP_APPS, UDP_APPS, load_app, serve_tcp, serve_udp
from .counters import ShardCounters
from .fronts import Fronts
from .ingress import Ingress
from .net.control import ControlPlane
from .net.ndp import NdpConfig
from .net.stack import NetStack
from .net.state import NetError, NetOwner, NetView
from .relay import Relay
from .tcp.config import TcpConfig
from .tcp.state import State
from .transport.errors import IcmpErrorRouter
from .transport.multicast import ShardGroups
from .transport.ports import PortManager
from .transport.steer import Steer, Steering
from .transport.tcp import TcpDemux
from .transport.udp import UdpDemux, UdpHooks

log = logging.getLogger("shardnet.shard")

CONNS_PAGE = 1000  # connections per answer to ``conns``: pages keep each reply small
CONFIRM_INTERVAL_S = 1.0  # NUD confirmations to shard 0, per neighbour (REACHABLE lasts ~30 s)
CONFIRM_MEMORY = 4096  # neighbours remembered for that rate limit
RELEASE_WAIT_S = 1.0  # at shutdown: ARP for the DHCP server (a reply takes milliseconds)


class ToShard0(Protocol):
    """How a shard other than 0 asks shard 0 for its services."""

    def resolve(self, nic: int, ip: bytes) -> None:
        """Resolve ``ip`` on ``nic``; the answer comes by replication."""

    def confirm(self, nic: int, ip: bytes) -> None:
        """Upper-layer progress confirms neighbour ``ip`` (RFC 4861 §7.3.1)."""

    def used(self, nic: int, ip: bytes) -> None:
        """This shard sent to neighbour ``ip`` lately (RFC 4861 §7.3.3: a
        STALE entry used to send starts NUD)."""

    def membership(self, nic: int, group: bytes, join: bool) -> None:
        """This shard's first socket joined ``group`` on ``nic``, or its
        last one left it: shard 0 speaks IGMP/MLD for the host."""


def with_faults(
    writer: FrameWriter, config: StackConfig, index: int, loop: asyncio.AbstractEventLoop
) -> FrameWriter:
    """``--fault`` on the send side, seeded per shard; ``writer`` itself
    without it."""
    if not config.fault:
        return writer
    fault = FaultSpec.parse(config.fault)
    rng = random.Random(None if fault.seed is None else fault.seed + 1 + index)
    return FaultyWriter(writer, FaultInjector(fault, rng), loop.time, loop.call_at)


def ndp_config_of(config: StackConfig) -> NdpConfig:
    """The link's NDP configuration: the ``[ndp]`` settings; ``slaac =
    false`` (``--no-slaac``) turns global address autoconfiguration off
    unless ``[ndp]`` says otherwise. ValueError for a bad setting."""
    settings = dict(config.ndp)
    if not config.slaac:
        settings.setdefault("auto_gen_global_addresses", False)
    return NdpConfig.from_settings(settings)


class ShardAssembly:
    """Shard ``index`` of ``nshards``, built from ``config`` (see the module
    docstring). Attributes: ``counters``, ``ingress``, ``stack`` (NetStack),
    ``view``, ``control`` (shard 0) or ``replica`` (others), ``owner``
    (shard 0's TableOwner), ``ports``, ``udp``, ``tcp``, ``api``."""

    def __init__(
        self,
        config: StackConfig,
        *,
        mac: bytes,
        writer: FrameWriter,
        clock: Callable[[], float],
        loop_back: Callable[[bytes | bytearray], bool] | None,
        steer: Steer | None = None,
        index: int = 0,
        nshards: int = 1,
        vnet_hdr_len: int = 0,
        publish: Callable[[Patch | None], None] | None = None,
        emit_event: Callable[[dict[str, Any]], None] | None = None,
        to_shard0: ToShard0 | None = None,
        link_as: tuple[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if index != 0 and to_shard0 is None:
            raise ValueError(f"shard {index} needs a way to reach shard 0 (to_shard0)")
        self.config = config
        self.index = index
        self.nshards = nshards
        self.mac = mac
        self.writer = writer
        self.clock = clock
        self.rng = rng or random.Random()
        self.counters = ShardCounters()
        self.ingress = Ingress(mac, self.counters, vnet_hdr_len, clock=clock)
        # The link completes TCP checksums and segments super-segments.
        self.tx_offload = bool(vnet_hdr_len) and config.offload
        self.owner: TableOwner | None = None
        self.replica: TableReplica | None = None
        self.control: ControlPlane | None = None
        self.to_shard0 = to_shard0
        self.steer = steer  # a frame to the shard owning its socket (shard processes)
        self.app_tasks: list[asyncio.Task[Any]] = []
        self._confirmed_at: dict[tuple[int, bytes], float] = {}
        # The protocol machines' timers: one loop timer at the nearest deadline.
        self.before_timers: Callable[[], None] | None = None  # the host drains its input
        # True while the host still holds input that arrived before the
        # timers came due (the timers wait for it, a loop turn at a time)
        self.input_behind: Callable[[], bool] | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._rearm_soon = False
        self._timers_on = False
        self._control_changed = True  # read the control plane's deadline again
        self._control_deadline: float | None = None
        # The stack's secret, the same in every shard: ISNs, SYN cookies and
        # IPv4 identification values agree across shards.
        self.secret = bytes.fromhex(config.secret) if config.secret else os.urandom(16)
        ident_key = self.secret
        # The [tcp] and [ip] tables; ``ctl tcp|ip --set`` changes them at run
        # time in every shard (``_tunables``).
        self.tcp_config = TcpConfig.from_settings(config.tcp)
        self.ip_config = IpConfig.from_settings(config.ip)
        self._applied: dict[str, dict[str, Any]] = {"tcp": {}, "ip": {}}
        if index == 0:
            self.owner = TableOwner(epoch=self.rng.getrandbits(62))
            net = NetOwner(self.owner, publish or (lambda patch: None))
            self.view = net.view
            self.stack = NetStack(
                shard=0, view=net.view, writer=writer, counters=self.counters, clock=clock,
                loop_back=loop_back, forwarding=config.forwarding, tx_offload=self.tx_offload,
                nshards=nshards, ident_key=ident_key, ip_config=self.ip_config,
            )  # fmt: skip
            self.control = ControlPlane(
                net, self.stack, clock, ndp_config=ndp_config_of(config), rng=self.rng
            )
            if emit_event is not None:
                self.control.emit_event = emit_event
            # After a restart of shard 0 this rebuilds its state from the
            # configuration; replicas see a new epoch and resynchronise.
            self.control.bootstrap(config, mac=mac, mtu=config.mtu, link_as=link_as)
        else:
            assert to_shard0 is not None
            self.replica = TableReplica()
            self.view = NetView()
            self.stack = NetStack(
                shard=index, view=self.view, writer=writer, counters=self.counters, clock=clock,
                ask_resolve=to_shard0.resolve, loop_back=loop_back, forwarding=config.forwarding,
                tx_offload=self.tx_offload, nshards=nshards, ident_key=ident_key,
                ip_config=self.ip_config,
            )  # fmt: skip
            self.stack.report_used = to_shard0.used  # STALE next hops in use start NUD
        self.stack.deadline_changed = self.timers_changed
        self.ingress.register(
            ETHERTYPE_IPV4, self.stack.handle_ipv4, looped=self.stack.handle_looped_ipv4
        )
        self.ingress.register(
            ETHERTYPE_IPV6, self.stack.handle_ipv6, looped=self.stack.handle_looped_ipv6
        )
        self._setup_transport()
        if self.control is not None:
            self._watch_control_inputs(self.control)

    def _setup_transport(self) -> None:
        config, stack = self.config, self.stack
        self.ports = PortManager()
        if self.control is not None:
            control = self.control

            def membership(nic: int, group: bytes, join: bool) -> None:
                control.groups.membership(0, nic, group, join)
                self.control_changed()  # IGMP/MLD reports go out on timers

            groups = ShardGroups(membership)
        else:
            assert self.to_shard0 is not None
            groups = ShardGroups(self.to_shard0.membership)
        self.udp = UdpDemux(self.ports, seed=self.rng.getrandbits(32), groups=groups)
        self.api = ShardStack(
            shard=self.index,
            nshards=self.nshards,
            net=stack,
            udp=self.udp,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        self.tcp = TcpDemux(
            stack, self.ports, shard=self.index, nshards=self.nshards, secret=self.secret,
            config=self.tcp_config, loop_time=self.clock,
        )  # fmt: skip
        self.tcp.deadline_changed = self.timers_changed
        self.api.tcp = self.tcp
        self.tcp.on_progress = self._confirm
        self.steering = Steering(
            shard=self.index, nshards=self.nshards, steer=self.steer, mac=self.mac
        )
        self.tcp.steering = self.steering
        # --relay: every flow to an address not ours is relayed (shards/relay/).
        self.relay: Relay | None = None
        self.fronts: Fronts | None = None  # --socks5, --http-proxy, --forward: start_apps()
        if config.relay is not None:
            self.relay = Relay(
                stack, self.tcp, self.clock, mode=config.relay, netns=config.relay_netns,
                refused=config.relay_refused, rules=config.relay_rules,
                limits=config.relay_limits, icmp=config.relay_icmp,
            )  # fmt: skip
        udp_hook = UdpHooks(
            self.udp, self.steering, self.relay.udp.datagram if self.relay is not None else None
        ).datagram
        errors = IcmpErrorRouter(self.udp, self.tcp, self.steering)
        stack.transport_v4[17] = stack.transport_v6[17] = udp_hook
        stack.transport_v4[6] = stack.transport_v6[6] = self.tcp.deliver
        stack.transport_v4[-1] = errors.icmpv4_error
        stack.transport_v6[-58] = errors.icmpv6_error

    def _watch_control_inputs(self, control: ControlPlane) -> None:
        """Every input of the control plane (ARP, NDP, IGMP frames, next
        hops to resolve, confirmations) marks its deadline for reading."""
        stack = self.stack

        def watched(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                self.control_changed()
                return fn(*args)

            return call

        self.ingress.register(ETHERTYPE_ARP, watched(control.handle_arp))
        if stack.ndp_hook is not None:
            stack.ndp_hook = watched(stack.ndp_hook)
        # DHCP replies (server port to client port: RFC 2131 §4.1, RFC 8415
        # §7.2) go to the link's client before any socket (the dispatcher
        # sends them to shard 0).
        for table, clients, handle in (
            (stack.transport_v4, control.dhcp4, control.handle_dhcp4),
            (stack.transport_v6, control.dhcp6, control.handle_dhcp6),
        ):
            udp = table.get(17)
            if clients and udp is not None:

                def udp_or_dhcp(
                    d: Any,
                    udp: Callable[[Any], bool] = udp,
                    handle: Callable[[Any], bool] = handle,
                ) -> bool:
                    if handle(d):
                        self.control_changed()
                        return True
                    return udp(d)

                table[17] = udp_or_dhcp
        igmp = stack.transport_v4.get(IPPROTO_IGMP)
        if igmp is not None:
            stack.transport_v4[IPPROTO_IGMP] = watched(igmp)
        stack.deadline_changed = self.control_changed  # next hops resolve in the control plane
        stack.report_used = self._report_used

    def _report_used(self, nic: int, ip: bytes) -> None:
        assert self.control is not None
        self.control.neighbour_used(nic, ip)
        self.control_changed()

    def _confirm(self, nic: int, ip: bytes) -> None:
        """NUD confirmation from TCP progress (RFC 4861 §7.3.1), for shard
        0's tables; at most once a second per neighbour."""
        now = self.clock()
        key = (nic, ip)
        if now - self._confirmed_at.get(key, -1e9) < CONFIRM_INTERVAL_S:
            return
        if len(self._confirmed_at) > CONFIRM_MEMORY:
            self._confirmed_at.clear()  # bounded: a burst of peers costs a few extra messages
        self._confirmed_at[key] = now
        if self.control is not None:
            self.control.confirm_reachable(nic, ip)
            self.control_changed()
        else:
            assert self.to_shard0 is not None
            self.to_shard0.confirm(nic, ip)

    # --- frames ---------------------------------------------------------------------------
    def handle_record(self, record: memoryview) -> None:
        """One record (``common/record.py``): tag, virtio-net header, frame."""
        self.ingress.handle_record(record)

    # --- replication (shards other than 0) ------------------------------------------------
    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        """This shard's copy of the replicated tables."""
        if self.owner is not None:
            return self.owner.tables
        assert self.replica is not None
        return self.replica.tables

    def replica_changed(self, table: str | None, key: str | None = None) -> None:
        """The replica loaded a snapshot (``table`` None) or a patch of
        ``table``'s row ``key``: refresh the view and what depends on it."""
        assert self.replica is not None
        self.view.load(self.replica.tables, table, key)
        if table in (None, "settings"):  # shard 0's run-time settings (ctl forwarding)
            stack_settings = self.replica.tables.get("settings", {}).get("stack", {})
            self.stack.forwarding = bool(stack_settings.get("forwarding", self.config.forwarding))
            self._apply_tunables()
        if table in (None, "neigh"):
            self.stack.neighbours_changed()
        if table is None:
            # A (new) shard 0 knows only its own groups: tell it ours again.
            self.udp.groups.announce_all()

    # --- timers -------------------------------------------------------------------------------
    @property
    def machines(self) -> list[Any]:
        return [m for m in (self.stack, self.control, self.tcp) if m is not None]

    def next_deadline(self) -> float | None:
        """The nearest deadline. The control plane's (NDP, ARP, IGMP, the
        neighbour tables) is read again only after its own inputs: the
        frames of a TCP connection never move it."""
        if self._control_changed and self.control is not None:
            self._control_changed = False
            self._control_deadline = self.control.next_deadline()
        best = self._control_deadline
        for d in (self.stack.next_deadline(), self.tcp.next_deadline()):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timeout(self, now: float) -> None:
        """Fire every machine whose deadline has come."""
        self._control_changed = True
        for m in self.machines:
            deadline = m.next_deadline()
            if deadline is not None and deadline <= now:
                m.handle_timeout(now)

    def start_timers(self) -> None:
        """Arm the loop's timer for the machines' nearest deadline. From now
        on every input that may move a deadline calls ``timers_changed``."""
        self._timers_on = True
        self._rearm()

    def stop_timers(self) -> None:
        self._timers_on = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def control_changed(self) -> None:
        """The control plane had an input: its deadline may have moved."""
        self._control_changed = True
        self.timers_changed()

    def timers_changed(self) -> None:
        """A deadline may have moved: re-arm once this loop turn's work is
        done (one ``call_soon`` per turn, however many changes)."""
        if not self._rearm_soon and self._timers_on:
            self._rearm_soon = True
            asyncio.get_running_loop().call_soon(self._rearm)

    def _rearm(self) -> None:
        """One ``call_at`` for the nearest deadline: moved earlier when a
        nearer one appears; a later one waits for the armed timer, which
        re-arms when it fires."""
        self._rearm_soon = False
        if not self._timers_on:
            return
        deadline = self.next_deadline()
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.input_behind is not None and self.input_behind():
            # Frames that arrived before the deadline are still queued (a
            # burst read a batch per loop turn): an ACK among them must count
            # before the RTO it answers fires, else a burst of closes or
            # writes turns into a storm of spurious retransmissions, each
            # drawing an answer that queues behind the burst again.
            self._timer = asyncio.get_running_loop().call_soon(self._fire)
            return
        if self.before_timers is not None:
            # Frames already waiting first: an ACK queued behind a burst must
            # count before the RTO it answers fires (else a burst of closes
            # or writes turns into a storm of spurious retransmissions).
            self.before_timers()
        self.handle_timeout(self.clock())
        self.tcp.flush()
        self._rearm()

    def end_of_batch(self) -> None:
        """After a batch of frames: every connection's output and events
        (one ACK each), then the timer."""
        self.tcp.flush()
        self.timers_changed()

    # --- control requests ---------------------------------------------------------------------
    def answer(self, op: str, args: dict[str, Any]) -> Any:
        """The value of control request ``op``; ``NetError`` (an OSError
        with a one-line message) when it is refused."""
        if op == "conns":  # any shard: a page of its TCP connections (ctl conns)
            return self.tcp.rows(int(args.get("offset", 0)), int(args.get("limit", CONNS_PAGE)))
        if op == "relays":  # any shard: a page of the flows it relays (ctl relays)
            if self.relay is None:
                return []
            rows = self.relay.rows(int(args.get("offset", 0)), int(args.get("limit", CONNS_PAGE)))
            return [{"shard": self.index, **row} for row in rows]
        if op == "fronts":  # any shard: a page of its fronts' flows (ctl fronts)
            if self.fronts is None:
                return []
            offset = int(args.get("offset", 0))
            rows = self.fronts.rows()[offset : offset + int(args.get("limit", CONNS_PAGE))]
            return [{"shard": self.index, **row} for row in rows]
        if op == "table":  # any shard: its copy of a table (replication checks)
            return self.tables.get(str(args.get("name", "")), {})
        if self.control is None:
            raise NetError(errno.EOPNOTSUPP, f"shard {self.index} does not answer {op!r}")
        if op in ("tcp_get", "tcp_set", "ip_get", "ip_set"):
            return self._tunables(op, args)
        self.control_changed()  # a request may start or change the machines' timers
        try:
            return self.control.handle_request(op, dict(args))
        except NetError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise NetError(errno.EINVAL, f"{op}: bad arguments ({exc})") from None

    # --- stack-wide TCP and IP settings (ctl tcp|ip) -------------------------------------------
    def _tunables(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Shard 0: ``ctl tcp|ip [--set NAME=VALUE]``. The settings changed at
        run time are one replicated row (``settings/tcp``, ``settings/ip``)
        over the configuration's table; every shard applies it (here, and in
        ``replica_changed``). A bad name or value changes nothing anywhere."""
        table, _, verb = op.partition("_")
        if verb == "set":
            changed = dict(self._row(table))
            settings = args.get("settings")
            if not isinstance(settings, dict) or not settings:
                raise NetError(errno.EINVAL, f"{op}: want settings NAME=VALUE")
            try:
                new = self._tunable_config(table, {**changed, **settings})
            except ValueError as exc:
                raise NetError(errno.EINVAL, str(exc)) from None
            row = {name: getattr(new, name) for name in {**changed, **settings}}
            assert self.control is not None
            net = self.control.owner
            net.publish(net.owner.set("settings", table, row))
            self._apply_tunables()
        return as_settings(self.tcp_config if table == "tcp" else self.ip_config)

    def _row(self, table: str) -> dict[str, Any]:
        return dict(self.tables.get("settings", {}).get(table) or {})

    def _tunable_config(self, table: str, changed: dict[str, Any]) -> Any:
        if table == "tcp":
            return TcpConfig.from_settings({**self.config.tcp, **changed})
        return IpConfig.from_settings({**self.config.ip, **changed})

    def _apply_tunables(self) -> None:
        """Apply the replicated ``settings/tcp`` and ``settings/ip`` rows when
        they changed (a restarted shard 0 starts from the configuration
        again: the rows are gone, and so are the changes, until the
        dispatcher replays them)."""
        for table in ("tcp", "ip"):
            row = self._row(table)
            if row == self._applied[table]:
                continue
            self._applied[table] = row
            try:
                new = self._tunable_config(table, row)
            except ValueError as exc:  # shard 0 checked it: only a bug gets here
                log.error("shard %d: %s settings not applied: %s", self.index, table, exc)
                continue
            if table == "tcp":
                self.tcp_config = new
                self.tcp.set_config(new)
            else:
                self.ip_config = new
                self.stack.set_ip_config(new)

    # --- counters ------------------------------------------------------------------------------
    def stats(self, gauges: dict[str, int] | None = None) -> Stats:
        """A snapshot of the counters (with the TCP gauges and ``gauges``)."""
        c = self.counters
        c.tx_frames, c.tx_bytes, c.tx_drops = (
            self.writer.frames,
            self.writer.bytes,
            self.writer.drops,
        )
        c.tcp_segments_in, c.tcp_segments_out, c.tcp_retransmits = self.tcp.totals()
        more_drops: dict[tuple[str, Drop], int] = {}
        control = self.control
        if control is not None:  # the protocol machines' own counts, summed over NICs
            totals: dict[str, int] = {}
            for m in control.ndp.values():
                _add(totals, "ndp", m.stats.as_dict())
            for g in control.groups.igmp.values():
                _add(totals, "igmp", g.stats.as_dict())
            for mld in control.groups.mld.values():
                _add(totals, "mld", mld.stats.as_dict())
                # The names these had while MLD ran inside the NDP machine.
                _add(
                    totals,
                    "ndp_mld",
                    {
                        "reports": mld.stats.reports_sent,
                        "reports_suppressed": mld.stats.reports_suppressed,
                    },
                )
            c.net.update(totals)
            # RFC 4861 §7.2.2: the neighbour caches' refusals are drops like the rest.
            for layer, tables in (("arp", control.v4), ("ndp", control.v6)):
                for t in tables.values():
                    st = t.stats
                    for reason, n in (
                        (Drop.NEIGHBOUR_QUEUE_OVERFLOW, st.queue_overflow),
                        (Drop.NEIGHBOUR_INCOMPLETE_OVERFLOW, st.incomplete_overflow),
                        (Drop.NEIGHBOUR_TABLE_FULL, st.table_full),
                    ):
                        if n:
                            key = (layer, reason)
                            more_drops[key] = more_drops.get(key, 0) + n
        c.net["steered"] = self.steering.steered
        c.net["tcp_app_errors"] = self.tcp.app_errors
        c.net["tcp_dropped_non_unicast"] = self.tcp.dropped_non_unicast
        c.net["tcp_bound_elsewhere"] = self.tcp.bound_elsewhere  # SO_BINDTODEVICE mismatches
        if self.tcp.dropped_non_unicast:
            more_drops[("tcp", Drop.TCP_NOT_UNICAST)] = self.tcp.dropped_non_unicast
        fronts = self.fronts.stats() if self.fronts is not None else {}
        return c.snapshot(self.index, {**(gauges or {}), **self.tcp.gauges(), **fronts}, more_drops)

    # --- applications -------------------------------------------------------------------------
    async def start_apps(self) -> None:
        """``--serve`` built-ins and the ``--app`` coroutine (a task in
        ``app_tasks``; a failure is logged, never raised here)."""
        cfg = self.config
        for serve in cfg.serve:
            if serve.app in TCP_APPS:
                await serve_tcp(self.api, serve.app, serve.port)
            if serve.app in UDP_APPS:
                await serve_udp(self.api, serve.app, serve.port)
        if cfg.socks5 is not None or cfg.http_proxy is not None or cfg.forwards:
            self.fronts = Fronts(
                self.api, self.clock, socks5=cfg.socks5, http_proxy=cfg.http_proxy,
                forwards=cfg.forwards,
            )  # fmt: skip
            try:
                await self.fronts.start()
            except OSError as exc:
                log.error("shard %d: fronts not started: %s", self.index, exc)
        if cfg.app:
            main = load_app(cfg.app)
            task = asyncio.create_task(main(self.api))
            task.add_done_callback(self._app_done)
            self.app_tasks.append(task)

    def _app_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "shard %d: app %s failed", self.index, self.config.app, exc_info=task.exception()
            )

    # --- shutdown ---------------------------------------------------------------------------
    async def drain_tcp(self, drain_s: float) -> None:
        """Graceful shutdown (gVisor's Close/Wait): listeners stop (new SYNs get RST), every
        connection sends its FIN after its data, and the shard waits up to
        ``drain_s`` seconds for them to finish; what is left is reset."""
        tcp = self.tcp
        for group in list(tcp.listeners.values()):
            for lst in list(group):
                tcp.stop_listening(lst)
        for t in list(tcp.conns.values()):
            t.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s

        def open_conns() -> list[Any]:
            return [
                t for t in tcp.conns.values() if t.ep.state not in (State.TIME_WAIT, State.CLOSED)
            ]

        while open_conns() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for t in open_conns():
            t.abort()
        if self.relay is not None:
            self.relay.close()
        if self.control is not None and self.control.stop_dhcp():
            # RFC 2131 §4.4.6: the DHCPRELEASE is unicast to the server, whose
            # MAC may still be resolving: a moment for it, within the drain bound.
            end = min(deadline, loop.time() + RELEASE_WAIT_S)
            while self.control.resolving_v4() and loop.time() < end:
                await asyncio.sleep(0.01)
        if self.fronts is not None:
            self.fronts.close()
        await asyncio.sleep(0)  # the resets go out on the next flush


def _add(totals: dict[str, int], prefix: str, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        key = f"{prefix}_{name}"
        totals[key] = totals.get(key, 0) + n
