"""One shard process: one asyncio loop over its ring, its timers and its
control sockets (DESIGN.md "Processes").

* frames: the ring's eventfd wakes the loop; records are drained in batches
  and handed to ``Ingress``; the shard writes its own frames to the link,
  except those for the stack itself, which go back to the dispatcher through
  the uplink ring to be classified like wire frames (CHECKLIST B13).
* control: a DEALER to the dispatcher carries Hello, Stats and Replies out and
  Stop and Requests in.
* replication: shard 0 owns the tables (``TableOwner``), publishes every
  change on a PUB socket and answers snapshot requests on a ROUTER; the other
  shards subscribe and keep a ``TableReplica``.
* lifeline: the read end of a pipe the dispatcher holds; EOF means the
  dispatcher died, and the shard exits at once (no orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from typing import Any

import zmq
import zmq.asyncio

from shardnet.common.fault import FaultInjector, FaultSpec, FaultyWriter
from shardnet.common.link_tx import open_writer
from shardnet.common.messages import (
    BadMessage,
    Beat,
    Confirm,
    Event,
    Hello,
    Patch,
    Reply,
    Request,
    Resolve,
    Snapshot,
    SnapshotRequest,
    Stop,
    decode,
    encode,
)
from shardnet.common.procspec import ShardSpec, internal_endpoints
from shardnet.common.replica import TableOwner, TableReplica
from shardnet.common.ring import Ring
from shardnet.common.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6

from .api import ShardStack
from .apps import TCP_APPS, UDP_APPS, load_app, serve_tcp, serve_udp
from .counters import ShardCounters
from .ingress import Ingress
from .net.control import ControlPlane
from .net.ndp import NdpConfig
from .net.stack import NetStack
from .net.state import NetError, NetOwner, NetView
from .tcp.state import State
from .transport.errors import IcmpErrorRouter
from .transport.ports import PortManager
from .transport.tcp import TcpDemux
from .transport.udp import UdpDemux, UdpHooks

log = logging.getLogger("shardnet.shard")

BATCH = 128  # records drained per loop turn before yielding to other work
BEAT_INTERVAL_S = 0.5  # shard 0 tells the replicas its table version


class ShardRuntime:
    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.index = spec.index
        self.counters = ShardCounters()
        self.ingress = Ingress(spec.mac, self.counters, spec.vnet_hdr_len)
        self.owner: TableOwner | None = None
        self.replica: TableReplica | None = None
        self.control: ControlPlane | None = None  # shard 0's network control plane
        self._synced = asyncio.Event()  # the replica has loaded a snapshot
        self._stop = asyncio.Event()
        self._closed = False  # the ring is no longer drained
        self._drain_s = 0.0
        self._tasks: list[asyncio.Task[Any]] = []

    # --- the loop -------------------------------------------------------
    async def run(self) -> int:
        spec = self.spec
        loop = asyncio.get_running_loop()
        self.ring = Ring.attach(spec.ring)
        self.consumer = self.ring.consumer()
        self.uplink = Ring.attach(spec.uplink)
        self.uplink_producer = self.uplink.producer()
        self.writer = open_writer(spec.tx)
        self.ctx = zmq.asyncio.Context()
        self.clock = loop.time
        if spec.config.fault:  # --fault on the send side, seeded per shard
            fault = FaultSpec.parse(spec.config.fault)
            rng = random.Random(None if fault.seed is None else fault.seed + 1 + self.index)
            self.writer = FaultyWriter(
                self.writer, FaultInjector(fault, rng), loop.time, loop.call_at
            )
        ep = internal_endpoints(spec.ipc_dir)
        self.to_dispatcher = self.ctx.socket(zmq.DEALER)
        self.to_dispatcher.setsockopt(zmq.IDENTITY, f"shard-{self.index}".encode())
        self.to_dispatcher.setsockopt(zmq.LINGER, 500)
        self.to_dispatcher.connect(ep["dispatcher"])
        if self.index == 0:
            self._setup_owner(ep)
        else:
            self._setup_replica(ep)
        self.ingress.register(
            ETHERTYPE_IPV4, self.stack.handle_ipv4, looped=self.stack.handle_looped_ipv4
        )
        self.ingress.register(
            ETHERTYPE_IPV6, self.stack.handle_ipv6, looped=self.stack.handle_looped_ipv6
        )
        if self.control is not None:
            self.ingress.register(ETHERTYPE_ARP, self.control.handle_arp)
        self._setup_transport()

        loop.add_reader(self.consumer.fileno(), self._on_doorbell)
        loop.add_reader(spec.lifeline.fd, self._on_lifeline)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                sig, self._stop.set
            )  # the dispatcher sends Stop; a signal is a fallback
        self._tasks = [
            asyncio.create_task(self._control_loop()),
            asyncio.create_task(self._stats_loop()),
            asyncio.create_task(self._timer_loop()),
        ]
        if self.replica is not None:
            self._tasks.append(asyncio.create_task(self._replica_loop()))
        else:
            self._tasks.append(asyncio.create_task(self._sync_server_loop()))
            self._tasks.append(asyncio.create_task(self._beat_loop()))
        await self._start_apps()
        await self.to_dispatcher.send(encode(Hello(self.index, os.getpid())))
        self._step()  # records may already be waiting
        await self._stop.wait()
        await self._close()
        return 0

    def _on_doorbell(self) -> None:
        self.consumer.clear_wakeup()
        self._step()

    def _step(self) -> None:
        """Drain a batch; keep going on the next loop turn while there is
        more, else announce sleep (the doorbell will wake us)."""
        if self._closed:
            return
        n = self.consumer.drain(self.ingress.handle_record, BATCH)
        if n or not self.consumer.prepare_to_sleep():
            asyncio.get_running_loop().call_soon(self._step)

    def _loop_back(self, frame: bytes | bytearray) -> bool:
        """A frame for the stack itself (B13): to the dispatcher, which
        classifies it like a wire frame. False when the uplink is full."""
        if self._closed:
            return False
        producer = self.uplink_producer
        ok = producer.try_put(frame)
        producer.publish()
        return ok

    def _on_lifeline(self) -> None:
        try:
            data = os.read(self.spec.lifeline.fd, 64)
        except BlockingIOError:
            return
        if not data:  # the dispatcher is gone: nobody to drain for
            log.warning("shard %d: dispatcher died, exiting", self.index)
            os._exit(1)

    # --- transport and applications ----------------------------------------
    def _setup_transport(self) -> None:
        self.ports = PortManager()
        self.udp = UdpDemux(self.ports, seed=random.getrandbits(32))
        self.api = ShardStack(
            shard=self.index,
            nshards=self.spec.nshards,
            net=self.stack,
            udp=self.udp,
            rng=random.Random(),
        )
        secret = (
            bytes.fromhex(self.spec.config.secret) if self.spec.config.secret else os.urandom(16)
        )
        self.tcp = TcpDemux(
            self.stack, self.ports, shard=self.index, nshards=self.spec.nshards, secret=secret,
            loop_time=self.clock,
        )  # fmt: skip
        self.api.tcp = self.tcp
        if self.control is not None:
            self.tcp.on_progress = self.control.confirm_reachable
        else:
            self._confirmed_at: dict[tuple[int, bytes], float] = {}
            self.tcp.on_progress = self._confirm_to_shard0
        udp_hook = UdpHooks(self.udp).datagram
        errors = IcmpErrorRouter(self.udp, self.tcp)
        self.stack.transport_v4[17] = self.stack.transport_v6[17] = udp_hook
        self.stack.transport_v4[6] = self.stack.transport_v6[6] = self.tcp.deliver
        self.stack.transport_v4[-1] = errors.icmpv4_error
        self.stack.transport_v6[-58] = errors.icmpv6_error

    async def _start_apps(self) -> None:
        """Apps start once the shard knows its addresses and routes: at once
        in shard 0, after the first snapshot elsewhere."""
        if self.replica is not None:
            try:
                await asyncio.wait_for(self._synced.wait(), 10.0)
            except TimeoutError:
                log.error(
                    "shard %d: no snapshot from shard 0 in 10 s; starting apps anyway", self.index
                )
        cfg = self.spec.config
        self.app_tasks: list[asyncio.Task[Any]] = []
        for serve in cfg.serve:
            if serve.app in TCP_APPS:
                await serve_tcp(self.api, serve.app, serve.port)
            if serve.app in UDP_APPS:
                await serve_udp(self.api, serve.app, serve.port)
        if cfg.app:
            main = load_app(cfg.app)
            task = asyncio.create_task(main(self.api))
            task.add_done_callback(self._app_done)
            self.app_tasks.append(task)

    def _app_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "shard %d: app %s failed",
                self.index,
                self.spec.config.app,
                exc_info=task.exception(),
            )

    # --- control ------------------------------------------------------------
    async def _control_loop(self) -> None:
        while True:
            raw = await self.to_dispatcher.recv()
            try:
                msg = decode(raw)
            except BadMessage:
                log.warning("shard %d: bad control message", self.index)
                continue
            if isinstance(msg, Stop):
                self._drain_s = msg.drain_s
                self._stop.set()
            elif isinstance(msg, Request):
                await self.to_dispatcher.send(encode(self._answer(msg)))

    def _answer(self, req: Request) -> Reply:
        tables = self.owner.tables if self.owner is not None else self.replica.tables  # type: ignore[union-attr]
        if req.op == "conns":  # any shard: its TCP connections (ctl conns)
            return Reply(req.req_id, True, self.tcp.rows())
        if req.op == "table":  # any shard: its copy of a table (replication checks)
            name = str(req.args.get("name", ""))
            return Reply(req.req_id, True, tables.get(name, {}))
        if self.control is None:
            return Reply(req.req_id, False, error=f"shard {self.index} does not answer {req.op!r}")
        try:
            return Reply(req.req_id, True, self.control.handle_request(req.op, dict(req.args)))
        except NetError as exc:
            return Reply(req.req_id, False, error=str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            return Reply(req.req_id, False, error=f"{req.op}: bad arguments ({exc})")

    async def _stats_loop(self) -> None:
        interval = self.spec.config.stats_interval_s
        while True:
            await asyncio.sleep(interval)
            self.counters.tx_frames = self.writer.frames
            self.counters.tx_bytes = self.writer.bytes
            self.counters.tx_drops = self.writer.drops
            gauges = {"ring_used_bytes": self.ring.used(), **self.tcp.gauges()}
            c = self.counters
            c.tcp_segments_in, c.tcp_segments_out, c.tcp_retransmits = self.tcp.totals()
            for key, value in self.stack.stats.items():
                self.counters.net[key] = value
            if self.replica is not None:
                gauges["replica_resyncs"] = self.replica.resyncs
            await self.to_dispatcher.send(encode(self.counters.snapshot(self.index, gauges)))

    async def _timer_loop(self) -> None:
        """The protocol machines' timers: sleep until the nearest deadline
        (at most 100 ms, so new deadlines are noticed), then fire."""
        machines = [m for m in (self.stack, self.control, self.tcp) if m is not None]
        while True:
            now = self.clock()
            deadlines = [d for d in (m.next_deadline() for m in machines) if d is not None]
            wait = min(min(deadlines, default=now + 0.1) - now, 0.1)
            if wait > 0:
                await asyncio.sleep(wait)
            now = self.clock()
            for m in machines:
                deadline = m.next_deadline()
                if deadline is not None and deadline <= now:
                    m.handle_timeout(now)

    # --- replication ---------------------------------------------------------
    def _setup_owner(self, ep: dict[str, str]) -> None:
        self.owner = TableOwner(epoch=random.getrandbits(62))
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(ep["state"])
        self.sync = self.ctx.socket(zmq.ROUTER)
        self.sync.setsockopt(zmq.LINGER, 0)
        self.sync.bind(ep["sync"])
        net = NetOwner(self.owner, self.publish)
        self.view = net.view
        self.stack = NetStack(
            shard=0,
            view=net.view,
            writer=self.writer,
            counters=self.counters,
            clock=self.clock,
            loop_back=self._loop_back,
            forwarding=self.spec.config.forwarding,
        )
        ndp = NdpConfig.from_settings(self.spec.config.ndp)  # checked by `run` already
        self.control = ControlPlane(net, self.stack, self.clock, ndp_config=ndp)
        self.control.emit_event = self._emit_event
        # After a restart of shard 0 this rebuilds its state from the
        # configuration; replicas see a new epoch and resynchronise.
        self.control.bootstrap(self.spec.config, mac=self.spec.mac, mtu=self.spec.config.mtu)

    def _emit_event(self, event: dict[str, Any]) -> None:
        """An NDP event for the control channel's subscribers (``ctl events``)."""
        data = dict(event)
        kind = str(data.pop("type", "event"))
        with contextlib.suppress(zmq.ZMQError):
            self.to_dispatcher.send(encode(Event(kind, data)), zmq.NOBLOCK)

    def publish(self, patch: Patch | None) -> None:
        """Send one change of shard 0's tables to every replica."""
        if patch is not None:
            self.pub.send(encode(patch))

    async def _beat_loop(self) -> None:
        assert self.owner is not None
        while True:
            await asyncio.sleep(BEAT_INTERVAL_S)
            with contextlib.suppress(zmq.ZMQError):
                await self.pub.send(encode(Beat(self.owner.epoch, self.owner.version)))

    async def _sync_server_loop(self) -> None:
        while True:
            ident, raw = await self.sync.recv_multipart()
            try:
                msg = decode(raw)
            except BadMessage:
                continue
            if isinstance(msg, SnapshotRequest) and self.owner is not None:
                await self.sync.send_multipart([ident, encode(self.owner.snapshot())])
            elif isinstance(msg, Resolve) and self.control is not None:
                self.control.resolve_for(msg.nic, msg.ip)
            elif isinstance(msg, Confirm) and self.control is not None:
                self.control.confirm_reachable(msg.nic, msg.ip)

    def _setup_replica(self, ep: dict[str, str]) -> None:
        self.replica = TableReplica()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(ep["state"])
        self.sync = self.ctx.socket(zmq.DEALER)
        self.sync.setsockopt(zmq.LINGER, 0)
        self.sync.connect(ep["sync"])
        self.view = NetView()
        self.stack = NetStack(
            shard=self.index,
            view=self.view,
            writer=self.writer,
            counters=self.counters,
            clock=self.clock,
            ask_resolve=self._ask_resolve,
            loop_back=self._loop_back,
            forwarding=self.spec.config.forwarding,
        )

    def _ask_resolve(self, nic: int, ip: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Resolve(self.index, nic, ip)), zmq.NOBLOCK)

    def _confirm_to_shard0(self, nic: int, ip: bytes) -> None:
        """NUD confirmation from TCP progress here, for shard 0's tables; at
        most once a second per neighbour (REACHABLE lasts ~30 s)."""
        now = self.clock()
        key = (nic, ip)
        if now - self._confirmed_at.get(key, -1e9) < 1.0:
            return
        if len(self._confirmed_at) > 4096:
            self._confirmed_at.clear()  # bounded: a burst of peers costs a few extra messages
        self._confirmed_at[key] = now
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Confirm(self.index, nic, ip)), zmq.NOBLOCK)

    def _replica_changed(self, table: str | None) -> None:
        assert self.replica is not None
        self.view.load(self.replica.tables, table)
        if table in (None, "settings"):  # shard 0's run-time settings (ctl forwarding)
            stack_settings = self.replica.tables.get("settings", {}).get("stack", {})
            self.stack.forwarding = bool(
                stack_settings.get("forwarding", self.spec.config.forwarding)
            )
        if table is None:
            self._synced.set()
        if table in (None, "neigh"):
            self.stack.neighbours_changed()

    async def _replica_loop(self) -> None:
        """Apply patches; fetch a snapshot when joining, after a gap, or when
        shard 0 restarted (new epoch). Requests are repeated every second
        until answered, since shard 0 may be restarting."""
        replica = self.replica
        assert replica is not None  # set up in run()
        poller = zmq.asyncio.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.sync, zmq.POLLIN)
        asked_at = None
        loop = asyncio.get_running_loop()
        while True:
            if replica.needs_snapshot and (asked_at is None or loop.time() - asked_at > 1.0):
                await self.sync.send(encode(SnapshotRequest(self.index)))
                asked_at = loop.time()
            events = dict(await poller.poll(timeout=250))
            if self.sub in events:
                while self.sub.get(zmq.EVENTS) & zmq.POLLIN:
                    msg = decode(await self.sub.recv())
                    if isinstance(msg, Beat):
                        replica.check_beat(msg)
                        continue
                    if not isinstance(msg, Patch):
                        continue
                    if replica.apply_patch(msg):
                        self._replica_changed(msg.table)
                    elif asked_at is not None and loop.time() - asked_at > 1.0:
                        asked_at = None  # out of sync again: ask anew
            if self.sync in events:
                msg = decode(await self.sync.recv())
                if isinstance(msg, Snapshot):
                    replica.load_snapshot(msg)
                    asked_at = None
                    self._replica_changed(None)

    # --- shutdown ------------------------------------------------------------
    async def _drain_tcp(self) -> None:
        """B31 Close/Wait: listeners stop (new SYNs get RST), every
        connection sends its FIN after its data, and the shard waits up to
        ``--drain`` seconds for them to finish; what is left is reset."""
        tcp = self.tcp
        for group in list(tcp.listeners.values()):
            for lst in list(group):
                tcp.stop_listening(lst)
        for t in list(tcp.conns.values()):
            t.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_s

        def open_conns() -> list[Any]:
            return [
                t for t in tcp.conns.values() if t.ep.state not in (State.TIME_WAIT, State.CLOSED)
            ]

        while open_conns() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for t in open_conns():
            t.abort()
        await asyncio.sleep(0)  # the resets go out on the next flush

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):  # a bug here must not keep the process alive
            await self._drain_tcp()
        self._closed = True
        loop.remove_reader(self.consumer.fileno())
        loop.remove_reader(self.spec.lifeline.fd)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(zmq.ZMQError):
            await self.to_dispatcher.send(encode(self.counters.snapshot(self.index)))
        self.writer.close()
        self.ctx.destroy(linger=200)
        self.ring.close()
        self.uplink.close()
