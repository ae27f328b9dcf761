"""The SOCKS5 client codec against RFC 1928 and RFC 1929's byte layouts."""

from __future__ import annotations

import errno

import pytest

from shardnet.common.addr import parse_ip
from shardnet.shards.relay import socks5
from shardnet.shards.relay.socks5 import Socks5Error, Upstream

V4 = parse_ip("198.19.0.10")
V6 = parse_ip("2001:db8:19::10")


def test_greeting_offers_one_method() -> None:
    assert socks5.greeting(False) == b"\x05\x01\x00"  # RFC 1928 §3: no authentication
    assert socks5.greeting(True) == b"\x05\x01\x02"  # username/password


def test_method_selection() -> None:
    assert socks5.parse_method(b"\x05\x00") == 0
    assert socks5.parse_method(b"\x05\x02") == 2
    with pytest.raises(Socks5Error) as exc:
        socks5.parse_method(b"\x05\xff")  # RFC 1928 §3: NO ACCEPTABLE METHODS
    assert exc.value.errno == errno.ECONNREFUSED
    with pytest.raises(Socks5Error):
        socks5.parse_method(b"\x04\x00")


def test_rfc1929_request_and_status() -> None:
    assert socks5.auth_request("ann", "s3cret") == b"\x01\x03ann\x06s3cret"
    socks5.parse_auth(b"\x01\x00")
    with pytest.raises(Socks5Error) as exc:
        socks5.parse_auth(b"\x01\x01")  # any non-zero status is a failure
    assert exc.value.code == socks5.REP_NOT_ALLOWED


def test_requests_carry_the_address_and_port() -> None:
    assert socks5.request(socks5.CMD_CONNECT, V4, 80) == b"\x05\x01\x00\x01" + V4 + b"\x00\x50"
    assert (
        socks5.request(socks5.CMD_UDP_ASSOCIATE, V6, 53) == b"\x05\x03\x00\x04" + V6 + b"\x00\x35"
    )


def test_replies_give_the_bound_address_or_the_refusal() -> None:
    assert socks5.parse_reply(b"\x05\x00\x00\x01" + V4 + b"\x1f\x90") == (V4, 8080)
    assert socks5.parse_reply(b"\x05\x00\x00\x04" + V6 + b"\x00\x35") == (V6, 53)
    assert socks5.parse_reply(b"\x05\x00\x00\x03\x04host\x00\x35") == ("host", 53)
    for code, err in ((5, errno.ECONNREFUSED), (4, errno.EHOSTUNREACH), (3, errno.ENETUNREACH),
                      (1, errno.EPROTO)):  # fmt: skip
        with pytest.raises(Socks5Error) as exc:
            socks5.parse_reply(bytes((5, code, 0, 1)) + V4 + b"\x00\x00")
        assert (exc.value.code, exc.value.errno) == (code, err)


@pytest.mark.parametrize(
    "reply",
    [
        b"\x05\x00\x00\x01" + V4,
        b"\x05\x00\x00\x09" + V4 + b"\0\0",
        b"\x04\x00\x00\x01" + V4 + b"\0\0",
    ],
)
def test_malformed_replies_raise(reply: bytes) -> None:
    with pytest.raises(Socks5Error):
        socks5.parse_reply(reply)


def test_udp_header_round_trip_and_fragments_dropped() -> None:
    header = socks5.udp_header(V4, 53)
    assert header == b"\0\0\0\x01" + V4 + b"\x00\x35"  # RFC 1928 §7
    assert socks5.parse_udp(header + b"answer") == b"answer"
    assert socks5.parse_udp(socks5.udp_header(V6, 53) + b"x") == b"x"
    assert socks5.parse_udp(b"\0\0\x01\x01" + V4 + b"\0\x35x") is None  # FRAG 1
    assert socks5.parse_udp(b"\0\0\0\x01\x01") is None  # cut
    assert socks5.parse_udp(b"\0\0\0\x07" + V4) is None


def test_upstream_urls() -> None:
    assert Upstream.parse("socks5://198.19.0.20:1080") == Upstream("198.19.0.20", 1080)
    assert Upstream.parse("socks5://ann:p%40ss@[2001:db8::20]:1080") == Upstream(
        "2001:db8::20", 1080, "ann", "p@ss"
    )
    for bad in ("http://198.19.0.20:1080", "socks5://proxy.example:1080", "socks5://198.19.0.20",
                "socks5://ann@198.19.0.20:1080", "socks5://198.19.0.20:1080/x"):  # fmt: skip
        with pytest.raises(ValueError):
            Upstream.parse(bad)
