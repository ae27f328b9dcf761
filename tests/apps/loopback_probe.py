"""A user app for ``--app tests.apps.loopback_probe:main`` (loopback routing): in
every shard, once the kernel peer says go (a TCP server on its port 9997),
talk to the stack itself — TCP echo (port 7), TCP whoami (port 5000) and UDP
echo (port 7) on our own IPv4 and IPv6 addresses and 127.0.0.1 — and
report what came back, as one JSON object, to the peer's UDP port 9999.

Run with ``--serve echo:7 --serve whoami:5000``. The whoami answer names the
shard that accepted the connection: each flow must come back to the shard
that opened it, through the dispatcher's classification of looped frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

KERNEL = "198.18.0.1"
BIG = 256 * 1024  # bytes echoed after the line
# Not ::1 yet: the route table has no route for a /128 (lo's ::1), so
# connect() finds none (ENETUNREACH); the network layer itself loops ::1
# (tests/unit/net/test_loopback.py).
TARGETS = ("198.18.0.2", "2001:db8::2", "127.0.0.1")


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not self.got.done():
            self.got.set_result(data)


async def _tcp(stack, target: str) -> dict[str, Any]:  # noqa: ANN001 - the ShardStack
    reader, writer = await asyncio.wait_for(stack.open_connection(target, 7), 5)
    writer.write(f"hello {target}\n".encode())
    echo = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    # Then more than a window of data: full-sized segments over the loop.
    # Read in chunks: readexactly() of more than 2 * limit stalls today
    # (TcpTransport.resume_reading delivers data synchronously, before
    # StreamReader has set its waiter: a lost wake-up, not a loopback matter).
    blob = bytes(range(256)) * (BIG // 256)
    writer.write(blob)
    back = bytearray()
    while len(back) < len(blob):
        chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
        if not chunk:
            break
        back += chunk
    writer.close()
    if back != blob:
        echo += " (big echo corrupted)"
    reader, writer = await asyncio.wait_for(stack.open_connection(target, 5000), 5)
    writer.write(b"who\n")
    who = json.loads(await asyncio.wait_for(reader.readline(), 5))
    writer.close()
    return {"echo": echo, "who_shard": who["shard"], "who_peer": who["peer"]}


async def _udp(stack, target: str) -> str:  # noqa: ANN001
    transport, proto = await stack.create_datagram_endpoint(_Echo, remote_addr=(target, 7))
    try:
        for _ in range(5):
            transport.sendto(f"udp {target}".encode())
            try:
                return (await asyncio.wait_for(asyncio.shield(proto.got), 1)).decode()
            except TimeoutError:
                continue
        return "no answer"
    finally:
        transport.close()


async def _wait_for_go(stack) -> None:  # noqa: ANN001
    for _ in range(240):
        try:
            _, writer = await asyncio.wait_for(stack.open_connection(KERNEL, 9997), 2)
            writer.close()
            return
        except (OSError, TimeoutError):
            await asyncio.sleep(0.25)


async def main(stack) -> None:  # noqa: ANN001
    await _wait_for_go(stack)
    result: dict[str, Any] = {"shard": stack.shard}
    for target in TARGETS:
        try:
            result[target] = await _tcp(stack, target)
            result[target]["udp"] = await _udp(stack, target)
        except Exception as exc:  # reported, for the test to show
            result[target] = repr(exc)
    report, _ = await stack.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(KERNEL, 9999)
    )
    for _ in range(20):
        report.sendto(json.dumps(result).encode())
        await asyncio.sleep(0.2)
