"""The MLD machine (shards/net/mld.py, RFC 3810 with RFC 2710) on the NIC's
NDP machine, as shard 0 wires them: the solicited-node joins of addresses
(RFC 4862 §5.4.2), reports and their retransmissions, query answers, the
MLDv1 compatibility mode, the querier's variables, the report source."""

from __future__ import annotations

from shardnet.common.addr import parse_ip
from shardnet.common.wire.ipv6 import ALL_NODES, ALL_ROUTERS, solicited_node_multicast
from shardnet.common.wire.mld import (
    MldQuery,
    MldRecordType,
    MldReport,
    MldV1Message,
    encode_max_resp_code,
)
from shardnet.shards.net.mld import SendMld

from .test_ndp import ADDR, Rig, cfg, opaque, rig


def test_mld_reports_on_join_with_robustness() -> None:
    r = rig(cfg(mld_robustness=2))
    r.add()
    group = solicited_node_multicast(ADDR)
    reports = [(t, a) for t, a in r.log if isinstance(a, SendMld)]
    assert len(reports) == 1
    (rec,) = reports[0][1].report.records
    assert (
        rec.record_type == MldRecordType.CHANGE_TO_EXCLUDE_MODE and rec.multicast_address == group
    )
    r.advance(1.0)
    reports = [(t, a) for t, a in r.log if isinstance(a, SendMld)]
    assert len(reports) == 2 and 0 <= reports[1][0] <= 1.0
    r.advance(10)
    assert len([a for _, a in r.log if isinstance(a, SendMld)]) == 2
    assert all(a.dst == parse_ip("ff02::16") for _, a in r.log if isinstance(a, SendMld))
    # never all-nodes
    for _, a in r.log:
        if isinstance(a, SendMld):
            assert all(rec.multicast_address != ALL_NODES for rec in a.report.records)
    # a second address with the same solicited-node group: no new report
    r.add(parse_ip("2001:db8:5::1"))
    assert len([a for _, a in r.log if isinstance(a, SendMld)]) == 2
    r.take(r.m.remove_address(r.now, ADDR))  # the group still has a user
    assert len([a for _, a in r.log if isinstance(a, SendMld)]) == 2
    r.take(r.m.remove_address(r.now, parse_ip("2001:db8:5::1")))
    last = [a for _, a in r.log if isinstance(a, SendMld)][-1]
    assert last.report.records[0].record_type == MldRecordType.CHANGE_TO_INCLUDE_MODE


def test_mld_query_answered() -> None:
    r = rig(cfg(mld_robustness=1))
    r.add()
    n = len([a for _, a in r.log if isinstance(a, SendMld)])
    q = MldQuery(encode_max_resp_code(2000))
    r.take(r.mld.handle_query(r.now, q))
    r.advance(2.0)
    reports = [a for _, a in r.log if isinstance(a, SendMld)][n:]
    assert len(reports) == 1
    (rec,) = reports[0].report.records
    assert rec.record_type == MldRecordType.MODE_IS_EXCLUDE
    assert rec.multicast_address == solicited_node_multicast(ADDR)
    # a query for a group we are not in: nothing
    r.take(r.mld.handle_query(r.now, MldQuery(1000, parse_ip("ff02::1:ff00:9"))))
    r.advance(5)
    assert len([a for _, a in r.log if isinstance(a, SendMld)]) == n + 1


def mld_sent(r: Rig, since: int = 0) -> list[tuple[int, bytes, bytes]]:
    """(ICMPv6 type, group, destination) of the MLDv1 messages sent."""
    out = []
    for _, a in r.log[since:]:
        if isinstance(a, SendMld) and isinstance(a.report, MldV1Message):
            out.append((a.report.type, a.report.multicast_address, a.dst))
    return out


def test_mldv1_querier_switches_to_v1_and_back() -> None:
    """RFC 3810 §8.2.1 with RFC 2710 §4: an MLDv1 query makes the host
    speak MLDv1 for Robustness x Query Interval + Query Response Interval."""
    r = rig(cfg(mld_robustness=2, mld_query_interval_s=10.0))
    r.add()  # the solicited-node group: a v2 report, one retransmission pending
    sol = solicited_node_multicast(ADDR)
    mark = len(r.log)
    r.take(r.mld.handle_query(r.now, MldQuery(1000, version=1)))
    assert r.mld.version == 1
    r.advance(1.0)
    assert mld_sent(r, mark) == [(131, sol, sol)]  # a v1 report to the group itself
    v2 = [a for _, a in r.log[mark:] if isinstance(a, SendMld) and isinstance(a.report, MldReport)]
    assert v2 == []  # the pending MLDv2 retransmission was cancelled
    group = parse_ip("ff3e:40:2001:db8::7")
    mark = len(r.log)
    r.take(r.mld.join(r.now, group))
    r.advance(10.0)
    assert mld_sent(r, mark) == [(131, group, group), (131, group, group)]  # repeated once
    # Suppression: another listener's report cancels ours.
    r.take(r.mld.handle_query(r.now, MldQuery(5000, group, version=1)))
    r.take(r.mld.handle_report(r.now, group))
    mark = len(r.log)
    r.advance(6.0)
    assert mld_sent(r, mark) == [] and r.mld.stats.reports_suppressed == 1
    r.take(r.mld.leave(r.now, group))
    assert mld_sent(r, mark) == [(132, group, ALL_ROUTERS)]  # Done to ff02::2
    r.advance(20.0)  # 2 x 10 s + its 5 s response delay after the last v1 query
    assert r.mld.version == 2
    actions = r.take(r.mld.join(r.now, group))
    assert isinstance(actions[0].report, MldReport)


def test_mld_adopts_the_queriers_robustness_and_interval() -> None:
    """RFC 3810 §5.1.8/§5.1.9: QRV and QQIC of an MLDv2 query."""
    r = rig(cfg(mld_robustness=2))
    r.take(r.mld.handle_query(r.now, MldQuery(1000, qrv=3, qqic=20)))
    assert (r.mld.robustness, r.mld.query_interval_s) == (3, 20)
    group = parse_ip("ff3e:40:2001:db8::8")
    mark = len(r.log)
    r.take(r.mld.join(r.now, group))
    r.advance(5)
    assert len([a for _, a in r.log[mark:] if isinstance(a, SendMld)]) == 3
    r.take(r.mld.handle_query(r.now, MldQuery(2000, version=1)))
    r.advance(3 * 20 + 1.9)
    assert r.mld.version == 1
    r.advance(0.2)  # 3 x 20 s + 2 s
    assert r.mld.version == 2


def test_mld_source_is_link_local_once_usable() -> None:
    r = rig(cfg(auto_gen_link_local=True))
    ll = opaque(bytes.fromhex("fe80") + bytes(14))
    r.add()
    last = [a for _, a in r.log if isinstance(a, SendMld)][-1]
    assert last.src == ll


def test_a_report_is_split_to_fit_the_minimum_mtu() -> None:
    """RFC 3810 §5.2.15: records that do not fit one report go in more
    reports, never in a fragmented one."""
    r = rig(cfg(mld_robustness=1))
    r.mld.stop()
    for i in range(1, 101):
        r.mld.join(r.now, parse_ip(f"ff3e:40:2001:db8::{i:x}"))
    sent = r.take(r.mld.start(r.now))
    assert [len(s.report.records) for s in sent] == [61, 39]
    assert all(40 + 8 + s.report.length <= 1280 for s in sent)


def test_a_source_specific_query_is_answered_for_its_sources() -> None:
    """RFC 3810 §6.3: our state is EXCLUDE {}, so a Multicast Address and
    Source Specific Query is answered IS_IN with the queried sources."""
    r = rig(cfg(mld_robustness=1))
    group, source = parse_ip("ff3e:40:2001:db8::7"), parse_ip("2001:db8::99")
    r.take(r.mld.join(r.now, group))
    mark = len(r.log)
    r.take(r.mld.handle_query(r.now, MldQuery(1000, group, sources=(source,))))
    r.advance(2)
    (sent,) = [a for _, a in r.log[mark:] if isinstance(a, SendMld)]
    (rec,) = sent.report.records
    assert rec.record_type == MldRecordType.MODE_IS_INCLUDE and rec.sources == (source,)
