"""The host side of multicast group membership, shared by IGMP (``igmp.py``,
RFC 3376 with the RFC 2236 / RFC 1112 compatibility modes) and MLD
(``mld.py``, RFC 3810 with RFC 2710), sans-I/O.

MLDv2 is IGMPv3 translated to IPv6 (RFC 3810 §1), so one core runs both, as
gVisor's generic multicast protocol does: per-group state (users, a pending
state-change record, a delayed report timer), unsolicited reports, answers
to queries, leave / done, and the older-version compatibility modes. A
protocol subclasses ``MembershipCore`` and says how its messages look
(``_send_records``, ``_send_old_report``, ``_send_old_leave``) and what its
queries carry; the core never builds a message.

* State changes (RFC 3376 §5.1, RFC 3810 §6.1): a State-Change Report with a
  TO_EX {} (join) or TO_IN {} (leave) record at once, repeated [Robustness
  Variable] - 1 more times at random intervals within the Unsolicited Report
  Interval; a new change of the same group replaces the pending record and
  restarts the count.
* Queries (RFC 3376 §5.2, RFC 3810 §6.2): a General Query arms one
  interface timer (rules 1-2, a random delay within the maximum response
  delay, the earlier of two pending kept) and is answered with a
  Current-State Report of every group (IS_EX {}). A Group-Specific Query
  arms that group's timer (rules 3-5); a Group-and-Source-Specific one is
  answered IS_IN (the queried sources), the answer for EXCLUDE {} (B - {}),
  merged with other pending sources.
* Compatibility (RFC 3376 §7.2.1, RFC 3810 §8.2.1): a query of an older
  version starts that version's Older Version Querier Present timer
  (Robustness x Query Interval + the query's response delay, RFC 3376 §8.12
  with erratum 4375, RFC 3810 §9.12); while it runs the host speaks the
  oldest version heard: reports to the group itself (joins repeated once,
  RFC 2236 §3, RFC 2710 §4), the protocol's leave message, per-group
  response timers with report suppression when another member's report is
  heard. Switching to an older version cancels pending retransmissions and
  answers.
* The all-systems / all-nodes group is never reported (RFC 3376 §5, RFC
  3810 §6): a host is always in it.

Left out: source-specific joins (INCLUDE-mode interface state, ALLOW/BLOCK
records, RFC 3678): every join is any-source.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from .timers import Timer, TimerQueue

MAX_GROUPS = 1024  # groups one NIC holds at most (Linux caps memberships per socket at 20)
MAX_QUERY_SOURCES = 256  # sources remembered for one pending group-and-source answer

Send = TypeVar("Send")


class RecordType(enum.IntEnum):
    """Group record types: the same values in RFC 3376 §4.2.12 and RFC 3810 §5.2.12."""

    MODE_IS_INCLUDE = 1
    MODE_IS_EXCLUDE = 2
    CHANGE_TO_INCLUDE_MODE = 3
    CHANGE_TO_EXCLUDE_MODE = 4


# (record type, group, sources): a protocol turns it into its own record.
Record = tuple[int, bytes, tuple[bytes, ...]]


@dataclass(slots=True)
class MembershipStats:
    reports_sent: int = 0  # every message sent (reports, leaves, dones)
    queries_received: int = 0
    queries_ignored: int = 0  # invalid for the protocol, or for a group we are not in
    reports_suppressed: int = 0  # older-version mode: another member answered first

    def as_dict(self) -> dict[str, int]:
        """The ``net/<protocol>_<name>`` keys of ``ctl stats``."""
        return {
            "reports_sent": self.reports_sent,
            "queries_received": self.queries_received,
            "queries_ignored": self.queries_ignored,
            "reports_suppressed": self.reports_suppressed,
        }


@dataclass(slots=True)
class _Group:
    users: int = 0
    # A pending state-change record: its type and the sends left.
    change: int = 0
    change_left: int = 0
    # A pending answer to a group(-and-source)-specific query; an empty
    # source set means "the whole group" (IS_EX {}).
    query_sources: set[bytes] | None = None
    timer: Timer | None = None


class MembershipCore(Generic[Send]):
    """One NIC's memberships for one protocol; see the module docstring.
    Every input returns the messages to send (the subclass's records)."""

    NEWEST: ClassVar[int]  # IGMPv3: 3, MLDv2: 2
    UNREPORTED: ClassVar[bytes]  # all-systems / all-nodes
    UNSPECIFIED: ClassVar[bytes]  # the group of a General Query

    def __init__(
        self,
        rng: random.Random,
        *,
        robustness: int,
        query_interval_s: float,
        unsolicited_report_interval_s: float,
        old_unsolicited_report_interval_s: float,
    ) -> None:
        self.rng = rng
        self.running = False
        self.stats = MembershipStats()
        self.default_robustness = robustness
        self.default_query_interval_s = query_interval_s
        self.unsolicited_report_interval_s = unsolicited_report_interval_s
        self.old_unsolicited_report_interval_s = old_unsolicited_report_interval_s
        # The querier's Robustness Variable and Query Interval (RFC 3376
        # §4.1.6/§4.1.7, RFC 3810 §5.1.8/§5.1.9) replace our defaults.
        self.robustness = robustness
        self.query_interval_s = query_interval_s
        self._groups: dict[bytes, _Group] = {}
        # Groups left whose TO_IN {} record is still being repeated.
        self._leaving: dict[bytes, _Group] = {}
        self._timers = TimerQueue()
        self._out: list[Send] = []
        self._change_timer = self._timers.timer(self._change_tick)
        self._general_timer = self._timers.timer(self._general_tick)
        # An Older Version Querier Present timer per older version.
        self._older = {v: self._timers.timer(lambda now: None) for v in range(1, self.NEWEST)}

    # --- introspection ------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The compatibility mode: the oldest version whose querier is present."""
        for v, timer in self._older.items():
            if timer.armed:
                return v
        return self.NEWEST

    def groups(self) -> list[bytes]:
        return list(self._groups)

    def users(self, group: bytes) -> int:
        g = self._groups.get(group)
        return g.users if g is not None else 0

    # --- timers -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timeout(self, now: float) -> list[Send]:
        self._timers.run_due(now)
        return self._flush()

    def _flush(self) -> list[Send]:
        out = self._out
        if out:
            self._out = []
        return out

    # --- start / stop -------------------------------------------------------------------
    def start(self, now: float) -> list[Send]:
        """The NIC is up: announce the groups joined while it was down."""
        if not self.running:
            self.running = True
            groups = [g for g in self._groups if g != self.UNREPORTED]
            if self.version < self.NEWEST:
                for group in groups:
                    self._state_change(now, group, RecordType.CHANGE_TO_EXCLUDE_MODE)
            elif groups:  # one report of every record (split only by size)
                for group in groups:
                    g = self._groups[group]
                    g.change = RecordType.CHANGE_TO_EXCLUDE_MODE
                    g.change_left = self.robustness
                self._change_tick(now)
        return self._flush()

    def stop(self) -> None:
        """The NIC is down: nothing more is sent; memberships are kept."""
        self.running = False
        self._change_timer.stop()
        self._general_timer.stop()
        self._leaving.clear()
        for g in self._groups.values():
            g.change_left = 0
            self._cancel_query(g)

    # --- joins and leaves ---------------------------------------------------------------
    def join(self, now: float, group: bytes, *, limit: bool = True) -> list[Send]:
        """One more user of ``group``; the first one is reported. Raises
        OverflowError past MAX_GROUPS (the caller answers ENOBUFS) unless
        ``limit`` is off (the host's own joins, bounded by its addresses)."""
        g = self._groups.get(group)
        if g is None:
            if limit and len(self._groups) >= MAX_GROUPS:
                raise OverflowError("too many multicast groups on this NIC")
            g = self._groups[group] = _Group()
        g.users += 1
        if g.users == 1 and self.running and group != self.UNREPORTED:
            self._state_change(now, group, RecordType.CHANGE_TO_EXCLUDE_MODE)
        return self._flush()

    def leave(self, now: float, group: bytes) -> list[Send]:
        """One user less; the last one's leave is reported."""
        g = self._groups.get(group)
        if g is None:
            return []
        g.users -= 1
        if g.users > 0:
            return []
        del self._groups[group]
        self._cancel_query(g)
        if self.running and group != self.UNREPORTED:
            version = self.version
            if version == self.NEWEST:
                self._leaving[group] = _Group(
                    change=RecordType.CHANGE_TO_INCLUDE_MODE, change_left=self.robustness
                )
                self._change_tick(now, only=group)
            else:
                self._send_old_leave(group, version)
        return self._flush()

    def _state_change(self, now: float, group: bytes, record_type: int) -> None:
        version = self.version
        if version < self.NEWEST:
            # RFC 2236 §3, RFC 2710 §4: an unsolicited report now, repeated
            # once after a random delay within the older version's interval.
            self._send_old_report(group, version)
            if self.robustness > 1:
                self._arm_query(now, group, self.old_unsolicited_report_interval_s)
            return
        self._leaving.pop(group, None)
        g = self._groups[group]
        g.change, g.change_left = record_type, self.robustness
        self._change_tick(now, only=group)

    def _change_tick(self, now: float, only: bytes | None = None) -> None:
        records: list[Record] = []
        for table in (self._groups, self._leaving):
            for group, g in list(table.items()):
                if g.change_left <= 0 or (only is not None and group != only):
                    continue
                records.append((g.change, group, ()))
                g.change_left -= 1
                if g.change_left <= 0 and table is self._leaving:
                    del table[group]
        if records:
            self._send_records(records)
        pending = any(g.change_left > 0 for g in (*self._groups.values(), *self._leaving.values()))
        if pending and (only is None or not self._change_timer.armed):
            interval = self.unsolicited_report_interval_s
            self._change_timer.reset(now + self.rng.uniform(0.0, interval))
        elif not pending:
            self._change_timer.stop()

    # --- queries ------------------------------------------------------------------------
    def _query(
        self,
        now: float,
        version: int,
        group: bytes,
        max_resp_s: float,
        sources: tuple[bytes, ...] = (),
    ) -> list[Send]:
        """A valid query of ``version`` for ``group`` (``UNSPECIFIED``: a
        General Query); the protocol checked it and took its QRV/QQIC."""
        if version < self.NEWEST:
            timer = self._older[version]
            was = self.version
            timer.reset(now + self.robustness * self.query_interval_s + max_resp_s)
            if self.version < was:  # drop the newer version's state and pending answers
                self._change_timer.stop()
                self._general_timer.stop()
                self._leaving.clear()
                for each in self._groups.values():
                    each.change_left = 0
                    self._cancel_query(each)
        if group == self.UNSPECIFIED:
            if not any(g != self.UNREPORTED for g in self._groups):
                return self._flush()  # nothing to answer for (as gVisor's core)
            if self.version == self.NEWEST:
                # Rules 1-2: one interface timer; keep an earlier pending one.
                due = now + self.rng.uniform(0.0, max_resp_s)
                if not self._general_timer.armed or due < (self._general_timer.deadline or due):
                    self._general_timer.reset(due)
            else:
                for member in self._groups:
                    if member != self.UNREPORTED:
                        self._arm_query(now, member, max_resp_s)
            return self._flush()
        g = self._groups.get(group)
        if g is None or group == self.UNREPORTED:
            self.stats.queries_ignored += 1
            return []
        if self.version == self.NEWEST:
            if (
                self._general_timer.armed
                and (self._general_timer.deadline or 0) <= now + max_resp_s
            ):
                return []  # rule 1: a pending general answer comes sooner
            asked = set(sources)
            if g.query_sources is None:
                g.query_sources = asked
            elif not asked or not g.query_sources:
                g.query_sources = set()  # rules 4-5: the whole group
            else:
                g.query_sources |= asked
            if len(g.query_sources) > MAX_QUERY_SOURCES:
                # Bounded memory against a query flood: answer for the whole
                # group (IS_EX {}, our state, is a true answer to any of them).
                g.query_sources = set()
        self._arm_query(now, group, max_resp_s)
        return self._flush()

    def heard_report(self, now: float, group: bytes) -> list[Send]:
        """RFC 2236 §3, RFC 2710 §4: in an older-version mode, another
        member's report for a group whose answer is pending cancels ours
        (report suppression)."""
        if self.version == self.NEWEST:
            return []
        g = self._groups.get(group)
        if g is not None and g.timer is not None and g.timer.armed:
            g.timer.stop()
            self.stats.reports_suppressed += 1
        return []

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
        records: list[Record] = [
            (RecordType.MODE_IS_EXCLUDE, group, ())
            for group in self._groups
            if group != self.UNREPORTED
        ]
        if records:
            self._send_records(records)

    def _group_tick(self, now: float, group: bytes) -> None:
        g = self._groups.get(group)
        if g is None:
            return
        version = self.version
        if version < self.NEWEST:
            self._send_old_report(group, version)
            return
        sources, g.query_sources = g.query_sources, None
        if sources:  # IS_IN (B - {}) for a source-specific query
            self._send_records([(RecordType.MODE_IS_INCLUDE, group, tuple(sorted(sources)))])
        else:
            self._send_records([(RecordType.MODE_IS_EXCLUDE, group, ())])

    # --- what a protocol says ------------------------------------------------------------
    def _send_records(self, records: list[Record]) -> None:
        """Send ``records`` in the newest version's reports (split by size)."""
        raise NotImplementedError

    def _send_old_report(self, group: bytes, version: int) -> None:
        """A report of an older ``version`` for ``group``."""
        raise NotImplementedError

    def _send_old_leave(self, group: bytes, version: int) -> None:
        """The last user left ``group`` in an older-version mode."""
        raise NotImplementedError

    def _emit(self, message: Send) -> None:
        self.stats.reports_sent += 1
        self._out.append(message)
