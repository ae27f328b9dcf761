"""The DHCPv4 client machine (RFC 2131) with a fake clock: every state,
NAK handling, the §4.1 backoff, INIT-REBOOT, release, and what it drops."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.dhcp4 import (
    ACK,
    BOOTREPLY,
    BOOTREQUEST,
    DISCOVER,
    FLAG_BROADCAST,
    NAK,
    OFFER,
    RELEASE,
    REQUEST,
    Dhcp4Message,
    Dhcp4View,
)
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.shards.net.actions import AddAddress, AddRoute, RemoveAddress, RemoveRoute
from shardnet.shards.net.dhcp4 import (
    MIN_RENEW_RETRANSMIT_S,
    REQUEST_TRIES,
    Dhcp4Bound,
    Dhcp4Client,
    Dhcp4Expired,
    Dhcp4Nak,
    Dhcp4Released,
    Dhcp4Renewed,
    Dhcp4State,
    SendDhcp4,
    StoreLease,
    prefix_of_mask,
)
from shardnet.shards.net.route import Route

MAC = parse_mac("02:00:00:00:00:01")
SERVER = parse_ip("198.18.0.1")
ADDR = parse_ip("198.18.0.50")
ANY, BCAST = bytes(4), b"\xff" * 4


def sent(out: list[Any]) -> list[SendDhcp4]:
    return [a for a in out if isinstance(a, SendDhcp4)]


def one_sent(out: list[Any]) -> SendDhcp4:
    msgs = sent(out)
    assert len(msgs) == 1, out
    return msgs[0]


def reply(c: Dhcp4Client, kind: int, **kw: Any) -> Dhcp4Message:
    base: dict[str, Any] = {"op": BOOTREPLY, "xid": c.xid, "chaddr": MAC, "message_type": kind}
    if kind in (OFFER, ACK):
        base |= {"yiaddr": ADDR, "server_id": SERVER, "subnet_mask": parse_ip("255.255.255.0"),
                 "routers": [SERVER], "dns_servers": [SERVER], "domain_name": "example.test"}  # fmt: skip
    if kind == ACK:
        base |= {"lease_time_s": 120}
    if kind == NAK:
        base |= {"server_id": SERVER, "message": "wrong address"}
    return Dhcp4Message(**(base | kw))


def bound(t1: int | None = 10, t2: int | None = 20) -> tuple[Dhcp4Client, list[Any]]:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    res = c.handle(0.5, reply(c, OFFER), SERVER)
    assert isinstance(res, list)
    out = c.handle(1.0, reply(c, ACK, renewal_time_s=t1, rebinding_time_s=t2), SERVER)
    assert isinstance(out, list)
    return c, out


def test_discover_offer_request_ack() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    d = one_sent(c.start(0.0))
    assert c.state is Dhcp4State.SELECTING
    assert (d.src, d.dst) == (ANY, BCAST)  # §4.1: from 0.0.0.0 to the limited broadcast
    assert d.message.message_type == DISCOVER and d.message.op == BOOTREQUEST
    assert d.message.flags == FLAG_BROADCAST and d.message.chaddr == MAC
    xid = d.message.xid
    res = c.handle(0.5, reply(c, OFFER), SERVER)
    assert isinstance(res, list)
    r = one_sent(res).message
    assert c.state is Dhcp4State.REQUESTING
    # §4.3.2 SELECTING: same xid, server identifier and requested IP, ciaddr 0
    assert (r.message_type, r.xid, r.server_id, r.requested_ip) == (REQUEST, xid, SERVER, ADDR)
    assert r.ciaddr == ANY
    out = c.handle(1.0, reply(c, ACK), SERVER)
    assert isinstance(out, list)
    assert c.state is Dhcp4State.BOUND
    add = next(a for a in out if isinstance(a, AddAddress))
    assert (add.addr, add.prefix_len, add.origin, add.valid_lifetime_s) == (ADDR, 24, "dhcp", 120)
    route = next(a for a in out if isinstance(a, AddRoute)).route
    assert (route.dst, route.prefix_len, route.gateway) == (ANY, 0, SERVER)
    ev = next(a for a in out if isinstance(a, Dhcp4Bound))
    assert ev.dns_servers == (SERVER,) and ev.domain_name == "example.test"
    assert (ev.t1_s, ev.t2_s) == (60.0, 105.0)  # §4.4.5 defaults: 0.5 and 0.875 of 120 s
    assert StoreLease(ADDR, SERVER) in out
    assert c.next_deadline() == 61.0  # T1
    row = c.row(1.0)
    assert row["state"] == "BOUND" and row["server"] == "198.18.0.1"
    assert (row["t1_s"], row["t2_s"], row["expires_s"]) == (60.0, 105.0, 120.0)


def test_backoff_doubles_to_64_randomised() -> None:
    """§4.1: 4, 8, 16, 32, 64, 64 s, each within ±1 s."""
    c = Dhcp4Client(1, MAC, random.Random(7))
    now = 0.0
    c.start(now)
    gaps = []
    for _ in range(7):
        deadline = c.next_deadline()
        assert deadline is not None
        gaps.append(deadline - now)
        now = deadline
        assert one_sent(c.handle_timeout(now)).message.message_type == DISCOVER
    jitters = [gap - base for gap, base in zip(gaps, (4, 8, 16, 32, 64, 64, 64), strict=True)]
    assert all(-1 <= j <= 1 for j in jitters)
    assert len({round(j, 6) for j in jitters}) > 1  # randomised, not a fixed offset


def test_not_ours_dropped() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    assert c.handle(0.1, reply(c, OFFER, xid=c.xid ^ 1), SERVER) is Drop.DHCP_NOT_OURS
    other = parse_mac("02:00:00:00:00:02")
    assert c.handle(0.1, reply(c, OFFER, chaddr=other), SERVER) is Drop.DHCP_NOT_OURS
    assert c.handle(0.1, reply(c, OFFER, op=BOOTREQUEST), SERVER) is Drop.DHCP_NOT_REPLY
    assert c.handle(0.1, reply(c, ACK), SERVER) is Drop.DHCP_UNEXPECTED  # no REQUEST yet
    assert c.handle(0.1, reply(c, OFFER, server_id=None), SERVER) is Drop.DHCP_UNEXPECTED
    assert c.handle(0.1, reply(c, OFFER, yiaddr=BCAST), SERVER) is Drop.DHCP_UNEXPECTED
    assert c.state is Dhcp4State.SELECTING


def test_renew_at_t1_unicast() -> None:
    c, _ = bound()
    assert c.next_deadline() == 11.0
    r = one_sent(c.handle_timeout(11.0))
    assert c.state is Dhcp4State.RENEWING
    # §4.3.2 RENEWING: unicast from the address, ciaddr set, no server id or requested IP
    assert (r.src, r.dst, r.message.ciaddr) == (ADDR, SERVER, ADDR)
    assert r.message.server_id is None and r.message.requested_ip is None
    res = c.handle(11.2, reply(c, ACK, renewal_time_s=10, rebinding_time_s=20), SERVER)
    assert isinstance(res, list)
    assert c.state is Dhcp4State.BOUND
    assert not any(isinstance(a, AddAddress | RemoveAddress) for a in res)
    ev = next(a for a in res if isinstance(a, Dhcp4Renewed))
    assert ev.state == "RENEWING" and ev.lease_time_s == 120
    assert c.next_deadline() == 21.2


def test_rebind_at_t2_then_expiry_removes_address() -> None:
    c, _ = bound()
    c.handle_timeout(11.0)  # RENEWING, no answer
    # §4.4.5: the retransmission is half the time to T2, at least 60 s: T2 first.
    assert c.next_deadline() == 21.0
    r = one_sent(c.handle_timeout(21.0))
    assert c.state is Dhcp4State.REBINDING
    assert (r.src, r.dst, r.message.ciaddr) == (ADDR, BCAST, ADDR)
    assert c.next_deadline() == 21.0 + MIN_RENEW_RETRANSMIT_S
    out = c.handle_timeout(81.0)  # a rebinding retransmission, still no server
    assert one_sent(out).dst == BCAST
    assert c.next_deadline() == 121.0  # the lease's end
    out = c.handle_timeout(121.0)
    assert Dhcp4Expired(ADDR) in out
    assert RemoveAddress(ADDR) in out
    assert RemoveRoute(Route(ANY, 0, 1, SERVER, 0, "dhcp")) in out
    assert one_sent(out).message.message_type == DISCOVER  # INIT again
    assert c.state is Dhcp4State.SELECTING and c.lease is None


def test_rebinding_ack_from_another_server() -> None:
    c, _ = bound()
    c.handle_timeout(11.0)
    c.handle_timeout(21.0)
    other = parse_ip("198.18.0.2")
    res = c.handle(22.0, reply(c, ACK, server_id=other), other)
    assert isinstance(res, list) and c.state is Dhcp4State.BOUND
    assert c.lease is not None and c.lease.server == other
    assert next(a for a in res if isinstance(a, Dhcp4Renewed)).state == "REBINDING"


def test_nak_while_requesting_restarts_after_a_pause() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    c.handle(0.5, reply(c, OFFER), SERVER)
    res = c.handle(1.0, reply(c, NAK), SERVER)
    assert isinstance(res, list)
    assert Dhcp4Nak(SERVER, "wrong address", "REQUESTING") in res
    assert StoreLease(None, None) in res
    assert not sent(res) and c.state is Dhcp4State.INIT
    assert one_sent(c.handle_timeout(2.0)).message.message_type == DISCOVER


def test_nak_while_renewing_drops_the_address() -> None:
    c, _ = bound()
    c.handle_timeout(11.0)
    other = parse_ip("198.18.0.9")
    # A NAK naming another server than ours is not about our lease.
    assert c.handle(11.1, reply(c, NAK, server_id=other), other) is Drop.DHCP_UNEXPECTED
    res = c.handle(11.2, reply(c, NAK), SERVER)
    assert isinstance(res, list)
    assert RemoveAddress(ADDR) in res and c.lease is None and c.state is Dhcp4State.INIT


def test_init_reboot_requests_the_remembered_address() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1), remembered=ADDR)
    r = one_sent(c.start(0.0))
    assert c.state is Dhcp4State.REBOOTING
    # §4.3.2 INIT-REBOOT: requested IP, no server identifier, broadcast, ciaddr 0
    assert r.message.message_type == REQUEST and r.message.requested_ip == ADDR
    assert r.message.server_id is None and (r.src, r.dst) == (ANY, BCAST)
    res = c.handle(0.3, reply(c, ACK), SERVER)
    assert isinstance(res, list) and c.state is Dhcp4State.BOUND
    assert any(isinstance(a, Dhcp4Bound) for a in res)


def test_init_reboot_without_answer_falls_back_to_discover() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1), remembered=ADDR)
    c.start(0.0)
    kinds = []
    for _ in range(REQUEST_TRIES):
        deadline = c.next_deadline()
        assert deadline is not None
        kinds.append(one_sent(c.handle_timeout(deadline)).message.message_type)
    assert kinds == [REQUEST] * (REQUEST_TRIES - 1) + [DISCOVER]
    assert c.state is Dhcp4State.SELECTING


def test_init_reboot_nak_goes_to_init() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1), remembered=ADDR)
    c.start(0.0)
    res = c.handle(0.3, reply(c, NAK, server_id=None), SERVER)
    assert isinstance(res, list) and StoreLease(None, None) in res
    assert c.state is Dhcp4State.INIT and c.remembered is None


def test_stop_releases() -> None:
    c, _ = bound()
    out = c.stop(5.0)
    r = one_sent(out)
    assert r.message.message_type == RELEASE and (r.src, r.dst) == (ADDR, SERVER)
    assert r.message.ciaddr == ADDR and r.message.server_id == SERVER
    assert Dhcp4Released(ADDR, SERVER) in out and RemoveAddress(ADDR) in out
    assert c.state is Dhcp4State.STOPPED and c.next_deadline() is None


def test_infinite_lease_has_no_timers() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    c.handle(0.5, reply(c, OFFER), SERVER)
    c.handle(1.0, reply(c, ACK, lease_time_s=0xFFFFFFFF), SERVER)
    assert c.state is Dhcp4State.BOUND and c.next_deadline() is None
    assert c.row(2.0)["expires_s"] is None


def test_bad_t1_t2_fall_back_to_defaults() -> None:
    c, out = bound(t1=200, t2=300)  # past the 120 s lease: RFC 2131 §4.4.5 defaults
    ev = next(a for a in out if isinstance(a, Dhcp4Bound))
    assert (ev.t1_s, ev.t2_s) == (60.0, 105.0)


def test_prefix_of_mask() -> None:
    assert prefix_of_mask(parse_ip("255.255.255.0"), ADDR) == 24
    assert prefix_of_mask(parse_ip("255.255.255.255"), ADDR) == 32
    assert prefix_of_mask(parse_ip("255.0.255.0"), ADDR) == 24  # non-contiguous: class C
    assert prefix_of_mask(None, ADDR) == 24  # no mask: the class (198/8 is class C)


def test_nic_down_drops_the_lease_and_up_asks_for_it_again() -> None:
    c, _ = bound()
    out = c.stop(5.0, release=False)
    assert not sent(out) and RemoveAddress(ADDR) in out
    r = one_sent(c.start(6.0))
    assert c.state is Dhcp4State.REBOOTING and r.message.requested_ip == ADDR


def test_a_zero_lease_is_not_a_busy_loop() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    c.handle(0.5, reply(c, OFFER), SERVER)
    res = c.handle(1.0, reply(c, ACK, lease_time_s=0), SERVER)
    assert isinstance(res, list)
    assert c.lease is not None and c.lease.expiry == 11.0  # MIN_LEASE_S


def test_hostile_addresses_refused() -> None:
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    for bad in ("127.0.0.1", "0.1.2.3", "224.0.0.1", "240.0.0.1"):
        assert c.handle(0.1, reply(c, OFFER, yiaddr=parse_ip(bad)), SERVER) is Drop.DHCP_UNEXPECTED


@given(st.binary(max_size=120), st.integers(0, 3))
def test_hostile_options_never_raise(options: bytes, stage: int) -> None:
    """Any options in a reply with our xid and chaddr, in any state: the
    codec's MalformedPacket or the machine's Drop or actions, nothing else."""
    c = Dhcp4Client(1, MAC, random.Random(1))
    c.start(0.0)
    if stage >= 1:
        c.handle(0.5, reply(c, OFFER), SERVER)
    if stage >= 2:
        c.handle(1.0, reply(c, ACK, renewal_time_s=10, rebinding_time_s=20), SERVER)
    if stage >= 3:
        c.handle_timeout(11.0)
    head = bytearray(reply(c, ACK).to_bytes()[:240])
    try:
        msg = Dhcp4View.checked(memoryview(bytes(head) + options)).message()
    except MalformedPacket:
        return
    result = c.handle(12.0, msg, SERVER)
    assert isinstance(result, Drop | list)
    c.handle_timeout(500.0)
