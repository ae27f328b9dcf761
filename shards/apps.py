"""Built-in applications (``--serve APP:PORT``) and the loader of user apps
(``--app MODULE:CALLABLE``). Each runs in every shard, on one dual-stack
socket per service (B4: IPv4 peers appear as ::ffff:a.b.c.d).

UDP services so far: ``echo`` (RFC 862), ``discard`` (RFC 863) and
``whoami`` (one JSON object per datagram: what the stack saw). Their TCP
sides, ``chargen`` and ``http`` come with the TCP endpoint.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from shardnet.common.addr import format_ip

from .api import ShardStack, UdpTransport

UDP_APPS = ("echo", "discard", "whoami")


class _Service(asyncio.DatagramProtocol):
    def __init__(self, app: str, stack: ShardStack) -> None:
        self.app = app
        self.stack = stack
        self.transport: UdpTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, UdpTransport)
        self.transport = transport
        transport.set_option("IPV6_RECVTCLASS", True)  # TOS / traffic class for whoami (B2)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        t = self.transport
        assert t is not None
        if self.app == "echo":
            t.sendto(data, addr)
        elif self.app == "whoami":
            info = t.last_datagram
            reply = {
                "peer": addr[0],
                "local": format_ip(info.local)
                if info is not None
                else t.get_extra_info("sockname")[0],
                "shard": self.stack.shard,
                "tos": info.tos if info is not None else 0,
            }
            t.sendto(json.dumps(reply).encode() + b"\n", addr)
        # discard: nothing


async def serve_udp(stack: ShardStack, app: str, port: int) -> UdpTransport:
    transport, _ = await stack.create_datagram_endpoint(
        lambda: _Service(app, stack), local_addr=("::", port), options={"SO_REUSEADDR": True}
    )
    return transport


def load_app(spec: str) -> Callable[[ShardStack], Awaitable[Any]]:
    """``MODULE:CALLABLE`` to the coroutine function; ImportError or
    AttributeError with a clear message otherwise."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"--app {spec}: {module_name} has no callable {attr!r}")
    return fn
