"""The fronts' command-line specifications and the HTTP proxy's request
parsing."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from shardnet.common.config import ConfigError, build_config, load_toml
from shardnet.scripts.run import check_settings
from shardnet.shards.fronts import http_proxy
from shardnet.shards.fronts.forward import ForwardSpec, ProxySpec


def test_forward_from_the_kernel_side() -> None:
    spec = ForwardSpec.parse("tcp:127.0.0.1:8080=198.18.0.2:80")
    assert spec == ForwardSpec("tcp", False, "127.0.0.1", 8080, "198.18.0.2", 80)
    spec = ForwardSpec.parse("tcp:[::1]:8080=[2001:db8::2]:80")
    assert (spec.listen_host, spec.target_host) == ("::1", "2001:db8::2")


def test_forward_from_shardnets_side() -> None:
    spec = ForwardSpec.parse("udp:shardnet:5353=127.0.0.1:53")
    assert spec == ForwardSpec("udp", True, "", 5353, "127.0.0.1", 53)


@pytest.mark.parametrize(
    "text",
    [
        "sctp:127.0.0.1:1=198.18.0.2:2",  # no such protocol
        "tcp:127.0.0.1:1",  # no target
        "tcp:shardnet:0=198.18.0.2:2",  # port 0
        "tcp:shardnet:x=198.18.0.2:2",
        "tcp:example.org:1=198.18.0.2:2",  # names are not resolved for a listener
        "tcp:127.0.0.1:1=198.18.0.2:70000",
        "tcp:127.0.0.1:1=2001:db8::2:80",  # IPv6 needs brackets
    ],
)
def test_bad_forwards_are_one_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="--forward"):
        ForwardSpec.parse(text)


def test_socks5_with_and_without_credentials() -> None:
    assert ProxySpec.parse("127.0.0.1:1080") == ProxySpec("127.0.0.1", 1080)
    assert ProxySpec.parse("ann:p@ss@[::1]:1080") == ProxySpec("::1", 1080, "ann", "p@ss")
    for bad in ("ann@127.0.0.1:1080", ":pw@127.0.0.1:1080", "127.0.0.1", "host:1080"):
        with pytest.raises(ValueError, match="--socks5"):
            ProxySpec.parse(bad)


def test_http_proxy_credentials() -> None:
    spec = ProxySpec.parse("ann:s3cret@127.0.0.1:3128", "--http-proxy")
    assert spec == ProxySpec("127.0.0.1", 3128, "ann", "s3cret")
    with pytest.raises(ValueError, match="--http-proxy"):
        ProxySpec.parse("ann@127.0.0.1:3128", "--http-proxy")


def _basic(creds: bytes) -> bytes:
    return b"Basic " + base64.b64encode(creds)


@pytest.mark.parametrize(
    "header",
    [
        b"Proxy-Authorization: " + _basic(b"ann:s3cret"),
        b"proxy-authorization:   BASIC " + base64.b64encode(b"ann:s3cret"),  # RFC 9110 §11.1
    ],
)
def test_basic_credentials_are_accepted(header: bytes) -> None:
    head = b"CONNECT 198.18.0.2:443 HTTP/1.1\r\nHost: 198.18.0.2:443\r\n" + header
    http_proxy.check_credentials(head, "ann", "s3cret")  # no exception


@pytest.mark.parametrize(
    "header",
    [
        b"",  # none given
        b"Proxy-Authorization: " + _basic(b"ann:wrong"),
        b"Proxy-Authorization: " + _basic(b"ann"),
        b"Proxy-Authorization: Bearer " + base64.b64encode(b"ann:s3cret"),
        b"Proxy-Authorization: Basic not*base64",
        b"Authorization: " + _basic(b"ann:s3cret"),  # for the origin, not the proxy
    ],
)
def test_missing_or_wrong_credentials_are_407(header: bytes) -> None:
    head = b"GET http://198.18.0.2/ HTTP/1.1\r\nHost: 198.18.0.2\r\n" + header
    with pytest.raises(http_proxy.BadRequest) as exc:
        http_proxy.check_credentials(head, "ann", "s3cret")
    assert exc.value.status == http_proxy.PROXY_AUTH_REQUIRED
    answer = http_proxy.error_response(exc.value.status, http_proxy.CHALLENGE)
    assert answer.startswith(b"HTTP/1.1 407 ")
    assert b'\r\nProxy-Authenticate: Basic realm="shardnet"' in answer


def test_connect_is_a_tunnel() -> None:
    req = http_proxy.parse_head(b"CONNECT 198.18.0.2:443 HTTP/1.1\r\nHost: 198.18.0.2:443")
    assert (req.host, req.port, req.tunnel, req.head) == ("198.18.0.2", 443, True, b"")
    req = http_proxy.parse_head(b"CONNECT [2001:db8::2]:22 HTTP/1.1")
    assert (req.host, req.port) == ("2001:db8::2", 22)


def test_absolute_uri_is_passed_on_in_origin_form_for_one_request() -> None:
    head = (
        b"GET http://198.18.0.2:8080/a/b?c=d HTTP/1.1\r\nHost: 198.18.0.2:8080\r\n"
        b"Proxy-Connection: Keep-Alive\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*"
    )
    req = http_proxy.parse_head(head)
    assert (req.host, req.port, req.tunnel) == ("198.18.0.2", 8080, False)
    # RFC 9112 §3.2.1: origin form; the proxy's own headers are not passed on.
    assert req.head == (
        b"GET /a/b?c=d HTTP/1.1\r\nHost: 198.18.0.2:8080\r\nAccept: */*\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert http_proxy.parse_head(b"GET http://198.18.0.2 HTTP/1.0").port == 80


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /index.html HTTP/1.1\r\nHost: x", b"400 Bad Request"),  # not a proxy request
        (b"GET ftp://198.18.0.2/ HTTP/1.1", b"400 Bad Request"),
        (b"CONNECT 198.18.0.2 HTTP/1.1", b"400 Bad Request"),  # no port
        (b"CONNECT 198.18.0.2:x HTTP/1.1", b"400 Bad Request"),
        (b"GET http://198.18.0.2/ HTTP/2", b"505 HTTP Version Not Supported"),
        (b"\xff\xfe", b"400 Bad Request"),
        (b"GET  http://a/ HTTP/1.1", b"400 Bad Request"),
    ],
)
def test_bad_requests_get_their_status(head: bytes, status: bytes) -> None:
    with pytest.raises(http_proxy.BadRequest) as exc:
        http_proxy.parse_head(head)
    assert exc.value.status == status


def test_config_file_and_flags_carry_the_fronts(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'tap = "sntap0"\nsocks5 = "127.0.0.1:1080"\nhttp_proxy = "[::1]:3128"\n'
        'forward = ["tcp:127.0.0.1:8080=198.18.0.1:80", "udp:shardnet:53=127.0.0.1:53"]\n'
    )
    config = build_config(load_toml(str(path)), {})
    assert config.socks5 == "127.0.0.1:1080"
    assert config.http_proxy == "[::1]:3128"
    assert config.forwards == ("tcp:127.0.0.1:8080=198.18.0.1:80", "udp:shardnet:53=127.0.0.1:53")
    check_settings(config)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"socks5": "ann@127.0.0.1:1080"}, "--socks5"),
        ({"forwards": ["tcp:127.0.0.1:1=nowhere"]}, "--forward"),
        ({"http_proxy": "127.0.0.1"}, "--http-proxy"),
        ({"http_proxy": "ann@127.0.0.1:3128"}, "--http-proxy"),
    ],
)
def test_bad_fronts_are_one_line_errors(flags: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_settings(build_config({}, {"tap": "sntap0", **flags}))
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_a_front_on_a_port_in_use_is_one_line_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as exc:
            check_settings(build_config({}, {"tap": "sntap0", "socks5": f"127.0.0.1:{port}"}))
    assert str(exc.value).startswith(f"--socks5: cannot listen on 127.0.0.1:{port}")
