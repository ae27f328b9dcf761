"""TCP through the network layer (crafted frames): RST for closed ports,
socket options reaching the wire, option errors, non-unicast drops (RFC 1122 §4.2.3.10)."""

from __future__ import annotations

import asyncio
import errno
import gc
import random
import weakref

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from shardnet.shards.api import ShardStack
from shardnet.shards.transport.errors import IcmpErrorRouter
from shardnet.shards.transport.ports import PortManager
from shardnet.shards.transport.tcp import TcpDemux
from shardnet.shards.transport.udp import UdpDemux

from ..net.harness import OUR4, OUR_MAC, PEER4, PEER_MAC, Net


def world() -> tuple[Net, ShardStack, TcpDemux]:
    net = Net()
    net.learn(PEER4)
    ports = PortManager()
    tcp = TcpDemux(net.stack, ports, shard=0, nshards=1, secret=bytes(16), loop_time=net.clock)
    net.stack.transport_v4[6] = net.stack.transport_v6[6] = tcp.deliver
    udp = UdpDemux(ports)
    errors = IcmpErrorRouter(udp, tcp)
    net.stack.transport_v4[-1] = errors.icmpv4_error
    net.stack.transport_v6[-58] = errors.icmpv6_error
    net.sent()
    stack = ShardStack(shard=0, nshards=1, net=net.stack, udp=udp, rng=random.Random(1), tcp=tcp)
    return net, stack, tcp


def syn(dport: int, src: str = PEER4, dst: str = OUR4) -> Ether:
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)]
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=src, dst=dst)
        / TCP(sport=40000, dport=dport, flags="S", seq=1000, options=opts)
    )


def test_a_syn_to_a_closed_port_gets_rst_ack() -> None:
    net, _, _ = world()
    net.inject(syn(81))
    (rst,) = net.sent()
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001 and rst[TCP].seq == 0


def test_server_options_reach_the_syn_ack() -> None:
    async def go() -> None:
        net, stack, _ = world()
        await stack.create_server(asyncio.Protocol, "0.0.0.0", 8080, options={"TCP_MAXSEG": 1000})
        net.inject(syn(8080))
        (synack,) = net.sent()
        assert synack[TCP].flags == "SA" and dict(synack[TCP].options)["MSS"] == 1000

    asyncio.run(go())


def test_unknown_and_bad_options_fail_like_setsockopt() -> None:
    async def go() -> None:
        _, stack, _ = world()
        with pytest.raises(OSError) as exc:
            await stack.create_server(asyncio.Protocol, None, 8081, options={"TCP_NOSUCH": 1})
        assert exc.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as exc:
            await stack.create_server(asyncio.Protocol, None, 8082, options={"TCP_MAXSEG": "lots"})
        assert exc.value.errno == errno.EINVAL

    asyncio.run(go())


def test_non_unicast_source_gets_nothing() -> None:
    """RFC 1122 §4.2.3.10: a SYN from a broadcast source is dropped without a reset."""
    net, _, tcp = world()
    net.inject(syn(81, src="198.18.0.255"))
    assert net.sent() == [] and tcp.resets_sent == 0


def test_icmp_port_unreachable_about_our_syn_fails_the_connect() -> None:
    """RFC 1122 §4.2.3.9 / RFC 5927: a hard error in SYN-SENT ends the open."""
    from scapy.layers.inet import ICMP

    async def go() -> None:
        net, stack, _ = world()
        task = asyncio.ensure_future(stack.create_connection(asyncio.Protocol, PEER4, 9))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        (sent,) = net.sent()
        assert sent[TCP].flags == "S"
        err = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / ICMP(type=3, code=3)
            / bytes(sent[IP])[:28]
        )
        net.inject(err)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(task, 1)

    asyncio.run(go())


def test_packet_too_big_lowers_the_mss_of_the_connection() -> None:
    """RFC 1191: Fragmentation Needed with a next-hop MTU lowers the MSS."""
    from scapy.layers.inet import ICMP

    async def go() -> None:
        net, stack, tcp = world()
        task = asyncio.ensure_future(stack.create_connection(asyncio.Protocol, PEER4, 9))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        (sent,) = net.sent()
        synack = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / TCP(
                sport=9,
                dport=sent[TCP].sport,
                flags="SA",
                seq=5000,
                ack=sent[TCP].seq + 1,
                options=[("MSS", 1460)],
            )
        )
        net.inject(synack)
        transport, _ = await asyncio.wait_for(task, 1)
        assert transport.get_extra_info("mss") == 1460
        err = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / ICMP(type=3, code=4, nexthopmtu=1000)
            / bytes(sent[IP])[:28]
        )
        net.inject(err)
        assert transport.get_extra_info("mss") == 1000 - 40
        transport.abort()

    asyncio.run(go())


def handshake(net: Net, dport: int, sport: int = 40000, src: str = PEER4) -> Ether | None:
    """SYN in; the SYN-ACK out (or None)."""
    net.inject(syn(dport, src=src) if sport == 40000 else syn_from(dport, sport, src))
    out = net.sent()
    return out[0] if out else None


def syn_from(dport: int, sport: int, src: str) -> Ether:
    return (
        Ether(src=PEER_MAC, dst=OUR_MAC)
        / IP(src=src, dst=OUR4)
        / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    )


def test_flow_hook_accepts_rejects_ignores_and_caps() -> None:
    """The proxy hook: per SYN no listener takes, accept with a handler,
    reset, or stay silent; over the per-source cap, reset and count."""
    from shardnet.shards.api import IGNORE, REJECT, Accept

    async def go() -> None:
        net, stack, tcp = world()
        accepted: list[asyncio.Transport] = []

        class Handler(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)  # type: ignore[arg-type]

        def decide(peer: tuple, local: tuple) -> object:
            return {9000: Accept(Handler), 9001: REJECT}.get(local[1], IGNORE)

        stack.on_tcp_flow(decide, max_per_source=1)
        synack = handshake(net, 9000)
        assert synack is not None and synack[TCP].flags == "SA"
        ack = (
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / TCP(sport=40000, dport=9000, flags="A", seq=1001, ack=synack[TCP].seq + 1)
        )
        net.inject(ack)
        assert len(accepted) == 1 and accepted[0].get_extra_info("peername") == (PEER4, 40000)
        rst = handshake(net, 9001)
        assert rst is not None and "R" in rst[TCP].flags
        assert handshake(net, 9002) is None  # ignored: silence
        over = handshake(net, 9000, sport=40001)  # a second open flow from the same source
        assert over is not None and "R" in over[TCP].flags
        hook = tcp.flow_hook
        assert (hook.accepted, hook.rejected, hook.ignored, hook.over_cap) == (1, 1, 1, 1)
        accepted[0].abort()
        await asyncio.sleep(0)
        assert len(hook.open) == 0  # the cap frees up when the flow closes

    asyncio.run(go())


def test_a_reset_after_the_window_opened_in_the_same_batch_loses_the_connection_cleanly() -> None:
    """Events of one batch of frames reach the transport together: room
    for more data (an ACK), then a reset. The buffered data is dropped and
    the protocol sees the reset, never an exception from the transport."""

    async def go() -> None:
        net, stack, tcp = world()
        lost: list[BaseException | None] = []

        class Writer(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # More than the send buffer: the rest waits in the transport.
                transport.write(b"x" * (3 << 20))  # type: ignore[attr-defined]

            def connection_lost(self, exc: Exception | None) -> None:
                lost.append(exc)

        await stack.create_server(Writer, "0.0.0.0", 8080)
        synack = handshake(net, 8080)
        assert synack is not None
        una = synack[TCP].seq + 1

        def peer(flags: str, ack: int, window: int) -> Ether:
            return (
                Ether(src=PEER_MAC, dst=OUR_MAC)
                / IP(src=PEER4, dst=OUR4)
                / TCP(sport=40000, dport=8080, flags=flags, seq=1001, ack=ack, window=window)
            )

        net.inject(peer("A", una, 8))  # a 1 KiB window (scale 7): 1 KiB goes out
        tcp.flush()
        sent = sum(len(p[TCP].payload) for p in net.sent())
        assert sent == 1024
        net.inject(peer("A", una + sent, 8))  # room again: the transport refills...
        net.inject(peer("R", 0, 0))  # ...and a reset, in the same batch
        tcp.flush()
        await asyncio.sleep(0)
        assert tcp.app_errors == 0
        assert len(lost) == 1 and isinstance(lost[0], ConnectionResetError)

    asyncio.run(go())


def test_writes_after_a_reset_or_close_are_dropped_as_asyncio_does() -> None:
    """A server still writing when the peer resets (a client gone
    mid-response) or after closing its transport loses those writes
    silently, as asyncio's socket transports do; only write after
    write_eof is a programming error."""

    async def go() -> None:
        net, stack, tcp = world()
        transports: list[asyncio.Transport] = []

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transports.append(transport)  # type: ignore[arg-type]

        def segment(sport: int, flags: str, ack: int = 0) -> Ether:
            return (
                Ether(src=PEER_MAC, dst=OUR_MAC)
                / IP(src=PEER4, dst=OUR4)
                / TCP(sport=sport, dport=8080, flags=flags, seq=1001, ack=ack)
            )

        async def establish(sport: int) -> asyncio.Transport:
            synack = handshake(net, 8080, sport=sport)
            assert synack is not None
            net.inject(segment(sport, "A", synack[TCP].seq + 1))
            tcp.flush()
            await asyncio.sleep(0)
            net.sent()
            return transports[-1]

        await stack.create_server(Server, "0.0.0.0", 8080)
        reset = await establish(40001)
        net.inject(segment(40001, "R"))
        tcp.flush()
        await asyncio.sleep(0)
        reset.write(b"late")  # no RuntimeError
        assert reset.is_closing()

        closed = await establish(40002)
        closed.close()
        closed.write(b"after close")
        tcp.flush()
        assert not any(bytes(p[TCP].payload) == b"after close" for p in net.sent())

        eof = await establish(40003)
        eof.write_eof()
        with pytest.raises(RuntimeError):
            eof.write(b"after eof")
        assert tcp.app_errors == 0

    asyncio.run(go())


def test_a_backlog_holds_connections_and_their_data_until_serving_starts() -> None:
    """listen() before accept(): with start_serving=False connections
    complete into the accept queue, up to the backlog (beyond it a SYN is
    dropped, as Linux does: the peer retransmits), their data waits;
    start_serving() hands them to the application, data included."""

    async def go() -> None:
        net, stack, tcp = world()
        made: list[asyncio.Transport] = []
        received: list[bytes] = []

        class App(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)  # type: ignore[arg-type]

            def data_received(self, data: bytes) -> None:
                received.append(data)

        server = await stack.create_server(App, "0.0.0.0", 8080, backlog=2, start_serving=False)
        assert not server.is_serving()

        def segment(sport: int, flags: str, ack: int, data: bytes = b"") -> Ether:
            return (
                Ether(src=PEER_MAC, dst=OUR_MAC)
                / IP(src=PEER4, dst=OUR4)
                / TCP(sport=sport, dport=8080, flags=flags, seq=1001, ack=ack)
                / data
            )

        for sport in (40001, 40002):
            synack = handshake(net, 8080, sport=sport)
            assert synack is not None
            net.inject(segment(sport, "A", synack[TCP].seq + 1))
            net.inject(segment(sport, "PA", synack[TCP].seq + 1, f"hi {sport}".encode()))
            tcp.flush()
            await asyncio.sleep(0)
        net.sent()
        assert handshake(net, 8080, sport=40003) is None  # the queue is full: the SYN is dropped
        assert made == []
        await server.start_serving()
        await asyncio.sleep(0)
        assert len(made) == 2 and server.is_serving()
        assert sorted(received) == [b"hi 40001", b"hi 40002"]

    asyncio.run(go())


def test_so_linger_options_are_checked_and_read_back() -> None:
    from shardnet.shards.tcp.config import TcpConfig
    from shardnet.shards.transport.tcp import config_with

    assert config_with(TcpConfig(), {"SO_LINGER": (1, 0)}).linger_s == 0.0
    assert config_with(TcpConfig(), {"SO_LINGER": (1, 5)}).linger_s == 5.0
    assert config_with(TcpConfig(), {"SO_LINGER": (0, 5)}).linger_s is None
    with pytest.raises(OSError) as exc:
        config_with(TcpConfig(), {"SO_LINGER": (1, -1)})
    assert exc.value.errno == errno.EINVAL


def test_listener_counters_reach_the_gauges() -> None:
    """ctl stats shows what a listener did: SYNs received, and dropped when
    the accept queue is full."""

    async def go() -> None:
        net, stack, tcp = world()
        await stack.create_server(asyncio.Protocol, "0.0.0.0", 8080, backlog=1, start_serving=False)
        synack = handshake(net, 8080, sport=40001)
        assert synack is not None
        net.inject(
            Ether(src=PEER_MAC, dst=OUR_MAC)
            / IP(src=PEER4, dst=OUR4)
            / TCP(sport=40001, dport=8080, flags="A", seq=1001, ack=synack[TCP].seq + 1)
        )
        assert handshake(net, 8080, sport=40002) is None  # the accept queue is full
        gauges = tcp.gauges()
        assert gauges["tcp_listen/syn_received"] == 2 and gauges["tcp_listen/syns_dropped"] == 1

    asyncio.run(go())


def test_a_close_answering_the_peers_fin_is_one_segment_and_frees_the_connection() -> None:
    """A server that closes when the peer's FIN arrives (asyncio's default
    ``eof_received``, as echo): the ACK of that FIN leaves with our FIN, one
    FIN|ACK; once the peer ACKs it the connection and its protocol are
    freed by reference counting alone (no cycle left for the cyclic GC)."""

    async def go() -> None:
        net, stack, tcp = world()
        made: list[asyncio.Protocol] = []

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                made.append(self)

        def segment(flags: str, seq: int, ack: int) -> Ether:
            return (
                Ether(src=PEER_MAC, dst=OUR_MAC)
                / IP(src=PEER4, dst=OUR4)
                / TCP(sport=40000, dport=8080, flags=flags, seq=seq, ack=ack)
            )

        await stack.create_server(Server, "0.0.0.0", 8080)
        synack = handshake(net, 8080)
        assert synack is not None
        iss = synack[TCP].seq
        net.inject(segment("A", 1001, iss + 1))
        tcp.flush()
        await asyncio.sleep(0)
        net.sent()
        protocol = weakref.ref(made.pop())
        net.inject(segment("FA", 1001, iss + 1))
        tcp.flush()
        out = net.sent()
        assert [(p[TCP].flags, p[TCP].seq, p[TCP].ack) for p in out] == [("FA", iss + 1, 1002)]
        net.inject(segment("A", 1002, iss + 2))
        tcp.flush()
        for _ in range(3):
            await asyncio.sleep(0)  # connection_lost runs
        assert not tcp.conns and protocol() is None

    gc.disable()
    try:
        asyncio.run(go())
    finally:
        gc.enable()
