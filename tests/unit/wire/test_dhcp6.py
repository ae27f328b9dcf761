"""DHCPv6 codec (RFC 8415 §8, §21; RFC 3646): scapy's DHCP6 layers both
ways as the oracle, every Drop reason, hypothesis round trips and
arbitrary bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp6 import DUID_LL as ScapyDuidLL
from scapy.layers.dhcp6 import (
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptInfoRefreshTime,
    DHCP6OptOptReq,
    DHCP6OptPref,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.dhcp6 import (
    MAX_DNS_SERVERS,
    MAX_IA_ADDRESSES,
    OPT_DNS_SERVERS,
    OPT_DOMAIN_LIST,
    REPLY,
    SOLICIT,
    STATUS_NO_ADDRS_AVAIL,
    Dhcp6Message,
    IaAddress,
    IaNa,
    client_duid,
)
from shardnet.common.wire.errors import Drop, MalformedPacket

MAC = parse_mac("02:00:00:00:00:01")
ADDR = parse_ip("2001:db8::5")
DNS = parse_ip("2001:db8::1")


def scapy_reply() -> bytes:
    return bytes(
        DHCP6_Reply(trid=0x123456)
        / DHCP6OptClientId(duid=ScapyDuidLL(lladdr="02:00:00:00:00:01"))
        / DHCP6OptServerId(duid=ScapyDuidLL(lladdr="02:00:00:00:00:02"))
        / DHCP6OptPref(prefval=7)
        / DHCP6OptIA_NA(iaid=5, T1=100, T2=200, ianaopts=[
            DHCP6OptIAAddress(addr="2001:db8::5", preflft=300, validlft=400),
            DHCP6OptStatusCode(statuscode=STATUS_NO_ADDRS_AVAIL, statusmsg="none left"),
        ])
        / DHCP6OptDNSServers(dnsservers=["2001:db8::1"])
        / DHCP6OptDNSDomains(dnsdomains=["example.test."])
        / DHCP6OptInfoRefreshTime(reftime=700)
    )  # fmt: skip


def test_parse_scapy_reply() -> None:
    m = Dhcp6Message.parse(scapy_reply())
    assert (m.msg_type, m.xid) == (REPLY, 0x123456)
    assert m.client_id == client_duid(MAC)
    assert m.preference == 7
    assert m.ia_na == [IaNa(5, 100, 200, [IaAddress(ADDR, 300, 400)], STATUS_NO_ADDRS_AVAIL,
                            "none left")]  # fmt: skip
    assert m.dns_servers == [DNS]
    assert m.domains == ("example.test",)
    assert m.info_refresh_s == 700


def test_emit_is_what_scapy_reads() -> None:
    m = Dhcp6Message(SOLICIT, 0xABCDEF, client_id=client_duid(MAC), elapsed_cs=150,
                     oro=(OPT_DNS_SERVERS, OPT_DOMAIN_LIST),
                     ia_na=[IaNa(9, 0, 0, [IaAddress(ADDR, 0, 0)])])  # fmt: skip
    p = DHCP6_Solicit(m.to_bytes())
    assert p.trid == 0xABCDEF
    assert p[DHCP6OptClientId].duid.lladdr == "02:00:00:00:00:01"
    assert p[DHCP6OptElapsedTime].elapsedtime == 150
    assert list(p[DHCP6OptOptReq].reqopts) == [23, 24]
    assert p[DHCP6OptIA_NA].iaid == 9
    assert p[DHCP6OptIAAddress].addr == "2001:db8::5"


def test_emit_keeps_every_option_of_scapy_bytes() -> None:
    m = Dhcp6Message.parse(scapy_reply())
    again = m.to_bytes()
    assert Dhcp6Message.parse(again) == m
    assert len(again) == len(scapy_reply())  # nothing lost, only the option order may differ


def test_duid_ll() -> None:
    # RFC 8415 §11.4: type 3, hardware type 1, the MAC.
    assert client_duid(MAC) == bytes.fromhex("00030001") + MAC


def _header(kind: int = REPLY) -> bytes:
    return struct.pack("!I", (kind << 24) | 1)


def _opt(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x07\x00\x00", Drop.DHCP6_TRUNCATED),
        (_header() + b"\x00\x01\x00", Drop.DHCP6_BAD_OPTION),  # option header cut
        (_header() + struct.pack("!HH", 1, 20) + b"\x00" * 4, Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(1, b"\x00\x03"), Drop.DHCP6_BAD_OPTION),  # DUID too short
        (_header() + _opt(2, b"\x00" * 200), Drop.DHCP6_BAD_OPTION),  # DUID too long
        (_header() + _opt(3, b"\x00" * 8), Drop.DHCP6_BAD_OPTION),  # IA_NA short
        (_header() + _opt(3, bytes(12) + _opt(5, bytes(10))), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(7, b"\x01\x02"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(8, b"\x01"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(13, b"\x01"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(23, bytes(15)), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(24, b"\x03ab"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(32, b"\x01"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(6, b"\x01"), Drop.DHCP6_BAD_OPTION),
        (_header() + _opt(23, bytes(16 * (MAX_DNS_SERVERS + 1))), Drop.DHCP6_TOO_MANY),
        (
            _header() + _opt(3, bytes(12) + _opt(5, bytes(24)) * (MAX_IA_ADDRESSES + 1)),
            Drop.DHCP6_TOO_MANY,
        ),
        (_header() + _opt(3, bytes(12)) * 5, Drop.DHCP6_TOO_MANY),
    ],
)
def test_drop_reasons(raw: bytes, reason: Drop) -> None:
    with pytest.raises(MalformedPacket) as exc:
        Dhcp6Message.parse(raw)
    assert exc.value.reason is reason


def test_unknown_options_skipped() -> None:
    m = Dhcp6Message.parse(_header() + _opt(999, b"whatever") + _opt(32, struct.pack("!I", 9)))
    assert m.info_refresh_s == 9


_addr = st.binary(min_size=16, max_size=16)
_ia_address = st.builds(IaAddress, _addr, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


@given(
    kind=st.integers(1, 13),
    xid=st.integers(0, 2**24 - 1),
    ias=st.lists(
        st.builds(
            IaNa,
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.lists(_ia_address, max_size=3),
        ),
        max_size=2,
    ),  # fmt: skip
    dns=st.lists(_addr, max_size=3),
    refresh=st.none() | st.integers(0, 2**32 - 1),
    preference=st.none() | st.integers(0, 255),
    max_rt=st.none() | st.integers(0, 2**32 - 1),
)
def test_round_trip(
    kind: int,
    xid: int,
    ias: list[IaNa],
    dns: list[bytes],
    refresh: int | None,
    preference: int | None,
    max_rt: int | None,
) -> None:
    m = Dhcp6Message(kind, xid, client_id=client_duid(MAC), server_id=b"\x00\x01abcd",
                     ia_na=ias, dns_servers=dns, info_refresh_s=refresh,
                     preference=preference, domains=("a.example", "b"),
                     sol_max_rt_s=max_rt, inf_max_rt_s=max_rt)  # fmt: skip
    assert Dhcp6Message.parse(m.to_bytes()) == m


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_malformed(raw: bytes) -> None:
    try:
        Dhcp6Message.parse(raw)
    except MalformedPacket:
        pass
