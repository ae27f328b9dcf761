"""A user app for ``--app tests.apps.tempaddr_probe:main``: from shard 0,
connect to the kernel's address in the radvd prefix until a server there
accepts (the test starts it once shardnet's SLAAC addresses are usable), so
that the kernel sees which source address shardnet chose (RFC 6724 §5)."""

from __future__ import annotations

import asyncio

KERNEL = "2001:db8:1::1"
PORT = 8000
TRIES = 240  # 0.5 s apart: two minutes, then the app gives up


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    if stack.shard != 0:
        return
    for _ in range(TRIES):
        try:
            reader, writer = await asyncio.wait_for(stack.open_connection(KERNEL, PORT), 3)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.5)
            continue
        writer.write(b"hello\n")
        await writer.drain()
        await reader.read(100)  # the kernel closes first
        writer.close()
        return
