"""The ``--socks5`` front's handshake (RFC 1928, RFC 1929), driven over a
socket pair with a client's bytes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from shardnet.common.addr import parse_ip
from shardnet.shards.fronts.socks5 import handshake
from shardnet.shards.relay import socks5 as codec
from shardnet.shards.relay.socks5 import Socks5Error


def _run(
    client_bytes: bytes, user: str | None = None, pw: str | None = None
) -> tuple[object, bytes]:
    """The handshake's result (or the error it raised) and what it sent."""

    async def go() -> tuple[object, bytes]:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.sendall(client_bytes)
        theirs.shutdown(socket.SHUT_WR)
        try:
            result: object = await handshake(ours, user, pw)
        except Socks5Error as exc:
            result = exc
        theirs.setblocking(False)
        sent = b""
        try:
            while chunk := theirs.recv(4096):
                sent += chunk
        except BlockingIOError:
            pass
        ours.close()
        theirs.close()
        return result, sent

    return asyncio.run(go())


def test_connect_to_an_address_without_authentication() -> None:
    addr = parse_ip("198.18.0.2")
    result, sent = _run(b"\x05\x02\x00\x02" + codec.request(codec.CMD_CONNECT, addr, 80))
    assert result == (codec.CMD_CONNECT, addr, 80)
    assert sent == b"\x05\x00"  # RFC 1928 §3: no authentication chosen


def test_connect_to_a_name() -> None:
    result, _ = _run(b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.org\x01\xbb")
    assert result == (codec.CMD_CONNECT, "example.org", 443)


def test_udp_associate_is_reported_as_such() -> None:
    result, _ = _run(b"\x05\x01\x00" + codec.request(codec.CMD_UDP_ASSOCIATE, bytes(4), 0))
    assert result == (codec.CMD_UDP_ASSOCIATE, bytes(4), 0)


def test_username_and_password() -> None:
    req = codec.request(codec.CMD_CONNECT, parse_ip("2001:db8::2"), 22)
    result, sent = _run(b"\x05\x01\x02" + codec.auth_request("ann", "pw") + req, "ann", "pw")
    assert result == (codec.CMD_CONNECT, parse_ip("2001:db8::2"), 22)
    assert sent == b"\x05\x02\x01\x00"  # user/password chosen, then RFC 1929 success


def test_a_wrong_password_is_refused_and_the_request_never_read() -> None:
    req = codec.request(codec.CMD_CONNECT, parse_ip("198.18.0.2"), 80)
    result, sent = _run(b"\x05\x01\x02" + codec.auth_request("ann", "no") + req, "ann", "pw")
    assert isinstance(result, Socks5Error)
    assert sent == b"\x05\x02\x01\x01"  # RFC 1929 §2: a non-zero status


def test_a_client_without_the_methods_we_need_is_refused() -> None:
    result, sent = _run(b"\x05\x01\x00", "ann", "pw")  # only "no authentication" offered
    assert isinstance(result, Socks5Error)
    assert sent == b"\x05\xff"  # RFC 1928 §3: NO ACCEPTABLE METHODS


@pytest.mark.parametrize(
    "data",
    [
        b"\x04\x01\x00",  # SOCKS4
        b"\x05\x00",  # no methods
        b"\x05\x01\x00\x05\x01\x00\x09\x00\x00",  # an unknown address type
        b"\x05\x01\x00\x05\x01\x01\x01" + bytes(6),  # RSV not zero
        b"\x05\x01\x00\x05\x01\x00\x03\x02\xff\xfe\x00\x50",  # a name not in ASCII
        b"\x05\x01\x00\x05\x01\x00\x01\x7f",  # cut short
    ],
)
def test_malformed_handshakes_end_with_an_error(data: bytes) -> None:
    result, _ = _run(data)
    assert isinstance(result, Socks5Error)


def test_a_clients_udp_datagram_names_its_destination() -> None:
    # RFC 1928 §7: RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA
    addr = parse_ip("198.18.0.1")
    dgram = codec.udp_header(addr, 53) + b"query"
    assert codec.parse_udp_request(dgram) == (addr, 53, b"query")
    assert codec.parse_udp_request(b"\0\0\0\x03\x03dns\x00\x35q") == ("dns", 53, b"q")
    assert codec.parse_udp_request(b"\0\0\x01" + dgram[3:]) is None  # a fragment: dropped
    assert codec.parse_udp_request(b"\0\0\0\x01\xc6") is None  # cut short
