"""A user app for ``--app tests.apps.tos_probe:main``, in every shard: UDP
sockets reporting the TOS / traffic class of what they receive.

* port 7400: IP_RECVTOS off; answers ``tos=`` and the TOS it was given
  (``None``: none reported);
* port 7401: dual-stack, IP_RECVTOS and IPV6_RECVTCLASS on and IPV6_TCLASS
  0x10; answers twice: once with TOS 0x28 for that datagram alone, once
  with the socket's;
* port 7402: IP_RECVTOS alone, port 7403: IPV6_RECVTCLASS alone (dual-stack
  both); answer as 7400."""

from __future__ import annotations

import asyncio
from typing import Any


class Report(asyncio.DatagramProtocol):
    def __init__(self, twice: bool) -> None:
        self.twice = twice
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = f"tos={self.transport.last_datagram.tos}".encode()
        if self.twice:
            self.transport.sendto(reply + b" per-datagram", addr, tos=0x28)
            self.transport.sendto(reply + b" socket", addr)
        else:
            self.transport.sendto(reply, addr)


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    await stack.create_datagram_endpoint(
        lambda: Report(False), local_addr=("::", 7400), options={"SO_REUSEADDR": True}
    )
    await stack.create_datagram_endpoint(
        lambda: Report(True),
        local_addr=("::", 7401),
        options={
            "SO_REUSEADDR": True, "IP_RECVTOS": True, "IPV6_RECVTCLASS": True, "IPV6_TCLASS": 0x10,
        },
    )  # fmt: skip
    for port, option in ((7402, "IP_RECVTOS"), (7403, "IPV6_RECVTCLASS")):
        await stack.create_datagram_endpoint(
            lambda: Report(False),
            local_addr=("::", port),
            options={"SO_REUSEADDR": True, option: True},
        )
    await asyncio.Event().wait()
