"""The embedded stack: shardnet in the caller's process and event loop, over
an in-memory channel link (DESIGN.md "What users program against").

One shard (shard 0 of 1), no dispatcher, no other process: the shard is
built by the same ``ShardAssembly`` as every shard of ``shardnet run``, so
the network layer, the transports, the control plane, the timers and the
apps are the very same code. What the dispatcher and the ring do for a
shard process is done here in a few lines:

* frames in: the link's eventfd wakes the loop; each frame read becomes a
  ``TAG_WIRE`` record (``common/record.py``); IPv4/IPv6 fragments go through
  the dispatcher's ``Reassembler`` first, as ``dispatcher/app.py`` does;
* frames the stack sends to itself (loopback, its own addresses) are
  queued and handled as ``TAG_LOOPED`` records on a later loop turn, never
  re-entrantly;
* control requests are answered in process through ``ControlApi`` (the
  typed methods of ``Client``), with the values and errors a running stack
  gives; ``events()`` is an async iterator fed by the control plane.

``Stack.pair()`` / ``connect(a, b)`` wire two stacks' links back to back:
the frames one writes are injected into the other, so two stacks talk
TCP/UDP in one process (tests, notebooks).

Left out: the per-process parts (rings, zmq, supervision, metrics
endpoint); ``shards``/``--shards`` (always one shard here).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Self

from shardnet.common.classify import FRAGMENT, classify
from shardnet.common.config import ConfigError, StackConfig, build_config
from shardnet.common.control_api import ControlApi, ControlError
from shardnet.common.ipconfig import IpConfig
from shardnet.common.link_tx import FrameWriter, open_writer
from shardnet.common.messages import Event, Reply, Request, decode, encode
from shardnet.common.record import TAG_LOOPED, TAG_WIRE
from shardnet.dispatcher.link import ChannelLink
from shardnet.dispatcher.reassembly import Reassembler, ReassemblyConfig
from shardnet.dispatcher.stats import StatsBook
from shardnet.shards.api import IGNORE, REJECT, Accept, Server, ShardStack, UdpTransport
from shardnet.shards.assembly import ShardAssembly, ndp_config_of, with_faults
from shardnet.shards.net.state import NetError
from shardnet.shards.tcp.config import TcpConfig

__all__ = ["IGNORE", "REJECT", "Accept", "EventStream", "Stack", "connect"]

LINK_KIND = "channel"  # the link NIC's kind in ``nics()``
EMBEDDED_DRAIN_S = 1.0  # graceful TCP close at close(), unless a config says otherwise
LOOP_CAPACITY = 4096  # looped frames queued at most; more are dropped (like a full uplink)
EVENT_BACKLOG = 1024  # events queued per subscriber; the oldest are dropped beyond
# Two stacks paired with no addresses given get these (RFC 2544 / RFC 3849 ranges).
PAIR_DEFAULTS = (
    {"ipv4": ("198.18.0.1/24",), "ipv6": ("2001:db8::1/64",)},
    {"ipv4": ("198.18.0.2/24",), "ipv6": ("2001:db8::2/64",)},
)


def _is_fragment(frame: bytes | memoryview) -> bool:
    return classify(frame, 1) == FRAGMENT  # the dispatcher's rule


class EventStream:
    """An async iterator of ``Event`` (the type ``Client`` yields): NDP and
    NUD events of the control plane from the moment it was made. It ends
    when the stack closes or ``close()`` is called. A slow reader loses the
    oldest events beyond ``EVENT_BACKLOG`` (counted in ``dropped``)."""

    def __init__(self, streams: set[EventStream]) -> None:
        self._streams = streams
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(EVENT_BACKLOG)
        self.dropped = 0
        streams.add(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stays ended
            raise StopAsyncIteration
        return item

    def put(self, item: Event | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def close(self) -> None:
        if self in self._streams:
            self._streams.discard(self)
            self.put(None)


class Stack(ControlApi):
    """One shardnet stack in this process over a ``ChannelLink``.

    Settings are ``shardnet run``'s (``StackConfig``); the keywords override
    ``config``. ``link`` defaults to a new ``ChannelLink`` named ``name``
    with ``mac`` (random when None) and ``mtu``. Bad settings raise
    ``ConfigError`` (a ValueError) here; a bad MAC ``LinkError`` (an
    OSError). Use ``async with Stack(...) as stack`` or ``await
    stack.start()`` / ``await stack.close()`` in a running event loop.
    ``seed`` makes the stack's random choices (RFC 7217 key, ports, ISN
    secret, NDP jitter) repeatable; ``drain_s`` bounds the graceful close
    (1 s unless ``config`` says otherwise).
    """

    def __init__(
        self,
        *,
        mac: bytes | str | None = None,
        ipv4: Sequence[str] | str = (),
        ipv6: Sequence[str] | str = (),
        gateway4: str | None = None,
        gateway6: str | None = None,
        slaac: bool | None = None,
        forwarding: bool | None = None,
        serve: Sequence[str] | str = (),
        app: str | None = None,
        mtu: int | None = None,
        ndp: dict[str, Any] | None = None,
        secret: str | None = None,
        fault: str | None = None,
        drain_s: float | None = None,
        config: StackConfig | None = None,
        link: ChannelLink | None = None,
        name: str = "channel0",
        seed: int | None = None,
    ) -> None:
        given: dict[str, Any] = {
            "ipv4": ipv4 or None, "ipv6": ipv6 or None, "gateway4": gateway4,
            "gateway6": gateway6, "slaac": slaac, "forwarding": forwarding,
            "serve": serve or None, "app": app, "mtu": mtu, "ndp": ndp, "secret": secret,
            "fault": fault, "drain_s": drain_s,
        }  # fmt: skip
        if isinstance(mac, str):
            given["mac"] = mac
        flags = {k: v for k, v in given.items() if v is not None}
        if link is not None:
            name = link.name
        # The settings' own conversions and checks, with the link's name
        # checked as a device name would be (the link NIC is named after it).
        converted = build_config({}, {**flags, "tap": name})
        base = config or StackConfig(drain_s=EMBEDDED_DRAIN_S)
        cfg = dataclasses.replace(
            base, tap=None, packet=None, shards=1, **{k: getattr(converted, k) for k in flags}
        )
        if isinstance(mac, bytes | bytearray):
            cfg = dataclasses.replace(cfg, mac=bytes(mac))
        if link is not None:
            if cfg.mac is not None and cfg.mac != link.mac:
                raise ConfigError(f"mac {cfg.mac.hex(':')} is not the link's {link.mac.hex(':')}")
            if mtu is not None and mtu != link.mtu:
                raise ConfigError(f"mtu {mtu} is not the link's {link.mtu}")
            cfg = dataclasses.replace(cfg, mac=link.mac, mtu=link.mtu)
        if cfg.secret is None:
            # As the dispatcher does: one RFC 7217 key per stack (an empty
            # key would give every stack the same opaque addresses).
            key = random.Random(seed).randbytes(16) if seed is not None else os.urandom(16)
            cfg = dataclasses.replace(cfg, secret=key.hex())
        dataclasses.replace(cfg, tap=name).validate()
        try:
            ndp_config_of(cfg)
        except ValueError as exc:
            raise ConfigError(f"[ndp]: {exc}") from None
        for table, check in (("tcp", TcpConfig.from_settings), ("ip", IpConfig.from_settings)):
            try:
                check(getattr(cfg, table))
            except ValueError as exc:
                raise ConfigError(f"[{table}]: {exc}") from None
        if link is None:  # last: nothing to close when a setting is bad
            link = ChannelLink(name=name, mtu=cfg.mtu, mac=cfg.mac)  # LinkError: a bad MAC
            cfg = dataclasses.replace(cfg, mac=link.mac)
        self.config = cfg
        self.link = link
        self.seed = seed
        self.shard: ShardAssembly | None = None
        self.reassembler = Reassembler(
            ReassemblyConfig().with_ip(IpConfig.from_settings(self.config.ip))
        )
        self.fragments = 0  # IP fragments seen (looped ones included)
        self.frames_in = 0  # records handed to the shard (wire and looped)
        self.loop_drops = 0  # looped frames dropped on a full queue
        self._no_vnet = bytes(link.vnet_hdr_len)
        self._looped: deque[bytes] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_handle: asyncio.Handle | None = None
        self._reassembly_timer: asyncio.TimerHandle | None = None
        self._writer: FrameWriter | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._streams: set[EventStream] = set()
        self._peer: Stack | None = None
        self._reading = False
        self._closing = False
        self._closed = False

    # --- life cycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Build the shard, start its timers and apps, read the link."""
        if self.shard is not None or self._closing:
            raise RuntimeError("a Stack starts once")
        loop = self._loop = asyncio.get_running_loop()
        cfg, link = self.config, self.link
        self._writer = with_faults(open_writer(link.tx_spec()), cfg, 0, loop)
        try:
            self.shard = ShardAssembly(
                cfg, mac=link.mac, writer=self._writer, clock=loop.time,
                loop_back=self._loop_back, vnet_hdr_len=link.vnet_hdr_len,
                emit_event=self._emit_event, link_as=(link.name, LINK_KIND),
                rng=random.Random(self.seed) if self.seed is not None else None,
            )  # fmt: skip
            loop.add_reader(link.fileno(), self._on_link)
            self._reading = True
            self.shard.before_timers = self._on_link  # frames waiting first
            self.shard.start_timers()
            await self.shard.start_apps()
        except BaseException:
            await self.close()
            raise
        self._on_link()  # frames injected before start

    async def close(self) -> None:
        """Close TCP gracefully (FIN, wait up to ``drain_s``, then RST),
        stop every task, end event streams, close the link."""
        if self._closing:
            return
        self._closing = True
        shard = self.shard
        if shard is not None:
            with contextlib.suppress(Exception):
                await shard.drain_tcp(self.config.drain_s)
            for _ in range(3):  # protocols see connection_lost; their handlers end
                await asyncio.sleep(0)
        self._closed = True
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.link.fileno())
            self._reading = False
        if shard is not None:
            shard.stop_timers()
        for handle in (self._loop_handle, self._reassembly_timer):
            if handle is not None:
                handle.cancel()
        self._looped.clear()
        tasks = self._tasks + (shard.app_tasks if shard is not None else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._disconnect()
        for stream in list(self._streams):
            stream.close()
        if self._writer is not None:
            self._writer.close()
        self.link.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api(self) -> ShardStack:
        """The ``ShardStack`` that ``--app`` code gets in a shard."""
        if self.shard is None or self._closed:
            raise RuntimeError("the stack is not running: await stack.start() or use async with")
        return self.shard.api

    async def wait_dad(self, timeout_s: float = 5.0) -> None:
        """Until no address is tentative (RFC 4862 §5.4: IPv6 addresses are
        usable once DAD is over); TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while any(a["kind"] == "tentative" for a in self.addrs()):
                await asyncio.sleep(0.005)

    # --- frames ---------------------------------------------------------------------
    def _on_link(self) -> None:
        """Frames from the link (the eventfd stays readable while more wait)."""
        if self._closed or self.shard is None:
            return
        frames = self.link.read_batch()
        for frame in frames:
            head = frame.vnet.raw if frame.vnet is not None else self._no_vnet
            self._deliver(frame.data, head, TAG_WIRE)
        if frames:
            self.shard.end_of_batch()

    def _deliver(self, data: bytes | memoryview, head: bytes | memoryview, tag: int) -> None:
        assert self.shard is not None and self._loop is not None
        if _is_fragment(data):
            # dispatcher/app.py: the whole datagram goes on, as one frame.
            self.fragments += 1
            whole = self.reassembler.push(self._loop.time(), data)
            self._arm_reassembly_timer()
            if whole is not None:
                data, head = whole, self._no_vnet
            elif not self.reassembler.refused:  # else: the stack answers it (ICMP error)
                return
        self.frames_in += 1
        record = b"".join((bytes((tag,)), head, data))
        self.shard.handle_record(memoryview(record))

    def _loop_back(self, frame: bytes | bytearray) -> bool:
        """A frame for the stack itself (its own address): handled on a later loop turn,
        as the dispatcher loops a shard's uplink. False when dropped."""
        if self._closed or self._loop is None:
            return False
        if len(self._looped) >= LOOP_CAPACITY:
            self.loop_drops += 1
            return False
        self._looped.append(bytes(frame))
        if self._loop_handle is None:
            self._loop_handle = self._loop.call_soon(self._run_looped)
        return True

    def _run_looped(self) -> None:
        self._loop_handle = None
        batch, self._looped = self._looped, deque()  # frames looped meanwhile: next turn
        for frame in batch:
            if self._closed:
                return
            self._deliver(frame, self._no_vnet, TAG_LOOPED)
        if batch and self.shard is not None:
            self.shard.end_of_batch()

    def _arm_reassembly_timer(self) -> None:
        deadline = self.reassembler.next_deadline()
        if deadline is None or self._reassembly_timer is not None or self._loop is None:
            return
        self._reassembly_timer = self._loop.call_at(deadline, self._reassembly_timeout)

    def _reassembly_timeout(self) -> None:
        """Expired datagrams: ICMP time exceeded when the first fragment
        had arrived (RFC 792 code 1, RFC 8200 §4.5), as shard 0 sends it."""
        self._reassembly_timer = None
        if self._closed or self._loop is None or self.shard is None:
            return
        for expired in self.reassembler.handle_timeout(self._loop.time()):
            if expired.first_fragment is not None:
                with contextlib.suppress(NetError):
                    self.shard.answer("reassembly_expired", {"packet": expired.first_fragment})
        self._arm_reassembly_timer()

    # --- the application API (shard 0's ShardStack) --------------------------------------
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        family: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[UdpTransport, asyncio.DatagramProtocol]:
        """asyncio's ``loop.create_datagram_endpoint`` (``ShardStack``'s)."""
        return await self.api.create_datagram_endpoint(
            protocol_factory, local_addr, remote_addr, family=family, reuse_port=reuse_port,
            allow_broadcast=allow_broadcast, options=options,
        )  # fmt: skip

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int = 0,
        *,
        reuse_port: bool | None = None,
        v6only: bool = False,
        options: dict[str, Any] | None = None,
    ) -> Server:
        """asyncio's ``loop.create_server``; ``host`` None is dual-stack [::]."""
        return await self.api.create_server(
            protocol_factory, host, port, reuse_port=reuse_port, v6only=v6only, options=options
        )

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        *,
        options: dict[str, Any] | None = None,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """asyncio's ``loop.create_connection`` (addresses only: no DNS)."""
        return await self.api.create_connection(protocol_factory, host, port, options=options)

    async def start_server(
        self,
        client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        host: str | None = None,
        port: int = 0,
        *,
        limit: int = 2**16,
        **kwds: Any,
    ) -> Server:
        """asyncio's ``start_server``."""
        return await self.api.start_server(client_connected_cb, host, port, limit=limit, **kwds)

    async def open_connection(
        self, host: str, port: int, *, limit: int = 2**16, **kwds: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio's ``open_connection``; ``kwds`` go to ``create_connection``
        (``options``)."""
        return await self.api.open_connection(host, port, limit=limit, **kwds)

    def on_tcp_flow(
        self, decide: Any, *, max_in_flight: int = 1024, max_per_source: int = 64
    ) -> None:
        """The flow hook for proxies (``ShardStack.on_tcp_flow``)."""
        self.api.on_tcp_flow(decide, max_in_flight=max_in_flight, max_per_source=max_per_source)

    # --- control: ControlApi in process ---------------------------------------------------
    def call(self, op: str, **args: Any) -> Any:
        """One control request, answered here with what a running stack's
        control channel answers (values pass the same message codec);
        ``ControlError`` (with ``errno``) when refused."""
        shard = self.shard
        if shard is None or self._closed:
            raise ControlError("the embedded stack is not running")
        req = decode(encode(Request(0, op, args)))
        assert isinstance(req, Request)
        try:
            value = self._answer(shard, req.op, req.args)
        except NetError as exc:
            err = ControlError(str(exc))
            err.errno = exc.errno
            raise err from None
        reply = decode(encode(Reply(0, True, value)))
        assert isinstance(reply, Reply)
        return reply.value

    def _answer(self, shard: ShardAssembly, op: str, args: dict[str, Any]) -> Any:
        # What the dispatcher answers itself (dispatcher/control.py), then shard 0.
        if op == "hello":
            return self._info() | {"events": None, "embedded": True}
        if op == "stats":
            return self._stats(shard) | {"processes": self._info()["processes"]}
        if op == "shards":
            return self._info()["processes"]
        if op == "shard_table":
            if int(args.get("shard", 0)) != 0:
                raise NetError(errno.EINVAL, "the embedded stack has one shard (0)")
            return shard.answer("table", {"name": str(args.get("name", ""))})
        value = shard.answer(op, args)
        if op == "ip_set":  # the reassembly limits are the dispatcher's part (here: ours)
            self.reassembler.config = self.reassembler.config.with_ip(IpConfig.from_settings(value))
        return value

    def _info(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "link": self.link.name,
            "mac": self.link.mac.hex(":"),
            "shards": 1,
            "processes": {
                "dispatcher": pid,
                "shards": [{"shard": 0, "pid": pid, "ready": True, "restarts": 0}],
            },
        }

    def _stats(self, shard: ShardAssembly) -> dict[str, Any]:
        """``ctl stats``'s shape: the link in place of the dispatcher."""
        book = StatsBook(1)
        book.record(shard.stats({"looped_queue": len(self._looped)}))
        d, link = book.dispatcher, self.link
        d.link_rx_frames, d.link_rx_bytes = link.rx_frames, link.rx_bytes
        d.link_rx_errors = link.rx_drops + link.rx_errors
        d.to_shard[0] = self.frames_in
        d.ring_drops[0] = self.loop_drops
        d.fragments = self.fragments
        d.reassembly_drops.update(self.reassembler.drops)
        return book.as_dict()

    def events(self) -> EventStream:
        """An async iterator of ``Event`` from now on (subscribe before
        ``start()`` to see the start's DAD results)."""
        return EventStream(self._streams)

    def _emit_event(self, event: dict[str, Any]) -> None:
        data = dict(event)
        kind = str(data.pop("type", "event"))
        msg = decode(encode(Event(kind, data)))  # as a subscriber of ctl events gets it
        assert isinstance(msg, Event)
        for stream in list(self._streams):
            stream.put(msg)

    # --- pairing -----------------------------------------------------------------------
    @classmethod
    def pair(
        cls, a: dict[str, Any] | None = None, b: dict[str, Any] | None = None, **common: Any
    ) -> tuple[Stack, Stack]:
        """Two stacks with their links wired back to back. ``common``
        settings go to both, ``a``/``b`` to one; without a ``config`` or
        addresses, ``a`` is 198.18.0.1/24, 2001:db8::1/64 and ``b`` .2/::2."""
        stacks = []
        for defaults, own, name in zip(
            PAIR_DEFAULTS, (a or {}, b or {}), ("pair0", "pair1"), strict=True
        ):
            kw = {"name": name, **common, **own}
            if "config" not in kw:
                kw = {**defaults, **kw}
            stacks.append(cls(**kw))
        connect(stacks[0], stacks[1])
        return stacks[0], stacks[1]

    def _disconnect(self) -> None:
        peer = self._peer
        if peer is not None:
            # From now on each side's frames wait in its own link (collect()).
            self.link.writer.on_write = None
            peer.link.writer.on_write = None
            peer._peer = self._peer = None


def connect(a: Stack, b: Stack) -> None:
    """Wire ``a``'s and ``b``'s channel links back to back: every frame one
    stack writes is injected into the other (a cable; a full inbound queue
    drops, as a NIC does). Frames written before stay in ``collect()``."""
    if a is b:
        raise ValueError("a stack cannot be connected to itself")
    if a._peer is not None or b._peer is not None:
        raise ValueError("a stack is already connected")
    if a.link.vnet_hdr_len != b.link.vnet_hdr_len:
        raise ValueError("both links must carry virtio-net headers, or neither")
    a._peer, b._peer = b, a
    a.link.writer.on_write = lambda frame, vnet: _cable(b, frame, vnet)
    b.link.writer.on_write = lambda frame, vnet: _cable(a, frame, vnet)


def _cable(to: Stack, frame: bytes, vnet: Any) -> None:
    if not to._closed:  # a closed link's eventfd is gone
        to.link.inject(frame, vnet)
