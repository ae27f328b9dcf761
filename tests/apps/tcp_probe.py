"""A user app for ``--app tests.apps.tcp_probe:main``: from shard 0, open
connections to the kernel peer with the streams API — one to a listening
port (send a line, read the reply) and one to a closed port — and report
what happened to the peer's UDP port 9999, as a user would see it."""

from __future__ import annotations

import asyncio

KERNEL = "198.18.0.1"


async def probe(stack) -> str:  # noqa: ANN001 - the ShardStack
    for _ in range(60):  # the kernel side gets its address after the stack starts
        try:
            reader, writer = await asyncio.wait_for(stack.open_connection(KERNEL, 8000), 5)
            break
        except (OSError, TimeoutError):
            await asyncio.sleep(0.5)
    else:
        return "open failed"
    writer.write(b"hello from shardnet\n")
    await writer.drain()
    reply = (await reader.readline()).decode().strip()
    peer = writer.get_extra_info("peername")
    writer.close()
    try:
        await stack.open_connection(KERNEL, 8001)
        refused = "connected?!"
    except ConnectionRefusedError:
        refused = "ConnectionRefusedError"
    return f"{reply}|{peer[0]}|{refused}"


async def main(stack) -> None:  # noqa: ANN001
    if stack.shard != 0:
        return
    result = await probe(stack)
    report, _ = await stack.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(KERNEL, 9999)
    )
    for _ in range(10):
        report.sendto(result.encode())
        await asyncio.sleep(0.2)
