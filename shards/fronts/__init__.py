"""Fronts for host programs (``--socks5``, ``--http-proxy``, ``--forward``):
kernel sockets that host programs connect to, each connection dialled on
through shardnet's stack and spliced to it; and the reverse, a port on
shardnet's addresses forwarded to a kernel socket. As Tailscale's
userspace mode and slirp4netns's port forwards do.

Where the kernel sockets live: every shard opens its own listener with
SO_REUSEPORT, and the kernel spreads the accepted connections over them
(gVisor-based gateways run one listener in one process; here that process
would have to pass each accepted socket on). The shard that accepted a
connection dials it: the stack's active open picks a local port whose flow
hashes back to the dialling shard (``flowhash.pick_port``, through
``PortManager.reserve_ephemeral``), so the replies reach the shard that
holds both ends and no connection is handed between processes.

The splice is the relay's (``shards/relay/tcp.py``: back-pressure both
ways, FIN ↔ ``shutdown(SHUT_WR)``, RST ↔ abort). Destinations given as
names (SOCKS5 CONNECT requests and UDP datagrams, HTTP URIs) are resolved
with the host's resolver, through a small cache (``names.py``). UDP —
``udp:`` forwards and SOCKS5 UDP ASSOCIATE — is in ``udp.py``; BIND is refused (RFC 1928 reply 7, command not supported).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ..api import ShardStack
from ..relay import socks5 as codec
from ..relay.sockets import SocketOpener
from ..relay.tcp import CONNECT_TIMEOUT_S, ClientSide, KernelSide
from . import http_proxy
from .forward import ForwardSpec, ProxySpec
from .names import Names
from .socks5 import handshake
from .udp import Association, UdpForward, side

__all__ = ["Fronts"]

log = logging.getLogger("shardnet.fronts")
HANDSHAKE_TIMEOUT_S = 10.0  # a client that does not finish its request is let go
LISTEN_BACKLOG = 1024
# Connections one shard's fronts hold at once (being set up or spliced), as
# the relay's in-flight cap; more are accepted and closed at once.
MAX_CONNECTIONS = 4096
# What ``ctl fronts`` calls a TCP forward that listens on shardnet's
# addresses (``tcp:shardnet:PORT=...``): its client is on shardnet's side.
INBOUND = "tcp-forward-shardnet"
# What a SOCKS5 client is told for each way the dial failed (RFC 1928 §6);
# anything else (a timeout, a name that does not resolve) is host unreachable.
_REPLY_OF_ERRNO = {
    errno.ECONNREFUSED: codec.REP_CONNECTION_REFUSED,
    errno.ENETUNREACH: codec.REP_NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: codec.REP_HOST_UNREACHABLE,
}


class Fronts:
    """The fronts of one shard. The splice's owner (``flows``, bytes each
    way): ``bytes_up`` is what shardnet's side sent to the kernel's."""

    def __init__(
        self,
        api: ShardStack,
        clock: Callable[[], float],
        *,
        socks5: str | None = None,
        http_proxy: str | None = None,
        forwards: Sequence[str] = (),
    ) -> None:
        self.api = api
        self.clock = clock
        self.socks5 = ProxySpec.parse(socks5) if socks5 is not None else None
        self.http_proxy = (
            ProxySpec.parse(http_proxy, "--http-proxy") if http_proxy is not None else None
        )
        self.forwards = [ForwardSpec.parse(f) for f in forwards]
        self.flows: dict[Any, KernelSide] = {}
        self.bytes_up = self.bytes_down = 0
        self.accepted = self.dialled = self.failed = self.refused = self.udp_dropped = 0
        self._closers: list[Callable[[], None]] = []  # UDP forwards and associations
        self.udp_forwards: list[UdpForward] = []
        self.associations: set[Association] = set()
        self.sockets = SocketOpener(None)  # forwards from shardnet's side: this namespace
        self.names = Names(clock)
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()  # connections being set up
        self._accepting: list[asyncio.Task[Any]] = []  # one accept loop per listener

    async def start(self) -> None:
        """Open every listener (OSError, e.g. EADDRINUSE, is raised)."""
        if self.socks5 is not None:
            self._listen(self.socks5.host, self.socks5.port, self._serve_socks5)
        if self.http_proxy is not None:
            self._listen(self.http_proxy.host, self.http_proxy.port, self._serve_http)
        for spec in self.forwards:
            if spec.proto == "udp":
                await self._udp_forward(spec)
            elif spec.stack_side:
                await self.api.create_server(self._inbound(spec), None, spec.listen_port)
            else:
                self._listen(spec.listen_host, spec.listen_port, self._forwarder(spec))

    async def _udp_forward(self, spec: ForwardSpec) -> None:
        loop = asyncio.get_running_loop()
        target = (spec.target_host, spec.target_port)
        if spec.stack_side:

            async def to_kernel(factory: Callable[[], asyncio.DatagramProtocol]) -> Any:
                family = socket.AF_INET6 if ":" in spec.target_host else socket.AF_INET
                sock = await self.sockets.open(family, socket.SOCK_DGRAM)
                try:
                    sock.connect(target)  # UDP: no handshake
                    return await loop.create_datagram_endpoint(factory, sock=sock)
                except OSError:
                    sock.close()
                    raise

            forward = UdpForward(self, to_kernel, _endpoint(*target), "udp-forward-shardnet")
            await self.api.create_datagram_endpoint(
                lambda: forward, local_addr=("::", spec.listen_port),
                options={"SO_REUSEADDR": True},
            )  # fmt: skip
        else:

            async def to_stack(factory: Callable[[], asyncio.DatagramProtocol]) -> Any:
                return await self.api.create_datagram_endpoint(factory, remote_addr=target)

            forward = UdpForward(self, to_stack, _endpoint(*target), "udp-forward")
            await loop.create_datagram_endpoint(
                lambda: forward, local_addr=(spec.listen_host, spec.listen_port), reuse_port=True
            )
        self._closers.append(forward.close)
        self.udp_forwards.append(forward)

    def _listen(self, host: str, port: int, serve: Callable[[socket.socket, Any], Any]) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one per shard
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners.append(sock)
        self._accepting.append(
            asyncio.get_running_loop().create_task(self._accept_loop(sock, serve))
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(
        self, sock: socket.socket, serve: Callable[[socket.socket, Any], Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: wait, as servers do
                log.warning("shard %d: accept: %s", self.api.shard, exc)
                await asyncio.sleep(0.1)
                continue
            self.accepted += 1
            if len(self.flows) + len(self._tasks) >= MAX_CONNECTIONS:
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(serve(conn, peer))

    # --- the dial, shared by every front --------------------------------------------------
    async def dial(
        self,
        conn: socket.socket,
        peer: Any,
        host: str,
        port: int,
        *,
        to_kernel: bytes = b"",
        to_stack: bytes = b"",
        refusal: Callable[[BaseException], bytes] = lambda exc: b"",
        front: str = "tcp-forward",
    ) -> None:
        """Open ``host:port`` through shardnet's stack from this shard and
        splice it with the accepted kernel socket ``conn``; on success
        ``to_kernel`` and ``to_stack`` go first, on failure the client gets
        ``refusal(exc)`` and the socket is closed."""
        loop = asyncio.get_running_loop()
        kernel = KernelSide(self, peer, self.clock())
        kernel.front, kernel.target = front, _endpoint(host, port)
        try:
            await loop.connect_accepted_socket(lambda: kernel, sock=conn)
        except OSError:
            conn.close()
            return
        try:
            addr = await self.names.resolve(host)
            await asyncio.wait_for(
                self.api.create_connection(
                    lambda: ClientSide(kernel, to_kernel, to_stack), addr, port
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            self.failed += 1
            t = kernel.transport
            if t is not None and not t.is_closing():
                t.write(refusal(exc))
                t.close()
            return
        self.dialled += 1

    async def _serve_socks5(self, conn: socket.socket, peer: Any) -> None:
        spec = self.socks5
        assert spec is not None
        loop = asyncio.get_running_loop()
        try:
            cmd, host, port = await asyncio.wait_for(
                handshake(conn, spec.username, spec.password), HANDSHAKE_TIMEOUT_S
            )
            if cmd == codec.CMD_UDP_ASSOCIATE:
                await self._associate(conn)
                return
            if cmd != codec.CMD_CONNECT:  # BIND is not served
                await loop.sock_sendall(conn, codec.reply(codec.REP_COMMAND_NOT_SUPPORTED))
                raise codec.Socks5Error("SOCKS5: command not supported")
        except (OSError, TimeoutError):
            self.refused += 1
            conn.close()
            return
        text = host if isinstance(host, str) else str(ipaddress.ip_address(host))
        await self.dial(
            conn, peer, text, port,
            to_kernel=codec.reply(codec.REP_SUCCEEDED),
            refusal=lambda exc: codec.reply(_socks5_reply(exc)), front="socks5",
        )  # fmt: skip

    async def _associate(self, conn: socket.socket) -> None:
        """RFC 1928 §7: a UDP socket for the client beside the control
        connection, relayed until that connection ends."""
        loop = asyncio.get_running_loop()
        local_ip, client_ip = conn.getsockname()[0], conn.getpeername()[0]
        assoc = Association(self, client_ip, self.clock())
        self.associations.add(assoc)
        try:
            assoc.kernel, _ = await loop.create_datagram_endpoint(
                side(assoc.from_client), local_addr=(local_ip, 0)
            )
            assoc.stack, _ = await self.api.create_datagram_endpoint(
                side(assoc.from_destination), local_addr=("::", 0)
            )
            bound = assoc.kernel.get_extra_info("sockname")
            reply = codec.reply(
                codec.REP_SUCCEEDED, ipaddress.ip_address(bound[0]).packed, bound[1]
            )
            await loop.sock_sendall(conn, reply)
            self.dialled += 1
            self._closers.append(assoc.close)
            while await loop.sock_recv(conn, 512):  # the association lives as long as it
                pass
        except OSError:
            self.failed += 1
        finally:
            assoc.close()
            self.associations.discard(assoc)
            if assoc.close in self._closers:
                self._closers.remove(assoc.close)
            conn.close()

    async def _serve_http(self, conn: socket.socket, peer: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            head, rest = await asyncio.wait_for(_read_head(conn), HANDSHAKE_TIMEOUT_S)
            spec = self.http_proxy
            if spec is not None and spec.username is not None and spec.password is not None:
                http_proxy.check_credentials(head, spec.username, spec.password)
            req = http_proxy.parse_head(head)
        except http_proxy.BadRequest as exc:
            self.refused += 1
            challenge = (
                http_proxy.CHALLENGE if exc.status == http_proxy.PROXY_AUTH_REQUIRED else b""
            )
            with contextlib.suppress(OSError):
                await loop.sock_sendall(conn, http_proxy.error_response(exc.status, challenge))
            conn.close()
            return
        except (OSError, TimeoutError, ValueError):
            self.refused += 1
            conn.close()
            return
        await self.dial(
            conn, peer, req.host, req.port,
            to_kernel=http_proxy.ESTABLISHED if req.tunnel else b"",
            to_stack=req.head + rest,
            refusal=lambda exc: http_proxy.error_response(b"502 Bad Gateway"), front="http",
        )  # fmt: skip

    def _inbound(self, spec: ForwardSpec) -> Callable[[], asyncio.Protocol]:
        return lambda: _Inbound(self, spec)

    def _forwarder(self, spec: ForwardSpec) -> Callable[[socket.socket, Any], Any]:
        async def serve(conn: socket.socket, peer: Any) -> None:
            await self.dial(conn, peer, spec.target_host, spec.target_port)

        return serve

    def rows(self) -> list[dict[str, Any]]:
        """The live front flows for ``ctl fronts``: each spliced TCP
        connection, UDP forward pair and SOCKS5 UDP association, with its
        client, target, payload bytes each way (``bytes_up``: from the
        client to the target) and age."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for key, k in self.flows.items():
            # KernelSide counts what its socket sent as ``bytes_down``: the
            # client's bytes, but for a forward listening on shardnet's side.
            up, down = (k.bytes_down, k.bytes_up)
            if k.front == INBOUND:
                up, down = down, up
            rows.append({
                "proto": k.front, "client": _endpoint(*key[:2]),
                "target": k.target, "bytes_up": up, "bytes_down": down,
                "age_s": round(now - k.since, 3),
            })  # fmt: skip
        for forward in self.udp_forwards:
            for pair in forward.pairs.values():
                rows.append({
                    "proto": forward.front, "client": _endpoint(*pair.peer[:2]),
                    "target": forward.target, "bytes_up": pair.up, "bytes_down": pair.down,
                    "age_s": round(now - pair.since, 3),
                })  # fmt: skip
        for assoc in self.associations:
            client = assoc.client_port or (assoc.client_ip, 0)
            rows.append({
                "proto": "socks5-udp", "client": _endpoint(*client[:2]), "target": "*",
                "bytes_up": assoc.down, "bytes_down": assoc.up,
                "age_s": round(now - assoc.since, 3),
            })  # fmt: skip
        return rows

    def stats(self) -> dict[str, int]:
        return {
            "front/flows": len(self.flows),
            "front/accepted": self.accepted,
            "front/dialled": self.dialled,
            "front/failed": self.failed,
            "front/refused": self.refused,
            "front/bytes_up": self.bytes_up,
            "front/bytes_down": self.bytes_down,
            "front/udp_dropped": self.udp_dropped,
            "front/resolve_failed": self.names.failed,
        }

    def close(self) -> None:
        for task in [*self._accepting, *self._tasks]:
            task.cancel()
        for close in self._closers:
            close()
        self._closers.clear()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        self.sockets.close()


def _socks5_reply(exc: BaseException) -> int:
    if isinstance(exc, ConnectionRefusedError):  # the stack's carries no errno
        return codec.REP_CONNECTION_REFUSED
    err = exc.errno if isinstance(exc, OSError) else None
    return _REPLY_OF_ERRNO.get(err or 0, codec.REP_HOST_UNREACHABLE)


async def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head up to its blank line, and what came after it."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > http_proxy.MAX_HEAD:
            raise http_proxy.BadRequest(b"431 Request Header Fields Too Large", "head too long")
        chunk = await loop.sock_recv(conn, 4096)
        if not chunk:
            raise ConnectionResetError("the client went before its request")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Inbound(ClientSide):
    """A connection to a forward on shardnet's side: it reads nothing until
    its kernel socket to the target connected, then is spliced to it."""

    def __init__(self, fronts: Fronts, spec: ForwardSpec) -> None:
        kernel = KernelSide(fronts, None, fronts.clock())
        kernel.front, kernel.target = INBOUND, _endpoint(spec.target_host, spec.target_port)
        super().__init__(kernel)
        self.fronts = fronts
        self.spec = spec

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]
        assert self.kernel is not None
        self.kernel.key = transport.get_extra_info("peername")
        self.fronts._spawn(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        spec, kernel, t = self.spec, self.kernel, self.transport
        assert kernel is not None and t is not None
        family = socket.AF_INET6 if ":" in spec.target_host else socket.AF_INET
        sock: socket.socket | None = None
        try:
            sock = await self.fronts.sockets.open(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(
                loop.sock_connect(sock, (spec.target_host, spec.target_port)), CONNECT_TIMEOUT_S
            )
            await loop.create_connection(lambda: kernel, sock=sock)
        except (OSError, TimeoutError):
            if sock is not None:
                sock.close()
            self.fronts.failed += 1
            self.kernel = None
            t.abort()  # the client sees its connection reset, as a refused target would
            return
        self.fronts.dialled += 1
        if t.is_closing():
            kernel.abort()
            return
        kernel.attach(self)
        t.resume_reading()
