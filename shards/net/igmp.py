"""IGMP host side for one NIC (RFC 3376 IGMPv3, with the RFC 2236 / RFC 1112
compatibility modes of RFC 3376 §7), sans-I/O.

Sockets join and leave groups (any-source: the interface state of a joined
group is EXCLUDE {}, of a left one INCLUDE {}); the machine says what to send:

* §5.1 state changes: a State-Change Report with a TO_EX {} (join) or TO_IN
  {} (leave) record at once, repeated [Robustness Variable] - 1 more times
  at random intervals within the Unsolicited Report Interval; a new change
  of the same group replaces the pending record and restarts the count.
* §5.2 queries: a General Query arms one interface timer (rules 1-2, a
  random delay within Max Resp Time, the earlier of two pending kept); it
  answers with a Current-State Report of every group (IS_EX {}). A
  Group-Specific Query arms that group's timer (rules 3-5); a
  Group-and-Source-Specific one answers IS_IN (the queried sources), the
  answer for EXCLUDE {} (B - {}), merged with other pending sources.
* §7.2.1 compatibility: an IGMPv1 query (Max Resp Code 0, 8 bytes) or v2
  query starts the Older Version Querier Present timer (Robustness x Query
  Interval + Query Response Interval); while it runs the host speaks that
  version: v1/v2 Membership Reports to the group (joins repeated, as RFC
  2236 §3 repeats unsolicited reports), v2 Leave Group to 224.0.0.2, per
  group response timers with report suppression when another member's
  report for the group is heard (RFC 2236 §3). Switching to an older
  version cancels pending v3 retransmissions and response timers (§7.2.1).
* §5 (and RFC 2236 §6): 224.0.0.1, the all-systems group, is never
  reported; a host joins it implicitly.
* §9.1: v2/v3 queries without the Router Alert IP option are ignored (the
  caller passes whether it was there); v1 queries never carry it.

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
    IgmpRecordType,
    IgmpV2Message,
    IgmpV3Report,
)

from .timers import Timer, TimerQueue

IPV4_ANY = bytes(4)
MAX_GROUPS = 1024  # groups one NIC holds at most (Linux caps memberships per socket at 20)
# Records per report: 8 + 8 * n bytes must fit a 1500-byte MTU with the
# 24-byte IP header (RFC 3376 §4.2.16: split, never fragment).
MAX_RECORDS_PER_REPORT = 180
MAX_QUERY_SOURCES = 256  # sources remembered for one pending group-and-source answer


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


@dataclass(slots=True)
class IgmpStats:
    reports_sent: int = 0
    queries_received: int = 0
    queries_ignored: int = 0  # no Router Alert, or for a group we are not in
    reports_suppressed: int = 0  # v1/v2 mode: another member answered first

    def as_dict(self) -> dict[str, int]:
        """The ``net/igmp_<name>`` keys of ``ctl stats``."""
        return {
            "reports_sent": self.reports_sent,
            "queries_received": self.queries_received,
            "queries_ignored": self.queries_ignored,
            "reports_suppressed": self.reports_suppressed,
        }


@dataclass(slots=True)
class _Group:
    users: int = 0
    # §5.1: a pending state-change record: its type and the sends left.
    change: int = 0
    change_left: int = 0
    # §5.2: a pending answer to a group(-and-source)-specific query; an
    # empty source set means "the whole group" (IS_EX {}).
    query_sources: set[bytes] | None = None
    timer: Timer | None = None


class IgmpMachine:
    def __init__(self, config: IgmpConfig | None = None, rng: random.Random | None = None) -> None:
        self.config = config or IgmpConfig()
        self.rng = rng or random.Random(0)
        self.running = False
        self.stats = IgmpStats()
        self._groups: dict[bytes, _Group] = {}
        # Groups left whose TO_IN {} record is still being repeated (§5.1).
        self._leaving: dict[bytes, _Group] = {}
        self._timers = TimerQueue()
        self._out: list[SendIgmp] = []
        self._change_timer = self._timers.timer(self._change_tick)
        self._general_timer = self._timers.timer(self._general_tick)
        self._v1_timer = self._timers.timer(lambda now: None)  # Older Version Querier Present
        self._v2_timer = self._timers.timer(lambda now: None)
        # §4.1.6/§4.1.7: the querier's Robustness Variable (QRV) and Query
        # Interval (QQIC) from its last v3 query replace our defaults.
        self.robustness = self.config.robustness
        self.query_interval_s = self.config.query_interval_s

    # --- introspection ------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The compatibility mode (§7.2.1): 1, 2 or 3."""
        if self._v1_timer.armed:
            return 1
        if self._v2_timer.armed:
            return 2
        return 3

    def groups(self) -> list[bytes]:
        return list(self._groups)

    def users(self, group: bytes) -> int:
        g = self._groups.get(group)
        return g.users if g is not None else 0

    # --- timers -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timeout(self, now: float) -> list[SendIgmp]:
        self._timers.run_due(now)
        return self._flush()

    def _flush(self) -> list[SendIgmp]:
        out = self._out
        if out:
            self._out = []
        return out

    # --- start / stop -------------------------------------------------------------------
    def start(self, now: float) -> list[SendIgmp]:
        """The NIC is up: announce the groups joined while it was down."""
        if not self.running:
            self.running = True
            groups = [g for g in self._groups if g != ALL_SYSTEMS]
            if self.version < 3:
                for group in groups:
                    self._state_change(now, group, IgmpRecordType.CHANGE_TO_EXCLUDE_MODE)
            elif groups:  # one report of every record (split only by size)
                for group in groups:
                    g = self._groups[group]
                    g.change = IgmpRecordType.CHANGE_TO_EXCLUDE_MODE
                    g.change_left = self.robustness
                self._change_tick(now)
        return self._flush()

    def stop(self) -> None:
        """The NIC is down: nothing more is sent; memberships are kept."""
        self.running = False
        self._change_timer.stop()
        self._general_timer.stop()
        for g in self._groups.values():
            g.change_left = 0
            self._cancel_query(g)

    # --- joins and leaves (§5.1) --------------------------------------------------------
    def join(self, now: float, group: bytes) -> list[SendIgmp]:
        """One more user of ``group``; the first one is reported. Raises
        OverflowError past MAX_GROUPS (the caller answers ENOBUFS)."""
        g = self._groups.get(group)
        if g is None:
            if len(self._groups) >= MAX_GROUPS:
                raise OverflowError("too many multicast groups on this NIC")
            g = self._groups[group] = _Group()
        g.users += 1
        if g.users == 1 and self.running and group != ALL_SYSTEMS:
            self._state_change(now, group, IgmpRecordType.CHANGE_TO_EXCLUDE_MODE)
        return self._flush()

    def leave(self, now: float, group: bytes) -> list[SendIgmp]:
        """One user less; the last one's leave is reported."""
        g = self._groups.get(group)
        if g is None:
            return []
        g.users -= 1
        if g.users > 0:
            return []
        del self._groups[group]
        self._cancel_query(g)
        if self.running and group != ALL_SYSTEMS:
            version = self.version
            if version == 3:
                self._leaving[group] = _Group(
                    change=IgmpRecordType.CHANGE_TO_INCLUDE_MODE,
                    change_left=self.robustness,
                )
                self._change_tick(now, only=group)
            elif version == 2:
                # RFC 2236 §3: a Leave Group to all-routers (always sent: the
                # "last reporter" flag is an optimisation Linux skips too).
                self._send(IgmpV2Message(IGMPV2_LEAVE, group), ALL_ROUTERS)
            # v1 has no leave message (RFC 1112): the router times out.
        return self._flush()

    def _state_change(self, now: float, group: bytes, record_type: int) -> None:
        version = self.version
        if version < 3:
            # RFC 2236 §3 / RFC 1112: an unsolicited report now, repeated
            # once after a random delay within the (v2) report interval.
            self._send_old_report(group, version)
            if self.robustness > 1:
                self._arm_query(now, group, self.config.v2_unsolicited_report_interval_s)
            return
        self._leaving.pop(group, None)
        g = self._groups[group]
        g.change, g.change_left = record_type, self.robustness
        self._change_tick(now, only=group)

    def _change_tick(self, now: float, only: bytes | None = None) -> None:
        records: list[IgmpGroupRecord] = []
        for table in (self._groups, self._leaving):
            for group, g in list(table.items()):
                if g.change_left <= 0 or (only is not None and group != only):
                    continue
                records.append(IgmpGroupRecord(g.change, group))
                g.change_left -= 1
                if g.change_left <= 0 and table is self._leaving:
                    del table[group]
        self._send_records(records)
        pending = any(g.change_left > 0 for g in (*self._groups.values(), *self._leaving.values()))
        if pending and (only is None or not self._change_timer.armed):
            interval = self.config.unsolicited_report_interval_s
            self._change_timer.reset(now + self.rng.uniform(0.0, interval))
        elif not pending:
            self._change_timer.stop()

    # --- queries (§5.2, §7.2.1) -----------------------------------------------------------
    def handle_query(self, now: float, query: IgmpQuery, *, router_alert: bool) -> list[SendIgmp]:
        """A Membership Query heard on the NIC (to 224.0.0.1 or to the group)."""
        self.stats.queries_received += 1
        if not self.running:
            return []
        if query.version >= 2 and not router_alert:  # §9.1
            self.stats.queries_ignored += 1
            return []
        max_resp_s = query.max_resp_ds / 10.0
        if query.version == 3:
            self.robustness = query.qrv or self.config.robustness
            self.query_interval_s = query.query_interval_s or self.config.query_interval_s
        else:
            # §8.12 (with erratum 4375): Robustness x Query Interval + the
            # Query Response Interval of this older query.
            timer = self._v1_timer if query.version == 1 else self._v2_timer
            was = self.version
            timer.reset(now + self.robustness * self.query_interval_s + max_resp_s)
            if self.version < was:  # §7.2.1: drop the v3 state and pending answers
                self._change_timer.stop()
                self._general_timer.stop()
                self._leaving.clear()
                for each in self._groups.values():
                    each.change_left = 0
                    self._cancel_query(each)
        group = query.group
        if group == IPV4_ANY:
            if self.version == 3:
                # Rules 1-2: one interface timer; keep an earlier pending one.
                due = now + self.rng.uniform(0.0, max_resp_s)
                if not self._general_timer.armed or due < (self._general_timer.deadline or due):
                    self._general_timer.reset(due)
            else:
                for member in self._groups:
                    if member != ALL_SYSTEMS:  # never reported (§5)
                        self._arm_query(now, member, max_resp_s)
            return self._flush()
        g = self._groups.get(group)
        if g is None or group == ALL_SYSTEMS:
            self.stats.queries_ignored += 1
            return []
        if self.version == 3:
            if (
                self._general_timer.armed
                and (self._general_timer.deadline or 0) <= now + max_resp_s
            ):
                return []  # rule 1: a pending general answer comes sooner
            sources = set(query.sources)
            if g.query_sources is None:
                g.query_sources = sources
            elif not sources or not g.query_sources:
                g.query_sources = set()  # rule 4 / 5: the whole group
            else:
                g.query_sources |= sources
            if len(g.query_sources) > MAX_QUERY_SOURCES:
                # Bounded memory against a query flood: answer for the whole
                # group (IS_EX {}, our state, is a true answer to any of them).
                g.query_sources = set()
        self._arm_query(now, group, max_resp_s)
        return self._flush()

    def handle_report(self, now: float, msg: IgmpV2Message) -> None:
        """RFC 2236 §3 / RFC 1112: in v1/v2 mode, another member's report for
        a group whose answer is pending cancels ours (report suppression)."""
        if self.version == 3:
            return
        g = self._groups.get(msg.group)
        if g is not None and g.timer is not None and g.timer.armed:
            g.timer.stop()
            self.stats.reports_suppressed += 1

    def _arm_query(self, now: float, group: bytes, max_delay_s: float) -> None:
        g = self._groups[group]
        due = now + self.rng.uniform(0.0, max_delay_s)
        if g.timer is None:
            g.timer = self._timers.timer(lambda t: self._group_tick(t, group))
        if not g.timer.armed or due < (g.timer.deadline or due):
            g.timer.reset(due)

    def _cancel_query(self, g: _Group) -> None:
        g.query_sources = None
        if g.timer is not None:
            g.timer.stop()

    def _general_tick(self, now: float) -> None:
        # §5.2: a Current-State Report of every group but all-systems.
        self._send_records(
            [
                IgmpGroupRecord(IgmpRecordType.MODE_IS_EXCLUDE, group)
                for group in self._groups
                if group != ALL_SYSTEMS
            ]
        )

    def _group_tick(self, now: float, group: bytes) -> None:
        g = self._groups.get(group)
        if g is None:
            return
        version = self.version
        if version < 3:
            self._send_old_report(group, version)
            return
        sources, g.query_sources = g.query_sources, None
        if sources:  # §5.2: IS_IN (B - {}) for a source-specific query
            record = IgmpGroupRecord(IgmpRecordType.MODE_IS_INCLUDE, group, tuple(sorted(sources)))
        else:
            record = IgmpGroupRecord(IgmpRecordType.MODE_IS_EXCLUDE, group)
        self._send_records([record])

    # --- output ---------------------------------------------------------------------------
    def _send_old_report(self, group: bytes, version: int) -> None:
        kind = IGMPV1_REPORT if version == 1 else IGMPV2_REPORT
        self._send(IgmpV2Message(kind, group), group)  # RFC 2236 §3: to the group itself

    def _send_records(self, records: list[IgmpGroupRecord]) -> None:
        for i in range(0, len(records), MAX_RECORDS_PER_REPORT):
            self._send(IgmpV3Report(records[i : i + MAX_RECORDS_PER_REPORT]), IGMPV3_ALL_ROUTERS)

    def _send(self, message: IgmpV3Report | IgmpV2Message, dst: bytes) -> None:
        self.stats.reports_sent += 1
        self._out.append(SendIgmp(message, dst))
