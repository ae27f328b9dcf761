"""A user app for ``--app tests.apps.udp_client_probe:main``: in every
shard, 8 unconnected UDP sockets on ephemeral ports each ask the kernel
peer's port 7777 once a round; whatever hashes the replies to another shard,
each socket must get its answer. Each shard reports ``shard N: K/8`` to the
peer's port 9998 once a second."""

from __future__ import annotations

import asyncio
from typing import Any

KERNEL, ASK, REPORT, SOCKETS = "198.18.0.1", 7777, 9998, 8


class Asker(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answered = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr[0] == KERNEL and addr[1] == ASK:
            self.answered = True


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    askers = []
    for _ in range(SOCKETS):
        askers.append(await stack.create_datagram_endpoint(Asker, local_addr=("0.0.0.0", 0)))
    report, _ = await stack.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(KERNEL, REPORT)
    )
    while True:
        for transport, asker in askers:
            if not asker.answered:
                transport.sendto(b"question", (KERNEL, ASK))
        done = sum(asker.answered for _, asker in askers)
        report.sendto(f"shard {stack.shard}: {done}/{SOCKETS}".encode())
        await asyncio.sleep(1.0)
