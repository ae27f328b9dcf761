"""The relay's TCP side: every connection request no listener takes is
dialled with a kernel socket to its original destination, and the two
connections are spliced.

The client's SYN is held, not answered, while the kernel connects: only
when the destination accepted is the SYN handed to the demux's flow
machinery (``TcpDemux.accept_flow``), which answers it from the original
destination's address (the stack is promiscuous, so the reply's source is
that address). A destination that refuses or cannot be reached is told to
the client as the destination itself would: a reset answering its SYN
(``connect()`` fails with ECONNREFUSED), or with ``--relay-refused icmp``
an ICMP destination unreachable (port unreachable for a refusal, host
unreachable otherwise: RFC 1122 §4.2.3.9 makes both hard errors of a
connection being opened). Retransmitted SYNs of a flow being dialled are
dropped.

Splicing (``Splice``) keeps asyncio's flow control end to end: a side
whose write buffer is over its high-water mark pauses reading on the
other (shardnet's transport then closes the advertised window; the
kernel's stops reading the socket, and its receive window closes).
A FIN is passed on as ``shutdown(SHUT_WR)`` and the reverse; the pair is
closed once both directions ended. A reset on either side aborts the
other: a kernel socket is aborted with ``SO_LINGER`` {on, 0}, which makes
the kernel send RST (as Linux's ``tcp_disconnect``).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from shardnet.common.addr import format_ip
from shardnet.common.wire.icmpv4 import ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, ICMP_PORT_UNREACH
from shardnet.common.wire.icmpv6 import ICMPV6_DST_UNREACH, UNREACH_ADDRESS, UNREACH_PORT
from shardnet.common.wire.ipv4 import Ipv4Header
from shardnet.common.wire.ipv6 import Ipv6Header

from ..net.datagram import Delivery
from ..net.stack import NetStack
from ..tcp.endpoint import rst_for
from ..tcp.segment import Segment
from ..transport.tcp import FlowHook, Key, TcpDemux
from . import socks5
from .limits import RelayLimits
from .rules import RelayRules
from .sockets import SocketOpener
from .socks5 import Upstream
from .udp import UdpRelay

if TYPE_CHECKING:
    from .echo import EchoRelay

CONNECT_TIMEOUT_S = 10.0  # a destination that does not answer: the client is told, not left waiting
# A dialled socket waits this long for the client's handshake to complete
# (the SYN-ACK and its retransmissions: 1 + 2 + 4 + 8 + 16 s, RFC 6298 §5.5).
ATTACH_TIMEOUT_S = 35.0
_LINGER_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER {on, 0}: close sends RST
_TCP8 = struct.Struct("!HHI")  # the transport bytes an ICMP error quotes: ports, sequence
_REFUSED = frozenset({errno.ECONNREFUSED})


class RelayTcp(FlowHook):
    """The demux's flow hook in relay mode. ``sockets`` opens the kernel
    sockets; ``refused`` is ``"rst"`` or ``"icmp"``. ``flows``: the spliced
    connections (by the client connection's key) while their kernel socket
    is open. Counters beside the hook's own: ``failed`` (dials that
    failed), bytes relayed each way."""

    def __init__(
        self,
        net: NetStack,
        sockets: SocketOpener,
        clock: Callable[[], float],
        *,
        refused: str = "rst",
        udp: UdpRelay | None = None,
        rules: RelayRules | None = None,
        upstream: Upstream | None = None,
        limits: RelayLimits | None = None,
    ) -> None:
        limits = limits or RelayLimits()
        super().__init__(
            _no_decider, max_in_flight=limits.in_flight, max_per_source=limits.per_source
        )
        self.max_per_destination = limits.per_destination
        # Flows per destination address: being dialled, and established
        # (``opened``/``closed``, which the demux calls for the flows it
        # accepted for this hook).
        self.dialling_to: dict[bytes, int] = {}
        self.open_to: dict[bytes, int] = {}
        self.net = net
        self.sockets = sockets
        self.refused = refused
        self.pending: dict[Key, Segment] = {}  # flows being dialled: their SYN
        self.rules = rules or RelayRules()
        self.upstream = upstream  # --relay socks5://: dial through it
        self.failed = self.denied = 0
        self.bytes_up = self.bytes_down = 0  # client to destination, and back
        self.flows: dict[Key, KernelSide] = {}
        self.clock = clock
        self.udp = udp  # its counters are reported with ours
        self.echo: EchoRelay | None = None  # --relay-icmp relay: so are its

    def decide(
        self, demux: TcpDemux, src: bytes, sport: int, dst: bytes, dport: int, seg: Segment
    ) -> bool:
        key = (dst, dport, src, sport)
        if key in self.pending:  # a retransmitted SYN while dialling
            self.ignored += 1
            return True
        if not self.rules.allows(dst, dport):
            self.denied += 1
            return False  # the caller resets it
        if (
            len(self.open) + len(self.pending) >= self.max_in_flight
            or self.per_source.get(src, 0) >= self.max_per_source
            or self.dialling_to.get(dst, 0) + self.open_to.get(dst, 0) >= self.max_per_destination
        ):
            self.over_cap += 1
            return False  # the caller resets it
        _add(self.dialling_to, dst, 1)
        # The segment's payload is a view of the ring: keep a copy.
        self.pending[key] = Segment(
            seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.options,
            bytes(seg.payload), ecn=seg.ecn,
        )  # fmt: skip
        asyncio.get_running_loop().create_task(self._dial(demux, key))
        return True

    async def _dial(self, demux: TcpDemux, key: Key) -> None:
        local, lport, peer, _ = key
        family = socket.AF_INET6 if len(local) == 16 else socket.AF_INET
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            upstream = self.upstream
            sock = await self.sockets.open(
                family if upstream is None else upstream.family, socket.SOCK_STREAM
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if upstream is None:
                addr = (format_ip(local), lport)
                await asyncio.wait_for(loop.sock_connect(sock, addr), CONNECT_TIMEOUT_S)
            else:  # CONNECT through the SOCKS5 upstream; its refusal is the destination's
                await socks5.connect(sock, upstream, local, lport)
            kernel = KernelSide(self, key, self.clock())
            await loop.create_connection(lambda: kernel, sock=sock)
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            seg = self._undial(key)
            self.failed += 1
            if seg is not None:
                err = exc.errno if isinstance(exc, OSError) else errno.ETIMEDOUT
                self._refuse(demux, key, seg, err in _REFUSED)
            return
        seg = self._undial(key)
        if seg is None:
            kernel.abort()
            return
        kernel.expire = loop.call_later(ATTACH_TIMEOUT_S, kernel.abort)
        self.accepted += 1
        demux.accept_flow(self, peer, local, seg, lambda: ClientSide(kernel))

    def _undial(self, key: Key) -> Segment | None:
        seg = self.pending.pop(key, None)
        if seg is not None:
            _add(self.dialling_to, key[0], -1)
        return seg

    def opened(self, key: Key) -> None:
        super().opened(key)
        _add(self.open_to, key[0], 1)

    def closed(self, key: Key) -> None:
        if key in self.open:
            _add(self.open_to, key[0], -1)
        super().closed(key)

    def _refuse(self, demux: TcpDemux, key: Key, seg: Segment, refused: bool) -> None:
        local, _, peer, _ = key
        if self.refused == "rst":
            rst = rst_for(seg)
            if rst is not None:
                demux.resets_sent += 1
                demux._send(local, peer, rst)
            return
        # An ICMP error quotes the datagram it is about: its IP header and
        # the first 8 bytes of its payload (RFC 792); the SYN's are rebuilt.
        tcp8 = _TCP8.pack(seg.src_port, seg.dst_port, seg.seq)
        if len(local) == 4:
            head = bytearray(20)
            Ipv4Header(peer, local, socket.IPPROTO_TCP, total_length=40).emit(head)
            d = _delivery(self.net, peer, local, head + tcp8)
            code = ICMP_PORT_UNREACH if refused else ICMP_HOST_UNREACH
            self.net.icmp.error_v4(d, ICMP_DEST_UNREACH, code)
        else:
            head = bytearray(40)
            Ipv6Header(peer, local, socket.IPPROTO_TCP, payload_length=20).emit(head)
            d = _delivery(self.net, peer, local, head + tcp8)
            self.net.icmp.error_v6(
                d, ICMPV6_DST_UNREACH, UNREACH_PORT if refused else UNREACH_ADDRESS
            )

    def stats(self) -> dict[str, int]:
        counts = {
            "relay/tcp_flows": len(self.flows),
            "relay/tcp_dialling": len(self.pending),
            "relay/tcp_opened": self.accepted,
            "relay/tcp_failed": self.failed,
            "relay/tcp_over_cap": self.over_cap,
            "relay/tcp_denied": self.denied,
            "relay/tcp_bytes_up": self.bytes_up,
            "relay/tcp_bytes_down": self.bytes_down,
        }
        if self.udp is not None:
            counts.update(self.udp.stats())
        if self.echo is not None:
            counts.update(self.echo.stats())
        return counts

    def rows(self) -> list[dict[str, Any]]:
        """The live flows for ``ctl relays``: dialled, spliced, and UDP."""
        now = self.clock()
        rows: list[dict[str, Any]] = [
            {"proto": "tcp", "state": "dialling", "client": _endpoint(k[2], k[3]),
             "destination": _endpoint(k[0], k[1])}
            for k in self.pending
        ]  # fmt: skip
        for (local, lport, peer, pport), k in self.flows.items():
            rows.append({
                "proto": "tcp",
                "state": k.state(),
                "client": _endpoint(peer, pport),
                "destination": _endpoint(local, lport),
                "bytes_up": k.bytes_up,
                "bytes_down": k.bytes_down,
                "age_s": round(now - k.since, 3),
            })  # fmt: skip
        if self.udp is not None:
            rows += self.udp.rows(now)
        if self.echo is not None:
            rows += self.echo.rows(now)
        return rows


def _add(counts: dict[bytes, int], addr: bytes, n: int) -> None:
    left = counts.get(addr, 0) + n
    if left > 0:
        counts[addr] = left
    else:
        counts.pop(addr, None)


def _endpoint(addr: bytes, port: int) -> str:
    text = format_ip(addr)
    return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


def _no_decider(peer: tuple[Any, ...], local: tuple[Any, ...]) -> Any:
    raise AssertionError("RelayTcp decides itself")  # FlowHook.decide is overridden


def _delivery(
    net: NetStack,
    src: bytes,
    dst: bytes,
    packet: bytes | bytearray,
    proto: int = socket.IPPROTO_TCP,
) -> Delivery:
    """A datagram the client sent, rebuilt for an ICMP error to quote."""
    view = memoryview(bytes(packet))
    hlen = 20 if len(src) == 4 else 40
    return Delivery(net.link_nic, src, dst, proto, 0, 64, view[hlen:], False, view)


class SpliceOwner(Protocol):
    """What a splice reports to: the relay, or a front (``shards/fronts/``).
    ``bytes_up`` counts what shardnet's connection sent towards the kernel
    socket, ``bytes_down`` the reverse."""

    flows: dict[Any, KernelSide]
    bytes_up: int
    bytes_down: int


class KernelSide(asyncio.Protocol):
    """The kernel socket's end of a splice. It reads nothing until the
    client's connection is established (``attach``)."""

    def __init__(self, relay: SpliceOwner, key: Any, since: float) -> None:
        self.relay = relay
        self.key = key  # the client connection's
        self.since = since
        self.transport: asyncio.Transport | None = None
        self.client: ClientSide | None = None
        self.expire: asyncio.TimerHandle | None = None
        self.eof = False  # the destination sent FIN
        self.bytes_up = self.bytes_down = 0
        self.front = ""  # a front's splice: which front, and what it dialled (ctl fronts)
        self.target = ""

    def state(self) -> str:
        """``attaching`` (the client's handshake), ``open``, or which side
        has ended its direction."""
        client = self.client
        if client is None:
            return "attaching"
        if self.eof:
            return "closing" if client.eof else "dest-fin"
        return "client-fin" if client.eof else "open"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.relay.flows[self.key] = self
        self.transport.pause_reading()

    def attach(self, client: ClientSide) -> None:
        self.client = client
        if self.expire is not None:
            self.expire.cancel()
            self.expire = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.relay.bytes_down += len(data)
        if self.client is not None and self.client.transport is not None:
            self.client.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        client = self.client
        if client is not None and client.transport is not None:
            client.transport.write_eof()
            client.both_ended()
        return True  # keep the socket open for the other direction

    def pause_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay.flows.get(self.key) is self:
            del self.relay.flows[self.key]
        if self.expire is not None:
            self.expire.cancel()
            self.expire = None
        client = self.client
        self.client = None
        if client is None or client.transport is None:
            return
        client.kernel = None
        if exc is not None:  # reset by the destination (or a socket error): reset the client
            client.transport.abort()
        else:
            client.transport.close()

    def abort(self) -> None:
        """Close with RST (SO_LINGER {on, 0})."""
        t = self.transport
        if t is None or t.is_closing():
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            except OSError:
                pass
        t.abort()


class ClientSide(asyncio.Protocol):
    """The client's end of a splice: a connection of shardnet's TCP.
    ``to_kernel`` and ``to_client`` are written to each side before
    anything spliced (a front's proxy reply, a request head it rewrote)."""

    def __init__(self, kernel: KernelSide, to_kernel: bytes = b"", to_client: bytes = b"") -> None:
        self.kernel: KernelSide | None = kernel
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the client sent FIN
        self.to_kernel = to_kernel
        self.to_client = to_client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        kernel = self.kernel
        if kernel is None or kernel.transport is None or kernel.transport.is_closing():
            # The destination's socket went (or waited too long for us).
            self.kernel = None
            self.transport.abort()
            return
        if self.to_kernel:
            kernel.transport.write(self.to_kernel)
        if self.to_client:
            self.transport.write(self.to_client)
        self.to_kernel = self.to_client = b""
        kernel.attach(self)

    def data_received(self, data: bytes) -> None:
        kernel = self.kernel
        if kernel is not None and kernel.transport is not None:
            kernel.bytes_up += len(data)
            kernel.relay.bytes_up += len(data)
            kernel.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        kernel = self.kernel
        if kernel is not None and kernel.transport is not None:
            kernel.transport.write_eof()  # shutdown(SHUT_WR) once its buffer is written
        self.both_ended()
        return True

    def both_ended(self) -> None:
        """Both directions ended with FIN: close both sides (each sends
        what it still holds first)."""
        kernel = self.kernel
        if not self.eof or kernel is None or not kernel.eof:
            return
        if kernel.transport is not None:
            kernel.transport.close()
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.kernel is not None and self.kernel.transport is not None:
            self.kernel.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.kernel is not None and self.kernel.transport is not None:
            self.kernel.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        kernel = self.kernel
        self.kernel = None
        if kernel is None or self.transport is None:
            # Never connected (a front's dial that failed): its caller
            # answers the kernel side.
            return
        kernel.client = None
        if exc is not None:  # the client reset (or timed out): reset the destination
            kernel.abort()
        elif kernel.transport is not None:
            kernel.transport.close()
