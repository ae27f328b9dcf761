"""The baseline's server: shardnet's built-in TCP apps (``echo``, ``discard``,
``chargen``) and a UDP echo on the kernel's sockets, under asyncio in one
process, so that a ratio compares the stacks and not the apps.

The TCP apps are the very protocol classes ``--serve`` runs in a shard (the
shard API is asyncio's ``create_server``, so they run unchanged on a kernel
loop). Only the UDP echo is written again: the shard's service also sets
stack-specific options for ``whoami``.

    python -m shardnet.scripts.loadtest.kernel_apps

listens on every address (dual-stack, as ``--serve`` does), prints ``ready``
once every socket listens, and serves until SIGTERM. Several of them share
the ports with SO_REUSEPORT, as shardnet's shards share their listeners: the
harness starts as many as the stack has shards, or more when one process's
file-descriptor limit cannot hold the connections of ``conns``.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from typing import Any

from shardnet.shards.apps import TcpChargen, TcpDiscard, TcpEcho

PORTS = {"echo": 7, "discard": 9, "chargen": 19}
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def serve() -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(factory, None, PORTS[app], backlog=BACKLOG, reuse_port=True)
        for app, factory in (("echo", TcpEcho), ("discard", TcpDiscard), ("chargen", TcpChargen))
    ]
    # "::" is dual-stack on Linux (net.ipv6.bindv6only is 0 in a new namespace)
    transport, _ = await loop.create_datagram_endpoint(
        UdpEcho, local_addr=("::", PORTS["echo"]), reuse_port=True
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    transport.close()
    for server in servers:
        server.close()


def main() -> int:
    # as many descriptors as this process may have: conns holds thousands
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
