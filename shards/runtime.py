"""One shard process: one asyncio loop over its ring, its timers and its
control sockets (DESIGN.md "Processes").

* frames: the ring's eventfd wakes the loop; records are drained in batches
  and handed to ``Ingress``, then every connection that changed sends once
  (``end_of_batch``); the shard writes its own frames to the link, except
  those for the stack itself, which go back to the dispatcher through the
  uplink ring to be classified like wire frames (loopback routing). With
  ``--multi-queue`` the shard also reads its own TAP queue
  (``common/tap_queue.py``) and writes on it; frames there for another
  shard go to the dispatcher (``UPLINK_WIRE``).
* control: a DEALER to the dispatcher carries Hello, Stats and Replies out and
  Stop and Requests in.
* replication: shard 0 owns the tables (``TableOwner``), publishes every
  change on a PUB socket and answers snapshot requests on a ROUTER; the other
  shards subscribe and keep a ``TableReplica``.
* lifeline: the read end of a pipe the dispatcher holds; EOF means the
  dispatcher died, and the shard exits at once (no orphans).

The stack itself (tables, machines, transports, apps, timers, the answers to
requests) is built by ``ShardAssembly`` (``assembly.py``), as the embedded
stack builds it; this module adds the process: ring, zmq, replication,
lifeline, stats to the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from typing import Any

import zmq
import zmq.asyncio

from shardnet.common.classify import classify
from shardnet.common.link_tx import open_writer
from shardnet.common.messages import (
    MEMBERSHIP_RESET_NIC,
    BadMessage,
    Beat,
    Confirm,
    Event,
    Hello,
    Membership,
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
from shardnet.common.record import TAG_LEN, UPLINK_LOOP, UPLINK_WIRE
from shardnet.common.ring import Ring
from shardnet.common.tap_queue import TapQueueReader

from .assembly import ShardAssembly, with_faults
from .net.state import NetError

log = logging.getLogger("shardnet.shard")
_LOOP_HEAD = bytes((UPLINK_LOOP,))

BATCH = 128  # records drained per loop turn before yielding to other work
TIMERS_WAIT_MAX_S = 4.0  # timers wait at most this long for the input queued before them
BEAT_INTERVAL_S = 0.5  # shard 0 tells the replicas its table version


class ShardRuntime:
    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.index = spec.index
        self.shard: ShardAssembly | None = None  # built in run(), once the sockets exist
        self._synced = asyncio.Event()  # the replica has loaded a snapshot
        self._stop = asyncio.Event()
        self._closed = False  # the ring is no longer drained
        # Frames are read only once the apps listen: a restarted shard would
        # otherwise answer the SYNs already waiting for it with RSTs (no
        # listener yet), where a short wait lets them through.
        self._serving = False
        self._timers_due_at: float | None = None  # since when they wait for input
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
        tx = spec.tx
        if spec.rx_queue is not None:
            # --multi-queue: write on our own queue (without the steering
            # program, the kernel's flow table learns a flow's queue from writes).
            tx = dataclasses.replace(tx, fd=spec.rx_queue.fd)
        self.writer = with_faults(open_writer(tx), spec.config, self.index, loop)
        self.ctx = zmq.asyncio.Context()
        self.clock = loop.time
        ep = internal_endpoints(spec.ipc_dir)
        self.to_dispatcher = self.ctx.socket(zmq.DEALER)
        self.to_dispatcher.setsockopt(zmq.IDENTITY, f"shard-{self.index}".encode())
        self.to_dispatcher.setsockopt(zmq.LINGER, 500)
        self.to_dispatcher.connect(ep["dispatcher"])
        if self.index == 0:
            self._open_owner_sockets(ep)
        else:
            self._open_replica_sockets(ep)
            # A fresh start: shard 0 forgets the groups of our old sockets.
            self.membership(MEMBERSHIP_RESET_NIC, b"", False)
        self.shard = ShardAssembly(
            spec.config, mac=spec.mac, writer=self.writer, clock=self.clock,
            loop_back=self._loop_back, steer=self._steer, index=self.index, nshards=spec.nshards,
            vnet_hdr_len=spec.vnet_hdr_len, publish=self.publish, emit_event=self._emit_event,
            to_shard0=self if self.index else None,
        )  # fmt: skip
        self.ingress = self.shard.ingress
        self.shard.input_behind = self._input_behind

        loop.add_reader(self.consumer.fileno(), self._on_doorbell)
        self.queue: TapQueueReader | None = None
        self.queue_forwarded = self.queue_forward_drops = 0
        if spec.rx_queue is not None:  # --multi-queue: our own queue of the TAP
            self.queue = TapQueueReader(spec.rx_queue.fd, spec.vnet_hdr_len)
            self._frame_at = TAG_LEN + spec.vnet_hdr_len
            self._wire_head = bytes((UPLINK_WIRE,))
        loop.add_reader(spec.lifeline.fd, self._on_lifeline)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                sig, self._stop.set
            )  # the dispatcher sends Stop; a signal is a fallback
        self._tasks = [
            asyncio.create_task(self._control_loop()),
            asyncio.create_task(self._stats_loop()),
        ]
        self.shard.start_timers()
        if self.shard.replica is not None:
            self._tasks.append(asyncio.create_task(self._replica_loop()))
        else:
            self._tasks.append(asyncio.create_task(self._sync_server_loop()))
            self._tasks.append(asyncio.create_task(self._beat_loop()))
        await self._start_apps()
        self._serving = True
        if self.queue is not None:
            loop.add_reader(self.queue.fileno(), self._on_queue)
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
        n = 0
        try:
            n = self.consumer.drain(self.ingress.handle_record, BATCH)
            if n:
                assert self.shard is not None
                self.shard.end_of_batch()  # one ACK per connection per batch
        finally:  # whatever happened, the ring is drained again (or its doorbell armed)
            if n or not self.consumer.prepare_to_sleep():
                asyncio.get_running_loop().call_soon(self._step)

    def _on_queue(self) -> None:
        """Frames from our TAP queue: ours to the ingress as they lie in
        the reader's arena; another shard's (or shard 0's ARP and NDP, or a
        fragment) to the dispatcher, which classifies them."""
        queue = self.queue
        if self._closed or queue is None:
            return
        records = queue.read_batch(BATCH)
        if not records:
            return
        assert self.shard is not None
        mine, nshards, at = self.index, self.spec.nshards, self._frame_at
        handle = self.ingress.handle_record
        producer = self.uplink_producer
        forwarded = 0
        for record in records:
            if classify(record[at:], nshards) == mine:
                handle(record)
            elif producer.try_put_parts(self._wire_head, record[TAG_LEN:]):
                forwarded += 1
            else:
                self.queue_forward_drops += 1  # the uplink is full: dropped, as a NIC would
        if forwarded:
            self.queue_forwarded += forwarded
            producer.publish()
        self.shard.end_of_batch()
        if len(records) == BATCH:  # more may wait: continue after other work
            asyncio.get_running_loop().call_soon(self._on_queue)

    def _input_behind(self) -> bool:
        """The timers came due: True while frames are waiting in the ring
        (``_step`` reads them, a batch per loop turn, so the loop stays
        responsive); once it is empty every frame that arrived before a
        deadline has counted. At most TIMERS_WAIT_MAX_S, so that under a
        flood timers still run, that much late at most."""
        if self._closed or not self._serving or not self.consumer.has_data():
            self._timers_due_at = None
            return False
        now = self.clock()
        if self._timers_due_at is None:
            self._timers_due_at = now
        if now - self._timers_due_at < TIMERS_WAIT_MAX_S:
            return True
        self._timers_due_at = None
        return False

    def _loop_back(self, frame: bytes | bytearray) -> bool:
        """A frame for the stack itself (loopback): to the dispatcher, which
        classifies it like a wire frame. False when the uplink is full."""
        return self._uplink(_LOOP_HEAD, frame)

    def _steer(self, shard: int, tag: int, eth: bytes, packet: memoryview) -> bool:
        """A frame for another shard's socket (``common/record.py``)."""
        return self._uplink(bytes((shard, tag)) + eth, packet)

    def _uplink(self, head: bytes, frame: bytes | bytearray | memoryview) -> bool:
        if self._closed:
            return False
        producer = self.uplink_producer
        ok = producer.try_put_parts(head, frame)
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

    # --- applications ------------------------------------------------------------
    async def _start_apps(self) -> None:
        """Apps start once the shard knows its addresses and routes: at once
        in shard 0, after the first snapshot elsewhere."""
        assert self.shard is not None
        if self.shard.replica is not None:
            try:
                await asyncio.wait_for(self._synced.wait(), 10.0)
            except TimeoutError:
                log.error(
                    "shard %d: no snapshot from shard 0 in 10 s; starting apps anyway", self.index
                )
        await self.shard.start_apps()

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
        assert self.shard is not None
        try:
            return Reply(req.req_id, True, self.shard.answer(req.op, dict(req.args)))
        except NetError as exc:
            return Reply(req.req_id, False, error=str(exc))

    async def _stats_loop(self) -> None:
        shard = self.shard
        assert shard is not None
        interval = self.spec.config.stats_interval_s
        while True:
            await asyncio.sleep(interval)
            gauges = {"ring_used_bytes": self.ring.used()}
            if self.queue is not None:
                gauges["queue_rx_frames"] = self.queue.rx_frames
                gauges["queue_forwarded"] = self.queue_forwarded
                gauges["queue_forward_drops"] = self.queue_forward_drops
            if shard.replica is not None:
                gauges["replica_resyncs"] = shard.replica.resyncs
            await self.to_dispatcher.send(encode(shard.stats(gauges)))

    # --- replication ---------------------------------------------------------
    def _open_owner_sockets(self, ep: dict[str, str]) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(ep["state"])
        self.sync = self.ctx.socket(zmq.ROUTER)
        self.sync.setsockopt(zmq.LINGER, 0)
        self.sync.bind(ep["sync"])

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
        assert self.shard is not None and self.shard.owner is not None
        owner = self.shard.owner
        while True:
            await asyncio.sleep(BEAT_INTERVAL_S)
            with contextlib.suppress(zmq.ZMQError):
                await self.pub.send(encode(Beat(owner.epoch, owner.version)))

    async def _sync_server_loop(self) -> None:
        assert self.shard is not None
        while True:
            ident, raw = await self.sync.recv_multipart()
            try:
                msg = decode(raw)
            except BadMessage:
                continue
            self.shard.control_changed()  # resolutions and memberships start timers
            owner, control = self.shard.owner, self.shard.control
            if isinstance(msg, SnapshotRequest) and owner is not None:
                await self.sync.send_multipart([ident, encode(owner.snapshot())])
            elif isinstance(msg, Resolve) and control is not None:
                control.resolve_for(msg.nic, msg.ip)
            elif isinstance(msg, Confirm) and control is not None:
                if msg.used:
                    control.neighbour_used(msg.nic, msg.ip)
                else:
                    control.confirm_reachable(msg.nic, msg.ip)
            elif isinstance(msg, Membership) and control is not None:
                if msg.nic == MEMBERSHIP_RESET_NIC:  # the shard (re)started
                    control.groups.shard_restarted(msg.shard)
                    continue
                try:
                    control.groups.membership(msg.shard, msg.nic, msg.group, msg.join)
                except NetError as exc:  # checked in the shard; a NIC may have gone since
                    log.warning("shard %d's membership refused: %s", msg.shard, exc)

    def _open_replica_sockets(self, ep: dict[str, str]) -> None:
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(ep["state"])
        self.sync = self.ctx.socket(zmq.DEALER)
        self.sync.setsockopt(zmq.LINGER, 0)
        self.sync.connect(ep["sync"])

    # ToShard0: this shard's requests to shard 0, over the sync socket.
    def resolve(self, nic: int, ip: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Resolve(self.index, nic, ip)), zmq.NOBLOCK)

    def confirm(self, nic: int, ip: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Confirm(self.index, nic, ip)), zmq.NOBLOCK)

    def used(self, nic: int, ip: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Confirm(self.index, nic, ip, True)), zmq.NOBLOCK)

    def membership(self, nic: int, group: bytes, join: bool) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sync.send(encode(Membership(self.index, nic, group, join)), zmq.NOBLOCK)

    def _replica_changed(self, table: str | None, key: str | None = None) -> None:
        assert self.shard is not None
        self.shard.replica_changed(table, key)
        if table is None:
            self._synced.set()

    async def _replica_loop(self) -> None:
        """Apply patches; fetch a snapshot when joining, after a gap, or when
        shard 0 restarted (new epoch). Requests are repeated every second
        until answered, since shard 0 may be restarting."""
        assert self.shard is not None
        replica = self.shard.replica
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
                while int(self.sub.get(zmq.EVENTS)) & zmq.POLLIN:
                    msg = decode(await self.sub.recv())
                    if isinstance(msg, Beat):
                        replica.check_beat(msg)
                        continue
                    if not isinstance(msg, Patch):
                        continue
                    if replica.apply_patch(msg):
                        self._replica_changed(msg.table, msg.key)
                    elif asked_at is not None and loop.time() - asked_at > 1.0:
                        asked_at = None  # out of sync again: ask anew
            if self.sync in events:
                msg = decode(await self.sync.recv())
                if isinstance(msg, Snapshot):
                    replica.load_snapshot(msg)
                    asked_at = None
                    self._replica_changed(None)

    # --- shutdown ------------------------------------------------------------
    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        shard = self.shard
        assert shard is not None  # built in run() before anything can stop it
        with contextlib.suppress(Exception):  # a bug here must not keep the process alive
            await shard.drain_tcp(self._drain_s)
        self._closed = True
        shard.stop_timers()
        loop.remove_reader(self.consumer.fileno())
        if self.queue is not None:
            loop.remove_reader(self.queue.fileno())
            self.queue.close()
        loop.remove_reader(self.spec.lifeline.fd)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(zmq.ZMQError):
            await self.to_dispatcher.send(encode(shard.counters.snapshot(self.index)))
        self.writer.close()
        self.ctx.destroy(linger=200)
        self.ring.close()
        self.uplink.close()
