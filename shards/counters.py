"""A shard's plain integer counters (no metric library on the data path).

The loop snapshots them into a ``Stats`` message about once a second; the
dispatcher turns the snapshots into Prometheus metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from shardnet.common.messages import Stats
from shardnet.common.wire.errors import MalformedPacket


@dataclass(slots=True)
class ShardCounters:
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_drops: int = 0
    not_for_us: int = 0  # unicast to another MAC (promiscuous links)
    unhandled: int = 0  # well-formed, but no protocol handler yet
    internal_errors: int = 0  # a handler raised something other than MalformedPacket
    syn_gate_drops: int = 0  # SYNs beyond the shard's rate (ingress.SYN_RATE_PER_S)
    tcp_segments_in: int = 0
    tcp_segments_out: int = 0
    tcp_retransmits: int = 0
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)
    net: dict[str, int] = field(default_factory=dict)  # the network layer's own counters

    def drop(self, exc: MalformedPacket) -> None:
        self.drops[(exc.layer, exc.reason.value)] += 1

    def snapshot(self, shard: int, gauges: dict[str, int] | None = None) -> Stats:
        counters = asdict(self)
        del counters["drops"], counters["net"]
        counters.update({f"net/{k}": v for k, v in self.net.items()})
        drops = {f"{layer}/{reason}": n for (layer, reason), n in self.drops.items()}
        return Stats(shard, counters, drops, gauges or {})
