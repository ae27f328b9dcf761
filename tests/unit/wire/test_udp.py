"""UDP codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from shardnet.common.addr import parse_ip
from shardnet.common.checksum import pseudo_header
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.udp import UDP_HEADER_LEN, UdpHeader, UdpView

from .helpers import assert_drop, behind_ip, ip_payload, scapy_checksum

SRC4, DST4 = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
# 198.18.0.1:5353 -> 198.18.0.2:53, payload b"hi", checksum from scapy.
GOLDEN = bytes.fromhex("14e9 0035 000a f62a 6869".replace(" ", ""))


def pseudo4(length: int) -> int:
    return pseudo_header(SRC4, DST4, 17, length)


def test_deconstruct() -> None:
    v = UdpView.checked(GOLDEN, pseudo=pseudo4(len(GOLDEN)))
    assert (v.src_port, v.dst_port, v.length, v.checksum) == (5353, 53, 10, 0xF62A)
    assert bytes(v.payload) == b"hi"
    assert v.fields() == (5353, 53, 10, 0xF62A)


def test_construct() -> None:
    buf = bytearray(10)
    buf[8:] = b"hi"
    h = UdpHeader(5353, 53, 10)
    assert h.emit(buf, pseudo=pseudo4(10)) == UDP_HEADER_LEN
    assert bytes(buf) == GOLDEN
    assert h.checksum == 0xF62A


def test_parse() -> None:
    assert UdpHeader.parse(GOLDEN) == UdpHeader(5353, 53, 10, 0xF62A)


def test_emit() -> None:
    buf = bytearray(12)
    assert UdpHeader(5353, 53, 10, 0xF62A).emit(buf, 2) == 8
    assert bytes(buf[2:10]) == GOLDEN[:8]


def test_trailing_bytes_beyond_length_are_cut() -> None:
    v = UdpView.checked(GOLDEN + b"pad")
    assert bytes(v.payload) == b"hi"


def test_computed_zero_is_sent_as_ffff() -> None:
    """RFC 768: a checksum that computes to 0 is transmitted as all ones."""
    golden = bytes.fromhex("14e90035000affff5e94")  # from scapy, same addresses
    buf = bytearray(golden[:6]) + bytes(2) + golden[8:]
    h = UdpHeader(5353, 53, 10)
    h.emit(buf, pseudo=pseudo4(10))
    assert bytes(buf) == golden and h.checksum == 0xFFFF
    assert UdpView.checked(golden, pseudo=pseudo4(10)).checksum == 0xFFFF


def test_zero_checksum_means_none_over_ipv4() -> None:
    data = GOLDEN[:6] + b"\0\0" + GOLDEN[8:]
    assert UdpView.checked(data, pseudo=pseudo4(10)).checksum == 0


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (GOLDEN[:7], {}, Drop.UDP_TRUNCATED),
        (GOLDEN[:4] + b"\x00\x07" + GOLDEN[6:], {}, Drop.UDP_BAD_LENGTH),
        (GOLDEN[:4] + b"\x00\x0b" + GOLDEN[6:], {}, Drop.UDP_BAD_LENGTH),
        (GOLDEN[:-1] + b"x", {"pseudo": pseudo4(10)}, Drop.UDP_BAD_CHECKSUM),
        (GOLDEN[:6] + b"\0\0" + GOLDEN[8:], {"require_checksum": True}, Drop.UDP_BAD_CHECKSUM),
    ],
)
def test_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "udp", UdpView.checked, data, **kwargs)


def test_summary() -> None:
    assert UdpHeader.parse(GOLDEN).summary() == "UDP 5353 > 53 len=2"


@pytest.mark.parametrize(
    ("src", "dst"), [("198.18.0.1", "198.18.0.2"), ("2001:db8::1", "2001:db8::2")]
)
def test_scapy_built_parses(src: str, dst: str) -> None:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    seg = ip_payload(ip / UDP(sport=4000, dport=7) / b"payload!")
    pseudo = pseudo_header(parse_ip(src), parse_ip(dst), 17, len(seg))
    v = UdpView.checked(seg, pseudo=pseudo, require_checksum=":" in src)
    assert (v.src_port, v.dst_port, bytes(v.payload)) == (4000, 7, b"payload!")


def test_emitted_dissects_in_scapy() -> None:
    payload = b"x" * 33
    buf = bytearray(8 + len(payload))
    buf[8:] = payload
    UdpHeader(1234, 5678, len(buf)).emit(buf, pseudo=pseudo4(len(buf)))
    pkt = behind_ip(bytes(buf), "198.18.0.1", "198.18.0.2", 17)
    udp = pkt[UDP]
    assert (udp.sport, udp.dport, bytes(udp.payload)) == (1234, 5678, payload)
    assert udp.chksum == scapy_checksum(pkt, UDP)  # scapy recomputes the same


headers = st.builds(
    UdpHeader,
    src_port=st.integers(0, 0xFFFF),
    dst_port=st.integers(0, 0xFFFF),
    length=st.just(UDP_HEADER_LEN),
    checksum=st.integers(0, 0xFFFF),
)


@given(headers)
def test_roundtrip(h: UdpHeader) -> None:
    buf = bytearray(UDP_HEADER_LEN)
    h.emit(buf)
    assert UdpHeader.parse(buf) == h


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        v = UdpView.checked(data, pseudo=pseudo4(len(data)))
    except MalformedPacket:
        return
    v.header().summary()
