"""UDP for the fronts: ``udp:`` forwards both ways and the SOCKS5 front's
UDP ASSOCIATE (RFC 1928 §7).

A forward pairs each peer of its listening socket with a socket of its own
on the other side, connected to the target (a connected shardnet socket
picks a local port whose flow hashes to this shard, as TCP's active open
does); what the target sends back goes to that peer from the listening
socket. UDP has no end: a pair is closed after ``UDP_IDLE_S`` without a
datagram (as the relay's flows), and a forward holds at most
``MAX_PAIRS`` per shard (a datagram that would open one more is dropped
and counted).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..relay import socks5 as codec
from ..relay.idle import SWEEP_S
from ..relay.udp import MAX_WAITING, UDP_IDLE_S

if TYPE_CHECKING:
    from . import Fronts

MAX_PAIRS = 1024  # peers one UDP forward holds in one shard

OpenFar = Callable[[Callable[[], asyncio.DatagramProtocol]], Awaitable[Any]]


@dataclass(slots=True)
class _Pair:
    peer: Any
    last: float
    transport: asyncio.DatagramTransport | None = None
    waiting: deque[bytes] = field(default_factory=deque)
    since: float = 0.0
    up: int = 0  # payload bytes from the peer to the target (ctl fronts)
    down: int = 0


class _Back(asyncio.DatagramProtocol):
    """The target's side of one pair."""

    def __init__(self, forward: UdpForward, pair: _Pair) -> None:
        self.forward = forward
        self.pair = pair

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.forward.back(self.pair, data)

    def error_received(self, exc: Exception) -> None:
        self.forward.fronts.udp_dropped += 1  # e.g. the target's port unreachable


class UdpForward(asyncio.DatagramProtocol):
    """The listening side of one UDP forward (a kernel socket or one of
    shardnet's); ``open_far(factory)`` opens a pair's socket to the target.
    ``target`` and ``front`` name it in ``ctl fronts``."""

    def __init__(
        self, fronts: Fronts, open_far: OpenFar, target: str = "", front: str = "udp-forward"
    ) -> None:
        self.fronts = fronts
        self.open_far = open_far
        self.target = target
        self.front = front
        self.transport: Any = None
        self.pairs: dict[Any, _Pair] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        fronts = self.fronts
        now = fronts.clock()
        pair = self.pairs.get(addr)
        if pair is None:
            if len(self.pairs) >= MAX_PAIRS:
                fronts.udp_dropped += 1
                return
            pair = self.pairs[addr] = _Pair(addr, now, since=now)
            fronts._spawn(self._open(pair))
            self._arm()
        pair.last = now
        pair.up += len(data)
        fronts.bytes_down += len(data)
        if pair.transport is not None:
            self._send(pair.transport, data)
        elif len(pair.waiting) < MAX_WAITING:
            pair.waiting.append(data)
        else:
            fronts.udp_dropped += 1

    async def _open(self, pair: _Pair) -> None:
        try:
            transport, _ = await self.open_far(lambda: _Back(self, pair))
        except OSError:
            self.fronts.failed += 1
            self.pairs.pop(pair.peer, None)
            return
        if self.pairs.get(pair.peer) is not pair:  # swept meanwhile
            transport.close()
            return
        self.fronts.dialled += 1
        pair.transport = transport
        while pair.waiting:
            self._send(transport, pair.waiting.popleft())

    def _send(self, transport: asyncio.DatagramTransport, data: bytes) -> None:
        try:
            transport.sendto(data)
        except OSError:  # no route to the target now: as a lost datagram
            self.fronts.udp_dropped += 1

    def back(self, pair: _Pair, data: bytes) -> None:
        pair.last = self.fronts.clock()
        pair.down += len(data)
        self.fronts.bytes_up += len(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, pair.peer)

    def _arm(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.fronts.clock()
        for peer, pair in list(self.pairs.items()):
            if now - pair.last >= UDP_IDLE_S:
                del self.pairs[peer]
                if pair.transport is not None:
                    pair.transport.close()
        if self.pairs:
            self._arm()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pair in self.pairs.values():
            if pair.transport is not None:
                pair.transport.close()
        self.pairs.clear()
        if self.transport is not None:
            self.transport.close()


class Association:
    """One SOCKS5 UDP ASSOCIATE: the kernel socket the client sends its
    datagrams to (``kernel``, bound beside the control connection), and a
    dual-stack socket of shardnet's that sends them on (``stack``). RFC
    1928 §7: only datagrams from the client's address are relayed. A
    destination named (ATYP 3) is resolved through the fronts' cache; while
    its lookup runs, at most ``MAX_WAITING`` datagrams of the association
    wait for it (more are dropped and counted)."""

    def __init__(self, fronts: Fronts, client_ip: str, since: float = 0.0) -> None:
        self.fronts = fronts
        self.client_ip = client_ip
        self.since = since
        self.client_port: Any = None  # the client's UDP address, from its first datagram
        self.kernel: Any = None
        self.stack: Any = None
        self.waiting = 0  # datagrams waiting for a name's lookup
        self.up = self.down = 0  # payload bytes each way (ctl fronts)

    def from_client(self, data: bytes, addr: Any) -> None:
        parsed = codec.parse_udp_request(data)
        if addr[0] != self.client_ip or parsed is None or self.stack is None:
            self.fronts.udp_dropped += 1
            return
        host, port, payload = parsed
        self.client_port = addr
        if isinstance(host, bytes):
            self._send(str(ipaddress.ip_address(host)), port, payload)
            return
        known, text = self.fronts.names.cached(host)
        if known:
            if text is None:  # it did not resolve a moment ago
                self.fronts.udp_dropped += 1
            else:
                self._send(text, port, payload)
        elif self.waiting < MAX_WAITING:
            self.waiting += 1
            self.fronts._spawn(self._resolve_and_send(host, port, payload))
        else:
            self.fronts.udp_dropped += 1

    async def _resolve_and_send(self, name: str, port: int, payload: bytes) -> None:
        try:
            text = await self.fronts.names.resolve(name)
        except OSError:
            self.fronts.udp_dropped += 1
            return
        finally:
            self.waiting -= 1
        if self.stack is not None and not self.stack.is_closing():
            self._send(text, port, payload)

    def _send(self, text: str, port: int, payload: bytes) -> None:
        ip = ipaddress.ip_address(text.partition("%")[0])
        text = f"::ffff:{ip}" if ip.version == 4 else str(ip)  # the dual-stack socket's form
        self.fronts.bytes_down += len(payload)
        self.down += len(payload)
        try:
            self.stack.sendto(payload, (text, port))
        except OSError:  # no route to the destination now: as a lost datagram
            self.fronts.udp_dropped += 1

    def from_destination(self, data: bytes, addr: Any) -> None:
        if self.client_port is None or self.kernel is None:
            return
        ip = ipaddress.ip_address(addr[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        self.fronts.bytes_up += len(data)
        self.up += len(data)
        self.kernel.sendto(codec.udp_header(ip.packed, addr[1]) + data, self.client_port)

    def close(self) -> None:
        for t in (self.kernel, self.stack):
            if t is not None:
                t.close()


class _Side(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, Any], None]) -> None:
        self.receive = receive

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about one datagram: UDP carries on


def side(receive: Callable[[bytes, Any], None]) -> Callable[[], asyncio.DatagramProtocol]:
    """A protocol factory handing each datagram to ``receive``."""
    return lambda: _Side(receive)
