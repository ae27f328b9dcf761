"""SO_BINDTODEVICE on TCP sockets, on two embedded stacks joined by a cable
(``pair0`` 198.18.0.1, ``pair1`` 198.18.0.2): which listener a SYN reaches,
what a bound active open may reach, and that a connection bound to a NIC
takes no segment arriving on another."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from shardnet.embedded import Stack

FAST_NDP = {"dup_addr_detect_transmits": 0, "max_rtr_solicitations": 0}


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(15):
            await coro

    asyncio.run(guarded())


def answer(text: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text)
        writer.close()

    return serve


async def read_from(stack: Stack, host: str, port: int, **kw: Any) -> bytes:
    reader, writer = await stack.open_connection(host, port, **kw)
    data = await reader.read()
    writer.close()
    return data


def test_the_listener_bound_to_the_receiving_nic_wins() -> None:
    async def go() -> None:
        a, b = Stack.pair(ndp=FAST_NDP)
        async with a, b:
            # Made in this order, the unbound one first: the choice is not the order.
            await b.start_server(answer(b"any"), None, 7, reuse_port=True)
            await b.start_server(
                answer(b"link"), None, 7, reuse_port=True, options={"SO_BINDTODEVICE": "pair1"}
            )
            await b.start_server(
                answer(b"addr"), "198.18.0.2", 8, reuse_port=True, options={"SO_BINDTODEVICE": "lo"}
            )
            await b.start_server(answer(b"lo"), None, 9, options={"SO_BINDTODEVICE": "lo"})
            assert await read_from(a, "198.18.0.2", 7) == b"link"
            assert await read_from(b, "127.0.0.1", 7) == b"any"  # arrives on lo
            with pytest.raises(ConnectionRefusedError):
                await read_from(a, "198.18.0.2", 8)  # bound to lo: not for the link's SYNs
            with pytest.raises(ConnectionRefusedError):
                await read_from(a, "198.18.0.2", 9)
            with pytest.raises(OSError) as exc:  # unbound and bound without SO_REUSEPORT
                await b.start_server(answer(b"x"), None, 9)
            assert exc.value.errno == errno.EADDRINUSE

    run(go())


def test_a_bound_active_open_routes_by_its_nic() -> None:
    async def go() -> None:
        a, b = Stack.pair(ndp=FAST_NDP)
        async with a, b:
            await b.start_server(answer(b"hi"), None, 7)
            opts = {"SO_BINDTODEVICE": "pair0"}
            assert await read_from(a, "198.18.0.2", 7, options=opts) == b"hi"
            with pytest.raises(OSError) as exc:
                await read_from(a, "198.18.0.2", 7, options={"SO_BINDTODEVICE": "lo"})
            assert exc.value.errno == errno.ENETUNREACH
            with pytest.raises(OSError) as exc:
                await read_from(a, "198.18.0.2", 7, options={"SO_BINDTODEVICE": "nope"})
            assert exc.value.errno == errno.ENODEV

    run(go())


def test_a_connection_bound_to_another_nic_takes_no_segment() -> None:
    """As Linux: B's end of an open connection bound (SO_BINDTODEVICE, set
    on the open connection) to ``lo`` is not found for A's next segment,
    which arrives on ``pair1``: no listener on B's side port, so a reset,
    and A's read fails. Bound back to ``pair1``, another connection goes
    on as before."""

    async def go() -> None:
        a, b = Stack.pair(ndp=FAST_NDP)
        async with a, b:
            accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

            async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await accepted.put(writer)
                data = await reader.readline()
                writer.write(b"got " + data)

            await b.start_server(keep, None, 7)
            for nic, expect_reset in (("pair1", False), ("lo", True)):
                reader, writer = await a.open_connection("198.18.0.2", 7)
                theirs = await accepted.get()
                theirs.transport.set_option("SO_BINDTODEVICE", nic)
                assert theirs.transport.get_option("SO_BINDTODEVICE") == (
                    1 if nic == "pair1" else 2
                )
                writer.write(b"hello\n")
                if expect_reset:
                    with pytest.raises(ConnectionResetError):
                        await reader.readline()
                else:
                    assert await reader.readline() == b"got hello\n"
                writer.close()
            with pytest.raises(OSError) as exc:
                theirs.transport.set_option("SO_BINDTODEVICE", "nope")
            assert exc.value.errno == errno.ENODEV

    run(go())
