"""The TCP connections' timers in a shard: a heap of deadlines, so a turn of
the timer loop touches only the connections that are due
(``TcpDemux.next_deadline/handle_timeout``)."""

from __future__ import annotations

import asyncio

import pytest
from scapy.layers.inet import TCP

from shardnet.common.addr import parse_ip
from shardnet.shards.tcp.endpoint import TcpEndpoint

from ..net.harness import OUR4, PEER4
from .test_tcp_api import world

N = 50


def run_timers(net, tcp, until: float) -> None:  # noqa: ANN001 - harness objects
    """The timer loop on the fake clock: every deadline up to ``until``."""
    while (d := tcp.next_deadline()) is not None and d <= until:
        net.clock.now = max(net.clock.now, d)
        tcp.handle_timeout(net.clock.now)
    net.clock.now = until


def test_every_connection_retransmits_its_syn_on_time() -> None:
    async def go() -> None:
        net, _, tcp = world()
        for i in range(N):
            tcp.connect(4, parse_ip(OUR4), parse_ip(PEER4), 80, asyncio.Protocol, start=40000 + i)
        syns = [f for f in net.sent() if TCP in f]
        assert len(syns) == N
        start = net.clock.now
        run_timers(net, tcp, start + 0.99)
        assert [f for f in net.sent() if TCP in f] == []  # RFC 6298 §2.1: 1 s initial RTO
        run_timers(net, tcp, start + 1.01)
        again = [f for f in net.sent() if TCP in f]
        assert len(again) == N and all(f[TCP].flags == "S" for f in again)

    asyncio.run(go())


def test_a_turn_with_nothing_due_reads_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        net, _, tcp = world()
        for i in range(N):
            tcp.connect(4, parse_ip(OUR4), parse_ip(PEER4), 80, asyncio.Protocol, start=40000 + i)
        tcp.handle_timeout(net.clock.now)  # the first turn reads the new connections
        calls = 0
        real = TcpEndpoint.next_deadline

        def counted(self: TcpEndpoint) -> float | None:
            nonlocal calls
            calls += 1
            return real(self)

        monkeypatch.setattr(TcpEndpoint, "next_deadline", counted)
        for _ in range(10):
            tcp.next_deadline()
            tcp.handle_timeout(net.clock.now + 0.5)  # before any RTO
        assert calls == 0
        tcp.handle_timeout(net.clock.now + 1.01)  # every SYN's RTO is due
        assert calls >= N

    asyncio.run(go())


def test_connection_rows_come_in_pages_with_the_listeners_last() -> None:
    """``ctl conns`` reads each shard a page at a time: pages of real
    connections that together list each once, listeners on the last."""

    async def go() -> None:
        net, _, tcp = world()
        tcp.listen(4, bytes(4), 7, asyncio.Protocol)
        for i in range(5):
            tcp.connect(4, parse_ip(OUR4), parse_ip(PEER4), 80, asyncio.Protocol, start=40000 + i)
        pages = [tcp.rows(offset, 2) for offset in (0, 2, 4)]
        assert [len(p) for p in pages] == [2, 2, 2]  # the last: one connection, one listener
        ours = [r["local"] for p in pages for r in p if r["state"] != "LISTEN"]
        assert len(set(ours)) == 5  # each connection once (its own local port)
        assert [r["state"] for r in pages[2]][-1] == "LISTEN"
        assert not any(r["state"] == "LISTEN" for r in pages[0] + pages[1])
        assert len(tcp.rows()) == 6  # no limit: everything

    asyncio.run(go())
