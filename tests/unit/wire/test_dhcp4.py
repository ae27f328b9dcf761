"""DHCPv4 codec (RFC 2131 §2, RFC 2132): golden bytes, every Drop reason,
scapy's BOOTP/DHCP both ways as the oracle, hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.dhcp4 import (
    ACK,
    BOOTP_MIN_LEN,
    BOOTREPLY,
    BOOTREQUEST,
    DISCOVER,
    FLAG_BROADCAST,
    MAGIC_COOKIE,
    MIN_LEN,
    REQUEST,
    Dhcp4Message,
    Dhcp4View,
)
from shardnet.common.wire.errors import Drop, MalformedPacket

from .helpers import assert_drop

MAC = parse_mac("02:00:00:00:00:01")
SERVER = parse_ip("198.18.0.1")
ADDR = parse_ip("198.18.0.50")

ACK_MSG = Dhcp4Message(
    op=BOOTREPLY, xid=0x12345678, chaddr=MAC, message_type=ACK, yiaddr=ADDR, siaddr=SERVER,
    subnet_mask=parse_ip("255.255.255.0"), routers=[SERVER],
    dns_servers=[parse_ip("198.18.0.1"), parse_ip("198.18.0.2")], domain_name="example.test",
    lease_time_s=120, server_id=SERVER, renewal_time_s=10, rebinding_time_s=20,
)  # fmt: skip


def scapy_ack() -> bytes:
    return bytes(
        BOOTP(op=2, xid=0x12345678, chaddr=MAC + bytes(10), yiaddr="198.18.0.50",
              siaddr="198.18.0.1")
        / DHCP(options=[
            ("message-type", "ack"), ("subnet_mask", "255.255.255.0"), ("router", "198.18.0.1"),
            ("name_server", "198.18.0.1", "198.18.0.2"), ("domain", b"example.test"),
            ("lease_time", 120), ("server_id", "198.18.0.1"), ("renewal_time", 10),
            ("rebinding_time", 20), "end",
        ])
    )  # fmt: skip


def test_deconstruct_scapy_ack() -> None:
    v = Dhcp4View.checked(memoryview(scapy_ack()))
    assert v.fields()[0] == BOOTREPLY and v.fields()[4] == 0x12345678
    assert v.message() == ACK_MSG


def test_construct_parsed_by_scapy() -> None:
    raw = ACK_MSG.to_bytes()
    assert len(raw) >= BOOTP_MIN_LEN
    pkt = BOOTP(raw)
    assert pkt.op == 2 and pkt.xid == 0x12345678 and pkt.yiaddr == "198.18.0.50"
    assert pkt.chaddr[:6] == MAC
    opts = {o[0]: o[1:] for o in pkt[DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == (5,)
    assert opts["router"] == ("198.18.0.1",)
    assert opts["name_server"] == ("198.18.0.1", "198.18.0.2")
    assert opts["domain"] == (b"example.test",)
    assert opts["lease_time"] == (120,)
    assert opts["renewal_time"] == (10,) and opts["rebinding_time"] == (20,)
    assert opts["server_id"] == ("198.18.0.1",)


def test_discover_as_scapy_reads_it() -> None:
    msg = Dhcp4Message(
        op=BOOTREQUEST, xid=7, chaddr=MAC, message_type=DISCOVER, flags=FLAG_BROADCAST,
        params=bytes((1, 3, 6)),
    )  # fmt: skip
    pkt = BOOTP(msg.to_bytes())
    assert pkt.op == 1 and pkt.flags == FLAG_BROADCAST
    opts = {o[0]: o[1:] for o in pkt[DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == (1,)
    assert list(opts["param_req_list"][0]) == [1, 3, 6]


def test_parse_and_emit_round_trip() -> None:
    assert Dhcp4Message.parse(ACK_MSG.to_bytes()) == ACK_MSG
    req = Dhcp4Message(
        op=BOOTREQUEST, xid=1, chaddr=MAC, message_type=REQUEST, requested_ip=ADDR,
        server_id=SERVER, client_id=b"\x01" + MAC,
    )  # fmt: skip
    assert Dhcp4Message.parse(req.to_bytes()) == req


def test_split_option_is_joined() -> None:
    """RFC 3396 §5: a long option in several instances is one value."""
    raw = bytearray(ACK_MSG.to_bytes())
    raw[MIN_LEN:MIN_LEN] = bytes((6, 4)) + parse_ip("198.18.0.3")  # a first DNS instance
    msg = Dhcp4Message.parse(raw)
    assert msg.dns_servers == [parse_ip("198.18.0.3"), *ACK_MSG.dns_servers]


def test_unknown_options_and_pads_skipped() -> None:
    raw = bytearray(ACK_MSG.to_bytes())
    raw[MIN_LEN:MIN_LEN] = bytes((0, 0, 250, 3, 1, 2, 3))
    assert Dhcp4Message.parse(raw) == ACK_MSG


def _body(message_type: int = 5, extra: bytes = b"") -> bytes:
    return bytes(236) + MAGIC_COOKIE + bytes((53, 1, message_type)) + extra + b"\xff"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(239), Drop.DHCP_TRUNCATED),
        (bytes(236) + b"\x63\x82\x53\x64" + b"\xff", Drop.DHCP_BAD_COOKIE),
        (_body(extra=bytes((3, 9)) + bytes(2)), Drop.DHCP_BAD_OPTION),  # runs past the end
        (_body(extra=bytes((1, 3, 255, 255, 255))), Drop.DHCP_BAD_OPTION),  # 3-byte mask
        (_body(extra=bytes((3, 5)) + bytes(5)), Drop.DHCP_BAD_OPTION),  # router list of 5
        (_body(extra=bytes((51, 2, 0, 1))), Drop.DHCP_BAD_OPTION),  # 2-byte lease time
        (_body(extra=bytes((15, 2)) + "é".encode()), Drop.DHCP_BAD_OPTION),  # not ASCII
        (bytes(236) + MAGIC_COOKIE + b"\xff", Drop.DHCP_BAD_OPTION),  # no message type
        (bytes(236) + MAGIC_COOKIE + bytes((53, 2, 1, 1)) + b"\xff", Drop.DHCP_BAD_OPTION),
        (bytes(236) + MAGIC_COOKIE + bytes((53,)), Drop.DHCP_BAD_OPTION),  # length missing
    ],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "dhcp", Dhcp4View.checked, memoryview(data))


addresses = st.binary(min_size=4, max_size=4)


@given(
    op=st.sampled_from((BOOTREQUEST, BOOTREPLY)),
    xid=st.integers(0, 2**32 - 1),
    message_type=st.integers(1, 8),
    flags=st.sampled_from((0, FLAG_BROADCAST)),
    yiaddr=addresses,
    subnet_mask=st.none() | addresses,
    routers=st.lists(addresses, max_size=70),  # over 255 bytes: split (RFC 3396)
    dns=st.lists(addresses, max_size=4),
    domain=st.none() | st.text("abcdefghij.-", min_size=1, max_size=300),
    lease=st.none() | st.integers(0, 2**32 - 1),
    t1=st.none() | st.integers(0, 2**32 - 1),
    server_id=st.none() | addresses,
    params=st.binary(max_size=20),
)
def test_round_trip(
    op: int, xid: int, message_type: int, flags: int, yiaddr: bytes, subnet_mask: bytes | None,
    routers: list[bytes], dns: list[bytes], domain: str | None, lease: int | None,
    t1: int | None, server_id: bytes | None, params: bytes,
) -> None:  # fmt: skip
    msg = Dhcp4Message(
        op=op, xid=xid, chaddr=MAC, message_type=message_type, flags=flags, yiaddr=yiaddr,
        subnet_mask=subnet_mask, routers=routers, dns_servers=dns, domain_name=domain,
        lease_time_s=lease, renewal_time_s=t1, server_id=server_id, params=params,
    )  # fmt: skip
    assert Dhcp4Message.parse(msg.to_bytes()) == msg


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        Dhcp4View.checked(memoryview(data)).message()
    except MalformedPacket:
        pass


@given(st.binary(max_size=300))
def test_arbitrary_options_raise_only_malformed(options: bytes) -> None:
    try:
        Dhcp4View.checked(memoryview(bytes(236) + MAGIC_COOKIE + options)).message()
    except MalformedPacket:
        pass
