"""IGMP host side for one NIC (RFC 3376 IGMPv3, with the RFC 2236 / RFC 1112
compatibility modes of RFC 3376 §7), sans-I/O, on the membership core shared
with MLD (``membership.py``: state changes, queries, compatibility modes).

What is IGMP's own:

* §4.2: v3 reports go to 224.0.0.22, split so that one fits a 1500-byte MTU
  (§4.2.16: split, never fragment); v1/v2 Membership Reports go to the group
  itself (RFC 2236 §3), a v2 Leave Group to 224.0.0.2 (always sent: the
  "last reporter" flag is an optimisation Linux skips too); IGMPv1 has no
  leave message (RFC 1112): the router times out.
* §7.2.1: an IGMPv1 query (Max Resp Code 0, 8 bytes) or a v2 query starts
  the v1 or v2 Older Version Querier Present timer.
* §9.1: v2/v3 queries without the Router Alert IP option are ignored (the
  caller passes whether it was there); v1 queries never carry it.
* §5 (and RFC 2236 §6): 224.0.0.1, the all-systems group, is never
  reported; a host joins it implicitly.

Left out: source-specific joins (IP_ADD_SOURCE_MEMBERSHIP, INCLUDE-mode
interface state and ALLOW/BLOCK records, RFC 3678) — every join is
any-source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shardnet.common.wire.igmp import (
    ALL_ROUTERS,
    ALL_SYSTEMS,
    DEFAULT_QUERY_INTERVAL_S,
    DEFAULT_ROBUSTNESS,
    IGMPV1_REPORT,
    IGMPV2_LEAVE,
    IGMPV2_REPORT,
    IGMPV3_ALL_ROUTERS,
    UNSOLICITED_REPORT_INTERVAL_S,
    V2_UNSOLICITED_REPORT_INTERVAL_S,
    IgmpGroupRecord,
    IgmpQuery,
    IgmpV2Message,
    IgmpV3Report,
)

from .membership import MAX_GROUPS, MembershipCore, Record

__all__ = ["MAX_GROUPS", "MAX_RECORDS_PER_REPORT", "IgmpConfig", "IgmpMachine", "SendIgmp"]

IPV4_ANY = bytes(4)
# Records per report: 8 + 8 * n bytes must fit a 1500-byte MTU with the
# 24-byte IP header (RFC 3376 §4.2.16: split, never fragment).
MAX_RECORDS_PER_REPORT = 180


@dataclass(frozen=True, slots=True)
class IgmpConfig:
    """RFC 3376 §8 variables a test or an operator may change."""

    robustness: int = DEFAULT_ROBUSTNESS  # §8.1
    query_interval_s: float = DEFAULT_QUERY_INTERVAL_S  # §8.2
    unsolicited_report_interval_s: float = UNSOLICITED_REPORT_INTERVAL_S  # §8.11
    v2_unsolicited_report_interval_s: float = V2_UNSOLICITED_REPORT_INTERVAL_S  # RFC 2236 §8.10


@dataclass(frozen=True, slots=True)
class SendIgmp:
    """Send ``message`` to ``dst`` from the NIC's primary IPv4 address (or
    0.0.0.0 when it has none, §4.2.13), TTL 1, with the Router Alert option."""

    message: IgmpV3Report | IgmpV2Message
    dst: bytes


class IgmpMachine(MembershipCore[SendIgmp]):
    NEWEST = 3
    UNREPORTED = ALL_SYSTEMS
    UNSPECIFIED = IPV4_ANY

    def __init__(self, config: IgmpConfig | None = None, rng: random.Random | None = None) -> None:
        self.config = config or IgmpConfig()
        super().__init__(
            rng or random.Random(0),
            robustness=self.config.robustness,
            query_interval_s=self.config.query_interval_s,
            unsolicited_report_interval_s=self.config.unsolicited_report_interval_s,
            old_unsolicited_report_interval_s=self.config.v2_unsolicited_report_interval_s,
        )

    def handle_query(self, now: float, query: IgmpQuery, *, router_alert: bool) -> list[SendIgmp]:
        """A Membership Query heard on the NIC (to 224.0.0.1 or to the group)."""
        self.stats.queries_received += 1
        if not self.running:
            return []
        if query.version >= 2 and not router_alert:  # §9.1
            self.stats.queries_ignored += 1
            return []
        if query.version == 3:
            self.robustness = query.qrv or self.default_robustness
            self.query_interval_s = query.query_interval_s or self.default_query_interval_s
        return self._query(now, query.version, query.group, query.max_resp_ds / 10.0, query.sources)

    def handle_report(self, now: float, msg: IgmpV2Message) -> None:
        """Another member's v1/v2 report: suppresses ours in v1/v2 mode."""
        self.heard_report(now, msg.group)

    def _send_records(self, records: list[Record]) -> None:
        out = [IgmpGroupRecord(t, group, sources) for t, group, sources in records]
        for i in range(0, len(out), MAX_RECORDS_PER_REPORT):
            self._emit(
                SendIgmp(IgmpV3Report(out[i : i + MAX_RECORDS_PER_REPORT]), IGMPV3_ALL_ROUTERS)
            )

    def _send_old_report(self, group: bytes, version: int) -> None:
        kind = IGMPV1_REPORT if version == 1 else IGMPV2_REPORT
        self._emit(SendIgmp(IgmpV2Message(kind, group), group))  # RFC 2236 §3: to the group

    def _send_old_leave(self, group: bytes, version: int) -> None:
        if version == 2:  # RFC 2236 §3: Leave Group to all-routers; v1 has none
            self._emit(SendIgmp(IgmpV2Message(IGMPV2_LEAVE, group), ALL_ROUTERS))
