"""The ``--socks5`` front's handshake, the server's side of RFC 1928 (and
RFC 1929 username/password when the front has credentials), over the codec
of ``shards/relay/socks5.py``.

The client is untrusted: every read is bounded (the codec's lengths are at
most 255 bytes per field) and the whole handshake has a deadline; anything
out of protocol ends the connection (with the RFC's reply when one exists).
"""

from __future__ import annotations

import asyncio
import hmac
import socket

from ..relay import socks5 as codec
from ..relay.socks5 import Socks5Error, _recv_exactly


async def handshake(
    sock: socket.socket, username: str | None, password: str | None
) -> tuple[int, bytes | str, int]:
    """Method negotiation, authentication, the request: its command,
    destination (an address or a domain name) and port."""
    loop = asyncio.get_running_loop()
    head = await _recv_exactly(sock, 2)  # RFC 1928 §3: VER NMETHODS METHODS
    if head[0] != codec.VERSION or head[1] == 0:
        raise Socks5Error("SOCKS5: bad greeting")
    methods = await _recv_exactly(sock, head[1])
    wanted = codec.METHOD_NONE if username is None else codec.METHOD_USER_PASSWORD
    if wanted not in methods:
        await loop.sock_sendall(sock, bytes((codec.VERSION, codec.METHOD_NO_ACCEPTABLE)))
        raise Socks5Error("SOCKS5: no acceptable method", codec.REP_NOT_ALLOWED)
    await loop.sock_sendall(sock, bytes((codec.VERSION, wanted)))
    if username is not None and password is not None:
        # RFC 1929 §2: VER ULEN UNAME PLEN PASSWD; status 0 is success.
        ver, ulen = await _recv_exactly(sock, 2)
        user = await _recv_exactly(sock, ulen)
        (plen,) = await _recv_exactly(sock, 1)
        given = await _recv_exactly(sock, plen)
        ok = (
            ver == codec.AUTH_VERSION
            and hmac.compare_digest(user, username.encode())
            and hmac.compare_digest(given, password.encode())
        )
        await loop.sock_sendall(sock, bytes((codec.AUTH_VERSION, 0 if ok else 1)))
        if not ok:  # RFC 1929 §2: the server must close the connection
            raise Socks5Error("SOCKS5: authentication failed", codec.REP_NOT_ALLOWED)
    first = await _recv_exactly(sock, 5)
    if first[0] != codec.VERSION or first[3] not in (
        codec.ATYP_IPV4,
        codec.ATYP_IPV6,
        codec.ATYP_DOMAIN,
    ):
        await loop.sock_sendall(sock, codec.reply(codec.REP_ATYP_NOT_SUPPORTED))
        raise Socks5Error("SOCKS5: bad request")
    rest = await _recv_exactly(sock, codec.reply_length(first) - 5)
    return codec.parse_request(first + rest)
