"""A user app for ``--app tests.apps.bind_probe:main``, in every shard:
TCP sockets bound to a NIC with SO_BINDTODEVICE.

* port 7300: a listener bound to ``lo`` only: SYNs from the link find none;
* port 7301: two listeners sharing the port (SO_REUSEPORT), one bound to the
  link NIC (``sntap0``) answering ``link``, one unbound answering ``any``;
* port 7302: reads a line ``NIC HOST PORT``, connects to HOST:PORT bound to
  NIC (``-``: unbound) and answers one line: the first line the peer sent,
  or ``errno=N``;
* port 7303: reads a line ``NIC``, binds the open connection to NIC
  (SO_BINDTODEVICE), then reads and drops whatever comes; a second of
  quiet aborts it."""

from __future__ import annotations

import asyncio
import contextlib


def answer(text: bytes):  # noqa: ANN201
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text + b"\n")
        await writer.drain()
        writer.close()

    return serve


async def connect_bound(stack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # noqa: ANN001
    nic, host, port = (await reader.readline()).decode().split()
    options = {} if nic == "-" else {"SO_BINDTODEVICE": nic}
    try:
        r, w = await asyncio.wait_for(stack.open_connection(host, int(port), options=options), 3.0)
        line = (await r.readline()).strip()
        w.close()
    except OSError as exc:
        line = f"errno={exc.errno}".encode()
    except TimeoutError:
        line = b"timeout"
    writer.write(line + b"\n")
    await writer.drain()
    writer.close()


async def bind_when_asked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    nic = (await reader.readline()).decode().strip()
    with contextlib.suppress(OSError):  # a stack that cannot: the connection goes on
        writer.transport.set_option("SO_BINDTODEVICE", nic)  # type: ignore[attr-defined]
    try:  # a second of quiet ends it (bound to lo, it hears nothing, and says nothing)
        while await asyncio.wait_for(reader.read(4096), 1.0):
            pass
        writer.close()
    except TimeoutError:
        writer.transport.abort()


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    link = "sntap0"  # the tests' TAP
    await stack.start_server(answer(b"lo"), None, 7300, options={"SO_BINDTODEVICE": "lo"})
    await stack.start_server(answer(b"any"), None, 7301, reuse_port=True)
    await stack.start_server(
        answer(b"link"), None, 7301, reuse_port=True, options={"SO_BINDTODEVICE": link}
    )
    await stack.start_server(lambda r, w: connect_bound(stack, r, w), None, 7302)
    await stack.start_server(bind_when_asked, None, 7303)
    await asyncio.Event().wait()
