"""A user app for ``--app tests.apps.ephemeral_server_probe:main``: in every
shard, an echo server on an ephemeral port (``start_server(..., 0)``), whose
port the shard reports to the kernel peer's port 9997 once a second as
``shard N port P``."""

from __future__ import annotations

import asyncio

KERNEL, REPORT = "198.18.0.1", 9997


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    server = await stack.start_server(echo, None, 0)
    port = server.sockets[0][1]
    report, _ = await stack.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(KERNEL, REPORT)
    )
    while True:
        report.sendto(f"shard {stack.shard} port {port}".encode())
        await asyncio.sleep(1.0)
