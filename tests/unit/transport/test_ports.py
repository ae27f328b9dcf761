"""Port reservations with Linux's bind/connect rules: 5-tuple reservations,
dual stack, devices, reuse-port order."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.addr import IPV4_ANY, IPV6_ANY, parse_ip
from shardnet.common.flowhash import shard_for
from shardnet.shards.transport.ports import TCP, UDP, PortManager, Reservation

A4, B4 = parse_ip("198.18.0.2"), parse_ip("198.18.0.3")
PEER4, PEER4B = parse_ip("198.18.0.1"), parse_ip("198.18.0.9")
A6 = parse_ip("2001:db8::2")
MAPPED_A4 = parse_ip("::ffff:198.18.0.2")


def bind(
    pm: PortManager, addr: bytes, port: int = 8080, proto: int = TCP, **kw: object
) -> Reservation:
    return pm.reserve(Reservation(proto, addr, port, **kw))


def refused(pm: PortManager, addr: bytes, port: int = 8080, proto: int = TCP, **kw: object) -> None:
    with pytest.raises(OSError) as exc:
        bind(pm, addr, port, proto, **kw)
    assert exc.value.errno == errno.EADDRINUSE


def test_same_address_and_port_conflict_and_release_frees_it() -> None:
    pm = PortManager()
    first = bind(pm, A4)
    refused(pm, A4)
    pm.release(first)
    bind(pm, A4)


def test_different_addresses_share_a_port_but_not_with_the_wildcard() -> None:
    pm = PortManager()
    bind(pm, A4)
    bind(pm, B4)
    refused(pm, IPV4_ANY)
    pm2 = PortManager()
    bind(pm2, IPV4_ANY)
    refused(pm2, A4)


def test_protocols_are_separate() -> None:
    pm = PortManager()
    bind(pm, A4, proto=TCP)
    bind(pm, A4, proto=UDP)


def test_dual_stack_wildcard_covers_ipv4_unless_v6only() -> None:
    """RFC 3493 §5.3: [::] without V6ONLY takes the port for IPv4 too; with V6ONLY not."""
    pm = PortManager()
    bind(pm, IPV6_ANY)
    refused(pm, A4)
    refused(pm, IPV4_ANY)
    pm2 = PortManager()
    bind(pm2, IPV6_ANY, v6only=True)
    bind(pm2, A4)
    refused(pm2, A6)


def test_v4_mapped_address_is_the_ipv4_address() -> None:
    pm = PortManager()
    bind(pm, MAPPED_A4)
    refused(pm, A4)


def test_reuse_port_shares_within_one_owner_only() -> None:
    pm = PortManager()
    bind(pm, A4, reuse_port=True, uid=1)
    bind(pm, A4, reuse_port=True, uid=1)
    refused(pm, A4, reuse_port=True, uid=2)
    refused(pm, A4)  # the newcomer must ask too


def test_reuse_addr_shares_except_with_a_tcp_listener() -> None:
    pm = PortManager()
    bind(pm, A4, reuse_addr=True)
    bind(pm, A4, reuse_addr=True)
    refused(pm, A4, reuse_addr=True, listener=True)
    udp = PortManager()
    bind(udp, A4, proto=UDP, reuse_addr=True)
    bind(udp, A4, proto=UDP, reuse_addr=True)


def test_bind_to_device_separates() -> None:
    """SO_BINDTODEVICE: sockets bound to different NICs may share a port without SO_REUSEPORT."""
    pm = PortManager()
    bind(pm, IPV4_ANY, nic=1)
    bind(pm, IPV4_ANY, nic=2)
    refused(pm, IPV4_ANY)  # unbound overlaps both


def test_connections_share_a_local_port_unless_the_4_tuple_repeats() -> None:
    """The 5-tuple is what must be unique for connected sockets."""
    pm = PortManager()
    pm.reserve(Reservation(TCP, A4, 40000, PEER4, 80))
    pm.reserve(Reservation(TCP, A4, 40000, PEER4B, 80))
    pm.reserve(Reservation(TCP, A4, 40000, PEER4, 443))
    with pytest.raises(OSError):
        pm.reserve(Reservation(TCP, A4, 40000, PEER4, 80))
    with pytest.raises(OSError):
        bind(pm, A4, 40000)  # a plain bind of a port connections use


def test_ephemeral_connect_hashes_to_the_shard_and_avoids_used_tuples() -> None:
    pm = PortManager()
    seen = set()
    for i in range(50):
        res = pm.reserve_ephemeral(
            Reservation(TCP, A4, 0, PEER4, 80), shard=1, nshards=4, start=40000 + i
        )
        assert shard_for(TCP, A4, res.local_port, PEER4, 80, 4) == 1
        assert res.local_port not in seen
        seen.add(res.local_port)


def test_ephemeral_bind_skips_ports_in_use_and_runs_out() -> None:
    pm = PortManager(lo=50000, hi=50003)
    ports = {
        pm.reserve_ephemeral(Reservation(UDP, A4, 0), shard=0, nshards=1, start=50000).local_port
        for _ in range(4)
    }
    assert ports == {50000, 50001, 50002, 50003}
    with pytest.raises(OSError) as exc:
        pm.reserve_ephemeral(Reservation(UDP, A4, 0), shard=0, nshards=1, start=50000)
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_reuse_port_group_is_kept_in_creation_order() -> None:
    """Reuse-port groups: members stay sorted by their unique id, whatever leaves."""
    pm = PortManager()
    members = [bind(pm, A4, reuse_port=True) for _ in range(4)]
    pm.release(members[1])
    late = bind(pm, A4, reuse_port=True)
    assert [r.ident for r in pm.reservations(TCP, 8080)] == [
        members[0].ident,
        members[2].ident,
        members[3].ident,
        late.ident,
    ]


addrs = st.sampled_from([A4, B4, IPV4_ANY, IPV6_ANY, A6, MAPPED_A4])


@given(st.lists(st.tuples(addrs, st.booleans(), st.booleans(), st.booleans()), max_size=12))
def test_conflict_is_symmetric_and_no_two_live_reservations_conflict(binds: list) -> None:
    from shardnet.shards.transport.ports import conflicts

    pm = PortManager()
    live = []
    for addr, reuse_addr, reuse_port, v6only in binds:
        res = Reservation(
            TCP, addr, 9000, reuse_addr=reuse_addr, reuse_port=reuse_port, v6only=v6only
        )
        for other in live:
            assert conflicts(res, other) == conflicts(other, res)
        try:
            live.append(pm.reserve(res))
        except OSError:
            assert any(conflicts(res, o) for o in live)
    for i, a in enumerate(live):
        assert not any(conflicts(a, b) for b in live[i + 1 :])


def test_an_unconnected_ephemeral_port_is_one_its_shard_owns() -> None:
    """Replies to it that hash elsewhere are steered to the owner (UdpHooks)."""
    pm = PortManager()
    for shard in (0, 1, 2):
        for _ in range(20):
            res = pm.reserve_ephemeral(Reservation(UDP, A4, 0), shard=shard, nshards=3, start=40000)
            assert res.local_port % 3 == shard
