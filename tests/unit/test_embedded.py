"""The embedded stack (``shardnet.embedded.Stack``): one shard in this
process over a channel link, driven with crafted frames and with a second
stack on the other end of the cable (``Stack.pair``). No root, no
namespaces. Addresses: 198.18.0.0/15, 2001:db8::/32, fe80::/10 only."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.l2 import ARP, Ether

from shardnet.common.client import Client
from shardnet.common.config import ConfigError, StackConfig
from shardnet.common.control_api import ControlApi, ControlError
from shardnet.common.messages import Event
from shardnet.dispatcher.link import ChannelLink, LinkError
from shardnet.embedded import Stack, connect
from shardnet.scripts import ctl

OUR_MAC, PEER_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
OUR4, PEER4 = "198.18.0.2", "198.18.0.1"
# DAD in one 50 ms probe, no router solicitations: IPv6 is usable at once.
FAST_NDP = {
    "dup_addr_detect_transmits": 1,
    "retrans_timer_s": 0.05,
    "max_dad_delay_s": 0,
    "max_rtr_solicitations": 0,
}
MB = 1 << 20


def run(coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(timeout):  # no extra task: tests count tasks
            await coro

    asyncio.run(guarded())


async def until(pred: Callable[[], Any], timeout: float = 2.0) -> Any:
    """Poll ``pred`` on the loop until it returns something true."""
    async with asyncio.timeout(timeout):
        while not (value := pred()):
            await asyncio.sleep(0.002)
        return value


def frames_of(stack: Stack) -> list[Ether]:
    return [Ether(f) for f in stack.link.collect()]


async def replies(stack: Stack, match: Callable[[Ether], bool]) -> list[Ether]:
    got: list[Ether] = []

    def seen() -> list[Ether]:
        got.extend(p for p in frames_of(stack) if match(p))
        return got

    return await until(seen)


# --- crafted frames ------------------------------------------------------------------


def test_answers_arp_and_ping() -> None:
    async def go() -> None:
        async with Stack(mac=OUR_MAC, ipv4=[OUR4 + "/24"], ndp=FAST_NDP) as stack:
            who = Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
                op=1, hwsrc=PEER_MAC, psrc=PEER4, pdst=OUR4
            )
            stack.link.inject(bytes(who))
            (reply,) = await replies(stack, lambda p: ARP in p and p[ARP].op == 2)
            assert reply[ARP].hwsrc == OUR_MAC and reply[ARP].psrc == OUR4
            assert reply[ARP].pdst == PEER4 and reply.dst == PEER_MAC
            ping = (
                Ether(src=PEER_MAC, dst=OUR_MAC)
                / IP(src=PEER4, dst=OUR4)
                / ICMP(type=8, id=7, seq=1)
                / b"embedded"
            )
            stack.link.inject(bytes(ping))
            (pong,) = await replies(stack, lambda p: ICMP in p)
            assert pong[ICMP].type == 0 and pong[ICMP].id == 7 and pong[ICMP].seq == 1
            assert pong[IP].src == OUR4 and pong[IP].dst == PEER4 and pong.dst == PEER_MAC
            assert bytes(pong[ICMP].payload) == b"embedded"
            rx = stack.stats()["dispatcher"]["link_rx_frames"]
            assert rx == 2

    run(go())


def test_fragments_are_reassembled_before_the_shard() -> None:
    """IPv4 fragments through the dispatcher's reassembler, as app.py does."""

    async def go() -> None:
        async with Stack(mac=OUR_MAC, ipv4=[OUR4 + "/24"], ndp=FAST_NDP) as stack:
            got: list[bytes] = []

            class Sink(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    got.append(data)

            await stack.create_datagram_endpoint(Sink, local_addr=("0.0.0.0", 9000))
            stack.link.inject(
                bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=PEER4, pdst=OUR4))
            )
            payload = os.urandom(3000)
            dgram = IP(src=PEER4, dst=OUR4, id=99) / UDP(sport=5000, dport=9000) / payload
            for piece in reversed(fragment(dgram, fragsize=1200)):
                stack.link.inject(bytes(Ether(src=PEER_MAC, dst=OUR_MAC) / piece))
            await until(lambda: got)
            assert got == [payload]
            assert stack.stats()["dispatcher"]["fragments"] == 3

    run(go())


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(ValueError):
        Stack(ipv4=["198.18.0.300/24"])
    with pytest.raises(ConfigError):
        Stack(ipv6=["2001:db8::1"])  # no prefix length
    with pytest.raises(ConfigError):
        Stack(ndp={"no_such_setting": 1})
    with pytest.raises(ConfigError):
        Stack(serve=["telnet:23"])
    with pytest.raises(OSError):
        Stack(mac="01:00:5e:00:00:01")  # multicast
    with pytest.raises(ConfigError):
        Stack(link=ChannelLink(mac=OUR_MAC), mac=PEER_MAC)
    with pytest.raises(LinkError):
        Stack(mac=bytes.fromhex("ffffffffffff"))  # broadcast, given as bytes


def test_api_before_start_is_an_error() -> None:
    stack = Stack(ipv4=[OUR4 + "/24"])
    with pytest.raises(ControlError):
        stack.nics()
    with pytest.raises(RuntimeError):
        stack.api  # noqa: B018
    stack.link.close()


# --- two stacks on one cable -------------------------------------------------------------


async def serve_echo(stack: Stack, port: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    await stack.start_server(echo, None, port)


async def echo_mb(client: Stack, host: str, port: int) -> None:
    reader, writer = await client.open_connection(host, port)
    payload = os.urandom(MB)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = await reader.read(-1)  # until the server's FIN
    await sender
    writer.close()
    assert len(got) == MB and got == payload


def paired(**common: Any) -> tuple[Stack, Stack]:
    return Stack.pair(ndp=FAST_NDP, **common)


def test_tcp_echo_both_ways_ipv4_and_ipv6() -> None:
    async def go() -> None:
        a, b = paired()
        async with a, b:
            await asyncio.gather(a.wait_dad(), b.wait_dad())
            await serve_echo(a, 7)
            await serve_echo(b, 7)
            await echo_mb(a, "198.18.0.2", 7)
            await echo_mb(b, "2001:db8::1", 7)
            conns = a.conns()
            assert all(c["shard"] == 0 for c in conns)

    run(go(), timeout=20)


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))
        if data.startswith(b"ping"):
            assert self.transport is not None
            self.transport.sendto(b"pong" + data[4:], addr)


def test_udp_datagrams_both_ways_ipv4_and_ipv6() -> None:
    async def go() -> None:
        a, b = paired()
        async with a, b:
            await asyncio.gather(a.wait_dad(), b.wait_dad())
            for server, client, host in ((b, a, "198.18.0.2"), (a, b, "2001:db8::1")):
                _, srv = await server.create_datagram_endpoint(Collect, local_addr=("::", 5353))
                transport, cli = await client.create_datagram_endpoint(
                    Collect, remote_addr=(host, 5353)
                )
                transport.sendto(b"ping " + host.encode())
                await until(lambda cli=cli: cli.got)  # type: ignore[misc]
                assert cli.got[0][0] == b"pong " + host.encode()
                assert cli.got[0][1][:2] == (host, 5353)
                peer = srv.got[0][1][0]  # type: ignore[attr-defined]
                assert peer in ("::ffff:198.18.0.1", "2001:db8::2")
                transport.close()

    run(go())


def test_multicast_between_two_stacks() -> None:
    """b joins a group on each family (IGMPv3 / MLDv2 report on the cable);
    a sends to it; b's member socket gets it, and a's own member socket gets
    the looped copy (IP_MULTICAST_LOOP)."""

    async def go() -> None:
        a, b = paired()
        async with a, b:
            await asyncio.gather(a.wait_dad(), b.wait_dad())
            for group, local in (("234.198.18.7", "0.0.0.0"), ("ff3e:40:2001:db8::7", "::")):
                opts = {"IPV6_V6ONLY": True} if ":" in group else {}
                join = "IPV6_JOIN_GROUP" if ":" in group else "IP_ADD_MEMBERSHIP"
                tb, rb = await b.create_datagram_endpoint(
                    Collect, local_addr=(local, 6000), options=opts
                )
                ta, ra = await a.create_datagram_endpoint(
                    Collect, local_addr=(local, 6000), options=opts
                )
                tb.set_option(join, group)
                ta.set_option(join, group)
                assert [g["group"] for g in b.groups()] == [group]
                ta.sendto(b"hello group", (group, 6000))
                await until(lambda rb=rb, ra=ra: rb.got and ra.got)  # type: ignore[misc]
                assert rb.got[0][0] == ra.got[0][0] == b"hello group"
                tb.close()
                ta.close()
                await until(lambda: not b.groups())

    run(go())


def test_igmp_and_ndp_counts_reach_the_stats() -> None:
    """The machines' own counters (reports sent, queries ignored...) are in
    the shard's stats, counted once however often the stats are read."""

    async def go() -> None:
        a, b = paired()
        async with a, b:
            t, _ = await a.create_datagram_endpoint(Collect, local_addr=("0.0.0.0", 6000))
            t.set_option("IP_ADD_MEMBERSHIP", "234.198.18.7")
            # No loop turn between the reads: the counts must not move.
            reads = [a.stats()["shards"][0]["counters"] for _ in range(3)]
            sent = [c["net/igmp_reports_sent"] for c in reads]
            assert sent[0] == sent[1] == sent[2] and 1 <= sent[0] <= 2  # Robustness 2
            assert all(c["net/ndp_mld_reports"] >= 1 for c in reads)  # solicited-node joins

    run(go())


def test_loopback_goes_through_looped_records() -> None:
    """Loopback routing: a stack talking to itself (its address, 127.0.0.1, ::1)."""

    async def go() -> None:
        async with Stack(ipv4=[OUR4 + "/24"], ipv6=["2001:db8::2/64"], ndp=FAST_NDP) as s:
            await s.wait_dad()
            await serve_echo(s, 7)
            for host in (OUR4, "127.0.0.1", "::1"):
                reader, writer = await s.open_connection(host, 7)
                writer.write(b"hello " + host.encode())
                assert await reader.readexactly(6 + len(host)) == b"hello " + host.encode()
                writer.close()
            wire = frames_of(s)  # none of it went on the wire
            assert not any(IP in p and p[IP].dst in (OUR4, "127.0.0.1") for p in wire)
            assert s.stats()["shards"][0]["counters"]["rx_frames"] > 10  # looped records

    run(go())


# --- control: the Client's methods, in process -------------------------------------------


def test_control_ops_through_the_client_methods() -> None:
    async def go() -> None:
        a, b = paired()
        async with a, b:
            await a.wait_dad()
            assert a.hello()["shards"] == 1
            assert [n["name"] for n in a.nics()] == ["pair0", "lo"]
            lls = [{r["addr"] for r in s.addrs() if r["addr"].startswith("fe80:")} for s in (a, b)]
            assert lls[0] and lls[0].isdisjoint(lls[1])  # each stack its RFC 7217 key
            assert a.nic("pair0")["kind"] == "channel"
            row = a.addr_add("pair0", "198.18.1.1/24", behavior="first-primary")
            assert row["addr"] == "198.18.1.1" and row["behavior"] == "first-primary"
            assert any(r["addr"] == "198.18.1.1" for r in a.addrs())
            a.addr_remove("pair0", "198.18.1.1/24")
            assert all(r["addr"] != "198.18.1.1" for r in a.addrs())
            with pytest.raises(ControlError):
                a.addr_add("pair0", "198.18.1.1")  # no prefix length
            a.route_add("198.19.7.0/24", via="198.18.0.2", metric=5)
            assert any(r["dst"] == "198.19.7.0" and r["metric"] == 5 for r in a.routes())
            a.route_remove("198.19.7.0/24", via="198.18.0.2", metric=5)
            assert all(r["dst"] != "198.19.7.0" for r in a.routes())
            lo = a.nic_create("lo1", mtu=9000, context={"owner": "test"})
            assert lo["loopback"] and lo["mtu"] == 9000 and lo["context"] == {"owner": "test"}
            assert a.nic_disable("lo1")["enabled"] is False
            assert a.nic_enable("lo1")["enabled"] is True
            with pytest.raises(ControlError) as exc:
                a.nic_create("lo1")
            assert exc.value.errno == errno.EEXIST
            a.nic_remove("lo1")
            with pytest.raises(ControlError):
                a.nic("lo1")
            assert a.forwarding() is False
            assert a.forwarding(True) is True and a.forwarding(False) is False
            assert a.ndp_get()["dup_addr_detect_transmits"] == 1
            assert a.ndp_set({"retrans_timer_s": "0.2"})["retrans_timer_s"] == 0.2
            with pytest.raises(ControlError):
                a.call("no_such_op")
            await until(lambda: any(n["ip"] == "198.18.0.2" for n in a.neigh()) or True)
            stats = a.stats()
            shard = stats["shards"][0]
            assert shard["counters"]["tx_frames"] > 0 and stats["processes"]["dispatcher"]
            assert a.shards()["shards"][0]["ready"] is True
            # ctl's renderer takes what the embedded stack answers
            assert "pair0" in ctl.render("nics", a.nics())
            assert "SHARD" in ctl.render("stats", stats)

    run(go())


def test_events_iterator_gets_ndp_events() -> None:
    async def go() -> None:
        stack = Stack(ipv6=["2001:db8::2/64"], ndp=FAST_NDP)
        events = stack.events()  # before start: the start's DAD results too
        async with stack:
            seen: list[Event] = []
            async for event in events:
                seen.append(event)
                if event.type == "dad_result" and event.data.get("addr") == "2001:db8::2":
                    break
            assert isinstance(seen[-1], Event)
            late = stack.events()
        assert [e async for e in late] == []  # ends when the stack closes

    run(go())


def test_close_leaves_no_task_running() -> None:
    async def go() -> None:
        a, b = paired(serve=["echo:7", "discard:9"], drain_s=0.2)
        async with a, b:
            await serve_echo(b, 70)
            reader, writer = await a.open_connection("198.18.0.2", 7)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            reader2, _ = await a.open_connection("198.18.0.2", 70)  # left open
            events = a.events()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert len([e async for e in events]) < 100  # the stream ended
        with contextlib.suppress(ConnectionResetError):  # b's drain ran out: RST
            assert await reader2.read() == b""
        with pytest.raises(ControlError):
            a.nics()
        await a.close()  # twice is fine

    run(go())


def test_connect_refuses_mismatched_or_double_wiring() -> None:
    a, b = Stack.pair()
    c = Stack()
    with pytest.raises(ValueError):
        connect(a, c)
    with pytest.raises(ValueError):
        connect(c, c)
    for s in (a, b, c):
        s.link.close()


def test_config_and_keywords_merge() -> None:
    cfg = StackConfig(ipv4=("198.18.0.9/24",), mtu=9000, gateway4="198.18.0.1")
    s = Stack(config=cfg, ipv6=["2001:db8::9/64"], slaac=False)
    assert s.config.ipv4 == ("198.18.0.9/24",) and s.config.ipv6 == ("2001:db8::9/64",)
    assert s.link.mtu == 9000 and s.config.shards == 1 and s.config.slaac is False
    assert s.config.tap is None and s.config.packet is None
    s.link.close()


# --- ControlApi: the typed helpers send what ``shardnet ctl`` sends ------------------------


class Recorder(ControlApi):
    def __init__(self, value: Any = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.value = value

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, args))
        return self.value


def ctl_request(*argv: str) -> tuple[str, dict[str, Any]]:
    p = argparse.ArgumentParser()
    ctl.add_arguments(p)
    return ctl.request_of(p.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("method", "argv"),
    [
        (lambda c: c.nics(), ("nics",)),
        (lambda c: c.addrs(), ("addrs",)),
        (lambda c: c.routes(), ("routes",)),
        (lambda c: c.neigh(), ("neigh",)),
        (lambda c: c.stats(), ("stats",)),
        (lambda c: c.shards(), ("shards",)),
        (lambda c: c.addr_add("sntap0", "198.18.0.3/24"), ("addr", "add", "sntap0", "198.18.0.3/24")),
        (
            lambda c: c.addr_add("sntap0", "198.18.0.3/24", behavior="never-primary"),
            ("addr", "add", "sntap0", "198.18.0.3/24", "--never-primary"),
        ),
        (lambda c: c.addr_remove("sntap0", "198.18.0.3/24"), ("addr", "del", "sntap0", "198.18.0.3/24")),
        (
            lambda c: c.route_add("198.19.0.0/24", via="198.18.0.1", metric=3),
            ("route", "add", "198.19.0.0/24", "--via", "198.18.0.1", "--metric", "3"),
        ),
        (
            lambda c: c.route_remove("198.19.0.0/24", dev="sntap0"),
            ("route", "del", "198.19.0.0/24", "--dev", "sntap0"),
        ),
        (lambda c: c.nic_enable("lo1"), ("nic", "up", "lo1")),
        (lambda c: c.nic_disable("lo1"), ("nic", "down", "lo1")),
        (lambda c: c.nic_remove("lo1"), ("nic", "del", "lo1")),
        (lambda c: c.ndp_get(), ("ndp",)),
        (lambda c: c.ndp_get("sntap0"), ("ndp", "sntap0")),
        (
            lambda c: c.ndp_set({"retrans_timer_s": "2"}, "sntap0"),
            ("ndp", "sntap0", "--set", "retrans_timer_s=2"),
        ),
        (lambda c: c.tcp_get(), ("tcp",)),
        (lambda c: c.tcp_set({"fin_timeout_s": "5"}), ("tcp", "--set", "fin_timeout_s=5")),
        (lambda c: c.ip_get(), ("ip",)),
        (lambda c: c.ip_set({"default_ttl": "9"}), ("ip", "--set", "default_ttl=9")),
    ],
)  # fmt: skip
def test_typed_helpers_send_what_ctl_sends(
    method: Callable[[ControlApi], Any], argv: tuple[str, ...]
) -> None:
    rec = Recorder([])
    method(rec)
    assert rec.calls == [ctl_request(*argv)]


def test_connections_come_a_page_at_a_time_from_every_shard() -> None:
    """``conns`` (and ``ctl conns``) never asks for everything at once:
    each shard is read in pages until a short one, listeners last."""

    class Shards(ControlApi):
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []
            self.conns_of = {0: 5, 1: 2}

        def call(self, op: str, **args: Any) -> Any:
            if op == "shards":
                return {"shards": [{"shard": 0}, {"shard": 1}]}
            assert op == "conns"
            self.calls.append(args)
            shard, offset, limit = args["shard"], args["offset"], args["limit"]
            n = self.conns_of[shard]
            rows = [{"shard": shard, "n": i} for i in range(offset, min(offset + limit, n))]
            if offset + limit >= n:
                rows.append({"shard": shard, "state": "LISTEN"})
            return rows

    api = Shards()
    rows = list(api.iter_conns(page=2))
    assert [(r["shard"], r.get("n", "L")) for r in rows] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, "L"), (1, 0), (1, 1), (1, "L"),
    ]  # fmt: skip
    assert [(c["shard"], c["offset"]) for c in api.calls] == [(0, 0), (0, 2), (0, 4), (1, 0)]


def test_forwarding_and_nic_helpers() -> None:
    rec = Recorder({"forwarding": True})
    assert rec.forwarding(True) is True
    assert rec.calls[-1] == ctl_request("forwarding", "on")
    rec.forwarding()
    assert rec.calls[-1] == ctl_request("forwarding")
    rec = Recorder([{"id": 1, "name": "sntap0"}, {"id": 2, "name": "lo"}])
    assert rec.nic("lo") == {"id": 2, "name": "lo"} and rec.nic(1)["name"] == "sntap0"
    with pytest.raises(ControlError):
        rec.nic("nope")
    rec.nic_create("lo1", mac="02:00:00:00:00:09", context={"a": 1})
    assert rec.calls[-1] == (
        "nic_add",
        {
            "name": "lo1",
            "loopback": True,
            "mtu": 65536,
            "disabled": False,
            "mac": "02:00:00:00:00:09",
            "context": {"a": 1},
        },
    )


def test_client_has_the_typed_helpers() -> None:
    assert issubclass(Client, ControlApi) and issubclass(Stack, ControlApi)
    for name in ("nics", "addr_add", "route_add", "ndp_set", "forwarding", "nic_create", "tcp_set"):
        assert getattr(Client, name) is getattr(ControlApi, name)


def test_a_delayed_ack_fires_at_its_deadline_not_at_a_polling_tick() -> None:
    """The shard arms the loop's timer for the nearest deadline when it
    appears: a delayed ACK (40 ms, RFC 1122 §4.2.3.2) leaves 40 ms after the
    data, never before and not late. (It fails when an input that creates a
    deadline does not re-arm the timer: the ACK then waits for whatever the
    timer was armed for.)"""

    async def go() -> None:
        a, b = paired()
        async with a, b:
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()

            async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                ready.set()
                while await reader.read(1 << 16):
                    pass

            await a.start_server(sink, None, 7)
            _, writer = await b.open_connection("198.18.0.1", 7)
            await ready.wait()
            acks: list[float] = []
            cable = a.link.writer.on_write
            assert cable is not None

            def watch(frame: bytes, vnet: Any) -> None:
                p = Ether(frame)
                if p.haslayer("TCP") and not bytes(p["TCP"].payload) and p["TCP"].flags == "A":
                    acks.append(loop.time())
                cable(frame, vnet)

            a.link.writer.on_write = watch
            delays = []
            for i in range(5):
                await asyncio.sleep(0.2 + 0.037 * i)  # idle, nothing else due; any phase
                acks.clear()
                sent = loop.time()
                writer.write(b"x" * 100)  # one small segment: the ACK is delayed
                await until(lambda: acks, timeout=1.0)
                delays.append(acks[0] - sent)
            writer.close()
            delays.sort()
            assert delays[0] >= 0.035, delays  # never before the delayed-ACK timer
            assert delays[2] < 0.06, delays  # the median: at the timer, not a tick later

    run(go(), timeout=20)
