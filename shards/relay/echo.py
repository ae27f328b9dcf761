"""The relay's ICMP echo (``--relay-icmp relay``): an echo request to an
address that is not the stack's is sent again to its original destination
with a kernel ICMP socket (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``,
the ICMPv6 one for IPv6: Linux's unprivileged "ping" sockets), and the
client is answered only when the destination's reply comes, with the
client's identifier, the sequence number and data of the reply (RFC 792,
RFC 4443 §4.2) and the TTL or hop limit the reply arrived with. A
destination that does not answer gives no reply, as it would to the
client. When the kernel reports the destination unreachable (no route at
``connect``, or an ICMP error it received, as the socket's error) the
client gets an ICMP destination unreachable from the destination's
address quoting its request (network unreachable for ENETUNREACH, host or
address unreachable otherwise), rate-limited as every ICMP error; these
are counted (``errors``).

A flow is one (client, destination, identifier): one socket, whose
identifier the kernel picks (the socket's "port"); it is closed after
``ECHO_IDLE_S`` without a request (Linux conntrack's ICMP timeout). The
flows are bounded by the ``udp_flows`` limit (``limits.py``) and checked
against ``--relay-rule`` (as port 0: a rule naming ports is for TCP and
UDP). Linux lets a process open these sockets only if its group is in
``net.ipv4.ping_group_range`` of the namespace (both families): elsewhere
the open fails, is counted (``failed``) and logged once.

With ``--relay-icmp local`` (the default) the stack answers every echo
itself (``net/icmp.py``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

from shardnet.common.addr import format_ip
from shardnet.common.wire.icmpv4 import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_HOST_UNREACH,
    ICMP_NET_UNREACH,
    Icmpv4Header,
)
from shardnet.common.wire.icmpv6 import (
    ICMPV6_DST_UNREACH,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    UNREACH_ADDRESS,
    UNREACH_NO_ROUTE,
    build_echo_reply,
)
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, Ipv4Header
from shardnet.common.wire.ipv6 import NH_ICMPV6, Ipv6Header

from ..net.stack import NetStack
from .idle import SweptFlows
from .rules import RelayRules
from .sockets import SocketOpener
from .tcp import _delivery

log = logging.getLogger("shardnet.relay")

ECHO_IDLE_S = 30.0  # nf_conntrack_icmp_timeout
MAX_WAITING = 4  # requests held per flow while its socket opens
_ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_RECV = 65535
_CMSG = socket.CMSG_SPACE(4)
# IP_RECVTTL (linux/in.h), IPV6_RECVHOPLIMIT / IPV6_HOPLIMIT (linux/in6.h):
# Python names them only where the platform headers do.
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)

EchoKey = tuple[bytes, bytes, int]  # client, destination, the client's identifier


@dataclass(slots=True)
class EchoFlow:
    key: EchoKey
    last: float
    since: float
    sock: socket.socket | None = None
    waiting: list[bytes] | None = None  # requests (seq and data) while the socket opens
    closed: bool = False
    up: int = 0  # echo data bytes sent on
    down: int = 0  # and passed back
    last_request: bytes = b""  # the last request sent on: an error's quote


class EchoRelay(SweptFlows[EchoFlow]):
    """Relays echo requests to addresses not the stack's. Counters:
    ``opened`` flows, ``over_cap``, ``denied``, ``failed`` (a socket that
    could not be opened), ``errors`` (ICMP errors the kernel reported),
    requests, replies and their data bytes each way."""

    def __init__(
        self,
        net: NetStack,
        sockets: SocketOpener,
        clock: Any,
        rules: RelayRules,
        max_flows: int,
    ) -> None:
        self.net = net
        self.sockets = sockets
        self.clock = clock
        self.rules = rules
        self.max_flows = max_flows
        self.flows: dict[EchoKey, EchoFlow] = {}
        self.opened = self.over_cap = self.denied = self.failed = self.errors = 0
        self.requests = self.replies = self.bytes_up = self.bytes_down = 0
        self._warned = False

    def request(self, src: bytes, dst: bytes, ident: int, seq: int, data: bytes) -> bool:
        """An echo request from ``src`` to ``dst``; False if the stack
        answers it itself (one of its own addresses)."""
        if dst in self.net.view.local:
            return False
        key = (src, dst, ident)
        flow = self.flows.get(key)
        now = self.clock()
        if flow is None:
            if not self.rules.allows(dst, 0):
                self.denied += 1
                return True  # as a destination that does not answer
            if len(self.flows) >= self.max_flows:
                self.over_cap += 1
                return True
            flow = EchoFlow(key, now, now, waiting=[])
            self.flows[key] = flow
            self.opened += 1
            asyncio.get_running_loop().create_task(self._open(flow))
            self._arm()
        flow.last = now
        # The kernel fills in the identifier (the socket's) and the checksum.
        message = _ECHO.pack(ICMP_ECHO_REQUEST if len(dst) == 4 else ICMPV6_ECHO_REQUEST,
                             0, 0, 0, seq) + data  # fmt: skip
        if flow.sock is not None:
            self._send(flow, message)
        elif flow.waiting is not None and len(flow.waiting) < MAX_WAITING:
            flow.waiting.append(message)
        return True

    async def _open(self, flow: EchoFlow) -> None:
        _, dst, _ = flow.key
        v4 = len(dst) == 4
        family = socket.AF_INET if v4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if v4 else socket.IPPROTO_ICMPV6
        try:
            sock = await self.sockets.open(family, socket.SOCK_DGRAM, proto)
        except OSError as exc:
            self.failed += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "relay: no ICMP socket (%s); is the group in net.ipv4.ping_group_range"
                    " of the relay's namespace?", exc,
                )  # fmt: skip
            self._forget(flow)
            return
        try:
            if v4:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
            sock.connect((format_ip(dst), 0))  # no route: ENETUNREACH
        except OSError as exc:
            sock.close()
            for message in flow.waiting or []:
                self._unreachable(flow, message, exc.errno)
            self._forget(flow)
            return
        if flow.closed:
            sock.close()
            return
        flow.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, flow)
        waiting, flow.waiting = flow.waiting or [], None
        for message in waiting:
            self._send(flow, message)

    def _send(self, flow: EchoFlow, message: bytes) -> None:
        assert flow.sock is not None
        flow.last_request = message
        try:
            flow.sock.send(message)
        except BlockingIOError:
            return  # as a lost request: ping sends the next
        except OSError as exc:  # an ICMP error reported on the socket (unreachable)
            self._unreachable(flow, message, exc.errno)
            return
        flow.up += len(message) - _ECHO.size
        self.requests += 1
        self.bytes_up += len(message) - _ECHO.size

    def _readable(self, flow: EchoFlow) -> None:
        sock = flow.sock
        if sock is None:
            return
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(_RECV, _CMSG)
            except BlockingIOError:
                return
            except OSError as exc:  # the kernel's report of an ICMP error it received
                self._unreachable(flow, flow.last_request, exc.errno)
                continue
            self._reply(flow, data, ancillary)

    def _reply(self, flow: EchoFlow, data: bytes, ancillary: list[Any]) -> None:
        client, dst, ident = flow.key
        if len(data) < _ECHO.size:
            return
        kind, _, _, _, seq = _ECHO.unpack_from(data)
        hops: int | None = None
        for level, type_, value in ancillary:
            if len(value) >= 4 and (
                (level, type_) in ((socket.IPPROTO_IP, socket.IP_TTL),
                                   (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT))
            ):  # fmt: skip
                hops = int.from_bytes(value[:4], sys.byteorder)  # cmsg ints: host order
        payload = data[_ECHO.size :]
        flow.last = self.clock()
        if len(dst) == 4:
            if kind != ICMP_ECHO_REPLY:
                return
            reply = bytearray(_ECHO.size + len(payload))
            reply[_ECHO.size :] = payload
            Icmpv4Header(ICMP_ECHO_REPLY, 0, 0, (ident << 16) | seq).emit(reply)
            sent = self.net.send_ipv4(client, IPPROTO_ICMP, reply, src=dst, ttl=hops)
        else:
            if kind != ICMPV6_ECHO_REPLY:
                return
            message = build_echo_reply(ident, seq, payload, src=bytes(16), dst=bytes(16))
            sent = self.net.send_ipv6(
                client, NH_ICMPV6, message, src=dst, hop_limit=hops, checksum_at=2
            )
        if sent:
            flow.down += len(payload)
            self.replies += 1
            self.bytes_down += len(payload)

    def _unreachable(self, flow: EchoFlow, message: bytes, err: int | None) -> None:
        """Tell the client its request (``message``, as sent on) met an
        unreachable destination: ICMP destination unreachable quoting the
        request's IP header and first 8 bytes (RFC 792, RFC 4443 §3.1),
        rebuilt with the client's identifier."""
        self.errors += 1
        if len(message) < _ECHO.size:
            return
        client, dst, ident = flow.key
        kind, _, _, _, seq = _ECHO.unpack_from(message)
        echo8 = _ECHO.pack(kind, 0, 0, ident, seq)
        no_route = err == errno.ENETUNREACH
        if len(dst) == 4:
            head = bytearray(20)
            total = 20 + len(message)
            Ipv4Header(client, dst, IPPROTO_ICMP, total_length=total).emit(head)
            d = _delivery(self.net, client, dst, head + echo8, IPPROTO_ICMP)
            code = ICMP_NET_UNREACH if no_route else ICMP_HOST_UNREACH
            self.net.icmp.error_v4(d, ICMP_DEST_UNREACH, code)
        else:
            head = bytearray(40)
            Ipv6Header(client, dst, NH_ICMPV6, payload_length=len(message)).emit(head)
            d = _delivery(self.net, client, dst, head + echo8, NH_ICMPV6)
            code = UNREACH_NO_ROUTE if no_route else UNREACH_ADDRESS
            self.net.icmp.error_v6(d, ICMPV6_DST_UNREACH, code)

    def _forget(self, flow: EchoFlow) -> None:
        flow.closed = True
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        if flow.sock is not None:
            asyncio.get_running_loop().remove_reader(flow.sock.fileno())
            flow.sock.close()
            flow.sock = None

    def _idle_s(self, flow: EchoFlow) -> float:
        return ECHO_IDLE_S

    def stats(self) -> dict[str, int]:
        return {
            "relay/icmp_flows": len(self.flows),
            "relay/icmp_opened": self.opened,
            "relay/icmp_over_cap": self.over_cap,
            "relay/icmp_denied": self.denied,
            "relay/icmp_failed": self.failed,
            "relay/icmp_errors": self.errors,
            "relay/icmp_requests": self.requests,
            "relay/icmp_replies": self.replies,
            "relay/icmp_bytes_up": self.bytes_up,
            "relay/icmp_bytes_down": self.bytes_down,
        }

    def rows(self, now: float) -> list[dict[str, Any]]:
        """The live flows for ``ctl relays``."""
        return [
            {
                "proto": "icmp",
                "state": "open" if f.sock is not None else "opening",
                "client": f"{format_ip(f.key[0])} id {f.key[2]}",
                "destination": format_ip(f.key[1]),
                "bytes_up": f.up,
                "bytes_down": f.down,
                "idle_s": round(now - f.last, 3),
                "age_s": round(now - f.since, 3),
            }
            for f in self.flows.values()
        ]
