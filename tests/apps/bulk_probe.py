"""A user app for ``--app tests.apps.bulk_probe:main``: two TCP services in
every shard for checking large transfers end to end.

* port 5001, sink: reads until the peer's FIN, then answers
  ``<byte count> <sha256 hex>\\n`` and closes;
* port 5002, source: reads a line ``<byte count> <seed>\\n`` and sends that
  many bytes of ``stream(seed)``, then closes.

``stream`` is deterministic (``random.Random`` blocks), so the kernel-side
client regenerates the same bytes and compares digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator

SINK_PORT = 5001
SOURCE_PORT = 5002
BLOCK = 1 << 20


def stream(seed: int, total: int) -> Iterator[bytes]:
    """``total`` bytes in blocks of at most 1 MiB, block i from seed + i."""
    i = 0
    while total > 0:
        n = min(BLOCK, total)
        yield random.Random(seed + i).randbytes(n)
        total -= n
        i += 1


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    count = 0
    while chunk := await reader.read(1 << 18):
        digest.update(chunk)
        count += len(chunk)
    writer.write(f"{count} {digest.hexdigest()}\n".encode())
    await writer.drain()
    writer.close()


async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    total, seed = (int(x) for x in (await reader.readline()).split())
    for block in stream(seed, total):
        writer.write(block)
        await writer.drain()
    writer.close()


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    await stack.start_server(sink, port=SINK_PORT)
    await stack.start_server(source, port=SOURCE_PORT)
