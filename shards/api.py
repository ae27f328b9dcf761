"""What applications inside a shard program against (``shardnet.shards.api``).

``async def main(stack)`` (``--app MODULE:CALLABLE``, run in every shard as
gunicorn loads apps) gets a ``ShardStack``. Its UDP side mirrors asyncio:
``create_datagram_endpoint(protocol_factory, local_addr, remote_addr, ...)``
returns a real ``asyncio.DatagramTransport`` and the protocol, so any
``asyncio.DatagramProtocol`` runs unchanged; its TCP side has
``create_server``/``create_connection`` (a real ``asyncio.Transport``) and
the streams API ``start_server``/``open_connection`` with the stdlib's
signatures.

Socket options are typed (``set_option(name, value)`` / ``get_option``) with
Linux's names; an option that does not apply raises ``OSError(ENOPROTOOPT)``
and one that must precede bind(2) raises ``OSError(EINVAL)`` afterwards
(RFC 3493 §5.3 for IPV6_V6ONLY, as Linux).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Callable
from typing import Any

from shardnet.common.addr import (
    format_ip,
    is_ipv4_mapped,
    is_ipv4_multicast,
    is_ipv6_multicast,
    parse_ip,
)

from .net.stack import NetStack
from .tcp.listener import LISTEN_BACKLOG
from .transport.tcp import IGNORE, REJECT, Accept, FlowHook, TcpDemux

__all__ = ["IGNORE", "REJECT", "Accept", "Server", "ShardStack", "UdpTransport"]
from .transport.udp import Datagram, UdpDemux, UdpOptions, UdpSocket, build_datagram

# name -> (attribute of UdpOptions, type, settable after bind)
UDP_OPTIONS: dict[str, tuple[str, type, bool]] = {
    "IPV6_V6ONLY": ("v6only", bool, False),
    "IP_RECVTOS": ("recv_tos", bool, True),
    "IPV6_RECVTCLASS": ("recv_tclass", bool, True),
    "SO_BROADCAST": ("broadcast", bool, True),
    "SO_REUSEADDR": ("reuse_addr", bool, False),
    "SO_REUSEPORT": ("reuse_port", bool, False),
    "SO_BINDTODEVICE": ("bind_nic", int, False),
    "IP_TOS": ("tos", int, True),
    "IPV6_TCLASS": ("tos", int, True),
    "SO_RCVBUF": ("rcvbuf", int, True),
    "IP_MULTICAST_TTL": ("multicast_ttl", int, True),
    "IPV6_MULTICAST_HOPS": ("multicast_ttl", int, True),
    "IP_MULTICAST_LOOP": ("multicast_loop", bool, True),
    "IPV6_MULTICAST_LOOP": ("multicast_loop", bool, True),
    "IP_MULTICAST_IF": ("multicast_nic", int, True),
    "IPV6_MULTICAST_IF": ("multicast_nic", int, True),
    "IP_MULTICAST_ALL": ("multicast_all", bool, True),
}
# Set-only options (getsockopt of them is ENOPROTOOPT, as on Linux):
# name -> (join, IP version of the group).
SOMAXCONN = 4096  # Linux net.core.somaxconn: listen()'s backlog at most

MEMBERSHIP_OPTIONS: dict[str, tuple[bool, int]] = {
    "IP_ADD_MEMBERSHIP": (True, 4),
    "IP_DROP_MEMBERSHIP": (False, 4),
    "IPV6_JOIN_GROUP": (True, 6),
    "IPV6_ADD_MEMBERSHIP": (True, 6),
    "IPV6_LEAVE_GROUP": (False, 6),
    "IPV6_DROP_MEMBERSHIP": (False, 6),
}


def _addr(host: str | None, family: int) -> bytes:
    if host in (None, "", "0.0.0.0", "::"):
        return bytes(4) if family == 4 else bytes(16)
    try:
        raw = parse_ip(str(host))
    except ValueError:
        raise OSError(
            errno.EINVAL, f"not an IP address: {host!r} (no DNS inside shardnet)"
        ) from None
    if (len(raw) == 4) != (family == 4):
        # What the kernel's own sockets raise through Python's getaddrinfo:
        # an IPv4 literal for an IPv6 socket (it takes ::ffff:a.b.c.d) or an
        # IPv6 one for an IPv4 socket. Never sent in the other family.
        raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
    return raw


def _family_of(local: tuple[str, int] | None, remote: tuple[str, int] | None, family: int) -> int:
    if family in (socket.AF_INET, socket.AF_INET6):
        return 4 if family == socket.AF_INET else 6
    for pair in (local, remote):
        if pair is not None and pair[0] not in (None, ""):
            return 6 if ":" in str(pair[0]) else 4
    return 6  # unspecified: a dual-stack socket, as Python's getaddrinfo(None) prefers


def sockaddr(addr: bytes, port: int) -> tuple[Any, ...]:
    """An address as Python's socket module reports it."""
    return (format_ip(addr), port) if len(addr) == 4 else (format_ip(addr), port, 0, 0)


class UdpTransport(asyncio.DatagramTransport):
    """asyncio's DatagramTransport over a shardnet UDP socket, with what
    ``recvmsg``/``sendmsg`` carry beside the data:

    * during ``datagram_received(data, addr)``, ``transport.last_datagram``
      is that datagram's record (``udp.Datagram``): ``tos`` (an IPv4
      datagram's TOS when IP_RECVTOS is on, an IPv6 one's traffic class
      when IPV6_RECVTCLASS is on, ECN bits included; None otherwise, as no
      ancillary data comes: two options, as on Linux, whatever the
      socket's family),
      ``local`` (the address it was sent to) and ``nic``;
    * ``sendto(data, addr, tos=N)`` sends one datagram with that TOS /
      traffic class, as an IP_TOS / IPV6_TCLASS control message does;
      without it the socket's IP_TOS / IPV6_TCLASS option applies."""

    def __init__(
        self, stack: ShardStack, sock: UdpSocket, protocol: asyncio.DatagramProtocol
    ) -> None:
        super().__init__()
        self._stack = stack
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self.last_datagram: Datagram | None = None  # the datagram being received
        sock.on_datagram = self._received
        sock.on_error = self._error

    # --- asyncio.DatagramTransport --------------------------------------------------
    def sendto(
        self, data: bytes | bytearray | memoryview, addr: Any = None, *, tos: int | None = None
    ) -> None:
        if self._closing:
            raise OSError(errno.EBADF, "transport is closing")
        if tos is not None and not 0 <= tos <= 255:
            raise OSError(errno.EINVAL, f"TOS {tos} is not 0..255")
        sock, stack = self._sock, self._stack
        remote = sock.remote
        if addr is None:
            if remote is None:
                raise ValueError("no address given and the transport is not connected")
            dst, port = remote
        else:
            dst, port = _addr(addr[0], sock.family), int(addr[1])
            if remote is not None and (dst, port) != remote:
                raise ValueError(f"Invalid address: must be None or {sockaddr(*remote)}")
        if sock.reservation is None:  # implicit bind, as sendto(2) does
            stack.udp.bind(
                sock, bytes(4) if sock.family == 4 else bytes(16), 0, **stack.port_args()
            )
        assert sock.reservation is not None
        local = sock.reservation.local_addr
        buf = build_datagram(sock.reservation.local_port, port, data)
        net = stack.net
        wildcard = local in (bytes(4), bytes(16))
        if len(dst) == 16 and is_ipv4_mapped(dst):
            if sock.options.v6only:
                raise OSError(errno.ENETUNREACH, "IPv4 destination on a V6ONLY socket")
            dst = dst[12:]
            local = local[12:] if is_ipv4_mapped(local) else bytes(4)
            wildcard = local == bytes(4)
        src = None if wildcard else local
        o = sock.options
        nic = o.bind_nic or None
        tos = o.tos if tos is None else tos
        if len(dst) == 4:
            if (dst == b"\xff\xff\xff\xff" or dst in net.view.broadcast) and not o.broadcast:
                raise PermissionError(errno.EACCES, "broadcast needs SO_BROADCAST")
            if is_ipv4_multicast(dst):  # RFC 1112 §6.1: TTL 1 unless asked, the chosen NIC
                net.send_ipv4(
                    dst, 17, buf, src=src, nic_id=o.multicast_nic or nic, ttl=o.multicast_ttl,
                    tos=tos, checksum_at=6, multicast_loop=o.multicast_loop,
                )  # fmt: skip
            else:
                net.send_ipv4(dst, 17, buf, src=src, nic_id=nic, tos=tos, checksum_at=6)
        elif is_ipv6_multicast(dst):  # RFC 3493 §5.2: hop limit 1 unless asked
            net.send_ipv6(
                dst, 17, buf, src=src, nic_id=o.multicast_nic or nic, hop_limit=o.multicast_ttl,
                traffic_class=tos, checksum_at=6, multicast_loop=o.multicast_loop,
            )  # fmt: skip
        else:
            net.send_ipv6(dst, 17, buf, src=src, nic_id=nic, traffic_class=tos, checksum_at=6)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stack.udp.close(self._sock)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._sock
        if name == "sockname" and sock.local is not None:
            return sockaddr(*sock.local)
        if name == "peername" and sock.remote is not None:
            return sockaddr(*sock.remote)
        if name == "shard":
            return self._stack.shard
        return default

    def get_write_buffer_size(self) -> int:
        return 0  # datagrams go out at once

    # --- options ----------------------------------------------------------------------
    def set_option(self, name: str, value: Any) -> None:
        if name in MEMBERSHIP_OPTIONS:
            self._membership(name, value)
            return
        attr, kind, after_bind = _option(name, self._sock.family)
        if not after_bind and self._sock.reservation is not None:
            raise OSError(errno.EINVAL, f"{name} must be set before bind")
        if name == "SO_BINDTODEVICE":
            value = self._stack.nic_id(value)
        elif name in ("IP_MULTICAST_IF", "IPV6_MULTICAST_IF"):
            value = self._stack.multicast_nic(value)
        elif name in ("IP_MULTICAST_TTL", "IPV6_MULTICAST_HOPS"):
            value = int(value)
            if value == -1:  # Linux: the default
                value = 1
            if not 0 <= value <= 255:
                raise OSError(errno.EINVAL, f"{name} must be -1 or 0..255")
        elif name in ("IP_TOS", "IPV6_TCLASS"):
            value = int(value)
            if name == "IPV6_TCLASS" and value == -1:  # RFC 3542 §6.5: the default
                value = 0
            if not 0 <= value <= 255:
                raise OSError(errno.EINVAL, f"{name} must be 0..255")
        setattr(self._sock.options, attr, kind(value))

    def get_option(self, name: str) -> Any:
        if name in MEMBERSHIP_OPTIONS:
            raise OSError(errno.ENOPROTOOPT, f"{name} can only be set")
        attr, _, _ = _option(name, self._sock.family)
        return getattr(self._sock.options, attr)

    def _membership(self, name: str, value: Any) -> None:
        """IP_ADD/DROP_MEMBERSHIP: ``group`` or ``(group, interface)`` with the
        interface as an address of ours, a NIC name or id (None, 0, "" or
        0.0.0.0: by route); IPV6_JOIN/LEAVE_GROUP: ``group`` or ``(group, nic)``."""
        join, version = MEMBERSHIP_OPTIONS[name]
        sock = self._sock
        if version == 6 and sock.family != 6:
            raise OSError(errno.ENOPROTOOPT, f"option {name} does not apply to this socket")
        group_text, iface = (value, None) if isinstance(value, str) else tuple(value)
        try:
            group = parse_ip(str(group_text))
        except ValueError:
            raise OSError(errno.EINVAL, f"not a multicast group: {group_text!r}") from None
        if version == 4 and len(group) == 16 and is_ipv4_mapped(group):
            group = group[12:]
        multicast = is_ipv4_multicast(group) if len(group) == 4 else is_ipv6_multicast(group)
        if len(group) != (4 if version == 4 else 16) or not multicast:
            raise OSError(errno.EINVAL, f"not an IPv{version} multicast group: {group_text!r}")
        nic = self._stack.multicast_nic(iface) or self._stack.group_nic(group)
        if join:
            self._stack.udp.join(sock, nic, group)
        else:
            self._stack.udp.leave(sock, nic, group)

    # --- the demux's callbacks ------------------------------------------------------------
    def _received(self, dgram: Datagram) -> None:
        if self._closing:
            return
        self.last_datagram = dgram
        self._protocol.datagram_received(dgram.data, sockaddr(*dgram.peer))

    def _error(self, exc: OSError) -> None:
        if not self._closing:
            self._protocol.error_received(exc)


def _option(name: str, family: int) -> tuple[str, type, bool]:
    entry = UDP_OPTIONS.get(name)
    if entry is None or (name.startswith("IPV6_") and family != 6):
        raise OSError(errno.ENOPROTOOPT, f"option {name} does not apply to this socket")
    return entry


class ShardStack:
    """The stack as one shard's applications see it."""

    def __init__(
        self,
        *,
        shard: int,
        nshards: int,
        net: NetStack,
        udp: UdpDemux,
        rng: random.Random,
        tcp: TcpDemux | None = None,
    ) -> None:
        self.shard = shard
        self.nshards = nshards
        self.net = net
        self.udp = udp
        self._tcp = tcp
        self._rng = rng

    @property
    def tcp(self) -> TcpDemux:
        if self._tcp is None:
            raise OSError(errno.EPROTONOSUPPORT, "this stack has no TCP")
        return self._tcp

    @tcp.setter
    def tcp(self, demux: TcpDemux) -> None:
        self._tcp = demux

    def port_args(self) -> dict[str, int]:
        """Where an ephemeral search starts (RFC 6056 §3.3.3: not predictable)."""
        return {
            "shard": self.shard,
            "nshards": self.nshards,
            "start": self._rng.randrange(1, 65536),
        }

    def multicast_nic(self, value: int | str | None) -> int:
        """IP_MULTICAST_IF and the interface of a membership: a NIC id or
        name, or one of our IPv4 addresses (its NIC); 0 when not given."""
        if value in (0, "", None, "0.0.0.0", "::"):
            return 0
        if isinstance(value, str) and value not in self.net.view.nic_by_name:
            try:
                addr = parse_ip(value)
            except ValueError:
                raise OSError(errno.ENODEV, f"no such NIC: {value}") from None
            local = self.net.view.local.get(addr)
            if local is None:
                raise OSError(errno.EADDRNOTAVAIL, f"{value} is not an address of this host")
            return local.nic
        return self.nic_id(value)

    def group_nic(self, group: bytes) -> int:
        """The NIC a membership without an interface is on: the route's
        to the group, else the link (Linux's ip_mc_find_dev)."""
        route = self.net.view.routes.lookup(group)
        return route.nic if route is not None else self.net.link_nic

    def nic_id(self, value: int | str) -> int:
        """SO_BINDTODEVICE by NIC id or name; 0 unbinds; ENODEV if unknown (socket(7))."""
        return self.net.view.bound_nic(value)

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        family: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[UdpTransport, asyncio.DatagramProtocol]:
        """asyncio's ``loop.create_datagram_endpoint`` over shardnet's UDP.
        ``options`` are set before bind (e.g. ``{"IPV6_V6ONLY": True}``)."""
        fam = _family_of(local_addr, remote_addr, family)
        sock = UdpSocket(fam, UdpOptions())
        protocol = protocol_factory()
        transport = UdpTransport(self, sock, protocol)
        if reuse_port:
            transport.set_option("SO_REUSEPORT", True)
        if allow_broadcast:
            transport.set_option("SO_BROADCAST", True)
        for name, value in (options or {}).items():
            transport.set_option(name, value)
        try:
            if local_addr is not None:
                self.udp.bind(
                    sock, _addr(local_addr[0], fam), int(local_addr[1]), **self.port_args()
                )
            if remote_addr is not None:
                self._connect(sock, _addr(remote_addr[0], fam), int(remote_addr[1]))
        except OSError:
            self.udp.close(sock)
            raise
        protocol.connection_made(transport)
        return transport, protocol

    def _connect(self, sock: UdpSocket, remote: bytes, port: int) -> None:
        """The local address a connected socket uses is fixed now, from the
        route and source selection, so the flow hashes to this shard."""
        wire_remote = remote[12:] if is_ipv4_mapped(remote) else remote
        if len(wire_remote) == 4 and sock.family == 6 and sock.options.v6only:
            raise OSError(errno.EHOSTUNREACH, "IPv4 peer on a V6ONLY socket")  # RFC 3493 §5.3
        bound = sock.reservation.local_addr if sock.reservation is not None else None
        local = bound if bound not in (None, bytes(4), bytes(16)) else None
        if local is None:
            src = self.source_for(wire_remote)
            local = src if sock.family == 4 or len(src) == 16 else bytes(10) + b"\xff\xff" + src
        self.udp.connect(sock, local, remote, port, **self.port_args())

    def source_for(self, dst: bytes, nic: int = 0) -> bytes:
        """The local address to use towards ``dst``: ``dst`` itself when it
        is one of ours (Linux's local table: 127/8, ::1, our addresses),
        else by route and source selection (RFC 6724 for IPv6); ``nic``:
        only routes out of that NIC (SO_BINDTODEVICE)."""
        view = self.net.view
        if dst in view.local or (len(dst) == 4 and dst[0] == 127):
            return dst
        route = view.routes.lookup(dst, nic=nic or None)
        if route is None:
            raise OSError(errno.ENETUNREACH, "network is unreachable")
        if len(dst) == 4:
            src = self.net.ipv4_source(route.nic, route.gateway or dst)
        else:
            src = self.net.ipv6_source(route.nic, dst)
        if src is None:
            raise OSError(errno.EADDRNOTAVAIL, "no source address for that destination")
        return src

    # --- TCP (asyncio create_server / create_connection / streams) -----------
    def _bound_device(self, options: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        """SO_BINDTODEVICE out of a TCP socket's ``options``: the NIC (by id or
        name; ENODEV if unknown, socket(7)) and the other options."""
        rest = dict(options or {})
        return rest, self.nic_id(rest.pop("SO_BINDTODEVICE", 0))

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int = 0,
        *,
        reuse_port: bool | None = None,
        v6only: bool = False,
        options: dict[str, Any] | None = None,
        backlog: int = LISTEN_BACKLOG,
        start_serving: bool = True,
    ) -> Server:
        """asyncio's ``loop.create_server``: ``host`` None listens on one
        dual-stack socket ([::], IPv4 peers as ::ffff:a.b.c.d, RFC 3493 §3.7).
        ``options``: TCP socket options its connections get (TCP_NODELAY,
        TCP_MAXSEG, TCP_LINGER2, SO_KEEPALIVE, TCP_KEEPIDLE, ...; TCP_FASTOPEN:
        the listener's Fast Open queue length, RFC 7413), and
        SO_BINDTODEVICE (a NIC name or id): only SYNs arriving on that NIC,
        and this listener before an unbound one on the same port.
        ``backlog``: connections completed but not yet accepted, at most,
        in this shard's copy of the listener (128 by default, Linux's
        SOMAXCONN until 5.4; capped at 4096); beyond it SYNs are dropped, as
        Linux does. ``start_serving`` False:
        they wait (their data too) until ``Server.start_serving()``."""
        if host in (None, "", "::"):
            family, addr = 6, bytes(16)
        else:
            family = 6 if ":" in str(host) else 4
            addr = _addr(host, family)
        options, nic = self._bound_device(options)
        lst = self.tcp.listen(
            family, addr, int(port), protocol_factory, reuse_port=bool(reuse_port), v6only=v6only,
            start=self.port_args()["start"], options=options,
            backlog=min(max(int(backlog), 1), SOMAXCONN), serving=start_serving, nic=nic,
        )  # fmt: skip
        return Server(self, [lst])

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        *,
        options: dict[str, Any] | None = None,
        fastopen: bool = False,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """asyncio's ``loop.create_connection`` (addresses only: no DNS).
        Raises ConnectionRefusedError, TimeoutError, OSError(ENETUNREACH).
        ``fastopen``: TCP Fast Open (RFC 7413) as Linux's
        TCP_FASTOPEN_CONNECT: returns at once, and what is written before
        the next loop turn goes in the SYN when this shard has the server's
        cookie (the first connect asks for one); errors then reach
        ``connection_lost``."""
        family = 6 if ":" in str(host) else 4
        remote = _addr(host, family)
        wire = remote[12:] if is_ipv4_mapped(remote) else remote
        options, nic = self._bound_device(options)
        local = self.source_for(wire, nic)
        transport = self.tcp.connect(
            family,
            local,
            wire,
            int(port),
            protocol_factory,
            start=self.port_args()["start"],
            options=options,
            nic=nic,
            fastopen=fastopen,
        )
        assert transport.connected is not None
        await transport.connected  # connection_made was called on the Connected event
        return transport, transport.get_protocol()  # type: ignore[return-value]

    def on_tcp_flow(
        self, decide: Any, *, max_in_flight: int = 1024, max_per_source: int = 64
    ) -> None:
        """The flow hook for proxies: ``decide(peer, local)`` is called for
        each SYN no listener takes and returns ``Accept(protocol_factory)``,
        ``REJECT`` (RST) or ``IGNORE``/None (silence); flows over the caps
        are reset. Counters: ``flow_hook/*`` in ``ctl stats`` gauges."""
        self.tcp.flow_hook = FlowHook(
            decide, max_in_flight=max_in_flight, max_per_source=max_per_source
        )

    async def start_server(
        self,
        client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        host: str | None = None,
        port: int = 0,
        *,
        limit: int = 2**16,
        **kwds: Any,
    ) -> Server:
        """asyncio's ``start_server`` signature, over shardnet's TCP."""

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb)

        return await self.create_server(factory, host, port, **kwds)

    async def open_connection(
        self, host: str, port: int, *, limit: int = 2**16, **kwds: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio's ``open_connection`` signature, over shardnet's TCP;
        ``kwds`` go to ``create_connection`` (``options``, ``fastopen``)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, **kwds)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer


class Server:
    """What ``create_server``/``start_server`` return: the listener's copy
    in this shard (asyncio.Server's common surface)."""

    def __init__(self, stack: ShardStack, listening: list[Any]) -> None:
        self._stack = stack
        self._listening = listening
        self._closed = asyncio.Event()

    @property
    def sockets(self) -> list[tuple[Any, ...]]:
        return [sockaddr(lst.res.local_addr, lst.res.local_port) for lst in self._listening]

    def is_serving(self) -> bool:
        return not self._closed.is_set() and all(lst.serving for lst in self._listening)

    async def start_serving(self) -> None:
        """Accept the connections waiting in the backlog, and the next ones."""
        for lst in self._listening:
            self._stack.tcp.start_serving(lst)

    def close(self) -> None:
        for lst in self._listening:
            self._stack.tcp.stop_listening(lst)
        self._listening = []
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        await self.start_serving()
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
