"""Ethernet II / 802.1Q codec: golden bytes, Drop reasons, scapy oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import Dot1Q, Ether

from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import (
    ETH_HEADER_LEN,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
    EthernetView,
)

from .helpers import assert_drop

DST = bytes.fromhex("020000000002")
SRC = bytes.fromhex("020000000001")
GOLDEN = DST + SRC + b"\x08\x00" + b"payload"
GOLDEN_TAGGED = DST + SRC + b"\x81\x00" + b"\xa0\x2a" + b"\x86\xdd" + b"payload"


def test_deconstruct() -> None:
    v = EthernetView.checked(GOLDEN)
    assert (v.dst, v.src, v.ethertype, v.vlan) == (DST, SRC, ETHERTYPE_IPV4, None)
    assert bytes(v.payload) == b"payload"
    t = EthernetView.checked(GOLDEN_TAGGED)
    assert (t.ethertype, t.vlan, t.header_len) == (ETHERTYPE_IPV6, 42, 18)
    assert bytes(t.payload) == b"payload"


def test_construct() -> None:
    buf = bytearray(ETH_HEADER_LEN)
    assert EthernetHeader(DST, SRC, ETHERTYPE_IPV4).emit(buf) == 14
    assert bytes(buf) == GOLDEN[:14]
    buf = bytearray(18)
    assert EthernetHeader(DST, SRC, ETHERTYPE_IPV6, vlan=42, pcp=5).emit(buf) == 18
    assert bytes(buf) == GOLDEN_TAGGED[:18]


def test_parse() -> None:
    assert EthernetHeader.parse(GOLDEN) == EthernetHeader(DST, SRC, ETHERTYPE_IPV4)
    assert EthernetHeader.parse(GOLDEN_TAGGED) == EthernetHeader(DST, SRC, ETHERTYPE_IPV6, 42, 5)


def test_emit_at_offset() -> None:
    buf = bytearray(20)
    EthernetHeader(DST, SRC, ETHERTYPE_IPV4).emit(buf, 6)
    assert bytes(buf[6:20]) == GOLDEN[:14]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(GOLDEN[:13], Drop.ETH_TRUNCATED), (GOLDEN_TAGGED[:17], Drop.VLAN_TRUNCATED)],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "eth", EthernetView.checked, data)


def test_summary() -> None:
    assert EthernetHeader.parse(GOLDEN_TAGGED).summary() == (
        "02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 42 type 0x86dd"
    )


def test_scapy_built_parses() -> None:
    raw = bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=7, prio=3) / b"x"
    )
    h = EthernetHeader.parse(raw)
    assert (h.src, h.dst, h.vlan, h.pcp) == (SRC, DST, 7, 3)


def test_emitted_dissects_in_scapy() -> None:
    buf = bytearray(18)
    EthernetHeader(DST, SRC, ETHERTYPE_IPV4, vlan=100, pcp=1).emit(buf)
    pkt = Ether(bytes(buf))
    assert (pkt.src, pkt.dst) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert (pkt[Dot1Q].vlan, pkt[Dot1Q].prio, pkt[Dot1Q].type) == (100, 1, ETHERTYPE_IPV4)


headers = st.builds(
    EthernetHeader,
    dst=st.binary(min_size=6, max_size=6),
    src=st.binary(min_size=6, max_size=6),
    ethertype=st.integers(0, 0xFFFF).filter(lambda t: t != 0x8100),
    vlan=st.none() | st.integers(0, 0xFFF),
    pcp=st.integers(0, 7),
).map(lambda h: h if h.vlan is not None else EthernetHeader(h.dst, h.src, h.ethertype))


@given(headers)
def test_roundtrip(h: EthernetHeader) -> None:
    buf = bytearray(h.header_len)
    assert h.emit(buf) == h.header_len
    assert EthernetHeader.parse(buf) == h


@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        v = EthernetView.checked(data)
    except MalformedPacket:
        return
    _ = (v.dst, v.src, v.ethertype, v.vlan, v.payload)
    v.summary()
