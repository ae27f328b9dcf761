"""Built-in applications (``--serve APP:PORT``) and the loader of user apps
(``--app MODULE:CALLABLE``). Each runs in every shard, on one dual-stack
socket per service (RFC 3493 §3.7: IPv4 peers appear as ::ffff:a.b.c.d).

Over TCP: ``echo`` (RFC 862), ``discard`` (RFC 863), ``chargen`` (RFC 864),
``http`` (HTTP/1.1 with keep-alive: ``/`` names the shard and the peer,
``/bytes/N`` sends N bytes, for load tests) and ``whoami`` (one JSON object
per line: what the stack saw). Over UDP: ``echo``, ``discard``, ``whoami``
(one JSON object per datagram).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any

from shardnet.common.addr import format_ip

from .api import ShardStack, UdpTransport

UDP_APPS = ("echo", "discard", "whoami")
TCP_APPS = ("echo", "discard", "chargen", "http", "whoami")
CHARGEN_LINE = 72  # characters per line (RFC 864)


class _Service(asyncio.DatagramProtocol):
    def __init__(self, app: str, stack: ShardStack) -> None:
        self.app = app
        self.stack = stack
        self.transport: UdpTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, UdpTransport)
        self.transport = transport
        # For whoami: IPv4 datagrams' TOS, IPv6 ones' traffic class (two options).
        transport.set_option("IP_RECVTOS", True)
        transport.set_option("IPV6_RECVTCLASS", True)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        t = self.transport
        assert t is not None
        if self.app == "echo":
            t.sendto(data, addr)
        elif self.app == "whoami":
            info = t.last_datagram
            reply = {
                "peer": addr[0],
                "local": format_ip(info.local)
                if info is not None
                else t.get_extra_info("sockname")[0],
                "shard": self.stack.shard,
                "tos": info.tos if info is not None else 0,
            }
            t.sendto(json.dumps(reply).encode() + b"\n", addr)
        # discard: nothing


async def serve_udp(stack: ShardStack, app: str, port: int) -> UdpTransport:
    transport, _ = await stack.create_datagram_endpoint(
        lambda: _Service(app, stack), local_addr=("::", port), options={"SO_REUSEADDR": True}
    )
    return transport


def load_app(spec: str) -> Callable[[ShardStack], Coroutine[Any, Any, Any]]:
    """``MODULE:CALLABLE`` to the coroutine function (the shard runs it as
    an asyncio task); ImportError or
    AttributeError with a clear message otherwise."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"--app {spec}: {module_name} has no callable {attr!r}")
    return fn


# --- TCP ------------------------------------------------------------------------------


class TcpEcho(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class TcpDiscard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


def chargen_block() -> bytes:
    """RFC 864: lines of 72 printable characters, each starting one later."""
    chars = bytes(range(32, 127))
    lines = [(chars[i % 95 :] + chars)[:CHARGEN_LINE] + b"\r\n" for i in range(95)]
    return b"".join(lines)


class TcpChargen(asyncio.Protocol):
    # Nine turns of the 95-line pattern (63,270 bytes) per write: the
    # pattern goes on unbroken, and a fast reader costs a ninth of the
    # writes (an application's write, not the stack, bounded bulk output).
    BLOCK = chargen_block() * 9

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.paused = False
        self._fill()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()

    def _fill(self) -> None:
        while not self.paused and not self.transport.is_closing():
            self.transport.write(self.BLOCK)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass  # RFC 864: received data is thrown away


async def _whoami_tcp(
    stack: ShardStack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    transport = writer.transport
    try:
        while await reader.readline():  # any line: answer with what the stack saw
            info = {
                "peer": writer.get_extra_info("peername")[0],
                "local": writer.get_extra_info("sockname")[0],
                "shard": stack.shard,
                "tos": getattr(transport, "last_tos", 0),
                "mss": writer.get_extra_info("mss"),
            }
            writer.write(json.dumps(info).encode() + b"\n")
            await writer.drain()
    finally:
        writer.close()


HTTP_MAX_HEADER = 16 * 1024  # bytes of request line and headers
HTTP_CHUNK = 64 * 1024
HTTP_SERVER = "shardnet"  # RFC 9110 §10.2.4


async def _http(
    stack: ShardStack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """HTTP/1.1 with keep-alive (RFC 9112): GET / and GET /bytes/N."""
    peer = writer.get_extra_info("peername")[0]
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if len(head) > HTTP_MAX_HEADER:
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = request_line.split(" ")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (h.partition(":") for h in header_lines if h)
            }
            # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only
            # when the client asks with "keep-alive" (RFC 9112 §C.2.2).
            tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
            if parts[-1] == "HTTP/1.1":
                keep_alive = "close" not in tokens
            else:
                keep_alive = "keep-alive" in tokens and "close" not in tokens
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                status, body_len, body = "400 Bad Request", None, b"bad request\n"
            elif parts[1] == "/":
                text = f"<html><body><h1>shardnet</h1><p>shard {stack.shard} of {stack.nshards} answered {peer}</p></body></html>\n"
                status, body_len, body = "200 OK", None, text.encode()
            elif parts[1].startswith("/bytes/") and parts[1][7:].isdigit():
                status, body_len, body = "200 OK", int(parts[1][7:]), b""
            else:
                status, body_len, body = "404 Not Found", None, b"not found\n"
            length = body_len if body_len is not None else len(body)
            ctype = (
                "application/octet-stream" if body_len is not None else "text/html; charset=utf-8"
            )
            writer.write(
                f"HTTP/1.1 {status}\r\nDate: {formatdate(usegmt=True)}\r\nServer: {HTTP_SERVER}\r\n"
                f"Content-Length: {length}\r\nContent-Type: {ctype}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            )
            if parts[0] != "HEAD":
                if body_len is None:
                    writer.write(body)
                else:
                    chunk = b"x" * HTTP_CHUNK
                    left = body_len
                    while left > 0:
                        writer.write(chunk[: min(left, HTTP_CHUNK)])
                        left -= HTTP_CHUNK
                        await writer.drain()
            await writer.drain()
            if not keep_alive:
                return
    except ConnectionError:
        return
    finally:
        writer.close()


async def serve_tcp(stack: ShardStack, app: str, port: int) -> Any:
    """One dual-stack listener for ``app`` in this shard."""
    if app == "echo":
        return await stack.create_server(TcpEcho, None, port)
    if app == "discard":
        return await stack.create_server(TcpDiscard, None, port)
    if app == "chargen":
        return await stack.create_server(TcpChargen, None, port)
    handler = _http if app == "http" else _whoami_tcp
    return await stack.start_server(lambda r, w: handler(stack, r, w), None, port)
