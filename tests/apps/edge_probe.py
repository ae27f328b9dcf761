"""A user app for ``--app tests.apps.edge_probe:main``, in every shard:

* port 7100: corks the connection (TCP_CORK) and writes 100 bytes, less
  than a segment, then waits for the peer to close;
* port 7200: reads a line of ``host,port`` targets separated by spaces,
  opens a connection to each (3 s at most) and answers one line: for each,
  ``errno=N`` with the OSError's errno, ``timeout``, or ``connected``, and
  the seconds it took."""

from __future__ import annotations

import asyncio
import time


async def corked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.set_option("TCP_CORK", True)
    writer.write(b"c" * 100)
    await reader.read()
    writer.close()


async def connect_probe(stack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # noqa: ANN001
    line = (await reader.readline()).decode().split()
    results = []
    for target in line:
        host, port = target.rsplit(",", 1)
        start = time.monotonic()
        try:
            _, w = await asyncio.wait_for(stack.open_connection(host, int(port)), 3.0)
            w.close()
            what = "connected"
        except TimeoutError:
            what = "timeout"
        except OSError as exc:
            what = f"errno={exc.errno}"
        results.append(f"{what}:{time.monotonic() - start:.3f}")
    writer.write((" ".join(results) + "\n").encode())
    await writer.drain()
    writer.close()


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    await stack.start_server(corked, None, 7100)
    await stack.start_server(lambda r, w: connect_probe(stack, r, w), None, 7200)
    await asyncio.Event().wait()
