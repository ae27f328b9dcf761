"""The relay's UDP side: each flow (client address and port, original
destination address and port) gets a kernel UDP socket connected to the
destination; what the destination sends back goes to the client from the
original destination's address and port.

UDP has no end: a flow lives while datagrams pass and is closed after an
idle time, 60 s by default and 10 s for DNS (port 53), whose flows are one
query and one answer (tun2socks and slirp4netns time them out alike). The
number of flows is bounded (``limits.py``): a datagram that would open one
more is dropped and counted. Datagrams that come while the socket is being opened wait,
a few per flow (more are dropped and counted).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from shardnet.common.addr import format_ip
from shardnet.common.wire.icmpv4 import ICMP_DEST_UNREACH, ICMP_PORT_UNREACH
from shardnet.common.wire.icmpv6 import ICMPV6_DST_UNREACH, UNREACH_PORT
from shardnet.common.wire.ipv4 import IPPROTO_UDP

from ..net.datagram import Delivery
from ..net.stack import NetStack
from ..transport.udp import build_datagram
from . import socks5
from .idle import SweptFlows
from .limits import RelayLimits
from .rules import RelayRules
from .sockets import SocketOpener
from .socks5 import Upstream

UDP_IDLE_S = 60.0  # an idle flow is closed after this long
DNS_IDLE_S = 10.0  # ... and a DNS flow (destination port 53) after this long
DNS_PORT = 53
MAX_WAITING = 16  # datagrams held per flow while its socket opens

FlowKey = tuple[bytes, int, bytes, int]  # client address, client port, destination, port


@dataclass(slots=True)
class UdpFlow:
    key: FlowKey
    idle_s: float
    last: float
    since: float
    transport: asyncio.DatagramTransport | None = None
    waiting: deque[bytes] = field(default_factory=deque)
    closed: bool = False
    # Through a SOCKS5 upstream: the association's control connection and
    # the header each datagram to the upstream starts with.
    control: socket.socket | None = None
    header: bytes = b""


class UdpRelay(SweptFlows[UdpFlow]):
    """Relays the datagrams no socket of ours takes. Counters: ``flows``
    opened, ``denied`` (by a rule), ``over_cap`` (dropped: too many flows), ``failed`` (a socket
    that could not be opened), ``dropped`` (held too long or sent in vain),
    datagrams and bytes each way."""

    def __init__(
        self,
        net: NetStack,
        sockets: SocketOpener,
        clock: Any,
        rules: RelayRules | None = None,
        upstream: Upstream | None = None,
        max_flows: int = RelayLimits().udp_flows,
    ) -> None:
        self.net = net
        self.max_flows = max_flows
        self.upstream = upstream  # --relay socks5://: UDP ASSOCIATE through it
        self.sockets = sockets
        self.clock = clock
        self.rules = rules or RelayRules()
        self.denied = 0
        self.flows: dict[FlowKey, UdpFlow] = {}
        self.opened = self.over_cap = self.failed = self.dropped = 0
        # "up": client to destination; "down": back
        self.datagrams_up = self.datagrams_down = self.bytes_up = self.bytes_down = 0

    def datagram(self, d: Delivery, sport: int, dport: int, data: bytes) -> bool:
        """A datagram for ``d.dst:dport`` that is not ours; False if it is
        not one to relay (to us, or to a broadcast or multicast address)."""
        if d.broadcast or d.looped or d.dst in self.net.view.local:
            return False
        key = (d.src, sport, d.dst, dport)
        flow = self.flows.get(key)
        now = self.clock()
        if flow is None:
            if not self.rules.allows(d.dst, dport):
                # As a host with no socket on the port (RFC 1122 §3.2.2.1).
                self.denied += 1
                if len(d.dst) == 4:
                    self.net.icmp.error_v4(d, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH)
                else:
                    self.net.icmp.error_v6(d, ICMPV6_DST_UNREACH, UNREACH_PORT)
                return True
            if len(self.flows) >= self.max_flows:
                self.over_cap += 1
                return True
            flow = UdpFlow(key, DNS_IDLE_S if dport == DNS_PORT else UDP_IDLE_S, now, now)
            self.flows[key] = flow
            self.opened += 1
            asyncio.get_running_loop().create_task(self._open(flow))
            self._arm()
        flow.last = now
        self.datagrams_up += 1
        self.bytes_up += len(data)
        if flow.transport is not None:
            flow.transport.sendto(flow.header + data if flow.header else data)
        elif len(flow.waiting) < MAX_WAITING:
            flow.waiting.append(data)
        else:
            self.dropped += 1
        return True

    async def _open(self, flow: UdpFlow) -> None:
        _, _, dst, dport = flow.key
        family = socket.AF_INET6 if len(dst) == 16 else socket.AF_INET
        loop = asyncio.get_running_loop()
        upstream = self.upstream
        target: tuple[str, int] = (format_ip(dst), dport)
        try:
            if upstream is not None:
                # UDP ASSOCIATE: the control connection lives as long as the flow.
                flow.control = await self.sockets.open(upstream.family, socket.SOCK_STREAM)
                target = await socks5.associate(flow.control, upstream)
                family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
                flow.header = socks5.udp_header(dst, dport)
            sock = await self.sockets.open(family, socket.SOCK_DGRAM)
            try:
                sock.connect(target)  # UDP: no handshake, returns at once
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _FlowProtocol(self, flow), sock=sock
                )
            except BaseException:
                sock.close()
                raise
        except (OSError, TimeoutError):
            self.failed += 1
            self.dropped += len(flow.waiting)
            self._forget(flow)
            return
        if flow.closed:  # swept while opening
            transport.close()
            return
        flow.transport = transport
        while flow.waiting:
            transport.sendto(flow.header + flow.waiting.popleft())

    def reply(self, flow: UdpFlow, data: bytes) -> None:
        """A datagram from the destination: to the client, from the
        destination's address and port."""
        if flow.closed:
            return
        if flow.header:  # from the SOCKS5 upstream: RFC 1928 §7's header first
            inner = socks5.parse_udp(data)
            if inner is None:
                self.dropped += 1
                return
            data = inner
        client, cport, dst, dport = flow.key
        flow.last = self.clock()
        try:
            payload = build_datagram(dport, cport, data)
        except OSError:
            self.dropped += 1
            return
        if len(dst) == 4:
            sent = self.net.send_ipv4(client, IPPROTO_UDP, payload, src=dst, checksum_at=6)
        else:
            sent = self.net.send_ipv6(client, IPPROTO_UDP, payload, src=dst, checksum_at=6)
        if sent:
            self.datagrams_down += 1
            self.bytes_down += len(data)
        else:
            self.dropped += 1

    def _forget(self, flow: UdpFlow) -> None:
        flow.closed = True
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        if flow.transport is not None:
            flow.transport.close()
            flow.transport = None
        if flow.control is not None:
            flow.control.close()
            flow.control = None

    def _idle_s(self, flow: UdpFlow) -> float:
        return flow.idle_s

    def stats(self) -> dict[str, int]:
        return {
            "relay/udp_flows": len(self.flows),
            "relay/udp_opened": self.opened,
            "relay/udp_over_cap": self.over_cap,
            "relay/udp_denied": self.denied,
            "relay/udp_failed": self.failed,
            "relay/udp_dropped": self.dropped,
            "relay/udp_datagrams_up": self.datagrams_up,
            "relay/udp_datagrams_down": self.datagrams_down,
            "relay/udp_bytes_up": self.bytes_up,
            "relay/udp_bytes_down": self.bytes_down,
        }

    def rows(self, now: float) -> list[dict[str, Any]]:
        """The live flows for ``ctl relays``."""
        return [
            {
                "proto": "udp",
                "state": "open" if f.transport is not None else "opening",
                "client": _endpoint(f.key[0], f.key[1]),
                "destination": _endpoint(f.key[2], f.key[3]),
                "idle_s": round(now - f.last, 3),
                "age_s": round(now - f.since, 3),
            }
            for f in self.flows.values()
        ]


def _endpoint(addr: bytes, port: int) -> str:
    """``198.19.0.10:53``, ``[2001:db8::1]:53``: as ``ss`` shows them."""
    text = format_ip(addr)
    return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


class _FlowProtocol(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, flow: UdpFlow) -> None:
        self.relay = relay
        self.flow = flow

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.reply(self.flow, data)

    def error_received(self, exc: Exception) -> None:
        # ECONNREFUSED: the destination answered ICMP port unreachable to an
        # earlier datagram. The flow stays until idle (a later one may pass).
        pass
