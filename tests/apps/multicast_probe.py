"""A user app for ``--app tests.apps.multicast_probe:main``: in every shard,
an IPv4 socket on port 6000 joined to ``GROUP4`` and an IPv6 one joined to
``GROUP6``; each datagram they receive is answered to its sender with
``shard N got <data>``. The test steers it with files in ``$SN_MCAST_DIR``:
``send`` — every 0.2 s, send ``from shard N`` to both groups on port 6001;
``leave`` — leave both groups (once)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

GROUP4, GROUP6, PORT = "234.198.18.7", "ff3e:40:2001:db8::7", 6000


class Member(asyncio.DatagramProtocol):
    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(f"shard {self.shard} got ".encode() + data, addr)


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    control = os.environ["SN_MCAST_DIR"]
    s4, _ = await stack.create_datagram_endpoint(
        lambda: Member(stack.shard), local_addr=("0.0.0.0", PORT)
    )
    s6, _ = await stack.create_datagram_endpoint(
        lambda: Member(stack.shard), local_addr=("::", PORT), options={"IPV6_V6ONLY": True}
    )
    s4.set_option("IP_ADD_MEMBERSHIP", GROUP4)
    s6.set_option("IPV6_JOIN_GROUP", (GROUP6, 0))
    left = False
    while True:
        await asyncio.sleep(0.2)
        if os.path.exists(os.path.join(control, "send")):
            s4.sendto(f"from shard {stack.shard}".encode(), (GROUP4, PORT + 1))
            s6.sendto(f"from shard {stack.shard}".encode(), (GROUP6, PORT + 1))
        if not left and os.path.exists(os.path.join(control, "leave")):
            s4.set_option("IP_DROP_MEMBERSHIP", GROUP4)
            s6.set_option("IPV6_LEAVE_GROUP", (GROUP6, 0))
            left = True
