"""A user app for ``--app tests.apps.user_timeout_probe:main`` (one shard):
connects to the kernel peer's port 7200 with ``TCP_USER_TIMEOUT`` 1,500 ms,
sends a line once the peer answers, and prints what the connection ended
with (``user-timeout-probe: ...``) when the peer goes silent."""

from __future__ import annotations

import asyncio
import time

KERNEL = "198.18.0.1"


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    for _ in range(100):  # the kernel side listens after the stack starts
        try:
            reader, writer = await stack.open_connection(
                KERNEL, 7200, options={"TCP_USER_TIMEOUT": 1500}
            )
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        print("user-timeout-probe: never connected", flush=True)
        return
    await reader.readline()  # the peer says go: it is about to vanish
    started = time.monotonic()
    try:
        while True:
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.1)
    except OSError as exc:
        took = time.monotonic() - started
        print(
            f"user-timeout-probe: {type(exc).__name__} errno={exc.errno} after {took:.1f} s",
            flush=True,
        )
