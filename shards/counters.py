"""A shard's plain integer counters (no metric library on the data path).

One model for every count: a drop is a ``Drop`` reason counted under a layer
(the ``layer`` and ``reason`` labels of ``shardnet_drops_total``), whether a
codec raised it (``MalformedPacket``) or the network layer refused a
well-formed packet (``refuse``); what the network layer did that is not a
drop is a ``NetEvent``. The loop snapshots them into a ``Stats`` message about
once a second; the dispatcher turns the snapshots into Prometheus metrics.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from shardnet.common.messages import Stats
from shardnet.common.wire.errors import Drop, MalformedPacket


class NetEvent(enum.Enum):
    """What the network layer did, other than dropping: the value is the
    ``net/<value>`` key of ``ctl stats``."""

    IPV4_LOOPED_IN = "ipv4_looped_in"
    IPV6_LOOPED_IN = "ipv6_looped_in"
    ICMPV4_ECHO_REPLIES = "icmpv4_echo_replies"
    ICMPV6_ECHO_REPLIES = "icmpv6_echo_replies"
    LOOPED_OUT = "looped_out"
    FORWARDED_V4 = "forwarded_v4"
    FORWARDED_V6 = "forwarded_v6"


# The refusals ``ctl stats`` has always shown as ``net/<reason>`` too (summed
# over layers): the reasons after the codecs' in ``Drop``.
NET_REASONS = frozenset(list(Drop)[list(Drop).index(Drop.IPV4_MARTIAN) :])


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
    tcp_segments_in: int = 0
    tcp_segments_out: int = 0
    tcp_retransmits: int = 0
    drops: Counter[tuple[str, Drop]] = field(default_factory=Counter)  # (layer, reason)
    events: Counter[NetEvent] = field(default_factory=Counter)
    # ICMP errors sent, by (IP version, type, code).
    icmp_errors: Counter[tuple[int, int, int]] = field(default_factory=Counter)
    # The protocol machines' own counts (NDP, IGMP, ...), set at snapshot time.
    net: dict[str, int] = field(default_factory=dict)

    def drop(self, exc: MalformedPacket) -> None:
        self.drops[(exc.layer, exc.reason)] += 1

    def refuse(self, layer: str, reason: Drop) -> None:
        """A well-formed packet dropped at ``layer`` (or not sent) for ``reason``."""
        self.drops[(layer, reason)] += 1

    def by_reason(self) -> Counter[Drop | NetEvent]:
        """Drops summed over layers, and events: what tests assert on."""
        total: Counter[Drop | NetEvent] = Counter()
        for (_layer, reason), n in self.drops.items():
            total[reason] += n
        total.update(self.events)
        return total

    def snapshot(
        self,
        shard: int,
        gauges: dict[str, int] | None = None,
        more_drops: dict[tuple[str, Drop], int] | None = None,
    ) -> Stats:
        """``more_drops``: drops the protocol machines keep themselves
        (absolute counts, added to this snapshot only)."""
        counters = {
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "tx_drops": self.tx_drops,
            "not_for_us": self.not_for_us,
            "unhandled": self.unhandled,
            "internal_errors": self.internal_errors,
            # ctl stats' name for the SYN gate's drops (shards/ingress.py)
            "syn_gate_drops": self.drops[("tcp", Drop.TCP_SYN_OVER_RATE)],
            "tcp_segments_in": self.tcp_segments_in,
            "tcp_segments_out": self.tcp_segments_out,
            "tcp_retransmits": self.tcp_retransmits,
        }
        all_drops = Counter(self.drops)
        if more_drops:
            all_drops.update(more_drops)
        if self.not_for_us:
            all_drops[("eth", Drop.ETH_NOT_FOR_US)] = self.not_for_us
        # The network layer's keys, as ``ctl stats`` has always shown them.
        for (_layer, reason), n in all_drops.items():
            if reason in NET_REASONS:
                key = f"net/{reason.value}"
                counters[key] = counters.get(key, 0) + n
        for event, n in self.events.items():
            counters[f"net/{event.value}"] = n
        for (version, type_, code), n in self.icmp_errors.items():
            counters[f"net/icmpv{version}_errors_sent/{type_}/{code}"] = n
        counters.update({f"net/{k}": v for k, v in self.net.items()})
        drops = {f"{layer}/{reason.value}": n for (layer, reason), n in all_drops.items() if n}
        return Stats(shard, counters, drops, gauges or {})
