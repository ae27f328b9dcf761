"""TCP Fast Open (RFC 7413) through ShardStack and the network layer, with
crafted frames: ``create_connection(fastopen=True)`` asks for a cookie,
the shard's cache keeps it, the next connect puts the written data in the
SYN; a listener with TCP_FASTOPEN hands a cookie SYN's data to the
protocol before the handshake completes."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from shardnet.shards.tcp.isn import TfoCookies
from shardnet.shards.tcp.tfo_cache import TFO_BACKOFF_S

from ..net.harness import OUR4, OUR_MAC, PEER4, PEER_MAC
from .test_tcp_api import world

COOKIE = b"\x11\x22\x33\x44\x55\x66\x77\x88"


def tfo(pkt: Ether) -> bytes | None:
    """The Fast Open option's cookie (b"" a request), None without one."""
    for kind, value in pkt[TCP].options:
        if kind == "TFO":
            return bytes(value) if isinstance(value, bytes) else b"".join(
                v.to_bytes(4, "big") for v in (value or ())
            )  # fmt: skip
    return None


def synack(sent: Ether, ack_data: int, cookie: bytes | None) -> Ether:
    opts: list = [("MSS", 1460)]
    if cookie is not None:
        opts.append(("TFO", cookie))
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=PEER4, dst=OUR4)
        / TCP(
            sport=9,
            dport=sent[TCP].sport,
            flags="SA",
            seq=5000,
            ack=sent[TCP].seq + 1 + ack_data,
            options=opts,
        )  # fmt: skip
    )


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


def test_client_asks_for_a_cookie_then_sends_data_in_the_syn() -> None:
    async def go() -> None:
        net, stack, tcp = world()
        t, _ = await stack.create_connection(asyncio.Protocol, PEER4, 9, fastopen=True)
        t.write(b"first")
        await asyncio.sleep(0)
        (syn1,) = net.sent()
        assert tfo(syn1) == b"" and not bytes(syn1[TCP].payload)
        net.inject(synack(syn1, 0, COOKIE))
        await asyncio.sleep(0)
        out = net.sent()
        assert [bytes(p[TCP].payload) for p in out if bytes(p[TCP].payload)] == [b"first"]
        t.abort()
        await asyncio.sleep(0)
        net.sent()
        # the second connect: the cookie and the data go in the SYN
        t, _ = await stack.create_connection(asyncio.Protocol, PEER4, 9, fastopen=True)
        t.write(b"second")
        await asyncio.sleep(0)
        (syn2,) = net.sent()
        assert tfo(syn2) == COOKIE and bytes(syn2[TCP].payload) == b"second"
        net.inject(synack(syn2, 6, None))
        await asyncio.sleep(0)
        out = net.sent()
        assert [p[TCP].flags for p in out] == ["A"] and out[0][TCP].ack == 5001
        assert tcp.gauges()["tcp_fastopen/syn_data_acked"] == 1
        t.abort()

    asyncio.run(go())


def test_server_ignoring_the_data_means_no_fast_open_for_a_while() -> None:
    """RFC 7413 §4.1.3: a SYN-ACK acknowledging only the SYN, without a new
    cookie: the data goes again at once, and the next connects to that
    server use no Fast Open until the back-off ends."""

    async def go() -> None:
        net, stack, tcp = world()
        tcp.tfo_cache.learn(net.clock(), bytes(map(int, PEER4.split("."))), cookie=COOKIE,
                            mss=1460, sent=0, acked=0, syn_lost=False)  # fmt: skip
        t, _ = await stack.create_connection(asyncio.Protocol, PEER4, 9, fastopen=True)
        t.write(b"data")
        await asyncio.sleep(0)
        (syn1,) = net.sent()
        assert bytes(syn1[TCP].payload) == b"data"
        net.inject(synack(syn1, 0, None))
        await asyncio.sleep(0)
        out = net.sent()
        assert [bytes(p[TCP].payload) for p in out if bytes(p[TCP].payload)] == [b"data"]
        t.abort()
        await asyncio.sleep(0)
        net.sent()
        assert tcp.gauges()["tcp_fastopen/fallbacks"] == 1
        t, _ = await stack.create_connection(asyncio.Protocol, PEER4, 9, fastopen=True)
        t.write(b"again")
        await asyncio.sleep(0)
        (syn2,) = net.sent()
        assert tfo(syn2) is None and not bytes(syn2[TCP].payload)
        t.abort()
        await asyncio.sleep(0)
        net.sent()
        net.clock.now += TFO_BACKOFF_S  # the back-off is over: a cookie request again
        t, _ = await stack.create_connection(asyncio.Protocol, PEER4, 9, fastopen=True)
        await asyncio.sleep(0)
        (syn3,) = net.sent()
        assert tfo(syn3) == b""
        t.abort()

    asyncio.run(go())


def test_listener_hands_syn_data_to_the_protocol_at_once() -> None:
    async def go() -> None:
        net, stack, tcp = world()
        p = Collect()
        await stack.create_server(lambda: p, "0.0.0.0", 8080, options={"TCP_FASTOPEN": 4})
        # default fastopen=1 (client only): the server bit is needed too
        cookie = TfoCookies(bytes(16)).make(bytes(map(int, PEER4.split("."))))
        syn = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / TCP(
                sport=40000,
                dport=8080,
                flags="S",
                seq=1000,
                options=[("MSS", 1460), ("TFO", cookie)],
            )  # fmt: skip
            / b"GET /"
        )
        net.inject(syn)
        (sa,) = net.sent()
        assert sa[TCP].ack == 1001 and p.data == b""
        tcp.set_config(replace(tcp.config, fastopen=3))
        syn[TCP].sport = 40001
        net.inject(syn)
        (sa,) = net.sent()
        assert sa[TCP].ack == 1006 and p.data == b"GET /"

    asyncio.run(go())
