"""The dispatcher's control plane: shards' messages in, ``ctl`` requests in,
events out.

* internal ROUTER (shards' DEALERs): Hello, Stats, Replies.
* control ROUTER (``--control``, ``shardnet ctl``, ``Client``): a request is
  ``Request(req_id, op, args)``; the dispatcher answers what it knows itself
  (hello, stats, shards) and forwards the rest to shard 0, which owns the
  stack's state.
* events PUB: ``Event`` messages (supervision, and shard 0's NDP events).
* the journal of run-time changes (``journal.py``), replayed to shard 0
  after it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from shardnet.common.messages import (
    BadMessage,
    Event,
    Hello,
    Reply,
    Request,
    Stats,
    decode,
    encode,
)

from .journal import ControlJournal
from .stats import StatsBook

log = logging.getLogger("shardnet.dispatcher")

FORWARD_TIMEOUT_S = 3.0


def events_endpoint(control: str) -> str:
    """The PUB endpoint beside a control endpoint: ``<path>.events`` for
    ipc://, the next port for tcp://."""
    if control.startswith("ipc://"):
        return control + ".events"
    if control.startswith("tcp://"):
        host, _, port = control.rpartition(":")
        return f"{host}:{int(port) + 1}"
    raise ValueError(f"unsupported control endpoint {control!r} (ipc:// or tcp://)")


def prepare_ipc(endpoint: str) -> None:
    """Make the directory of an ipc:// endpoint; refuse when another stack
    answers there; remove a stale socket file left by a crash."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://") :]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        if _answers(endpoint):
            raise OSError(f"another shardnet is running at {endpoint}")
        os.unlink(path)


def _answers(endpoint: str) -> bool:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(encode(Request(0, "hello")))
        return bool(sock.poll(500))
    finally:
        sock.close()


class ControlServer:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        *,
        internal: str,
        control: str,
        book: StatsBook,
        info: Callable[[], dict[str, Any]],
        on_hello: Callable[[int, int], None],
    ) -> None:
        self.ctx = ctx
        self.book = book
        self.info = info  # static facts for "hello" and "shards"
        self.on_hello = on_hello
        self.control_endpoint = control
        self.events_endpoint = events_endpoint(control)
        self.shards = ctx.socket(zmq.ROUTER)
        self.shards.setsockopt(zmq.LINGER, 0)
        self.shards.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted shard reuses its identity
        self.shards.bind(internal)
        for endpoint in (control, self.events_endpoint):
            prepare_ipc(endpoint)
        self.control = ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.bind(control)
        self.events = ctx.socket(zmq.PUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.bind(self.events_endpoint)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.journal = ControlJournal()
        self._shard0_lock = asyncio.Lock()
        self._shard0_started = False
        # A change shard 0 accepted, for what the dispatcher holds itself
        # (the reassembly limits of ``ip_set``): (op, value answered).
        self.on_change: Callable[[str, Any], None] = lambda op, value: None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._shards_loop()),
            asyncio.create_task(self._control_loop()),
        ]

    # --- shards -------------------------------------------------------------
    async def send_to_shard(self, index: int, msg: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            await self.shards.send_multipart([f"shard-{index}".encode(), encode(msg)])

    async def ask_shard(self, index: int, op: str, args: dict[str, Any] | None = None) -> Reply:
        req_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            await self.send_to_shard(index, Request(req_id, op, args or {}))
            return await asyncio.wait_for(future, FORWARD_TIMEOUT_S)
        except TimeoutError:
            return Reply(req_id, False, error=f"shard {index} did not answer (restarting?)")
        finally:
            self._pending.pop(req_id, None)

    async def _shards_loop(self) -> None:
        while True:
            ident, raw = await self.shards.recv_multipart()
            try:
                msg = decode(raw)
            except BadMessage:
                log.warning("bad message from %r", ident)
                continue
            if isinstance(msg, Stats):
                self.book.record(msg)
            elif isinstance(msg, Reply):
                future = self._pending.get(msg.req_id)
                if future is not None and not future.done():
                    future.set_result(msg)
            elif isinstance(msg, Hello):
                self.on_hello(msg.shard, msg.pid)
                if msg.shard == 0:
                    if self._shard0_started:  # a restart: its run-time changes are gone
                        self._tasks.append(asyncio.create_task(self._replay()))
                    self._shard0_started = True
            elif isinstance(msg, Event):  # from shard 0's NDP machine
                self.publish(msg.type, **msg.data)

    # --- ctl ---------------------------------------------------------------
    async def _control_loop(self) -> None:
        while True:
            frames = await self.control.recv_multipart()
            ident, raw = frames[0], frames[-1]
            try:
                msg = decode(raw)
                if not isinstance(msg, Request):
                    raise BadMessage("not a request")
            except BadMessage as exc:
                await self.control.send_multipart([ident, encode(Reply(0, False, error=str(exc)))])
                continue
            asyncio.create_task(self._answer(ident, msg))

    async def _answer(self, ident: bytes, req: Request) -> None:
        try:
            reply = await self.handle(req)
        except Exception as exc:  # a bug in one request must not stop the control plane
            log.exception("control request %s failed", req.op)
            reply = Reply(req.req_id, False, error=f"internal error: {exc}")
        with contextlib.suppress(zmq.ZMQError):
            await self.control.send_multipart([ident, encode(reply)])

    async def handle(self, req: Request) -> Reply:
        if req.op == "hello":
            return Reply(req.req_id, True, self.info() | {"events": self.events_endpoint})
        if req.op == "stats":
            return Reply(
                req.req_id, True, self.book.as_dict() | {"processes": self.info()["processes"]}
            )
        if req.op == "shards":
            return Reply(req.req_id, True, self.info()["processes"])
        if req.op in (
            "conns",
            "relays",
            "fronts",
        ):  # a page of one shard's rows, or of each shard's
            shard = req.args.get("shard")
            indexes = range(len(self.book.shards)) if shard is None else [int(shard)]
            page: dict[str, Any] = {k: req.args[k] for k in ("offset", "limit") if k in req.args}
            rows: list[Any] = []
            for i in indexes:
                answer = await self.ask_shard(i, req.op, page)
                if answer.ok:
                    rows += answer.value
            return Reply(req.req_id, True, rows)
        if req.op == "shard_table":  # a replica's view, for tests and debugging
            index = int(req.args.get("shard", 0))
            answer = await self.ask_shard(index, "table", {"name": str(req.args.get("name", ""))})
            return Reply(req.req_id, answer.ok, answer.value, answer.error)
        async with self._shard0_lock:  # in order with a replay to a new shard 0
            answer = await self.ask_shard(0, req.op, req.args)
        if answer.ok:
            self.journal.record(req.op, req.args, answer.value)
            self.on_change(req.op, answer.value)
        return Reply(req.req_id, answer.ok, answer.value, answer.error)

    async def _replay(self) -> None:
        """A new shard 0 started from the configuration: give it back the
        changes made at run time (``journal.py``)."""
        entries = self.journal.entries()
        if not entries:
            return
        failed = 0
        async with self._shard0_lock:
            for op, args in entries:
                answer = await self.ask_shard(0, op, args)
                if not answer.ok:
                    failed += 1
                    log.warning("replaying %s %s to shard 0 failed: %s", op, args, answer.error)
        log.info("replayed %d control changes to shard 0 (%d failed)", len(entries), failed)
        self.publish("control_replayed", changes=len(entries), failed=failed)

    # --- events -------------------------------------------------------------
    def publish(self, type_: str, **data: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.events.send(encode(Event(type_, data)), zmq.NOBLOCK)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for endpoint in (self.control_endpoint, self.events_endpoint):
            if endpoint.startswith("ipc://"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(endpoint[len("ipc://") :])
