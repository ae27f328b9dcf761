"""ARP codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.arp import ARP_LEN, ARP_REPLY, ARP_REQUEST, ArpHeader, ArpView
from shardnet.common.wire.errors import Drop, MalformedPacket

from .helpers import assert_drop

MAC1, MAC2 = parse_mac("02:00:00:00:00:01"), parse_mac("02:00:00:00:00:02")
IP1, IP2 = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
# Who has 198.18.0.2? Tell 198.18.0.1 (02:00:00:00:00:01); from scapy.
GOLDEN = bytes.fromhex("0001080006040001020000000001c6120001000000000000c6120002")
GOLDEN_HDR = ArpHeader(ARP_REQUEST, MAC1, IP1, bytes(6), IP2)


def test_deconstruct() -> None:
    v = ArpView.checked(GOLDEN)
    assert v.opcode == ARP_REQUEST
    assert (v.sender_mac, v.sender_ip, v.target_mac, v.target_ip) == (MAC1, IP1, bytes(6), IP2)
    assert v.fields() == (1, 0x0800, 6, 4, 1, MAC1, IP1, bytes(6), IP2)


def test_construct() -> None:
    buf = bytearray(ARP_LEN)
    assert GOLDEN_HDR.emit(buf) == ARP_LEN
    assert bytes(buf) == GOLDEN


def test_parse() -> None:
    assert ArpHeader.parse(GOLDEN) == GOLDEN_HDR


def test_emit() -> None:
    buf = bytearray(ARP_LEN + 4)
    assert GOLDEN_HDR.emit(buf, 2) == ARP_LEN
    assert bytes(buf[2 : 2 + ARP_LEN]) == GOLDEN


def test_ethernet_padding_is_cut() -> None:
    v = ArpView.checked(GOLDEN + bytes(18))
    assert len(v.buf) == ARP_LEN


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOLDEN[:27], Drop.ARP_TRUNCATED),
        (b"\x00\x06" + GOLDEN[2:], Drop.ARP_UNSUPPORTED),  # IEEE 802 htype
        (GOLDEN[:2] + b"\x86\xdd" + GOLDEN[4:], Drop.ARP_UNSUPPORTED),  # ptype
        (GOLDEN[:4] + b"\x08" + GOLDEN[5:], Drop.ARP_UNSUPPORTED),  # hlen
        (GOLDEN[:5] + b"\x10" + GOLDEN[6:], Drop.ARP_UNSUPPORTED),  # plen
        (GOLDEN[:6] + b"\x00\x03" + GOLDEN[8:], Drop.ARP_BAD_OPCODE),  # RARP request
        (GOLDEN[:6] + b"\x00\x00" + GOLDEN[8:], Drop.ARP_BAD_OPCODE),
    ],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "arp", ArpView.checked, data)


def test_summary() -> None:
    assert GOLDEN_HDR.summary() == "ARP, Request who-has 198.18.0.2 tell 198.18.0.1"
    reply = ArpHeader(ARP_REPLY, MAC2, IP2, MAC1, IP1)
    assert reply.summary() == "ARP, Reply 198.18.0.2 is-at 02:00:00:00:00:02"
    assert ArpView.checked(GOLDEN).summary() == GOLDEN_HDR.summary()


@pytest.mark.parametrize("op", [ARP_REQUEST, ARP_REPLY])
def test_scapy_built_parses(op: int) -> None:
    frame = bytes(
        Ether(src="02:00:00:00:00:02", dst="ff:ff:ff:ff:ff:ff")
        / ARP(
            op=op,
            hwsrc="02:00:00:00:00:02",
            psrc="198.18.0.2",
            hwdst="02:00:00:00:00:01",
            pdst="198.18.0.1",
        )
    )
    frame += bytes(60 - len(frame))  # Ethernet minimum frame padding
    h = ArpHeader.parse(frame[14:])
    assert h == ArpHeader(op, MAC2, IP2, MAC1, IP1)


def test_emitted_dissects_in_scapy() -> None:
    buf = bytearray(ARP_LEN)
    ArpHeader(ARP_REPLY, MAC2, IP2, MAC1, IP1).emit(buf)
    a = ARP(bytes(buf))
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, 2)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (
        "02:00:00:00:00:02",
        "198.18.0.2",
        "02:00:00:00:00:01",
        "198.18.0.1",
    )


headers = st.builds(
    ArpHeader,
    opcode=st.sampled_from([ARP_REQUEST, ARP_REPLY]),
    sender_mac=st.binary(min_size=6, max_size=6),
    sender_ip=st.binary(min_size=4, max_size=4),
    target_mac=st.binary(min_size=6, max_size=6),
    target_ip=st.binary(min_size=4, max_size=4),
)


@given(headers)
def test_roundtrip(h: ArpHeader) -> None:
    buf = bytearray(ARP_LEN)
    h.emit(buf)
    assert ArpHeader.parse(buf) == h


@given(st.one_of(st.binary(max_size=64), st.binary(max_size=24).map(lambda b: GOLDEN[:6] + b)))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        v = ArpView.checked(data)
    except MalformedPacket:
        return
    v.fields()
    assert v.header() == ArpHeader(v.opcode, v.sender_mac, v.sender_ip, v.target_mac, v.target_ip)
    v.header().summary()
    v.summary()
