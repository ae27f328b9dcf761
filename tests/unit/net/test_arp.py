"""ARP glue: RFC 826 answers and merge rule, RFC 5227 probes, announcements
and conflicts, resolution end to end; scapy builds what comes in and
dissects what goes out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Padding

from shardnet.common.addr import format_ip, format_mac, parse_ip, parse_mac
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.shards.net.arp import ArpHandler
from shardnet.shards.net.neighbour import NeighbourConfig, NeighbourTable, NudState

OUR_MAC = parse_mac("02:00:00:00:00:01")
OUR_IP, OUR_IP2 = parse_ip("198.18.0.1"), parse_ip("198.18.0.11")
PEER_MAC, PEER_IP = parse_mac("02:00:00:00:00:02"), parse_ip("198.18.0.2")
OTHER_MAC, OTHER_IP = parse_mac("02:00:00:00:00:03"), parse_ip("198.18.0.3")
NEW_MAC = parse_mac("02:00:00:00:00:04")
BCAST = "ff:ff:ff:ff:ff:ff"
OURS = {OUR_IP, OUR_IP2}


def handler(**cfg: int) -> ArpHandler:
    table = NeighbourTable(NeighbourConfig(**cfg))
    return ArpHandler(table, OUR_MAC, OURS.__contains__, lambda ip: OUR_IP)


def arp_in(
    op: int,
    sha: bytes,
    spa: bytes,
    tpa: bytes,
    tha: bytes = bytes(6),
) -> bytes:
    """The Ethernet payload of an ARP packet built by scapy."""
    return bytes(
        ARP(
            op=op,
            hwsrc=format_mac(sha),
            psrc=format_ip(spa),
            hwdst=format_mac(tha),
            pdst=format_ip(tpa),
        )
    )


def patched(template: bytes, sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    """A scapy-built ``template`` with new sender/target addresses (fast, for
    floods): RFC 826 offsets 8 (sha), 14 (spa), 24 (tpa)."""
    return template[:8] + sha + spa + template[18:24] + tpa


def dissect(frame: bytes) -> Ether:
    assert len(frame) == 60  # padded to the Ethernet minimum
    pkt = Ether(frame)
    assert ARP in pkt and Padding in pkt and bytes(pkt[Padding]) == bytes(18)
    return pkt


def check_arp(frame: bytes, *, dst: str, op: int, psrc: str, hwdst: str, pdst: str) -> None:
    pkt = dissect(frame)
    assert (pkt.dst, pkt.src, pkt.type) == (dst, format_mac(OUR_MAC), 0x0806)
    a = pkt[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 0x0800, 6, 4)
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (op, format_mac(OUR_MAC), psrc, hwdst, pdst)


# --- answering (RFC 826) ---------------------------------------------------------------------
def test_request_for_our_address_gets_a_unicast_reply_and_teaches_the_sender() -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, PEER_MAC, PEER_IP, OUR_IP2), unicast=False)
    (frame,) = res.frames
    check_arp(
        frame,
        dst="02:00:00:00:00:02",
        op=2,
        psrc="198.18.0.11",
        hwdst="02:00:00:00:00:02",
        pdst="198.18.0.2",
    )
    # A request does not confirm reachability (Linux arp_process): STALE.
    assert arp.table.lookup(PEER_IP) == PEER_MAC
    assert arp.table.state(PEER_IP) is NudState.STALE
    assert res.packets == [] and res.ip is None
    assert (arp.stats.requests_in, arp.stats.replies_out) == (1, 1)


def test_reply_is_what_scapy_would_build() -> None:
    arp = handler()
    (frame,) = arp.handle(0.0, arp_in(1, PEER_MAC, PEER_IP, OUR_IP)).frames
    expected = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / ARP(
        op=2,
        hwsrc="02:00:00:00:00:01",
        psrc="198.18.0.1",
        hwdst="02:00:00:00:00:02",
        pdst="198.18.0.2",
    )
    assert frame == bytes(expected).ljust(60, b"\x00")


def test_request_for_someone_else_gets_no_reply_and_creates_nothing() -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, PEER_MAC, PEER_IP, OTHER_IP), unicast=False)
    assert res.frames == [] and PEER_IP not in arp.table


def test_merge_rule_updates_a_known_sender_from_any_arp() -> None:
    arp = handler()
    arp.table.learn(0.0, PEER_IP, PEER_MAC, solicited=True, create=True)
    arp.table.drain_changes()
    # A request for someone else, from the known sender with a new MAC.
    res = arp.handle(1.0, arp_in(1, NEW_MAC, PEER_IP, OTHER_IP), unicast=False)
    assert res.frames == []
    assert arp.table.lookup(PEER_IP) == NEW_MAC
    assert arp.table.state(PEER_IP) is NudState.STALE
    assert arp.table.drain_changes() == [(PEER_IP, NEW_MAC)]


def test_gratuitous_arp_updates_known_neighbours_only() -> None:
    arp = handler()
    arp.handle(0.0, arp_in(1, OTHER_MAC, OTHER_IP, OTHER_IP), unicast=False)
    assert OTHER_IP not in arp.table  # like Linux with arp_accept=0
    arp.table.learn(0.0, OTHER_IP, OTHER_MAC, solicited=True, create=True)
    arp.handle(1.0, arp_in(2, NEW_MAC, OTHER_IP, OTHER_IP), unicast=False)  # gratuitous reply
    assert arp.table.lookup(OTHER_IP) == NEW_MAC


def test_unsolicited_reply_targeting_us_creates_the_entry() -> None:
    # RFC 826: "Am I the target protocol address? Yes: ... add the triplet".
    arp = handler()
    res = arp.handle(0.0, arp_in(2, PEER_MAC, PEER_IP, OUR_IP, OUR_MAC))
    assert res.frames == [] and arp.table.lookup(PEER_IP) == PEER_MAC


# --- resolution ----------------------------------------------------------------------------
def test_resolution_end_to_end() -> None:
    arp = handler()
    assert arp.table.resolve(0.0, PEER_IP, b"ip packet") is None
    (req,) = arp.poll_transmit()
    check_arp(req, dst=BCAST, op=1, psrc="198.18.0.1", hwdst="00:00:00:00:00:00", pdst="198.18.0.2")
    assert arp.poll_transmit() == []
    # The peer answers as scapy's ARP "is-at" would.
    pkt = dissect(req)
    reply = ARP(op=2, hwsrc="02:00:00:00:00:02", psrc=pkt.pdst, hwdst=pkt.hwsrc, pdst=pkt.psrc)
    res = arp.handle(0.5, bytes(reply))
    assert (res.ip, res.mac, res.packets, res.frames) == (PEER_IP, PEER_MAC, [b"ip packet"], [])
    assert arp.table.state(PEER_IP) is NudState.REACHABLE
    assert arp.table.resolve(0.6, PEER_IP, b"next") == PEER_MAC


def test_retries_then_failure_through_the_handler() -> None:
    arp = handler()
    arp.table.resolve(0.0, PEER_IP, b"p")
    frames = arp.poll_transmit()
    failures = []
    for t in (1.0, 2.0, 3.0):
        assert arp.table.next_deadline() == t
        failures += arp.table.handle_timeout(t)
        frames += arp.poll_transmit()
    assert len(frames) == 3 and all(Ether(f)[ARP].pdst == "198.18.0.2" for f in frames)
    assert [(f.ip, f.packets) for f in failures] == [(PEER_IP, [b"p"])]


def test_broadcast_reply_does_not_confirm_reachability() -> None:
    arp = handler()
    arp.table.resolve(0.0, PEER_IP, b"p")
    res = arp.handle(0.1, arp_in(2, PEER_MAC, PEER_IP, OUR_IP, OUR_MAC), unicast=False)
    assert res.packets == [b"p"]
    assert arp.table.state(PEER_IP) is NudState.STALE


def test_their_request_answers_our_resolution() -> None:
    arp = handler()
    arp.table.resolve(0.0, PEER_IP, b"p")
    res = arp.handle(0.1, arp_in(1, PEER_MAC, PEER_IP, OUR_IP), unicast=False)
    assert res.packets == [b"p"] and len(res.frames) == 1


def test_request_builder_unicast_and_without_source() -> None:
    arp = ArpHandler(NeighbourTable(), OUR_MAC, OURS.__contains__)  # no source_for
    check_arp(
        arp.request(PEER_IP, OUR_IP, unicast_mac=PEER_MAC),
        dst="02:00:00:00:00:02",
        op=1,
        psrc="198.18.0.1",
        hwdst="00:00:00:00:00:00",
        pdst="198.18.0.2",
    )
    arp.table.resolve(0.0, PEER_IP)
    (req,) = arp.poll_transmit()
    assert Ether(req)[ARP].psrc == "0.0.0.0"
    expected = Ether(dst=BCAST, src="02:00:00:00:00:01") / ARP(
        op=1,
        hwsrc="02:00:00:00:00:01",
        psrc="0.0.0.0",
        hwdst="00:00:00:00:00:00",
        pdst="198.18.0.2",
    )
    assert req == bytes(expected).ljust(60, b"\x00")


# --- RFC 5227: announcements, probes, conflicts ------------------------------------------------
def test_gratuitous_announcement_dissected_by_scapy() -> None:
    arp = handler()
    frame = arp.announce(OUR_IP2)
    check_arp(
        frame, dst=BCAST, op=1, psrc="198.18.0.11", hwdst="00:00:00:00:00:00", pdst="198.18.0.11"
    )
    expected = Ether(dst=BCAST, src="02:00:00:00:00:01") / ARP(
        op=1,
        hwsrc="02:00:00:00:00:01",
        psrc="198.18.0.11",
        hwdst="00:00:00:00:00:00",
        pdst="198.18.0.11",
    )
    assert frame == bytes(expected).ljust(60, b"\x00")
    assert arp.stats.requests_out == 1


def test_acd_probe_for_our_address_gets_our_normal_reply_and_teaches_nothing() -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, PEER_MAC, bytes(4), OUR_IP), unicast=False)
    (frame,) = res.frames
    check_arp(
        frame,
        dst="02:00:00:00:00:02",
        op=2,
        psrc="198.18.0.1",
        hwdst="02:00:00:00:00:02",
        pdst="0.0.0.0",
    )
    assert len(arp.table) == 0 and arp.stats.acd_probes_in == 1


def test_acd_probe_for_another_address_is_silent() -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, PEER_MAC, bytes(4), OTHER_IP), unicast=False)
    assert res.frames == [] and len(arp.table) == 0


@pytest.mark.parametrize("op", [1, 2])
def test_someone_else_claiming_our_address_is_a_counted_conflict(op: int) -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(op, PEER_MAC, OUR_IP, OUR_IP), unicast=False)
    assert res.frames == [] and len(arp.table) == 0
    assert arp.stats.conflicts == 1


def test_our_own_frames_looped_back_are_ignored() -> None:
    arp = handler()
    res = arp.handle(0.0, arp.announce(OUR_IP)[14:42], unicast=False)
    assert res.frames == [] and arp.stats.own == 1 and arp.stats.conflicts == 0


@pytest.mark.parametrize(
    ("sha", "spa", "tpa"),
    [
        (parse_mac(BCAST), PEER_IP, OUR_IP),  # broadcast sender MAC
        (parse_mac("01:00:5e:00:00:01"), PEER_IP, OUR_IP),  # multicast sender MAC
        (bytes(6), PEER_IP, OUR_IP),  # zero sender MAC
        (PEER_MAC, parse_ip("224.0.0.1"), OUR_IP),  # multicast sender IP
        (PEER_MAC, parse_ip("127.0.0.1"), OUR_IP),  # loopback sender IP
        (PEER_MAC, parse_ip("255.255.255.255"), OUR_IP),
        (PEER_MAC, PEER_IP, parse_ip("224.0.0.1")),  # multicast target
    ],
)
def test_unusable_senders_are_dropped(sha: bytes, spa: bytes, tpa: bytes) -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, sha, spa, tpa), unicast=False)
    assert res.frames == [] and len(arp.table) == 0
    assert arp.stats.bad_sender == 1


def test_malformed_arp_raises_for_the_caller_to_count() -> None:
    arp = handler()
    with pytest.raises(MalformedPacket) as exc:
        arp.handle(0.0, arp_in(1, PEER_MAC, PEER_IP, OUR_IP)[:20])
    assert exc.value.reason is Drop.ARP_TRUNCATED


def test_ethernet_padding_is_accepted() -> None:
    arp = handler()
    res = arp.handle(0.0, arp_in(1, PEER_MAC, PEER_IP, OUR_IP) + bytes(18))
    assert len(res.frames) == 1


# --- hostile traffic ------------------------------------------------------------------------
def test_flood_of_requests_from_random_senders_keeps_the_table_capped() -> None:
    arp = handler()
    arp.table.resolve(0.0, PEER_IP, b"p")
    arp.handle(0.0, arp_in(2, PEER_MAC, PEER_IP, OUR_IP, OUR_MAC))
    rng = random.Random(7)
    template = arp_in(1, PEER_MAC, PEER_IP, OUR_IP)
    assert patched(template, PEER_MAC, PEER_IP, OUR_IP) == template
    for i in range(3000):
        spa = bytes([198, 19, rng.randrange(256), rng.randrange(256)])
        sha = bytes([2, 0x10, rng.randrange(256), rng.randrange(256), 0, 1])
        t = i / 1000
        request = patched(template, sha, spa, OUR_IP)
        assert len(arp.handle(t, request, unicast=False).frames) == 1
        if i % 100 == 0:
            assert arp.table.resolve(t, PEER_IP) == PEER_MAC
    assert len(arp.table) == 512
    assert arp.table.lookup(PEER_IP) == PEER_MAC
    assert arp.table.stats.evictions > 2000


def test_flood_of_requests_for_random_targets_answers_nothing() -> None:
    arp = handler()
    rng = random.Random(8)
    template = arp_in(1, PEER_MAC, OTHER_IP, OTHER_IP)
    for _ in range(2000):
        tpa = bytes([198, 19, rng.randrange(256), rng.randrange(256)])
        request = patched(template, PEER_MAC, OTHER_IP, tpa)
        assert arp.handle(0.0, request, unicast=False).frames == []
    assert len(arp.table) == 0


# Arbitrary bytes, and arbitrary addresses behind a valid Ethernet/IPv4 prefix.
_PREFIX = st.sampled_from([bytes.fromhex("0001080006040001"), bytes.fromhex("0001080006040002")])
_ADDRS = st.sampled_from([OUR_IP, OUR_IP2, PEER_IP, bytes(4), parse_ip("224.0.0.1")]) | st.binary(
    min_size=4, max_size=4
)
_MACS = st.sampled_from([OUR_MAC, PEER_MAC, bytes(6), b"\xff" * 6]) | st.binary(
    min_size=6, max_size=6
)
_ARPS = st.builds(lambda p, a, b, c, d: p + a + b + c + d, _PREFIX, _MACS, _ADDRS, _MACS, _ADDRS)


@given(st.binary(max_size=64) | _ARPS, st.booleans())
def test_arbitrary_bytes_raise_only_malformed_packet(data: bytes, unicast: bool) -> None:
    arp = handler()
    try:
        res = arp.handle(0.0, data, unicast=unicast)
    except MalformedPacket:
        return
    for frame in res.frames:
        assert Ether(frame)[ARP].op == 2
    assert len(arp.table) <= 1
