"""The DHCPv6 client machine (RFC 8415) with a fake clock: stateless and
stateful exchanges, §15 retransmission timing, Renew/Rebind/expiry, Release,
Decline, and the hostile replies it drops or clamps."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.dhcp6 import (
    ADVERTISE,
    DECLINE,
    INFINITY,
    INFORMATION_REQUEST,
    OPT_INF_MAX_RT,
    OPT_INFORMATION_REFRESH_TIME,
    OPT_SOL_MAX_RT,
    REBIND,
    RECONFIGURE,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    STATUS_NO_ADDRS_AVAIL,
    STATUS_NO_BINDING,
    Dhcp6Message,
    IaAddress,
    IaNa,
    client_duid,
)
from shardnet.common.wire.errors import Drop
from shardnet.shards.net.actions import AddAddress, RemoveAddress, SetAddressKind
from shardnet.shards.net.dhcp6 import (
    IRT_MINIMUM_S,
    MAX_ADDRESSES,
    MIN_LIFETIME_S,
    REQ_MAX_RC,
    Dhcp6Bound,
    Dhcp6Client,
    Dhcp6Declined,
    Dhcp6Expired,
    Dhcp6Informed,
    Dhcp6Refused,
    Dhcp6Released,
    Dhcp6Renewed,
    Dhcp6State,
    SendDhcp6,
)
from shardnet.shards.net.model import AddressKind
from shardnet.shards.net.ndp import Dhcpv6Configuration as Mode

MAC = parse_mac("02:00:00:00:00:01")
DUID = client_duid(MAC)
SERVER_DUID = bytes.fromhex("00030001020000000002")
SERVER = parse_ip("fe80::2")
ADDR = parse_ip("2001:db8::50")
ADDR2 = parse_ip("2001:db8::51")
DNS = parse_ip("2001:db8::53")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0


def sent(out: list[Any]) -> list[Dhcp6Message]:
    return [a.message for a in out if isinstance(a, SendDhcp6)]


def one_sent(out: list[Any], kind: int) -> Dhcp6Message:
    msgs = sent(out)
    assert len(msgs) == 1 and msgs[0].msg_type == kind, out
    return msgs[0]


def run_until(c: Dhcp6Client, clock: Clock, until: float) -> list[Any]:
    """Fire the client's timers in order up to ``until``."""
    out: list[Any] = []
    while True:
        deadline = c.next_deadline()
        if deadline is None or deadline > until:
            break
        clock.now = max(clock.now, deadline)
        out += c.handle_timeout(clock.now)
    clock.now = until
    return out


def next_send(
    c: Dhcp6Client, clock: Clock, *, limit: float = 10_000.0
) -> tuple[float, Dhcp6Message]:
    """Advance to the client's next transmission."""
    while True:
        deadline = c.next_deadline()
        assert deadline is not None and deadline <= limit, "nothing sent"
        clock.now = max(clock.now, deadline)
        msgs = sent(c.handle_timeout(clock.now))
        if msgs:
            assert len(msgs) == 1
            return clock.now, msgs[0]


def server_msg(c: Dhcp6Client, kind: int, **kw: Any) -> Dhcp6Message:
    base: dict[str, Any] = {"client_id": DUID, "server_id": SERVER_DUID}
    return Dhcp6Message(kind, c.xid, **(base | kw))


def ia(*addrs: bytes, t1: int = 100, t2: int = 160, preferred: int = 200, valid: int = 300,
       iaid: int | None = None) -> IaNa:  # fmt: skip
    return IaNa(int.from_bytes(MAC[-4:], "big") if iaid is None else iaid, t1, t2,
                [IaAddress(a, preferred, valid) for a in addrs])  # fmt: skip


def handled(c: Dhcp6Client, now: float, msg: Dhcp6Message) -> list[Any]:
    out = c.handle(now, msg, SERVER)
    assert isinstance(out, list), out
    return out


def stateful(**ia_kw: Any) -> tuple[Dhcp6Client, Clock, list[Any]]:
    """A client bound to ADDR (T1 100 s, T2 160 s, lifetimes 200/300 s by default)."""
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(clock.now)
    c.configure(clock.now, Mode.MANAGED)
    _, solicit = next_send(c, clock)
    assert solicit.msg_type == SOLICIT
    handled(c, clock.now, server_msg(c, ADVERTISE, ia_na=[ia(ADDR)], preference=255))
    assert c.state is Dhcp6State.REQUESTING
    out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[ia(ADDR, **ia_kw)], dns_servers=[DNS],
                                           domains=("example.test",)))  # fmt: skip
    return c, clock, out


# --- stateless ----------------------------------------------------------------------------


def test_other_flag_sends_information_request_and_keeps_dns() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(1))
    assert c.start(0.0) == []
    assert c.configure(0.0, Mode.OTHER) == []  # §18.2.6: after a random delay of up to 1 s
    at, msg = next_send(c, clock)
    assert 0.0 <= at <= 1.0
    assert msg.msg_type == INFORMATION_REQUEST
    assert msg.client_id == DUID and msg.ia_na == [] and msg.elapsed_cs == 0
    assert OPT_INFORMATION_REFRESH_TIME in msg.oro
    out = handled(c, at + 0.1, server_msg(c, REPLY, dns_servers=[DNS], domains=("example.test",)))
    (event,) = [a for a in out if isinstance(a, Dhcp6Informed)]
    assert event.dns_servers == (DNS,) and event.domains == ("example.test",)
    assert event.refresh_s == 86400.0  # §21.23 IRT_DEFAULT
    assert c.state is Dhcp6State.INFORMED
    assert c.row(at + 1.0)["dns_servers"] == ["2001:db8::53"]
    # The refresh: a new Information-request a day later.
    refresh_at, again = next_send(c, clock, limit=100_000.0)
    assert refresh_at == pytest.approx(at + 0.1 + 86400.0)
    assert again.msg_type == INFORMATION_REQUEST and again.xid != msg.xid


@pytest.mark.parametrize(("given", "expect"), [(10, IRT_MINIMUM_S), (700, 700.0), (INFINITY, None)])
def test_information_refresh_time(given: int, expect: float | None) -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(1))
    c.start(0.0)
    c.configure(0.0, Mode.OTHER)
    next_send(c, clock)
    out = handled(c, clock.now, server_msg(c, REPLY, info_refresh_s=given))
    (event,) = [a for a in out if isinstance(a, Dhcp6Informed)]
    assert event.refresh_s == expect  # §21.23: at least IRT_MINIMUM, 0xffffffff never
    if expect is None:
        assert c.next_deadline() is None


def test_no_flags_nothing_sent() -> None:
    c = Dhcp6Client(1, MAC, random.Random(1))
    assert c.start(0.0) == [] and c.configure(0.0, Mode.NONE) == []
    assert c.next_deadline() is None


# --- §15 retransmission ---------------------------------------------------------------------


def test_information_request_retransmission_timing() -> None:
    """RT = IRT ± 10 %, then 2·RT ± 10 %, capped at MRT ± 10 % (INF: 1 s, 3600 s);
    Elapsed Time grows with each retransmission."""
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(3))
    c.start(0.0)
    c.configure(0.0, Mode.OTHER)
    times, elapsed = [], []
    for _ in range(16):
        at, msg = next_send(c, clock, limit=1e9)
        assert msg.msg_type == INFORMATION_REQUEST
        times.append(at)
        elapsed.append(msg.elapsed_cs)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 0.9 <= gaps[0] <= 1.1
    for prev, gap in zip(gaps, gaps[1:], strict=False):
        if gap < 3240:
            assert 1.9 * prev <= gap <= 2.1 * prev
    assert all(gap <= 3960 for gap in gaps)
    assert 3240 <= gaps[-1] <= 3960
    assert elapsed[0] == 0 and elapsed[1] == pytest.approx(gaps[0] * 100, abs=1)
    assert elapsed[-1] == 0xFFFF  # §21.9: capped
    assert len({m for m in [c.xid]}) == 1  # one exchange, one transaction id


def test_first_solicit_rt_above_irt() -> None:
    """§18.2.1: the first RT of Solicit is strictly greater than IRT."""
    for seed in range(20):
        clock = Clock()
        c = Dhcp6Client(1, MAC, random.Random(seed))
        c.start(0.0)
        c.configure(0.0, Mode.MANAGED)
        first, _ = next_send(c, clock)
        second, again = next_send(c, clock)
        assert again.msg_type == SOLICIT
        assert 1.0 < second - first <= 1.1


# --- stateful ------------------------------------------------------------------------------


def test_solicit_request_reply_binds_a_128() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    _, solicit = next_send(c, clock)
    assert solicit.client_id == DUID and solicit.server_id is None
    assert solicit.ia_na and solicit.ia_na[0].addresses == []
    # §18.2.9: a preference below 255 waits for the first RT to pass.
    assert handled(c, clock.now + 0.2, server_msg(c, ADVERTISE, ia_na=[ia(ADDR)])) == []
    assert c.state is Dhcp6State.SOLICITING
    at, request = next_send(c, clock)
    assert request.msg_type == REQUEST
    assert request.server_id == SERVER_DUID and request.xid != solicit.xid
    assert [a.addr for a in request.ia_na[0].addresses] == [ADDR]
    out = handled(c, at + 0.1, server_msg(c, REPLY, ia_na=[ia(ADDR)], dns_servers=[DNS]))
    (add,) = [a for a in out if isinstance(a, AddAddress)]
    assert (add.addr, add.prefix_len, add.origin) == (ADDR, 128, "dhcp")  # §21.4: /128
    assert add.connected_route is False
    (bound,) = [a for a in out if isinstance(a, Dhcp6Bound)]
    assert bound.addresses == (ADDR,) and bound.dns_servers == (DNS,)
    assert (bound.t1_s, bound.t2_s) == (100.0, 160.0)
    assert c.state is Dhcp6State.BOUND
    row = c.row(at + 10.1, ADDR)
    assert row["state"] == "BOUND" and row["valid_s"] == pytest.approx(290.0)


def test_best_advertise_wins() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    next_send(c, clock)
    other = bytes.fromhex("0003000102000000aaaa")
    handled(c, clock.now, server_msg(c, ADVERTISE, ia_na=[ia(ADDR2)], preference=10,
                                     server_id=other))  # fmt: skip
    handled(c, clock.now, server_msg(c, ADVERTISE, ia_na=[ia(ADDR)], preference=5))
    _, request = next_send(c, clock)
    assert request.server_id == other
    assert [a.addr for a in request.ia_na[0].addresses] == [ADDR2]


def test_request_gives_up_after_mrc_and_solicits() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    next_send(c, clock)
    handled(c, clock.now, server_msg(c, ADVERTISE, ia_na=[ia(ADDR)], preference=255))
    kinds = [next_send(c, clock)[1].msg_type for _ in range(REQ_MAX_RC)]
    assert kinds == [REQUEST] * (REQ_MAX_RC - 1) + [SOLICIT]  # the first Request was sent at once


def test_renew_at_t1_rebind_at_t2_expiry_solicits() -> None:
    c, clock, _ = stateful()
    t0 = clock.now  # bound
    at, renew = next_send(c, clock)
    assert at == pytest.approx(t0 + 100.0) and renew.msg_type == RENEW
    assert renew.server_id == SERVER_DUID
    assert [a.addr for a in renew.ia_na[0].addresses] == [ADDR]
    # §18.2.4: Renew retransmissions (REN_TIMEOUT 10 s, doubling) stop at T2.
    renews = [renew]
    while True:
        at, msg = next_send(c, clock)
        if msg.msg_type != RENEW:
            break
        renews.append(msg)
    assert msg.msg_type == REBIND and at == pytest.approx(t0 + 160.0)
    assert len(renews) == 3  # at 100, ~110, ~130 (the next would be ~170 > T2)
    assert msg.server_id is None  # §18.2.5
    # No answer: the address is deprecated at 200 s, removed at 300 s, Solicit again.
    out = run_until(c, clock, t0 + 200.0)
    assert SetAddressKind(ADDR, AddressKind.DEPRECATED) in out
    out = run_until(c, clock, t0 + 300.0)
    assert RemoveAddress(ADDR) in out
    assert any(isinstance(a, Dhcp6Expired) for a in out)
    assert [m.msg_type for m in sent(out)][-1] == SOLICIT


def test_renew_reply_extends() -> None:
    c, clock, _ = stateful()
    next_send(c, clock)  # Renew at T1
    out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[ia(ADDR, valid=1000, preferred=900)]))
    (renewed,) = [a for a in out if isinstance(a, Dhcp6Renewed)]
    assert renewed.state == "RENEW"
    assert not [a for a in out if isinstance(a, AddAddress | RemoveAddress)]
    assert c.state is Dhcp6State.BOUND
    assert c.row(clock.now, ADDR)["valid_s"] == pytest.approx(1000.0)


def test_no_binding_on_renew_requests() -> None:
    c, clock, _ = stateful()
    next_send(c, clock)
    bad = IaNa(c.iaid, 0, 0, [], STATUS_NO_BINDING)
    out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[bad]))
    assert one_sent(out, REQUEST).ia_na[0].addresses[0].addr == ADDR  # §18.2.10.1


def test_zero_t1_t2_left_to_client() -> None:
    c, _, out = stateful(t1=0, t2=0)
    (bound,) = [a for a in out if isinstance(a, Dhcp6Bound)]
    assert (bound.t1_s, bound.t2_s) == (100.0, 160.0)  # §18.2.4: 0.5 and 0.8 of preferred 200


def test_infinite_lifetimes_no_timers() -> None:
    c, _, out = stateful(t1=INFINITY, t2=INFINITY, preferred=INFINITY, valid=INFINITY)
    (bound,) = [a for a in out if isinstance(a, Dhcp6Bound)]
    assert bound.t1_s is None and bound.t2_s is None
    assert c.next_deadline() is None


def test_release_on_stop() -> None:
    c, clock, _ = stateful()
    out = c.stop(clock.now + 5)
    release = one_sent(out, RELEASE)
    assert release.server_id == SERVER_DUID and release.ia_na[0].addresses[0].addr == ADDR
    assert RemoveAddress(ADDR) in out and any(isinstance(a, Dhcp6Released) for a in out)
    assert c.state is Dhcp6State.STOPPED and c.next_deadline() is None


def test_nic_down_drops_without_release() -> None:
    c, clock, _ = stateful()
    out = c.stop(clock.now, release=False)
    assert sent(out) == [] and RemoveAddress(ADDR) in out


def test_decline_after_dad_failure_then_solicit() -> None:
    c, clock, _ = stateful()
    out = c.decline(clock.now, ADDR)
    decline = one_sent(out, DECLINE)
    assert decline.ia_na[0].addresses[0].addr == ADDR and decline.server_id == SERVER_DUID
    assert RemoveAddress(ADDR) in out and any(isinstance(a, Dhcp6Declined) for a in out)
    out = handled(c, clock.now + 0.1, server_msg(c, REPLY))
    assert c.state is Dhcp6State.SOLICITING
    _, msg = next_send(c, clock)
    assert msg.msg_type == SOLICIT


def test_decline_unanswered_gives_up_after_mrc() -> None:
    c, clock, _ = stateful()
    c.decline(clock.now, ADDR)
    kinds = [next_send(c, clock)[1].msg_type for _ in range(4)]
    assert kinds == [DECLINE, DECLINE, DECLINE, SOLICIT]  # DEC_MAX_RC 4


# --- hostile replies ----------------------------------------------------------------------


def test_hostile_messages_dropped() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    next_send(c, clock)
    good = {"ia_na": [ia(ADDR)], "preference": 255}
    assert c.handle(1, server_msg(c, RECONFIGURE), SERVER) is Drop.DHCP6_RECONFIGURE
    assert c.handle(1, server_msg(c, SOLICIT), SERVER) is Drop.DHCP6_NOT_REPLY
    wrong_xid = Dhcp6Message(ADVERTISE, c.xid ^ 1, client_id=DUID, server_id=SERVER_DUID, **good)
    assert c.handle(1, wrong_xid, SERVER) is Drop.DHCP6_NOT_OURS
    assert c.handle(1, server_msg(c, ADVERTISE, client_id=b"\x00\x03xx", **good), SERVER) is (
        Drop.DHCP6_NOT_OURS
    )
    assert c.handle(1, server_msg(c, ADVERTISE, server_id=None, **good), SERVER) is (
        Drop.DHCP6_UNEXPECTED
    )
    assert c.handle(1, server_msg(c, REPLY, **good), SERVER) is Drop.DHCP6_UNEXPECTED
    # §18.2.9: an Advertise without addresses, or with NoAddrsAvail, is ignored.
    assert c.handle(1, server_msg(c, ADVERTISE), SERVER) is Drop.DHCP6_UNEXPECTED
    noaddr = server_msg(c, ADVERTISE, status=STATUS_NO_ADDRS_AVAIL, **good)
    assert c.handle(1, noaddr, SERVER) is Drop.DHCP6_UNEXPECTED
    assert c.handle(1, server_msg(c, ADVERTISE, ia_na=[ia(ADDR, iaid=2)]), SERVER) is (
        Drop.DHCP6_UNEXPECTED
    )
    assert c.state is Dhcp6State.SOLICITING


def _requesting() -> tuple[Dhcp6Client, Clock]:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(7))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    next_send(c, clock)
    handled(c, clock.now, server_msg(c, ADVERTISE, ia_na=[ia(ADDR)], preference=255))
    return c, clock


def test_t1_above_t2_ignored() -> None:
    c, clock = _requesting()
    assert c.handle(clock.now, server_msg(c, REPLY, ia_na=[ia(ADDR, t1=200, t2=100)]), SERVER) is (
        Drop.DHCP6_BAD_LIFETIMES
    )  # §21.4
    assert c.state is Dhcp6State.REQUESTING and not c.addresses


def test_bad_addresses_skipped_and_counted() -> None:
    c, clock = _requesting()
    bad_life = IaAddress(ADDR2, 500, 100)  # §21.6: preferred > valid
    link_local = IaAddress(parse_ip("fe80::99"), 100, 200)
    multicast = IaAddress(parse_ip("ff02::1"), 100, 200)
    reply_ia = IaNa(c.iaid, 100, 160, [bad_life, link_local, multicast, IaAddress(ADDR, 200, 300)])
    out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[reply_ia]))
    refused = [a.reason for a in out if isinstance(a, Dhcp6Refused)]
    assert refused.count(Drop.DHCP6_BAD_LIFETIMES) == 1
    assert refused.count(Drop.DHCP6_UNEXPECTED) == 2
    assert [a.addr for a in out if isinstance(a, AddAddress)] == [ADDR]


def test_only_bad_addresses_keep_requesting() -> None:
    c, clock = _requesting()
    reply_ia = IaNa(c.iaid, 100, 160, [IaAddress(ADDR, 500, 100)])
    assert c.handle(clock.now, server_msg(c, REPLY, ia_na=[reply_ia]), SERVER) is (
        Drop.DHCP6_UNEXPECTED
    )
    assert c.state is Dhcp6State.REQUESTING


def test_tiny_lifetimes_clamped() -> None:
    c, clock, out = stateful(t1=0, t2=0, preferred=0, valid=1)
    assert Dhcp6Refused(Drop.DHCP6_BAD_LIFETIMES) in out
    assert c.row(clock.now, ADDR)["valid_s"] == MIN_LIFETIME_S
    # Not a storm: the Renew comes seconds later (T1 of the clamped lifetime), not at once.
    bound_at = clock.now
    at, msg = next_send(c, clock)
    assert msg.msg_type == RENEW and at >= bound_at + 4.0


def test_no_addrs_avail_on_request_solicits_later() -> None:
    c, clock = _requesting()
    failed = IaNa(c.iaid, 0, 0, [], STATUS_NO_ADDRS_AVAIL)
    out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[failed]))
    assert sent(out) == [] and c.state is Dhcp6State.SOLICITING
    at, msg = next_send(c, clock)
    assert msg.msg_type == SOLICIT and at >= 1.0


def test_managed_after_stateless_solicits() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(1))
    c.start(0.0)
    c.configure(0.0, Mode.OTHER)
    next_send(c, clock)
    handled(c, clock.now, server_msg(c, REPLY, dns_servers=[DNS]))
    c.configure(clock.now, Mode.MANAGED)
    _, msg = next_send(c, clock)
    assert msg.msg_type == SOLICIT


def test_addresses_held_are_bounded() -> None:
    """A server handing out new addresses at every Renew: at most MAX_ADDRESSES held."""
    c, clock, _ = stateful()
    refused = 0
    for round_ in range(4):
        next_send(c, clock)  # Renew at T1
        fresh = [parse_ip(f"2001:db8::{round_}:{i}") for i in range(1, 8)]
        out = handled(c, clock.now, server_msg(c, REPLY, ia_na=[ia(ADDR, *fresh)]))
        refused += out.count(Dhcp6Refused(Drop.DHCP6_TOO_MANY))
        assert ADDR in c.addresses and len(c.addresses) <= MAX_ADDRESSES
    assert refused >= 7


_lifetime = st.sampled_from([0, 1, 5, 100, 3600, INFINITY]) | st.integers(0, 2**32 - 1)
_server_ia = st.builds(
    IaNa,
    st.sampled_from([1, 2]),
    _lifetime,
    _lifetime,
    st.lists(
        st.builds(IaAddress, st.sampled_from([ADDR, ADDR2, parse_ip("fe80::5"), bytes(16)]),
                  _lifetime, _lifetime, st.sampled_from([None, 0, 2, 3])),
        max_size=3,
    ),
    st.sampled_from([None, 0, STATUS_NO_ADDRS_AVAIL, STATUS_NO_BINDING]),
)  # fmt: skip


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([ADVERTISE, REPLY, RECONFIGURE, SOLICIT]),
            st.booleans(),  # our transaction id
            st.lists(_server_ia, max_size=2),
            st.floats(0, 5000),  # time passing before it
            st.none() | st.integers(0, 255),
        ),
        max_size=25,
    ),
    mode=st.sampled_from([Mode.MANAGED, Mode.OTHER]),
)
def test_hostile_servers_never_break_the_client(
    steps: list[tuple[int, bool, list[IaNa], float, int | None]], mode: Mode
) -> None:
    """Whatever servers send and whenever: no exception, the addresses held
    stay bounded and within their lifetimes, a timer is always pending
    while an exchange is under way."""
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(5))
    c.start(0.0)
    c.configure(0.0, mode)
    for kind, ours, ias, wait, preference in steps:
        run_until(c, clock, clock.now + wait)
        xid = c.xid if ours else (c.xid + 1) & 0xFFFFFF
        msg = Dhcp6Message(kind, xid, client_id=DUID, server_id=SERVER_DUID, ia_na=ias,
                           preference=preference)  # fmt: skip
        c.handle(clock.now, msg, SERVER)
        assert len(c.addresses) <= MAX_ADDRESSES
        assert all(lease.valid_end > clock.now for lease in c.addresses.values())
        if c.state not in (Dhcp6State.BOUND, Dhcp6State.INFORMED):
            assert c.next_deadline() is not None


@pytest.mark.parametrize(("given", "cap"), [(120, 120.0), (30, 3600.0), (100_000, 3600.0)])
def test_sol_max_rt_from_a_server(given: int, cap: float) -> None:
    """§18.2.9, §21.24: an Advertise's SOL_MAX_RT (60..86400, others ignored)
    caps the Solicit retransmissions, even an Advertise without addresses."""
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(2))
    c.start(0.0)
    c.configure(0.0, Mode.MANAGED)
    _, solicit = next_send(c, clock)
    assert OPT_SOL_MAX_RT in solicit.oro  # §18.2.1: asked for
    noaddrs = server_msg(c, ADVERTISE, status=STATUS_NO_ADDRS_AVAIL, sol_max_rt_s=given)
    assert c.handle(clock.now, noaddrs, SERVER) is Drop.DHCP6_UNEXPECTED
    times = [next_send(c, clock, limit=1e9)[0] for _ in range(16)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= cap * 1.1 and gaps[-1] >= cap * 0.9


def test_inf_max_rt_from_a_server() -> None:
    clock = Clock()
    c = Dhcp6Client(1, MAC, random.Random(2))
    c.start(0.0)
    c.configure(0.0, Mode.OTHER)
    _, info = next_send(c, clock)
    assert OPT_INF_MAX_RT in info.oro
    # An UnspecFail Reply still carries INF_MAX_RT (§18.2.10); the exchange goes on.
    failed = server_msg(c, REPLY, status=1, inf_max_rt_s=60)
    assert c.handle(clock.now, failed, SERVER) is Drop.DHCP6_UNEXPECTED
    times = [next_send(c, clock, limit=1e9)[0] for _ in range(12)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 66 and gaps[-1] >= 54
