"""A user app for ``--app tests.apps.udp_probe:main``: in every shard, send a
datagram to a closed port of the kernel peer, wait for the ICMP error to come
back on the connected socket, and report what it raised to the peer's port
9999 (so the test reads it as a user would see it)."""

from __future__ import annotations

import asyncio

KERNEL = "198.18.0.1"


class Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def error_received(self, exc: Exception) -> None:
        if not self.error.done():
            self.error.set_result(exc)


async def main(stack) -> None:  # noqa: ANN001 - the ShardStack
    transport, probe = await stack.create_datagram_endpoint(Probe, remote_addr=(KERNEL, 9))
    for _ in range(60):  # the kernel side gets its address after the stack starts
        transport.sendto(b"anyone?")
        try:
            exc = await asyncio.wait_for(asyncio.shield(probe.error), 0.5)
            break
        except TimeoutError:
            continue
    else:
        exc = TimeoutError("no ICMP error")
    report, _ = await stack.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(KERNEL, 9999)
    )
    for _ in range(10):
        report.sendto(f"shard {stack.shard} {type(exc).__name__}".encode())
        await asyncio.sleep(0.2)
