"""User apps for the TCP Fast Open tests (RFC 7413).

``serve``: in every shard, a dual-stack listener on port 8000 with TCP_FASTOPEN (a
queue of 16) that answers the first data of each connection with
``got <data> in <state>``, the state the connection was in when the data
reached the application (SYN-RECEIVED: it came in the SYN), then closes.

``connect``: shard 0 only (one cookie cache) opens ``CONNECTS`` Fast Open
connections one after the other to the kernel's port 9000, each writing
``hello <i>`` at once, reading the answer to the end; a connect that fails
(the kernel's address is not up yet) is tried again. ``connect_more``:
the same with ``CONNECTS + 1`` connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

KERNEL, SERVER_PORT, KERNEL_PORT, CONNECTS = "198.18.0.1", 8000, 9000, 3


class Answer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        state = self.transport.get_extra_info("tcp_info").state
        self.transport.write(b"got " + data + b" in " + state.encode())
        self.transport.close()


async def serve(stack) -> None:  # noqa: ANN001 - the ShardStack
    server = await stack.create_server(  # dual-stack
        Answer, None, SERVER_PORT, reuse_port=True, options={"TCP_FASTOPEN": 16}
    )
    await server.serve_forever()


async def connect(stack, connects: int = CONNECTS) -> None:  # noqa: ANN001 - the ShardStack
    if stack.shard != 0:
        return
    done = 0
    while done < connects:
        try:
            reader, writer = await stack.open_connection(KERNEL, KERNEL_PORT, fastopen=True)
            writer.write(f"hello {done}".encode())
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (OSError, TimeoutError):
            await asyncio.sleep(0.3)
            continue
        if answer:
            done += 1


async def connect_more(stack) -> None:  # noqa: ANN001 - the ShardStack
    await connect(stack, CONNECTS + 1)
