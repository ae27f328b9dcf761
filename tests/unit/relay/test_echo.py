"""The relay's ICMP echo: requests to addresses not the stack's are taken
(ours are left to the stack), flows are bounded and follow the rules, and
the destination's reply goes back with the client's identifier, the
reply's sequence number and data, and the TTL or hop limit it came with."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys
from typing import Any

from scapy.layers.inet import ICMP
from scapy.layers.inet6 import ICMPv6EchoReply

from shardnet.common.addr import parse_ip
from shardnet.shards.relay.echo import EchoFlow, EchoRelay
from shardnet.shards.relay.rules import RelayRules

CLIENT4, DEST4, OURS4 = parse_ip("198.18.0.1"), parse_ip("198.19.0.10"), parse_ip("198.18.0.2")
CLIENT6, DEST6 = parse_ip("2001:db8::1"), parse_ip("2001:db8:19::10")


class _View:
    local = {OURS4}


class _Icmp:
    def __init__(self) -> None:
        self.errors: list[tuple[int, Any, int, int]] = []

    def error_v4(self, d: Any, type_: int, code: int) -> None:
        self.errors.append((4, d, type_, code))

    def error_v6(self, d: Any, type_: int, code: int) -> None:
        self.errors.append((6, d, type_, code))


class _Net:
    view = _View()
    link_nic = 1

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bytes, bytes, Any]] = []
        self.icmp = _Icmp()

    def send_ipv4(self, dst: bytes, proto: int, payload: Any, *, src: bytes, ttl: Any) -> bool:
        self.sent.append((4, dst, src, bytes(payload), ttl))
        return True

    def send_ipv6(
        self, dst: bytes, nh: int, payload: Any, *, src: bytes, hop_limit: Any, checksum_at: int
    ) -> bool:
        self.sent.append((6, dst, src, bytes(payload), hop_limit))
        return True


class _Opener:
    def __init__(self) -> None:
        self.opened: list[tuple[int, int, int]] = []

    async def open(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        self.opened.append((family, kind, proto))
        raise PermissionError(13, "Permission denied")  # as ping_group_range refuses


def _relay(rules: tuple[str, ...] = (), max_flows: int = 8) -> tuple[EchoRelay, _Net, _Opener]:
    net, opener = _Net(), _Opener()
    relay = EchoRelay(net, opener, lambda: 0.0, RelayRules.parse(rules), max_flows)  # type: ignore[arg-type]
    return relay, net, opener


def test_echo_to_our_own_address_is_left_to_the_stack() -> None:
    relay, _, _ = _relay()
    assert relay.request(CLIENT4, OURS4, 1, 1, b"x") is False and not relay.flows


def test_flows_follow_the_rules_and_the_bound() -> None:
    async def go() -> None:
        relay, _, opener = _relay(("deny,198.19.5.0/24",), max_flows=2)
        assert relay.request(CLIENT4, parse_ip("198.19.5.1"), 1, 1, b"")
        assert relay.denied == 1 and not relay.flows
        for ident in (1, 2, 3):
            assert relay.request(CLIENT4, DEST4, ident, 1, b"")
        assert relay.over_cap == 1 and relay.opened == 2
        await asyncio.sleep(0)
        # The kernel refused the ping sockets: counted, the flows gone.
        assert relay.failed == 2 and not relay.flows
        assert opener.opened[0] == (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)

    asyncio.run(go())


def _hops(level: int, kind: int, n: int) -> list[tuple[int, int, bytes]]:
    return [(level, kind, n.to_bytes(4, sys.byteorder))]


def test_the_reply_keeps_the_clients_identifier_and_the_replys_ttl() -> None:
    relay, net, _ = _relay()
    flow = EchoFlow((CLIENT4, DEST4, 0x1234), 0.0, 0.0)
    # What a ping socket reads: the kernel's identifier (its "port") in the reply.
    reply = struct.pack("!BBHHH", 0, 0, 0, 0x9999, 7) + b"payload"
    relay._reply(flow, reply, _hops(socket.IPPROTO_IP, socket.IP_TTL, 61))
    version, dst, src, payload, ttl = net.sent[0]
    assert (version, dst, src, ttl) == (4, CLIENT4, DEST4, 61)
    icmp = ICMP(payload)
    assert (icmp.type, icmp.id, icmp.seq, bytes(icmp.payload)) == (0, 0x1234, 7, b"payload")
    assert icmp.chksum == ICMP(bytes(ICMP(payload, chksum=None))).chksum  # scapy's own sum
    assert relay.replies == 1 and relay.bytes_down == 7


def test_the_v6_reply_keeps_the_clients_identifier_and_the_hop_limit() -> None:
    relay, net, _ = _relay()
    flow = EchoFlow((CLIENT6, DEST6, 0x4321), 0.0, 0.0)
    reply = struct.pack("!BBHHH", 129, 0, 0, 0x9999, 3) + b"data6"
    relay._reply(flow, reply, _hops(socket.IPPROTO_IPV6, 52, 63))
    version, dst, src, payload, hops = net.sent[0]
    assert (version, dst, src, hops) == (6, CLIENT6, DEST6, 63)
    echo = ICMPv6EchoReply(payload)
    assert (echo.id, echo.seq, echo.data) == (0x4321, 3, b"data6")


def test_anything_but_an_echo_reply_is_not_passed_back() -> None:
    relay, net, _ = _relay()
    flow = EchoFlow((CLIENT4, DEST4, 1), 0.0, 0.0)
    relay._reply(flow, struct.pack("!BBHHH", 8, 0, 0, 1, 1), [])
    relay._reply(flow, b"\x00\x00", [])  # shorter than a header
    assert net.sent == []


def test_an_unreachable_destination_is_told_quoting_the_clients_request() -> None:
    relay, net, _ = _relay()
    flow = EchoFlow((CLIENT4, DEST4, 0x1234), 0.0, 0.0)
    sent_on = struct.pack("!BBHHH", 8, 0, 0, 0, 9) + b"abcd"  # as the relay sent it
    relay._unreachable(flow, sent_on, errno.ENETUNREACH)
    relay._unreachable(flow, sent_on, errno.EHOSTUNREACH)
    (_, d, type_, net_code), (_, _, _, host_code) = net.icmp.errors
    assert (type_, net_code, host_code) == (3, 0, 1)  # RFC 792: net, host unreachable
    assert (d.src, d.dst, d.protocol) == (CLIENT4, DEST4, socket.IPPROTO_ICMP)
    quoted = ICMP(bytes(d.payload))  # the request with the client's identifier
    assert (quoted.type, quoted.id, quoted.seq) == (8, 0x1234, 9)
    flow6 = EchoFlow((CLIENT6, DEST6, 7), 0.0, 0.0)
    relay._unreachable(flow6, struct.pack("!BBHHH", 128, 0, 0, 0, 1), errno.EHOSTUNREACH)
    version, d6, type6, code6 = net.icmp.errors[-1]
    assert (version, type6, code6, d6.src) == (6, 1, 3, CLIENT6)  # RFC 4443 §3.1
    assert relay.errors == 3
