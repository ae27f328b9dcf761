"""The ``--http-proxy`` front's request parsing: HTTP CONNECT (RFC 9110
§9.3.6) and requests in absolute form (RFC 9112 §3.2.2,
``GET http://HOST[:PORT]/PATH``), which are passed on in origin form with
``Connection: close`` (one request per proxied connection, so a client's
next request on the same connection, perhaps to another host, is never
spliced to this one).

With credentials (``--http-proxy USER:PASSWORD@HOST:PORT``) a request
must carry ``Proxy-Authorization: Basic`` with them (RFC 7617 §2, RFC 9110
§11.7.2); one that does not is answered ``407 Proxy Authentication
Required`` with a ``Proxy-Authenticate`` challenge (RFC 9110 §11.7.1) and
closed.

The head is untrusted: at most ``MAX_HEAD`` bytes, one deadline.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 16384  # bytes of request line and headers, at most
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
# Headers meant for the proxy, never passed on (RFC 9110 §7.6.1, §11.7.2).
_HOP = (b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive")


class BadRequest(ValueError):
    """Not a request this proxy serves; ``status`` is the answer."""

    def __init__(self, status: bytes, reason: str) -> None:
        super().__init__(reason)
        self.status = status


PROXY_AUTH_REQUIRED = b"407 Proxy Authentication Required"
# RFC 7617 §2.1: the charset parameter says the credentials are UTF-8.
CHALLENGE = b'Proxy-Authenticate: Basic realm="shardnet", charset="UTF-8"\r\n'


def error_response(status: bytes, headers: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n" + headers
        + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )  # fmt: skip


def check_credentials(head: bytes, username: str, password: str) -> None:
    """RFC 7617 §2: ``Proxy-Authorization: Basic base64(user-id ":"
    password)``; ``BadRequest`` 407 when no such header carries exactly
    these credentials (compared in constant time)."""
    wanted = f"{username}:{password}".encode()
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep or name.strip().lower() != b"proxy-authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":  # RFC 9110 §11.1: the scheme is case-insensitive
            continue
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, wanted):
            return
    raise BadRequest(PROXY_AUTH_REQUIRED, "no valid Proxy-Authorization")


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    host: str
    port: int
    tunnel: bool  # CONNECT
    head: bytes  # what to send the destination first (empty for CONNECT)


def _authority(text: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise BadRequest(b"400 Bad Request", f"bad port in {text!r}") from None
    if not parts.hostname:
        raise BadRequest(b"400 Bad Request", f"no host in {text!r}")
    return parts.hostname, port if port is not None else default_port


def parse_head(head: bytes) -> ProxyRequest:
    """``head``: the request line and headers up to the blank line."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(b"400 Bad Request", "bad request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(b"505 HTTP Version Not Supported", version)
    if method == "CONNECT":
        host, port = _authority(target, 0)
        if port == 0:
            raise BadRequest(b"400 Bad Request", "CONNECT without a port")
        return ProxyRequest(host, port, True, b"")
    url = urlsplit(target)
    if url.scheme != "http" or not url.netloc:
        raise BadRequest(b"400 Bad Request", f"not an absolute http URI: {target!r}")
    host, port = _authority(url.netloc, 80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [
        line for line in lines[1:] if line and line.split(b":", 1)[0].strip().lower() not in _HOP
    ]
    out = [f"{method} {path} {version}".encode(), *kept, b"Connection: close", b"", b""]
    return ProxyRequest(host, port, False, b"\r\n".join(out))
