"""The IGMP host machine (RFC 3376, compatibility with RFC 2236 / 1112),
driven with queries and joins on a fake clock."""

from __future__ import annotations

import random

import pytest

from shardnet.common.addr import parse_ip
from shardnet.common.wire.igmp import (
    ALL_ROUTERS,
    ALL_SYSTEMS,
    IGMPV1_REPORT,
    IGMPV2_LEAVE,
    IGMPV2_REPORT,
    IGMPV3_ALL_ROUTERS,
    IgmpQuery,
    IgmpRecordType,
    IgmpV2Message,
    IgmpV3Report,
)
from shardnet.shards.net.igmp import (
    MAX_GROUPS,
    MAX_RECORDS_PER_REPORT,
    IgmpConfig,
    IgmpMachine,
    SendIgmp,
)

G1, G2 = parse_ip("234.198.18.1"), parse_ip("234.198.18.2")
SRC = parse_ip("198.18.0.1")
T0 = 100.0


def machine(**cfg: float) -> IgmpMachine:
    m = IgmpMachine(IgmpConfig(**cfg), random.Random(1))  # type: ignore[arg-type]
    assert m.start(T0) == []
    return m


def records(sent: list[SendIgmp]) -> list[tuple[int, bytes, tuple[bytes, ...]]]:
    out = []
    for s in sent:
        assert s.dst == IGMPV3_ALL_ROUTERS and isinstance(s.message, IgmpV3Report)
        out += [(r.record_type, r.group, r.sources) for r in s.message.records]
    return out


def run_until(m: IgmpMachine, end: float) -> list[tuple[float, SendIgmp]]:
    """Fire every deadline up to ``end``; what was sent, with when."""
    out = []
    while (d := m.next_deadline()) is not None and d <= end:
        out += [(d, s) for s in m.handle_timeout(d)]
    return out


def query(
    version: int = 3, group: bytes = bytes(4), max_resp_ds: int = 100, **kw: object
) -> IgmpQuery:
    return IgmpQuery(version, max_resp_ds, group, **kw)  # type: ignore[arg-type]


# --- §5.1 state changes ------------------------------------------------------------------
def test_join_sends_to_ex_now_and_once_more_within_the_interval() -> None:
    m = machine()
    sent = m.join(T0, G1)
    assert records(sent) == [(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G1, ())]
    later = run_until(m, T0 + 10)
    assert len(later) == 1  # Robustness 2: one retransmission
    when, again = later[0]
    assert T0 <= when <= T0 + 1.0  # within the Unsolicited Report Interval
    assert records([again]) == [(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G1, ())]
    assert m.next_deadline() is None


def test_robustness_sets_the_number_of_sends() -> None:
    m = machine(robustness=4)
    assert len(m.join(T0, G1)) == 1
    assert len(run_until(m, T0 + 10)) == 3


def test_second_user_and_first_leave_are_silent() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    assert m.join(T0 + 5, G1) == []
    assert m.users(G1) == 2
    assert m.leave(T0 + 6, G1) == []
    sent = m.leave(T0 + 7, G1)
    assert records(sent) == [(IgmpRecordType.CHANGE_TO_INCLUDE_MODE, G1, ())]
    assert len(run_until(m, T0 + 20)) == 1
    assert m.groups() == []


def test_all_systems_is_never_reported() -> None:
    m = machine()
    assert m.join(T0, ALL_SYSTEMS) == []
    assert m.leave(T0, ALL_SYSTEMS) == []
    m.join(T0, ALL_SYSTEMS)
    m.join(T0, G1)
    run_until(m, T0 + 5)
    general = m.handle_query(T0 + 5, query(), router_alert=True)
    assert general == []
    sent = [s for _, s in run_until(m, T0 + 20)]
    assert records(sent) == [(IgmpRecordType.MODE_IS_EXCLUDE, G1, ())]


def test_rejoin_replaces_the_pending_leave() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.leave(T0 + 5, G1)
    sent = m.join(T0 + 5.1, G1)
    assert records(sent) == [(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G1, ())]
    later = records([s for _, s in run_until(m, T0 + 20)])
    assert later == [(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G1, ())]  # no TO_IN any more


def test_groups_joined_while_stopped_are_announced_on_start() -> None:
    m = IgmpMachine(IgmpConfig(), random.Random(1))
    assert m.join(T0, G1) == []
    assert m.join(T0, G2) == []
    sent = m.start(T0 + 1)
    assert sorted(records(sent)) == [
        (IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G1, ()),
        (IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G2, ()),
    ]
    m.stop()
    assert m.next_deadline() is None and m.groups() == [G1, G2]


def test_too_many_groups() -> None:
    m = machine()
    for i in range(MAX_GROUPS):
        m.join(T0, bytes((239, 1, i >> 8, i & 0xFF)))
    with pytest.raises(OverflowError):
        m.join(T0, G1)


def test_a_large_answer_is_split_into_reports() -> None:
    m = IgmpMachine(IgmpConfig(), random.Random(1))
    n = MAX_RECORDS_PER_REPORT + 5
    for i in range(n):
        m.join(T0, bytes((239, 1, 0, i)))
    sent = m.start(T0)
    assert [len(s.message.records) for s in sent] == [MAX_RECORDS_PER_REPORT, 5]  # type: ignore[union-attr]
    assert all(s.message.length + 24 <= 1500 for s in sent)


# --- §5.2 queries -------------------------------------------------------------------------
def test_general_query_answered_once_within_max_resp_time() -> None:
    m = machine()
    m.join(T0, G1)
    m.join(T0, G2)
    run_until(m, T0 + 5)
    assert m.handle_query(T0 + 5, query(max_resp_ds=20), router_alert=True) == []
    # A second general query with a later deadline keeps the earlier one.
    m.handle_query(T0 + 5.1, query(max_resp_ds=100), router_alert=True)
    sent = run_until(m, T0 + 20)
    assert len(sent) == 1
    when, report = sent[0]
    assert T0 + 5 <= when <= T0 + 7
    assert sorted(records([report])) == [
        (IgmpRecordType.MODE_IS_EXCLUDE, G1, ()),
        (IgmpRecordType.MODE_IS_EXCLUDE, G2, ()),
    ]


def test_group_specific_query() -> None:
    m = machine()
    m.join(T0, G1)
    m.join(T0, G2)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(group=G2, max_resp_ds=10), router_alert=True)
    sent = run_until(m, T0 + 20)
    assert [w <= T0 + 6 for w, _ in sent] == [True]
    assert records([s for _, s in sent]) == [(IgmpRecordType.MODE_IS_EXCLUDE, G2, ())]


def test_query_for_a_group_we_are_not_in_is_ignored() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    assert m.handle_query(T0 + 5, query(group=G2), router_alert=True) == []
    assert run_until(m, T0 + 30) == []
    assert m.stats.queries_ignored == 1


def test_group_and_source_specific_query_answers_is_in_the_sources() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    s2 = parse_ip("198.18.0.9")
    m.handle_query(T0 + 5, query(group=G1, sources=(SRC,)), router_alert=True)
    m.handle_query(T0 + 5, query(group=G1, sources=(s2,)), router_alert=True)
    sent = [s for _, s in run_until(m, T0 + 30)]
    assert records(sent) == [(IgmpRecordType.MODE_IS_INCLUDE, G1, (SRC, s2))]


def test_v3_query_without_router_alert_is_ignored() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(), router_alert=False)
    assert run_until(m, T0 + 30) == []
    assert m.stats.queries_ignored == 1


# --- §7.2.1 compatibility modes -------------------------------------------------------------
def test_v2_querier_switches_to_v2_reports_and_leaves_and_back() -> None:
    m = machine(query_interval_s=10.0)
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(version=2, max_resp_ds=10), router_alert=True)
    assert m.version == 2
    sent = [s for _, s in run_until(m, T0 + 7)]
    assert sent == [SendIgmp(IgmpV2Message(IGMPV2_REPORT, G1), G1)]  # to the group itself
    join = m.join(T0 + 7, G2)
    assert join == [SendIgmp(IgmpV2Message(IGMPV2_REPORT, G2), G2)]
    repeats = [s for _, s in run_until(m, T0 + 17)]
    assert repeats == [SendIgmp(IgmpV2Message(IGMPV2_REPORT, G2), G2)]  # RFC 2236 §3
    assert m.leave(T0 + 18, G2) == [SendIgmp(IgmpV2Message(IGMPV2_LEAVE, G2), ALL_ROUTERS)]
    # Older Version Querier Present Timeout: 2 x 10 s + the query's 1 s Max Resp Time.
    assert m.version == 2
    run_until(m, T0 + 5 + 21.1)
    assert m.version == 3
    assert records(m.join(T0 + 28, G2)) == [(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, G2, ())]


def test_v1_querier_means_v1_reports_and_no_leave() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    # A v1 query carries no Router Alert and still counts.
    m.handle_query(T0 + 5, query(version=1), router_alert=False)
    assert m.version == 1
    sent = [s for _, s in run_until(m, T0 + 16)]
    assert sent == [SendIgmp(IgmpV2Message(IGMPV1_REPORT, G1), G1)]
    assert m.leave(T0 + 20, G1) == []


def test_switching_to_v2_cancels_pending_v3_retransmissions() -> None:
    m = machine()
    m.join(T0, G1)  # one retransmission pending
    m.handle_query(T0, query(version=2, max_resp_ds=10), router_alert=True)
    sent = [s for _, s in run_until(m, T0 + 5)]
    assert all(isinstance(s.message, IgmpV2Message) for s in sent)
    assert len(sent) == 1


def test_v2_report_suppression() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(version=2, max_resp_ds=100), router_alert=True)
    m.handle_report(T0 + 5.01, IgmpV2Message(IGMPV2_REPORT, G1))  # another member was faster
    assert run_until(m, T0 + 20) == []
    assert m.stats.reports_suppressed == 1


def test_v3_mode_does_not_suppress() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(group=G1), router_alert=True)
    m.handle_report(T0 + 5.01, IgmpV2Message(IGMPV2_REPORT, G1))
    assert len(run_until(m, T0 + 20)) == 1


def test_v2_general_query_never_reports_all_systems() -> None:
    m = machine()
    m.join(T0, ALL_SYSTEMS)
    m.join(T0, G1)
    run_until(m, T0 + 5)
    m.handle_query(T0 + 5, query(version=2, max_resp_ds=10), router_alert=True)
    sent = [s for _, s in run_until(m, T0 + 7)]
    assert sent == [SendIgmp(IgmpV2Message(IGMPV2_REPORT, G1), G1)]


def test_a_flood_of_source_queries_stays_bounded() -> None:
    m = machine()
    m.join(T0, G1)
    run_until(m, T0 + 5)
    for i in range(300):
        src = bytes((198, 18, 1 + i // 250, i % 250))
        m.handle_query(T0 + 5, query(group=G1, max_resp_ds=100, sources=(src,)), router_alert=True)
    sent = [s for _, s in run_until(m, T0 + 20)]
    assert records(sent) == [(IgmpRecordType.MODE_IS_EXCLUDE, G1, ())]  # the whole group


def test_the_queriers_robustness_and_interval_are_adopted() -> None:
    """§4.1.6/§4.1.7: QRV and QQIC of a v3 query set how often a change is
    reported and how long an older querier is remembered."""
    m = machine()
    m.handle_query(T0, query(qrv=4, qqic=30, max_resp_ds=10), router_alert=True)
    run_until(m, T0 + 5)
    assert len(m.join(T0 + 5, G1)) == 1
    assert len(run_until(m, T0 + 20)) == 3  # 4 sends in all
    m.handle_query(T0 + 20, query(version=2, max_resp_ds=10), router_alert=True)
    run_until(m, T0 + 20 + 4 * 30 + 0.9)
    assert m.version == 2
    run_until(m, T0 + 20 + 4 * 30 + 1.1)  # 4 x 30 s + 1 s
    assert m.version == 3
