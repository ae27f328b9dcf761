"""The dispatcher process: owns the link, feeds the shards' rings, supervises
them, serves control and metrics, and shuts everything down cleanly.

Frames: the link's fd wakes the loop; a batch is read, each frame classified
(``classify``) and copied into its shard's ring, and every touched ring is
published once per batch (the doorbell rings only for a sleeping shard). A
full ring, or a shard being restarted, drops the frame and counts it: the
dispatcher never blocks on a shard.

Loopback (RFC 1122 §3.2.1.3: a datagram to ourselves never touches the wire): a shard sends a packet for one of the stack's own
addresses (or routed over the loopback NIC) as an Ethernet frame into its
uplink ring; the dispatcher drains the uplinks like the link and dispatches
those frames through the same classification, tagged ``TAG_LOOPED``
(``common/record.py``): they never touch the wire and reach the shard that
owns their flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from shardnet.common.classify import FRAGMENT, classify, control_plane
from shardnet.common.config import StackConfig
from shardnet.common.fault import FaultInjector, FaultSpec
from shardnet.common.fdpass import PassedFd
from shardnet.common.ipconfig import IpConfig
from shardnet.common.messages import Request, Stop
from shardnet.common.procspec import ShardSpec, internal_endpoints
from shardnet.common.record import TAG_LOOPED, TAG_WIRE, UPLINK_LOOP, UPLINK_WIRE
from shardnet.common.ring import Ring
from shardnet.common.wire.virtio import F_DATA_VALID

from .control import ControlServer
from .link import TapLink, open_link
from .metrics import StackCollector, serve_metrics
from .reassembly import Reassembler, ReassemblyConfig
from .stats import StatsBook
from .supervisor import ShardSlot, Supervisor

log = logging.getLogger("shardnet.dispatcher")

RX_BATCH = 64  # frames per link read before yielding to the loop
RUNTIME_DIR = "/run/shardnet"


class Dispatcher:
    def __init__(self, config: StackConfig, shard_entry: Callable[[ShardSpec], None]) -> None:
        if config.secret is None:
            # One RFC 7217 key per run, so a restarted shard 0 regenerates the
            # same opaque addresses (``shardnet run`` keeps one across runs:
            # secret.py).
            config = dataclasses.replace(config, secret=os.urandom(16).hex())
        self.config = config
        self.shard_entry = shard_entry
        self.nshards = config.shards
        self.book = StatsBook(self.nshards)
        self.reassembler = Reassembler(
            ReassemblyConfig().with_ip(IpConfig.from_settings(config.ip))
        )
        # --fault: a seeded injector on the receive side (each shard has its own for sending).
        self.fault = FaultInjector(FaultSpec.parse(config.fault)) if config.fault else None
        self._fault_timer: asyncio.TimerHandle | None = None
        self.book.dispatcher.reassembly_drops = self.reassembler.drops
        self._reassembly_timer: asyncio.TimerHandle | None = None
        self._queues: dict[int, int] = {}  # --multi-queue: each shard's TAP queue fd
        self._stop = asyncio.Event()
        self._signal: str | None = None

    # --- the process ------------------------------------------------------
    async def run(self, *, on_ready: Callable[[Dispatcher], None] | None = None) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        # pyroute2's synchronous IPRoute runs its own event loop: give it a
        # thread without one.
        self.link = await loop.run_in_executor(None, open_link, cfg)
        if isinstance(self.link, TapLink) and self.link.steering:
            self.book.dispatcher.steering = self.link.steering
            if self.link.steering != "ebpf":  # still correct, only the first frames detour
                log.warning("multi-queue steering by the kernel's hash: %s", self.link.steering)
        admission = getattr(self.link, "admission", None)  # a TAP's (through a pcap tee too)
        self.book.dispatcher.link_filter = getattr(self.link, "link_filter", "")
        if admission is not None:
            self.book.dispatcher.link_drops = admission.drops
        elif self.book.dispatcher.link_filter:
            log.warning("no admission filter on the TAP: %s", self.book.dispatcher.link_filter)
        self.clock = loop.time
        # Records: a tag byte, then always the link's virtio-net header
        # (zeros when the frame has none), then the frame (common/record.py).
        self._no_vnet = bytes(self.link.vnet_hdr_len)
        # Steered frames: the steering shard checked (or the link vouched
        # for) their checksums, which may be partial (NEEDS_CSUM) — say so.
        size = self.link.vnet_hdr_len
        self._vouched = bytes((F_DATA_VALID,)) + bytes(size - 1) if size else b""
        try:
            return await self._run(loop, on_ready)
        finally:
            await loop.run_in_executor(None, self.link.close)

    async def _run(self, loop: asyncio.AbstractEventLoop, on_ready: Any) -> int:
        cfg = self.config
        # Per process: two stacks (in two namespaces) may share a link name.
        self.ipc_dir = os.path.join(RUNTIME_DIR, f"{cfg.link_name}.{os.getpid()}.d")
        os.makedirs(self.ipc_dir, mode=0o700, exist_ok=True)
        self.ctx = zmq.asyncio.Context()
        self.control = ControlServer(
            self.ctx,
            internal=internal_endpoints(self.ipc_dir)["dispatcher"],
            control=cfg.control_endpoint,
            book=self.book,
            info=self._info,
            on_hello=self._on_hello,
        )
        self.control.on_change = self._control_changed
        self._lifeline_r, self._lifeline_w = os.pipe()
        os.set_blocking(self._lifeline_r, False)
        self.supervisor = Supervisor(
            self.nshards,
            self.shard_entry,
            self._make_spec,
            ring_bytes=cfg.ring_bytes,
            backoff_s=cfg.restart_backoff_s,
            on_restart=self._on_restart,
            on_uplink=self._on_uplink,
        )
        metrics_server = None
        try:
            if cfg.metrics is not None:
                collector = StackCollector(self.book, self._processes, self._restarts)
                try:
                    metrics_server = serve_metrics(collector, *cfg.metrics)
                except OSError as exc:
                    host, port = cfg.metrics
                    raise OSError(
                        f"cannot serve metrics on {host}:{port}: {exc.strerror}"
                    ) from None
            self.control.start()
            self.supervisor.start_all(loop)
            loop.add_reader(self.link.fileno(), self._on_link)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
            log.info(
                "running on %s (%s) with %d shard(s); control %s%s",
                self.link.name,
                type(self.link).__name__,
                self.nshards,
                cfg.control_endpoint,
                f"; metrics http://{cfg.metrics[0]}:{cfg.metrics[1]}/metrics"
                if cfg.metrics
                else "",
            )
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
            log.info("stopping (%s): draining shards for up to %.1f s", self._signal, cfg.drain_s)
            for i in range(self.nshards):
                await self.control.send_to_shard(i, Stop(cfg.drain_s))
            # The link is still read while the shards drain: their peers'
            # ACKs and FINs must reach them for a graceful close.
            await self.supervisor.stop_all(cfg.drain_s + 1.0)
            loop.remove_reader(self.link.fileno())
            return 0
        finally:
            with contextlib.suppress(Exception):
                await self.supervisor.stop_all(0.5)
            await self.control.close()
            self.ctx.destroy(linger=0)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            os.close(self._lifeline_w)
            os.close(self._lifeline_r)
            shutil.rmtree(self.ipc_dir, ignore_errors=True)

    def _on_signal(self, sig: int) -> None:
        self._signal = signal.Signals(sig).name
        self._stop.set()

    def stop(self) -> None:
        self._signal = "stop()"
        self._stop.set()

    # --- the data path ----------------------------------------------------------
    def _on_link(self) -> None:
        frames = self.link.read_batch(RX_BATCH)
        if self.fault is not None:
            self._faulty(frames)
        else:
            self._dispatch(
                (f.data, f.vnet.raw if f.vnet is not None else self._no_vnet) for f in frames
            )
        link = self.link
        d = self.book.dispatcher
        d.link_rx_frames = link.rx_frames
        d.link_rx_bytes = link.rx_bytes
        d.link_rx_errors = link.rx_drops + link.rx_errors
        if len(frames) == RX_BATCH:  # more may be waiting: continue after other work
            asyncio.get_running_loop().call_soon(self._on_link)

    def _faulty(self, frames: list[Any]) -> None:
        """--fault: frames pass the injector (copied: delayed ones outlive
        the link's read buffer, which the next read reuses)."""
        fault, now = self.fault, self.clock()
        assert fault is not None
        passed: list[tuple[bytes, bytes]] = []
        for f in frames:
            head = bytes(f.vnet.raw) if f.vnet is not None else self._no_vnet
            passed += fault.apply(now, (bytes(f.data), head))
        self._dispatch(passed)
        self._arm_fault()

    def _arm_fault(self) -> None:
        """One timer for the earliest held frame (latency_ms holds every one)."""
        assert self.fault is not None
        deadline = self.fault.next_deadline()
        if deadline is None:
            return
        h = self._fault_timer
        if h is not None:
            if h.when() <= deadline:
                return
            h.cancel()
        self._fault_timer = asyncio.get_running_loop().call_at(deadline, self._fault_due)

    def _fault_due(self) -> None:
        assert self.fault is not None
        self._fault_timer = None
        self._dispatch(self.fault.due(self.clock()))
        self._arm_fault()

    def _on_uplink(self, slot: ShardSlot) -> None:
        """A shard's uplink doorbell (or its first kick): loop its frames
        back. Drains a batch per loop turn, then announces sleep."""
        consumer = slot.uplink_consumer
        if consumer is None:  # the shard died meanwhile
            return
        consumer.clear_wakeup()
        self._uplink_step(slot)

    def _uplink_step(self, slot: ShardSlot) -> None:
        consumer = slot.uplink_consumer
        if consumer is None:
            return
        records = consumer.read_batch(RX_BATCH)
        if records:
            looped, wire, steered = [], [], []
            for r in records:
                kind = r[0]
                if kind == UPLINK_LOOP:
                    looped.append(r[1:])
                elif kind == UPLINK_WIRE:
                    wire.append(r[1:])
                else:
                    steered.append(r)
            if steered:
                self._steer(steered)
            if looped:
                self._dispatch(((r, self._no_vnet) for r in looped), TAG_LOOPED)
            if wire:  # read by a shard from its queue, not its own: as if read here
                size = self.link.vnet_hdr_len
                self.book.dispatcher.from_queues += len(wire)
                self._dispatch(((r[size:], r[:size]) for r in wire), TAG_WIRE)
            views = looped + wire
            consumer.release()  # _dispatch and _steer copied them
            for v in views:
                v.release()
            for r in records:
                r.release()
        if records or not consumer.prepare_to_sleep():
            asyncio.get_running_loop().call_soon(self._uplink_step, slot)

    def _steer(self, records: list[memoryview]) -> None:
        """Frames a shard hands to the shard that owns their socket
        (``common/record.py``): straight into that ring, unclassified, with
        the tag they arrived with."""
        d = self.book.dispatcher
        slots = self.supervisor.slots
        touched = set()
        for r in records:
            shard = r[0]
            producer = slots[shard].producer if shard < self.nshards else None
            tag, frame = r[1], r[2:]
            if producer is not None and producer.try_put_tagged(tag, self._vouched, frame):
                d.steered += 1
                touched.add(shard)
            else:
                d.ring_drops[min(shard, self.nshards - 1)] += 1
            frame.release()
        for shard in touched:
            producer = slots[shard].producer
            if producer is not None:
                producer.publish()

    def _dispatch(self, frames: Any, tag: int = TAG_WIRE) -> None:
        """Classify each (frame, virtio-net header) and copy it into its
        shard's ring as a ``tag``-ged record; publish every touched ring once."""
        d = self.book.dispatcher
        nshards = self.nshards
        slots = self.supervisor.slots
        touched = set()
        for data, head in frames:
            shard = classify(data, nshards)
            if shard == FRAGMENT:
                # The whole datagram is needed to hash its flow (DESIGN.md):
                # reassemble here, then classify and deliver it as one frame.
                d.fragments += 1
                whole = self.reassembler.push(self.clock(), data)
                self._arm_reassembly_timer()
                if whole is not None:
                    data, head = whole, self._no_vnet
                    shard = classify(data, nshards)
                elif self.reassembler.refused:
                    shard = 0  # its stack parses it again and sends the ICMP error
                else:
                    continue
            slot = slots[shard]
            producer = slot.producer
            # Control-plane frames are bounded, so that a flood of them never
            # queues flows' frames behind it (backlog.py).
            control = control_plane(data)
            if producer is None:
                d.ring_drops[shard] += 1
            elif control and not slot.backlog.admits(producer):
                d.backlog_drops[shard] += 1
            elif producer.try_put_tagged(tag, head, data):
                if control:
                    slot.backlog.put(producer.position)
                d.to_shard[shard] += 1
                touched.add(shard)
            else:
                d.ring_drops[shard] += 1
        for shard in touched:
            producer = slots[shard].producer
            if producer is not None:
                producer.publish()

    def _arm_reassembly_timer(self) -> None:
        deadline = self.reassembler.next_deadline()
        if deadline is None or self._reassembly_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._reassembly_timer = loop.call_at(deadline, self._reassembly_timeout)

    def _reassembly_timeout(self) -> None:
        """Expired datagrams: shard 0 sends ICMP time exceeded (RFC 792 code
        1, RFC 8200 §4.5) when the first fragment had arrived."""
        self._reassembly_timer = None
        for expired in self.reassembler.handle_timeout(self.clock()):
            if expired.first_fragment is not None:
                request = Request(0, "reassembly_expired", {"packet": expired.first_fragment})
                asyncio.get_running_loop().create_task(self.control.send_to_shard(0, request))
        self._arm_reassembly_timer()

    # --- shards ---------------------------------------------------------------
    def _make_spec(self, index: int, ring: Ring, uplink: Ring) -> ShardSpec:
        tx = self.link.tx_spec()
        rx_queue = None
        if self.config.multi_queue:
            # The shard's own queue, opened once and kept: a restarted shard
            # gets it again. It reads its flows there and writes on it, so
            # the kernel keeps steering them there.
            fd = self._queues.get(index)
            if fd is None:
                fd = self._queues[index] = self.link.open_queue()  # type: ignore[attr-defined]
            tx = dataclasses.replace(tx, fd=None)  # the shard writes on rx_queue
            rx_queue = PassedFd(fd)
        return ShardSpec(
            index=index,
            nshards=self.nshards,
            ring=ring.handle,
            uplink=uplink.handle,
            rx_queue=rx_queue,
            tx=tx,
            config=self.config,
            mac=self.link.mac,
            ipc_dir=self.ipc_dir,
            lifeline=PassedFd(self._lifeline_r),
            vnet_hdr_len=self.link.vnet_hdr_len,
        )

    def _control_changed(self, op: str, value: Any) -> None:
        """``ctl ip --set``: the reassembly limits are the dispatcher's."""
        if op == "ip_set" and isinstance(value, dict):
            self.reassembler.config = self.reassembler.config.with_ip(IpConfig.from_settings(value))

    def _on_hello(self, shard: int, pid: int) -> None:
        if 0 <= shard < self.nshards:
            self.book.new_incarnation(shard)
            self.supervisor.slots[shard].ready = True
            self.control.publish("shard_ready", shard=shard, pid=pid)

    def _on_restart(self, shard: int, exit_code: int | None) -> None:
        self.control.publish("shard_died", shard=shard, exit_code=exit_code)

    def _restarts(self) -> list[int]:
        return [slot.restarts for slot in self.supervisor.slots]

    def _processes(self) -> dict[str, Any]:
        return {"dispatcher": os.getpid(), "shards": self.supervisor.pids()}

    def _info(self) -> dict[str, Any]:
        slots = self.supervisor.slots
        return {
            "link": self.link.name,
            "mac": self.link.mac.hex(":"),
            "shards": self.nshards,
            "processes": {
                "dispatcher": os.getpid(),
                "shards": [
                    {"shard": s.index, "pid": s.pid, "ready": s.ready, "restarts": s.restarts}
                    for s in slots
                ],
            },
        }
