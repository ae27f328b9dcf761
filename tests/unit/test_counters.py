"""One counter model: every drop, a codec's or the network layer's, is a
``Drop`` under a layer and reaches ``shardnet_drops_total``; the keys
``ctl stats`` has always shown stay."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.dispatcher.metrics import StackCollector
from shardnet.dispatcher.stats import StatsBook
from shardnet.shards.counters import NET_REASONS, NetEvent, ShardCounters


def test_codec_reasons_are_not_network_layer_reasons() -> None:
    assert Drop.IPV4_TRUNCATED not in NET_REASONS and Drop.LINK_FRAME_TOO_LONG not in NET_REASONS
    assert {Drop.IPV4_MARTIAN, Drop.NEIGHBOUR_UNRESOLVED, Drop.FORWARD_NO_ROUTE} <= NET_REASONS


def test_a_network_layer_drop_is_a_drop_and_keeps_its_ctl_stats_key() -> None:
    c = ShardCounters()
    c.refuse("ipv4", Drop.IPV4_MARTIAN)
    c.refuse("ipv4", Drop.FORWARD_NO_ROUTE)
    c.refuse("ipv6", Drop.FORWARD_NO_ROUTE)
    c.drop(MalformedPacket(Drop.UDP_BAD_CHECKSUM, layer="udp"))
    c.events[NetEvent.LOOPED_OUT] += 1
    c.icmp_errors[(4, 3, 3)] += 1
    c.not_for_us = 5
    stats = c.snapshot(1, more_drops={("arp", Drop.NEIGHBOUR_QUEUE_OVERFLOW): 2})
    assert stats.drops == {
        "ipv4/ipv4_martian": 1,
        "ipv4/forward_no_route": 1,
        "ipv6/forward_no_route": 1,
        "udp/udp_bad_checksum": 1,
        "arp/neighbour_queue_overflow": 2,
        "eth/not_for_us": 5,
    }
    counters = stats.counters
    assert counters["net/ipv4_martian"] == 1 and counters["net/forward_no_route"] == 2
    assert counters["net/neighbour_queue_overflow"] == 2 and counters["not_for_us"] == 5
    assert counters["net/looped_out"] == 1 and counters["net/icmpv4_errors_sent/3/3"] == 1
    assert "net/udp_bad_checksum" not in counters  # codec drops were never net/ keys
    assert c.by_reason()[Drop.FORWARD_NO_ROUTE] == 2


def test_network_layer_drops_reach_the_metrics() -> None:
    c = ShardCounters()
    c.refuse("ipv4", Drop.IPV4_MARTIAN)
    book = StatsBook(2)
    book.record(c.snapshot(1))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(book, lambda: {"dispatcher": 0, "shards": {}}, lambda: [0, 0]))
    text = generate_latest(registry).decode()
    assert 'shardnet_drops_total{layer="ipv4",reason="ipv4_martian",shard="1"} 1.0' in text
