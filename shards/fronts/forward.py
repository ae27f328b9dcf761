"""The fronts' specifications, parsed from the command line or the config
file: ``--socks5 [USER:PASSWORD@]HOST:PORT``, ``--http-proxy [USER:PASSWORD@]HOST:PORT``
and ``--forward PROTO:LISTEN=TARGET``.

A forward's direction is told by its listening side:

* ``tcp:HOST:PORT=TARGET`` listens on a kernel socket at HOST:PORT (in the
  namespace shardnet runs in) and dials TARGET through shardnet's stack;
* ``tcp:shardnet:PORT=TARGET`` listens on shardnet's own addresses at PORT
  and dials TARGET with a kernel socket.

IPv6 addresses go in brackets (``tcp:[::1]:8080=[2001:db8::1]:80``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

STACK_SIDE = "shardnet"  # the LISTEN of a forward from shardnet's side


def parse_endpoint(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` with an IP address (IPv6 in brackets); ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what}: want HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # "2001:db8::2:80" could be either: brackets decide
        raise ValueError(f"{what}: an IPv6 address goes in brackets, got {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: want an IP address, got {host!r}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: want a port 1-65535, got {port!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A proxy front's listening address and the credentials a client must
    give (RFC 1929 for ``--socks5``, RFC 7617 Basic for ``--http-proxy``)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str, what: str = "--socks5") -> ProxySpec:
        """``[USER:PASSWORD@]HOST:PORT``; the 255-byte bound is RFC 1929's
        (one length byte per field), kept for both fronts."""
        creds, at, endpoint = text.rpartition("@")
        host, port = parse_endpoint(endpoint, what)
        if not at:
            return cls(host, port)
        user, sep, password = creds.partition(":")
        if not sep or not user or len(user.encode()) > 255 or len(password.encode()) > 255:
            raise ValueError(f"{what}: want USER:PASSWORD@ (each 1-255 bytes)")
        return cls(host, port, user, password)


@dataclass(frozen=True, slots=True)
class ForwardSpec:
    proto: str  # "tcp" or "udp"
    stack_side: bool  # listening on shardnet's addresses (else on a kernel socket)
    listen_host: str  # "" on shardnet's side: every address of the stack
    listen_port: int
    target_host: str
    target_port: int

    @classmethod
    def parse(cls, text: str) -> ForwardSpec:
        proto, sep, rest = text.partition(":")
        listen, eq, target = rest.partition("=")
        if proto not in ("tcp", "udp") or not sep or not eq:
            raise ValueError(
                f"--forward: want tcp|udp:LISTEN=TARGET (LISTEN HOST:PORT or shardnet:PORT), got {text!r}"
            )
        thost, tport = parse_endpoint(target, "--forward target")
        side, _, port = listen.partition(":")
        if side == STACK_SIDE:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"--forward: want shardnet:PORT, got {listen!r}")
            return cls(proto, True, "", int(port), thost, tport)
        lhost, lport = parse_endpoint(listen, "--forward listen")
        return cls(proto, False, lhost, lport, thost, tport)
