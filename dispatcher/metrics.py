"""``GET /metrics``: Prometheus text exposition of the whole stack.

A custom collector (prometheus_client) reads the dispatcher's counters, the
shards' latest snapshots and psutil's view of every process at scrape time,
so the data path never calls a metric library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .stats import StatsBook

log = logging.getLogger("shardnet.dispatcher")


class StackCollector:
    def __init__(
        self,
        book: StatsBook,
        processes: Callable[[], dict[str, Any]],
        restarts: Callable[[], list[int]],
    ) -> None:
        self.book = book
        self.processes = processes  # {"dispatcher": pid, "shards": {index: pid}}
        self.restarts = restarts
        self._procs: dict[int, psutil.Process] = {}

    def collect(self) -> Iterator[Metric]:
        book, d = self.book, self.book.dispatcher
        yield _counter(
            "shardnet_link_rx_frames", "Frames read from the link.", [], [([], d.link_rx_frames)]
        )
        yield _counter(
            "shardnet_link_rx_bytes", "Bytes read from the link.", [], [([], d.link_rx_bytes)]
        )
        shards = [str(i) for i in range(len(book.shards))]
        totals = [book.totals(i) for i in range(len(shards))]
        per = [c for c, _ in totals]
        yield _counter(
            "shardnet_link_tx_frames",
            "Frames written to the link, by the shard that wrote them.",
            ["shard"],
            [([s], c["tx_frames"]) for s, c in zip(shards, per, strict=True)],
        )
        yield _counter(
            "shardnet_shard_rx_frames",
            "Frames a shard took from its ring.",
            ["shard"],
            [([s], c["rx_frames"]) for s, c in zip(shards, per, strict=True)],
        )
        yield _counter(
            "shardnet_ring_drops",
            "Frames dropped because a shard's ring was full (or the shard restarting).",
            ["shard"],
            [([s], d.ring_drops[int(s)]) for s in shards],
        )
        yield _counter(
            "shardnet_shard_restarts",
            "Times the supervisor restarted a shard.",
            ["shard"],
            [([s], n) for s, n in zip(shards, self.restarts(), strict=True)],
        )
        drops = []
        for s in shards:
            for key, n in sorted(totals[int(s)][1].items()):
                layer, _, reason = key.partition("/")
                drops.append(([s, layer, reason], n))
        drops += [
            ([s, "dispatcher", "control_backlog_full"], d.backlog_drops[int(s)])
            for s in shards
            if d.backlog_drops[int(s)]
        ]
        drops += [(["dispatcher", "link", reason], n) for reason, n in d.link_drops().items()]
        drops += [
            (["dispatcher", "reassembly", reason], n)
            for reason, n in sorted(d.reassembly_drops.items())
        ]
        yield _counter(
            "shardnet_drops",
            "Malformed or refused packets, by layer and reason.",
            ["shard", "layer", "reason"],
            drops,
        )
        conns = []
        segs = []
        retrans = []
        for s, c in zip(shards, per, strict=True):
            last = book.shards[int(s)].last
            gauges = last.gauges if last else {}
            conns += [
                ([s, k.partition("/")[2]], v)
                for k, v in gauges.items()
                if k.startswith("tcp_connections/")
            ]
            segs += [([s, "in"], c["tcp_segments_in"]), ([s, "out"], c["tcp_segments_out"])]
            retrans.append(([s], c["tcp_retransmits"]))
        gauge = GaugeMetricFamily(
            "shardnet_tcp_connections", "TCP connections by state.", labels=["shard", "state"]
        )
        for labels, value in conns:
            gauge.add_metric(labels, value)
        yield gauge
        yield _counter("shardnet_tcp_segments", "TCP segments.", ["shard", "dir"], segs)
        yield _counter(
            "shardnet_tcp_retransmits", "TCP segments retransmitted.", ["shard"], retrans
        )
        yield from self._relay_metrics(shards)
        yield from self._front_metrics(shards)
        yield from self._process_metrics()

    def _relay_metrics(self, shards: list[str]) -> Iterator[Metric]:
        """``--relay``: flows and bytes per shard and protocol, from the
        shards' ``relay/*`` gauges (none without a relay)."""
        gauges = {}
        for s in shards:
            last = self.book.shards[int(s)].last
            g = last.gauges if last else {}
            if "relay/tcp_flows" in g:
                gauges[s] = g
        if not gauges:
            return
        flows = GaugeMetricFamily(
            "shardnet_relay_flows", "Flows being relayed now.", labels=["shard", "proto"]
        )
        for s, g in gauges.items():
            for proto in ("tcp", "udp", "icmp"):
                flows.add_metric([s, proto], g.get(f"relay/{proto}_flows", 0))
        yield flows
        for name, doc in (
            ("opened", "Flows the relay opened (its kernel socket connected)."),
            ("failed", "Flows the relay could not open (refused, unreachable, no socket)."),
            ("over_cap", "Flows refused because the relay's limits were reached."),
            ("denied", "Flows refused by a --relay-rule."),
        ):
            yield _counter(
                f"shardnet_relay_{name}", doc, ["shard", "proto"],
                [([s, p], g.get(f"relay/{p}_{name}", 0)) for s, g in gauges.items()
                 for p in ("tcp", "udp", "icmp")],
            )  # fmt: skip
        yield _counter(
            "shardnet_relay_bytes",
            "Payload bytes relayed: up from the clients, down from the destinations.",
            ["shard", "proto", "dir"],
            [([s, p, d], g.get(f"relay/{p}_bytes_{d}", 0)) for s, g in gauges.items()
             for p in ("tcp", "udp", "icmp") for d in ("up", "down")],
        )  # fmt: skip

    def _front_metrics(self, shards: list[str]) -> Iterator[Metric]:
        """``--socks5``, ``--http-proxy``, ``--forward``: from the shards'
        ``front/*`` gauges (none without a front)."""
        gauges = {}
        for s in shards:
            last = self.book.shards[int(s)].last
            g = last.gauges if last else {}
            if "front/flows" in g:
                gauges[s] = g
        if not gauges:
            return
        flows = GaugeMetricFamily(
            "shardnet_front_flows", "TCP connections the fronts splice now.", labels=["shard"]
        )
        for s, g in gauges.items():
            flows.add_metric([s], g.get("front/flows", 0))
        yield flows
        for name, doc in (
            ("accepted", "Connections the fronts' kernel listeners accepted."),
            ("dialled", "Connections and UDP pairs the fronts opened."),
            ("failed", "Dials that failed (refused, unreachable, timed out)."),
            ("refused", "Clients turned away (bad SOCKS5 or HTTP request, failed login)."),
            ("udp_dropped", "UDP datagrams the fronts dropped (caps, malformed, no pair)."),
            ("resolve_failed", "Names the fronts were asked for that did not resolve."),
        ):
            yield _counter(
                f"shardnet_front_{name}", doc, ["shard"],
                [([s], g.get(f"front/{name}", 0)) for s, g in gauges.items()],
            )  # fmt: skip
        yield _counter(
            "shardnet_front_bytes",
            "Payload bytes spliced: up towards the host programs, down from them.",
            ["shard", "dir"],
            [([s, d], g.get(f"front/bytes_{d}", 0)) for s, g in gauges.items()
             for d in ("up", "down")],
        )  # fmt: skip

    def _process_metrics(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "shardnet_process_cpu_seconds", "CPU time of each process.", labels=["role", "shard"]
        )
        rss = GaugeMetricFamily(
            "shardnet_process_resident_memory_bytes",
            "Resident memory of each process.",
            labels=["role", "shard"],
        )
        procs = self.processes()
        targets = [("dispatcher", "", procs["dispatcher"])]
        targets += [("shard", str(i), pid) for i, pid in procs["shards"].items() if pid]
        live = set()
        for role, shard, pid in targets:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                times = proc.cpu_times()
                mem = proc.memory_info()
            except psutil.Error:
                continue
            live.add(pid)
            cpu.add_metric([role, shard], times.user + times.system)
            rss.add_metric([role, shard], mem.rss)
        for pid in set(self._procs) - live:
            del self._procs[pid]
        yield cpu
        yield rss


def _counter(
    name: str, doc: str, labels: list[str], samples: Sequence[tuple[list[str], float]]
) -> Metric:
    metric = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        metric.add_metric(values, value)
    return metric


def serve_metrics(collector: StackCollector, host: str, port: int) -> Any:
    """Start the HTTP server thread; OSError (port in use) goes to the caller."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
