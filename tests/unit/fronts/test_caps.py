"""A front holds a bounded number of connections per shard."""

from __future__ import annotations

import asyncio
import socket

import pytest

from shardnet.shards import fronts
from shardnet.shards.fronts import Fronts


class _Api:
    shard = 0


def test_connections_over_the_cap_are_closed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fronts, "MAX_CONNECTIONS", 2)

    async def go() -> list[bytes | None]:
        with socket.socket() as probe:  # a free port for the proxy
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        front = Fronts(_Api(), lambda: 0.0, http_proxy=f"127.0.0.1:{port}")  # type: ignore[arg-type]
        await front.start()
        loop = asyncio.get_running_loop()
        clients = []
        for _ in range(3):  # none sends its request: the first two wait in their handshake
            c = socket.create_connection(("127.0.0.1", port))
            c.setblocking(False)
            clients.append(c)
            await asyncio.sleep(0.05)
        got: list[bytes | None] = []
        for c in clients:
            try:
                got.append(await asyncio.wait_for(loop.sock_recv(c, 1), 0.3))
            except TimeoutError:
                got.append(None)  # still held
        assert front.refused == 1 and front.accepted == 3
        for c in clients:
            c.close()
        front.close()
        return got

    assert asyncio.run(go()) == [None, None, b""]
