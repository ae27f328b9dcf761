"""UDP forwards: a pair per peer, datagrams held while it opens, idle
pairs closed, a bounded number of pairs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardnet.shards.fronts import udp
from shardnet.shards.fronts.udp import UdpForward


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Fronts:
    def __init__(self) -> None:
        self.clock = _Clock()
        self.udp_dropped = self.failed = self.dialled = 0
        self.bytes_up = self.bytes_down = 0

    def _spawn(self, coro: Any) -> None:
        asyncio.get_running_loop().create_task(coro)


class _Transport:
    """A datagram transport that records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _forward() -> tuple[_Fronts, UdpForward, list[tuple[_Transport, Any]], _Transport]:
    fronts = _Fronts()
    opened: list[tuple[_Transport, Any]] = []

    async def open_far(factory: Any) -> Any:
        far = _Transport()
        opened.append((far, factory()))
        return far, None

    forward = UdpForward(fronts, open_far)  # type: ignore[arg-type]
    listening = _Transport()
    forward.connection_made(listening)  # type: ignore[arg-type]
    return fronts, forward, opened, listening


def test_a_peer_gets_its_own_pair_and_the_answers() -> None:
    async def go() -> None:
        fronts, forward, opened, listening = _forward()
        forward.datagram_received(b"one", ("127.0.0.1", 5000))
        forward.datagram_received(b"two", ("127.0.0.1", 5000))  # held while the pair opens
        await asyncio.sleep(0)
        assert len(opened) == 1
        far, back = opened[0]
        assert [d for d, _ in far.sent] == [b"one", b"two"]
        back.datagram_received(b"answer", ("198.18.0.1", 53))
        assert listening.sent == [(b"answer", ("127.0.0.1", 5000))]
        forward.datagram_received(b"x", ("127.0.0.1", 5001))  # another peer: another pair
        await asyncio.sleep(0)
        assert len(opened) == 2 and fronts.dialled == 2
        forward.close()

    asyncio.run(go())


def test_idle_pairs_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        fronts, forward, opened, _ = _forward()
        forward.datagram_received(b"q", ("127.0.0.1", 5000))
        await asyncio.sleep(0)
        fronts.clock.now = udp.UDP_IDLE_S - 1
        forward._sweep()
        assert forward.pairs and not opened[0][0].closed
        fronts.clock.now = udp.UDP_IDLE_S + 1
        forward._sweep()
        assert not forward.pairs and opened[0][0].closed
        forward.close()

    asyncio.run(go())


def test_pairs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_PAIRS", 2)

    async def go() -> None:
        fronts, forward, opened, _ = _forward()
        for port in range(5000, 5005):
            forward.datagram_received(b"q", ("127.0.0.1", port))
        await asyncio.sleep(0)
        assert len(forward.pairs) == 2 and len(opened) == 2
        assert fronts.udp_dropped == 3
        forward.close()

    asyncio.run(go())
