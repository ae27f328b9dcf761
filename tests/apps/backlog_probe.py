"""A user app for ``--app tests.apps.backlog_probe:main``: an echo server on
port 7100 created with ``backlog=2, start_serving=False``; it starts serving
when a UDP datagram reaches port 7101 (the test's signal)."""

from __future__ import annotations

import asyncio
from typing import Any


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Signal(asyncio.DatagramProtocol):
    def __init__(self, server: Any) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        asyncio.get_running_loop().create_task(self.server.start_serving())


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    server = await stack.create_server(Echo, "0.0.0.0", 7100, backlog=2, start_serving=False)
    await stack.create_datagram_endpoint(lambda: Signal(server), local_addr=("0.0.0.0", 7101))
