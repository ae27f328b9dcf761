"""``--relay socks5://[USER:PASSWORD@]HOST:PORT``: the relay opens its flows
through a SOCKS5 upstream instead of directly; ``--socks5`` (the front,
``shards/fronts/socks5.py``) is a SOCKS5 server.

A small codec for RFC 1928 (SOCKS5) and RFC 1929 (username/password
authentication) — greeting, method selection, authentication, CONNECT and
UDP ASSOCIATE requests and their replies, and the header of a relayed UDP
datagram — as functions over bytes, both sides, and the two client dials
built on them (``connect``: a TCP stream to the destination;
``associate``: a UDP association). Left out: BIND, GSSAPI, domain names
in the client's requests (the relay knows addresses only), fragmented UDP
datagrams (RFC 1928 §7: FRAG other than 0 is dropped, as most servers do).

Replies are untrusted input: a short, malformed or refusing reply raises
``Socks5Error`` carrying the reply code, which the relay turns into what
the client sees (a refusal is a reset, anything else host unreachable).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

VERSION = 5
AUTH_VERSION = 1  # RFC 1929 §2
METHOD_NONE = 0x00
METHOD_USER_PASSWORD = 0x02
METHOD_NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
CMD_UDP_ASSOCIATE = 0x03
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
# RFC 1928 §6 reply codes
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ATYP_NOT_SUPPORTED = 0x08
# What the kernel's connect() would have said for each refusal.
REPLY_ERRNO = {
    REP_NOT_ALLOWED: errno.ECONNREFUSED,
    REP_CONNECTION_REFUSED: errno.ECONNREFUSED,
    REP_NETWORK_UNREACHABLE: errno.ENETUNREACH,
    REP_HOST_UNREACHABLE: errno.EHOSTUNREACH,
    REP_TTL_EXPIRED: errno.EHOSTUNREACH,
}
HANDSHAKE_TIMEOUT_S = 10.0
MAX_REPLY = 4 + 1 + 255 + 2  # the longest reply: a domain name of 255 bytes

_PORT = struct.Struct("!H")


class Socks5Error(OSError):
    """The upstream refused or answered out of protocol; ``errno`` as the
    kernel's connect() would have failed."""

    def __init__(self, message: str, code: int = REP_GENERAL_FAILURE) -> None:
        super().__init__(REPLY_ERRNO.get(code, errno.EPROTO), message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """``socks5://[USER:PASSWORD@]HOST:PORT``; ValueError (one line) if not."""
        parts = urlsplit(url)
        if parts.scheme != "socks5" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"want socks5://[USER:PASSWORD@]HOST:PORT, got {url!r}")
        try:
            port = parts.port
            ipaddress.ip_address(parts.hostname)
        except ValueError:
            raise ValueError(f"want an IP address and a port in {url!r}") from None
        if port is None or not 0 < port < 65536:
            raise ValueError(f"want a port in {url!r}")
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if user is not None and (password is None or len(user.encode()) > 255):
            raise ValueError("a SOCKS5 user needs a password, each at most 255 bytes")
        if password is not None and len(password.encode()) > 255:
            raise ValueError("a SOCKS5 password is at most 255 bytes (RFC 1929)")
        return cls(parts.hostname, port, user, password)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


# --- the codec ---------------------------------------------------------------------------
def greeting(auth: bool) -> bytes:
    """RFC 1928 §3: the methods offered (with credentials: only user/password)."""
    return bytes((VERSION, 1, METHOD_USER_PASSWORD if auth else METHOD_NONE))


def parse_method(reply: bytes) -> int:
    if len(reply) != 2 or reply[0] != VERSION:
        raise Socks5Error("SOCKS5: bad method selection")
    if reply[1] == METHOD_NO_ACCEPTABLE:
        raise Socks5Error("SOCKS5: no acceptable authentication method", REP_NOT_ALLOWED)
    return reply[1]


def auth_request(username: str, password: str) -> bytes:
    """RFC 1929 §2."""
    user, pw = username.encode(), password.encode()
    return bytes((AUTH_VERSION, len(user))) + user + bytes((len(pw),)) + pw


def parse_auth(reply: bytes) -> None:
    if len(reply) != 2 or reply[0] != AUTH_VERSION:
        raise Socks5Error("SOCKS5: bad authentication reply")
    if reply[1] != 0:  # RFC 1929 §2: any other status is a failure
        raise Socks5Error("SOCKS5: authentication failed", REP_NOT_ALLOWED)


def encode_address(addr: bytes, port: int) -> bytes:
    atyp = ATYP_IPV4 if len(addr) == 4 else ATYP_IPV6
    return bytes((atyp,)) + addr + _PORT.pack(port)


def request(cmd: int, addr: bytes, port: int) -> bytes:
    """RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT."""
    return bytes((VERSION, cmd, 0)) + encode_address(addr, port)


def reply_length(head: bytes) -> int:
    """The full length of a reply whose first 5 bytes are ``head``."""
    if len(head) < 5 or head[0] != VERSION:
        raise Socks5Error("SOCKS5: bad reply")
    atyp = head[3]
    if atyp == ATYP_IPV4:
        return 4 + 4 + 2
    if atyp == ATYP_IPV6:
        return 4 + 16 + 2
    if atyp == ATYP_DOMAIN:
        return 4 + 1 + head[4] + 2
    raise Socks5Error("SOCKS5: bad address type in reply")


def parse_reply(reply: bytes) -> tuple[bytes | str, int]:
    """RFC 1928 §6: the bound address and port; Socks5Error for a refusal."""
    if len(reply) != reply_length(reply[:5]):
        raise Socks5Error("SOCKS5: bad reply length")
    if reply[1] != REP_SUCCEEDED:
        raise Socks5Error(f"SOCKS5: request refused (reply {reply[1]})", reply[1])
    atyp = reply[3]
    if atyp == ATYP_DOMAIN:
        return reply[5 : 5 + reply[4]].decode("ascii", "replace"), _PORT.unpack_from(
            reply, len(reply) - 2
        )[0]
    n = 4 if atyp == ATYP_IPV4 else 16
    return bytes(reply[4 : 4 + n]), _PORT.unpack_from(reply, 4 + n)[0]


def parse_request(data: bytes) -> tuple[int, bytes | str, int]:
    """RFC 1928 §4, the server's side: CMD, DST.ADDR (4 or 16 bytes, or a
    domain name) and DST.PORT; ``data`` is ``reply_length(data[:5])``
    bytes long (requests and replies share the layout)."""
    if len(data) != reply_length(data[:5]) or data[2] != 0:
        raise Socks5Error("SOCKS5: bad request")
    atyp = data[3]
    port = _PORT.unpack_from(data, len(data) - 2)[0]
    if atyp == ATYP_DOMAIN:
        try:
            return data[1], data[5 : 5 + data[4]].decode("ascii"), port
        except UnicodeDecodeError:
            raise Socks5Error("SOCKS5: a domain name not in ASCII") from None
    n = 4 if atyp == ATYP_IPV4 else 16
    return data[1], bytes(data[4 : 4 + n]), port


def reply(code: int, addr: bytes = bytes(4), port: int = 0) -> bytes:
    """RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT."""
    return bytes((VERSION, code, 0)) + encode_address(addr, port)


def udp_header(addr: bytes, port: int) -> bytes:
    """RFC 1928 §7: RSV RSV FRAG, then the destination."""
    return b"\0\0\0" + encode_address(addr, port)


def parse_udp_request(datagram: bytes) -> tuple[bytes | str, int, bytes] | None:
    """RFC 1928 §7, the server's side: destination, port and payload of a
    client's datagram; None for a malformed or fragmented one (dropped)."""
    payload = parse_udp(datagram)
    if payload is None:
        return None
    at = len(datagram) - len(payload)
    port = _PORT.unpack_from(datagram, at - 2)[0]
    if datagram[3] == ATYP_DOMAIN:
        try:
            return datagram[5 : at - 2].decode("ascii"), port, payload
        except UnicodeDecodeError:
            return None
    return bytes(datagram[4 : at - 2]), port, payload


def parse_udp(datagram: bytes) -> bytes | None:
    """The payload of a relayed datagram; None for a malformed or
    fragmented one (dropped)."""
    if len(datagram) < 4 or datagram[2] != 0:
        return None
    atyp = datagram[3]
    if atyp == ATYP_IPV4:
        at = 4 + 4 + 2
    elif atyp == ATYP_IPV6:
        at = 4 + 16 + 2
    elif atyp == ATYP_DOMAIN and len(datagram) > 4:
        at = 4 + 1 + datagram[4] + 2
    else:
        return None
    return datagram[at:] if len(datagram) >= at else None


# --- the dials ---------------------------------------------------------------------------
async def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise Socks5Error("SOCKS5: the upstream closed the connection")
        data += chunk
    return data


async def _handshake(
    sock: socket.socket, upstream: Upstream, cmd: int, addr: bytes, port: int
) -> tuple[bytes | str, int]:
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (upstream.host, upstream.port))
    auth = upstream.username is not None
    await loop.sock_sendall(sock, greeting(auth))
    method = parse_method(await _recv_exactly(sock, 2))
    if method == METHOD_USER_PASSWORD and auth:
        assert upstream.username is not None and upstream.password is not None
        await loop.sock_sendall(sock, auth_request(upstream.username, upstream.password))
        parse_auth(await _recv_exactly(sock, 2))
    elif method != METHOD_NONE:
        raise Socks5Error(f"SOCKS5: the upstream chose method {method}, not offered")
    await loop.sock_sendall(sock, request(cmd, addr, port))
    head = await _recv_exactly(sock, 5)
    if head[0] == VERSION and head[1] != REP_SUCCEEDED:
        raise Socks5Error(f"SOCKS5: request refused (reply {head[1]})", head[1])
    rest = await _recv_exactly(sock, reply_length(head) - 5)
    return parse_reply(head + rest)


async def connect(sock: socket.socket, upstream: Upstream, addr: bytes, port: int) -> None:
    """CONNECT ``addr:port`` through ``upstream`` on ``sock`` (a fresh
    non-blocking TCP socket); afterwards ``sock`` carries the stream."""
    await asyncio.wait_for(_handshake(sock, upstream, CMD_CONNECT, addr, port), HANDSHAKE_TIMEOUT_S)


async def associate(control: socket.socket, upstream: Upstream) -> tuple[str, int]:
    """UDP ASSOCIATE on ``control`` (kept open for the association's life,
    RFC 1928 §7); returns where to send the datagrams. An unspecified
    bound address means the upstream's own (as RFC 1928 servers answer)."""
    unspecified = bytes(16) if upstream.family == socket.AF_INET6 else bytes(4)
    bound, port = await asyncio.wait_for(
        _handshake(control, upstream, CMD_UDP_ASSOCIATE, unspecified, 0), HANDSHAKE_TIMEOUT_S
    )
    if isinstance(bound, str) or bound == bytes(len(bound)):
        return upstream.host, port
    return str(ipaddress.ip_address(bound)), port
