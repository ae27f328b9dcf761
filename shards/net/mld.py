"""MLD host side for one NIC (RFC 3810 MLDv2, with the RFC 2710 MLDv1
compatibility mode of RFC 3810 §8), sans-I/O, on the membership core shared
with IGMP (``membership.py``: state changes, queries, compatibility modes).

Its users are the sockets' joins (IPV6_JOIN_GROUP, through shard 0's group
control) and the host's own: the solicited-node group of every address,
joined before the address's first DAD probe (RFC 4862 §5.4.2; the NDP
machine asks with ``JoinGroup`` / ``LeaveGroup``).

What is MLD's own:

* §5.2.13: reports are sent from the NIC's link-local address once it is
  usable, from :: before (``link_local`` asks the NDP machine at send time).
* §5: MLDv2 reports go to ff02::16, split so that one fits the IPv6 minimum
  MTU (§5.2.15: never fragmented); in MLDv1 mode (§8.2.1) reports go to the
  group itself and the last listener's leave is a Done to ff02::2 (RFC 2710
  §4). Hop limit 1 and the Router Alert are the sender's (``SendMld``).
* §5.1.8/§5.1.9: an MLDv2 query's QRV and QQIC replace our Robustness and
  Query Interval. The codec checked the query (hop limit 1 and length,
  RFC 3810 §5.1.14, §8.1).
* §6: ff02::1, the all-nodes group, is never reported.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from shardnet.common.addr import IPV6_ANY
from shardnet.common.wire.icmpv6 import ICMPV6_MLD_DONE, ICMPV6_MLD_REPORT
from shardnet.common.wire.ipv6 import ALL_NODES, ALL_ROUTERS
from shardnet.common.wire.mld import (
    DEFAULT_QUERY_INTERVAL_S,
    DEFAULT_ROBUSTNESS,
    MLDV2_ALL_ROUTERS,
    UNSOLICITED_REPORT_INTERVAL_S,
    V1_UNSOLICITED_REPORT_INTERVAL_S,
    MldQuery,
    MldReport,
    MldV1Message,
    MulticastAddressRecord,
    decode_qqic,
)

from .membership import MembershipCore, Record

# Records per MLDv2 report: 8 + 20 * n bytes after the 40-byte IPv6 header
# and the 8-byte Hop-by-Hop header must fit the 1280-byte minimum MTU
# (RFC 3810 §5.2.15: split, never fragment).
MAX_RECORDS_PER_REPORT = 61


@dataclass(frozen=True, slots=True)
class MldConfig:
    """RFC 3810 §9 variables (NDP's ``mld_*`` settings)."""

    robustness: int = DEFAULT_ROBUSTNESS  # §9.1
    # §9.2, until a querier's QQIC says otherwise; with the robustness, it
    # sets the Older Version Querier Present Timeout (§9.12).
    query_interval_s: float = DEFAULT_QUERY_INTERVAL_S
    unsolicited_report_interval_s: float = UNSOLICITED_REPORT_INTERVAL_S  # §9.11


@dataclass(frozen=True, slots=True)
class SendMld:
    """Send ``report`` from ``src`` to ``dst`` with Hop Limit 1 and a
    Hop-by-Hop Router Alert (value 0) (RFC 3810 §5, RFC 2711): an MLDv2
    report to ff02::16, or in MLDv1 compatibility mode (§8.2) an MLDv1
    report to the group itself or a Done to ff02::2 (RFC 2710 §4)."""

    report: MldReport | MldV1Message
    src: bytes
    dst: bytes = MLDV2_ALL_ROUTERS


class MldMachine(MembershipCore[SendMld]):
    NEWEST = 2
    UNREPORTED = ALL_NODES
    UNSPECIFIED = IPV6_ANY

    def __init__(
        self,
        config: MldConfig,
        rng: random.Random,
        link_local: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        self.config = config
        self.link_local = link_local
        super().__init__(
            rng,
            robustness=config.robustness,
            query_interval_s=config.query_interval_s,
            unsolicited_report_interval_s=config.unsolicited_report_interval_s,
            old_unsolicited_report_interval_s=V1_UNSOLICITED_REPORT_INTERVAL_S,
        )

    def set_config(self, config: MldConfig) -> None:
        """New defaults; values a querier set stay until its next query."""
        if self.robustness == self.default_robustness:
            self.robustness = config.robustness
        if self.query_interval_s == self.default_query_interval_s:
            self.query_interval_s = config.query_interval_s
        self.default_robustness = config.robustness
        self.default_query_interval_s = config.query_interval_s
        self.unsolicited_report_interval_s = config.unsolicited_report_interval_s
        self.config = config

    def handle_query(self, now: float, query: MldQuery) -> list[SendMld]:
        """A Multicast Listener Query heard on the NIC (MLDv1 or MLDv2 by
        length, RFC 3810 §8.1)."""
        self.stats.queries_received += 1
        if not self.running:
            return []
        if query.version == 2:
            self.robustness = query.qrv or self.default_robustness
            self.query_interval_s = decode_qqic(query.qqic) or self.default_query_interval_s
        return self._query(
            now,
            query.version,
            query.multicast_address,
            query.max_resp_delay / 1000.0,
            query.sources,
        )

    def handle_report(self, now: float, group: bytes) -> list[SendMld]:
        """Another listener's MLDv1 report: suppresses ours in MLDv1 mode."""
        return self.heard_report(now, group)

    def _source(self) -> bytes:
        return self.link_local() or IPV6_ANY  # §5.2.13

    def _send_records(self, records: list[Record]) -> None:
        out = [MulticastAddressRecord(t, group, sources) for t, group, sources in records]
        src = self._source()
        for i in range(0, len(out), MAX_RECORDS_PER_REPORT):
            self._emit(SendMld(MldReport(out[i : i + MAX_RECORDS_PER_REPORT]), src))

    def _send_old_report(self, group: bytes, version: int) -> None:
        self._emit(SendMld(MldV1Message(ICMPV6_MLD_REPORT, group), self._source(), group))

    def _send_old_leave(self, group: bytes, version: int) -> None:
        self._emit(SendMld(MldV1Message(ICMPV6_MLD_DONE, group), self._source(), ALL_ROUTERS))
