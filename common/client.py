"""``Client``: talk to a running stack over its control channel.

Used by ``shardnet ctl`` and ``shardnet top`` and by integrators. Requests
go to the dispatcher's ROUTER as ``Request`` messages; events arrive on the
PUB socket the ``hello`` answer names. The typed helpers (``nics()``,
``addr_add()``, ``route_add()``, ...) come from ``ControlApi``, which the
embedded ``Stack`` shares.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import zmq
import zmq.asyncio

from .config import default_control_endpoint
from .control_api import ControlApi, ControlError
from .messages import BadMessage, Event, Reply, Request, decode, encode

__all__ = ["Client", "ControlError", "find_endpoint"]

RUNTIME_DIR = "/run/shardnet"


def find_endpoint(link: str | None = None) -> str:
    """The control endpoint of the stack on ``link``, or of the only stack
    running on this machine (in this mount namespace)."""
    if link is not None:
        return default_control_endpoint(link)
    found = sorted(glob.glob(os.path.join(RUNTIME_DIR, "*.ctl")))
    if len(found) == 1:
        return f"ipc://{found[0]}"
    if not found:
        raise ControlError(f"no shardnet is running (nothing in {RUNTIME_DIR}); is it started?")
    names = ", ".join(os.path.basename(p)[:-4] for p in found)
    raise ControlError(f"several stacks are running ({names}): choose one with --control")


class Client(ControlApi):
    def __init__(self, endpoint: str | None = None, *, timeout_s: float = 3.0) -> None:
        self.endpoint = endpoint or find_endpoint()
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[6:]):
            raise ControlError(f"no shardnet is running at {self.endpoint}")
        self.timeout_ms = int(timeout_s * 1000)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(1)

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its value; ControlError otherwise."""
        req_id = next(self._ids)
        self._sock.send(encode(Request(req_id, op, args)))
        while True:
            if not self._sock.poll(self.timeout_ms):
                raise ControlError(
                    f"no answer from {self.endpoint} within {self.timeout_ms / 1000:g} s"
                )
            try:
                reply = decode(self._sock.recv())
            except BadMessage as exc:
                raise ControlError(str(exc)) from None
            if isinstance(reply, Reply) and reply.req_id in (req_id, 0):
                if not reply.ok:
                    raise ControlError(reply.error)
                return reply.value

    # --- events (the typed helpers are ControlApi's) ------------------
    def events(self, *, timeout_s: float | None = None) -> Iterator[Event]:
        """Events as they are published (blocking iterator). Stops after
        ``timeout_s`` seconds without an event, if given."""
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.hello()["events"])
        try:
            while True:
                if not sub.poll(None if timeout_s is None else int(timeout_s * 1000)):
                    return
                try:
                    msg = decode(sub.recv())
                except BadMessage:
                    continue
                if isinstance(msg, Event):
                    yield msg
        finally:
            sub.close()

    async def aevents(self) -> AsyncIterator[Event]:
        """Events as an async iterator (for asyncio integrators)."""
        ctx = zmq.asyncio.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.hello()["events"])
        try:
            while True:
                try:
                    msg = decode(await sub.recv())
                except BadMessage:
                    continue
                if isinstance(msg, Event):
                    yield msg
        finally:
            sub.close()

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
