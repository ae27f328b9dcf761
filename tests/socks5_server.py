"""A small SOCKS5 server (RFC 1928 CONNECT and UDP ASSOCIATE, RFC 1929
username/password) for the relay's tests, independent of shardnet's own
client codec: written from the RFCs with asyncio, run in a server
namespace as ``python -m tests.socks5_server HOST PORT [USER PASSWORD]``.

It prints one line per request to stdout (``CONNECT addr port``,
``ASSOCIATE``) so a test can see the upstream was used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import sys
from typing import cast

USER: bytes | None = None
PASSWORD: bytes | None = None


def _addr(atyp: int, raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


async def _read_address(reader: asyncio.StreamReader) -> tuple[int, str, int]:
    atyp = (await reader.readexactly(1))[0]
    raw = await reader.readexactly(4 if atyp == 1 else 16)
    port = struct.unpack("!H", await reader.readexactly(2))[0]
    return atyp, _addr(atyp, raw), port


def _reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    ip = ipaddress.ip_address(host)
    return bytes((5, code, 0, 1 if ip.version == 4 else 4)) + ip.packed + struct.pack("!H", port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        version, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        want = 2 if USER is not None else 0
        if version != 5 or want not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(bytes((5, want)))
        if want == 2:
            _, ulen = await reader.readexactly(2)
            user = await reader.readexactly(ulen)
            plen = (await reader.readexactly(1))[0]
            password = await reader.readexactly(plen)
            ok = user == USER and password == PASSWORD
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        _, cmd, _ = await reader.readexactly(3)
        _, host, port = await _read_address(reader)
        if cmd == 1:
            print("CONNECT", host, port, flush=True)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except ConnectionRefusedError:
                writer.write(_reply(5))
                return
            except OSError:
                writer.write(_reply(4))
                return
            bound = up_writer.get_extra_info("sockname")
            writer.write(_reply(0, bound[0], bound[1]))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        if cmd == 3:
            print("ASSOCIATE", flush=True)
            await _associate(reader, writer)
            return
        writer.write(_reply(7))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    """RFC 1928 §7: datagrams from the client carry a header naming the
    destination; answers go back with a header naming their source."""

    def __init__(self) -> None:
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if self.client is None or addr[:2] == self.client:
            if len(data) < 10 or data[2] != 0:
                return
            self.client = addr[:2]
            n = 4 if data[3] == 1 else 16
            host = _addr(data[3], data[4 : 4 + n])
            port = struct.unpack_from("!H", data, 4 + n)[0]
            if n == 4:  # a dual-stack socket sends to IPv4 as IPv4-mapped
                host = "::ffff:" + host
            self.transport.sendto(data[6 + n :], (host, port))
        else:
            mapped = ipaddress.ip_address(addr[0])
            assert isinstance(mapped, ipaddress.IPv6Address)
            ip = mapped.ipv4_mapped or mapped
            head = b"\0\0\0" + bytes((1 if ip.version == 4 else 4,)) + ip.packed
            self.transport.sendto(head + struct.pack("!H", addr[1]) + data, self.client)


async def _associate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    here = writer.get_extra_info("sockname")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    transport, _ = await loop.create_datagram_endpoint(_Udp, sock=sock)
    host = here[0].removeprefix("::ffff:")
    writer.write(_reply(0, host, sock.getsockname()[1]))
    await reader.read()  # the association lasts while the control connection does
    transport.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port)
    await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 5:
        USER, PASSWORD = sys.argv[3].encode(), sys.argv[4].encode()
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
