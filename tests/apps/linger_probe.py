"""A user app for ``--app tests.apps.linger_probe:main``: TCP port 7300
with ``SO_LINGER {on, 0}`` (a reset on close), port 7301 without; both close
a connection as soon as a byte arrives."""

from __future__ import annotations

import asyncio
from typing import Any


class CloseOnData(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.close()


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    await stack.create_server(CloseOnData, "0.0.0.0", 7300, options={"SO_LINGER": (1, 0)})
    await stack.create_server(CloseOnData, "0.0.0.0", 7301)
