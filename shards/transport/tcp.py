"""TCP in a shard: the connection table, the listeners, and a real
``asyncio.Transport`` over each ``TcpEndpoint`` (the sans-I/O machine in
``shards/tcp``).

Every shard has its own copy of each listener (as SO_REUSEPORT across
cores); connections live in the shard their flow hashes to, and active
opens pick a local port that hashes back here (``PortManager.
reserve_ephemeral``). Segments that reach no endpoint get the RFC 9293
§3.10.7.1 reset; segments with a non-unicast address are dropped (RFC 1122
§4.2.3.10).

The transport follows asyncio's flow control: ``write`` never blocks,
``pause_writing``/``resume_writing`` are called on the protocol around the
high/low water marks, and ``pause_reading`` stops taking data from the
endpoint, which closes the advertised window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import heapq
import itertools
import logging
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from shardnet.common.addr import format_ip, is_ipv4_mapped
from shardnet.common.ratelog import RateLimitedLog
from shardnet.common.wire.tcp import ACK, PSH, RST, SYN, TcpView

from ..net.datagram import Delivery
from ..net.ratelimit import TokenBucket
from ..net.stack import NetStack
from ..tcp.buffers import immutable
from ..tcp.config import TcpConfig, advertised_mss
from ..tcp.endpoint import (
    Closed,
    Connected,
    DataReceived,
    PeerFin,
    Reset,
    SynInTimeWait,
    TcpEndpoint,
    TcpStats,
    Writable,
    addresses_acceptable,
    rst_for,
)
from ..tcp.isn import IsnGenerator, SynCookies, TfoCookies
from ..tcp.listener import LISTEN_BACKLOG, TcpListener
from ..tcp.segment import Segment
from ..tcp.tfo_cache import TfoCache
from .ports import TCP, PortManager, Reservation
from .steer import Steering
from .udp import ICMPV4_ERRNO, ICMPV6_ERRNO

log = logging.getLogger("shardnet.tcp")

MAPPED = bytes(10) + b"\xff\xff"
# The largest TCP payload of one super-segment: the IP length field (65535)
# less the largest IPv6 and TCP headers, as Linux's GSO_MAX_SIZE bounds it.
TSO_MAX_PAYLOAD = 65535 - 60 - 60  # bytes
HIGH_WATER = 256 * 1024  # bytes buffered in the transport before pause_writing
# asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES: dropped writes before a warning.
DROPPED_WRITES_WARNING = 5
Key = tuple[bytes, int, bytes, int]  # local addr, local port, remote addr, remote port (wire form)


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(TcpStats))
_TCP_FIXED = struct.Struct("!HHIIHH")  # ports, SEQ, ACK, offset+flags, window
_TS_VALUES = struct.Struct("!II")  # TSval, TSecr
_NOP_NOP_TS = bytes((1, 1, 8, 10))  # RFC 7323 Appendix A: NOP, NOP, kind 8, length 10
# Flags that rule header prediction out (any but PSH), and ACK, which it needs.
_NOT_PREDICTED = 0x0FFF & ~PSH
_CE = 3  # RFC 3168 §5: Congestion Experienced in the IP header's ECN field


# The listeners' own counts, shown in ``ctl stats`` gauges.
LISTENER_COUNTERS = (
    "syn_received", "syns_dropped", "syn_fin_dropped", "acks_dropped", "cookies_sent",
    "cookies_accepted", "cookies_rejected", "dropped_non_unicast", "resets_sent",
    "tfo_accepted", "tfo_cookies_sent", "tfo_cookies_rejected", "tfo_overflow",
)  # fmt: skip


def _linger(value: Any) -> float | None:
    """SO_LINGER's value, as ``struct linger``: (onoff, seconds); None off."""
    if value is None:
        return None
    onoff, seconds = value
    if int(seconds) < 0:
        raise ValueError("negative linger time")
    return float(seconds) if onoff else None


# Socket options (Linux's names) -> TcpConfig field and type. Set them when
# creating a server (its connections inherit them) or a connection;
# TCP_NODELAY and TCP_CORK also apply to an open connection.
TCP_OPTIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "TCP_NODELAY": ("nodelay", bool),
    "TCP_MAXSEG": ("user_mss", int),
    "TCP_LINGER2": ("linger2_s", float),
    "TCP_CONGESTION": ("cc", str),
    "TCP_RACK": ("rack", bool),  # RFC 8985 loss detection (Linux: the tcp_recovery sysctl)
    "TCP_FASTOPEN": ("fastopen_qlen", int),  # a listener's Fast Open queue (RFC 7413)
    "TCP_USER_TIMEOUT": ("user_timeout_ms", int),  # RFC 5482, milliseconds as Linux
    "SO_LINGER": ("linger_s", _linger),  # (onoff, seconds) as struct linger
    "SO_KEEPALIVE": ("keepalive", bool),
    "TCP_KEEPIDLE": ("keepalive_idle_s", float),
    "TCP_KEEPINTVL": ("keepalive_intvl_s", float),
    "TCP_KEEPCNT": ("keepalive_cnt", int),
    "SO_SNDBUF": ("snd_buf", int),
    "SO_RCVBUF": ("rcv_buf", int),
}


def config_with(config: TcpConfig, options: dict[str, Any] | None) -> TcpConfig:
    """``config`` with socket options applied; OSError(ENOPROTOOPT) for an
    unknown option, OSError(EINVAL) for a bad value (as setsockopt(2))."""
    if not options:
        return config
    changes = {}
    for name, value in options.items():
        entry = TCP_OPTIONS.get(name)
        if entry is None:
            raise OSError(errno.ENOPROTOOPT, f"option {name} does not apply to a TCP socket")
        field, kind = entry
        try:
            changes[field] = kind(value)
        except (TypeError, ValueError):
            raise OSError(errno.EINVAL, f"{name}: bad value {value!r}") from None
    # socket(7): SO_SNDBUF and SO_RCVBUF are clamped to the stack-wide
    # maxima (Linux wmem_max / rmem_max), not refused.
    if "snd_buf" in changes:
        changes["snd_buf"] = min(changes["snd_buf"], config.snd_buf_max)
    if "rcv_buf" in changes:
        changes["rcv_buf"] = min(changes["rcv_buf"], config.rcv_buf_max)
    try:
        return dataclasses.replace(config, **changes)
    except ValueError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None


# Stack-wide settings that open connections follow too when they change
# (``TcpDemux.set_config``), unless a socket option set them for the
# connection: as Linux reads tcp_fin_timeout, tcp_retries2 and the
# tcp_keepalive_* sysctls when it uses them. The rest (buffers, the
# congestion control, window scaling, the SYN backlog of a listener's
# queue excepted) are fixed when a connection opens.
LIVE_SETTINGS = (
    "time_wait_s", "fin_timeout_s", "retries2", "keepalive_idle_s", "keepalive_intvl_s",
    "keepalive_cnt", "invalid_ratelimit_s",
)  # fmt: skip


def sockaddr(addr: bytes, port: int, v6: bool) -> tuple[Any, ...]:
    if v6:
        text = format_ip(MAPPED + addr) if len(addr) == 4 else format_ip(addr)
        return (text, port, 0, 0)
    return (format_ip(addr), port)


class TcpTransport(asyncio.Transport):
    """One connection, as asyncio sees it."""

    def __init__(self, demux: TcpDemux, key: Key, ep: TcpEndpoint, v6: bool) -> None:
        super().__init__()
        self._demux = demux
        self._key = key
        self.ep = ep
        self._v6 = v6  # reported addresses are IPv6 (a dual-stack socket)
        self._protocol: asyncio.Protocol | None = None
        # What the endpoint's send buffer could not take yet: chunks kept as
        # the application wrote them (bytes are immutable: no copy), moved
        # into the endpoint as it makes room.
        self._buffer: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._closing = False
        self._lost = False
        self._reading = True
        self._writing_paused = False
        self._eof_written = False
        self._dropped_writes = 0  # writes after close or loss, dropped
        self._eof_pending = False  # the peer's FIN, not yet told to the protocol
        self.connected: asyncio.Future[None] | None = None  # for active opens
        # The socket options it was opened with (its listener's, for a
        # passive open): the settings a stack-wide change leaves alone.
        self.options: dict[str, Any] = {}
        self.nic = 0  # SO_BINDTODEVICE (its listener's, for a passive open): segments leave by it
        self.rx_nic = 0  # the NIC the last segment (of the slow path) arrived on
        self.last_tos = 0  # TOS / traffic class of the last segment received

    # --- asyncio.Transport ----------------------------------------------------
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or self._closing:
            # As asyncio's socket transports: a write to a closed or lost
            # connection is dropped, with a warning once it keeps happening.
            self._dropped_writes += 1
            if self._dropped_writes >= DROPPED_WRITES_WARNING:
                log.warning("connection %s: write to a closed connection", _conn_name(self._key))
            return
        if not data:
            return
        if self._buffer:
            self._hold(data)
        else:
            n = self.ep.send(data)
            if n < len(data):
                self._hold(memoryview(data)[n:] if n else data)
        self._demux.kick(self._key)
        self._check_high_water()

    def _hold(self, data: bytes | bytearray | memoryview) -> None:
        chunk = data if immutable(data) else bytes(data)  # the caller may reuse its buffer
        self._buffer.append(chunk)
        self._buffered += len(chunk)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._eof_written:
            return
        self._eof_written = True
        if not self._buffer:
            self.ep.shutdown_write()
            self._demux.kick(self._key)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        if self.ep.config.linger_s == 0:  # SO_LINGER {on, 0}: a reset, at once
            self.abort()
            return
        self._closing = True
        if not self._buffer:
            self.ep.close(self._demux.now())
            self._demux.kick(self._key)

    def abort(self) -> None:
        self._closing = True
        self._buffer.clear()
        self._buffered = 0
        self.ep.abort(self._demux.now())
        self._demux.kick(self._key)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            # Not synchronously: a StreamReader resumes reading before it
            # creates the future it then waits on; data delivered now would
            # not wake it.
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self._pull()
        self._demux.kick(self._key)

    def is_reading(self) -> bool:
        return self._reading

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def set_option(self, name: str, value: Any) -> None:
        """Options that apply to an open connection: TCP_NODELAY, TCP_CORK,
        SO_LINGER, SO_BINDTODEVICE."""
        if name == "SO_BINDTODEVICE":
            # socket(7): Linux binds a connected socket too; from then on its
            # segments leave by that NIC and only those arriving on it
            # reach it (``TcpDemux.deliver``).
            self.nic = self._demux.net.view.bound_nic(value)
        elif name == "TCP_NODELAY":
            self.ep.set_nodelay(bool(value))
        elif name == "TCP_CORK":
            self.ep.set_cork(bool(value))
        elif name == "SO_LINGER":
            self.ep.config = config_with(self.ep.config, {name: value})
        elif name in TCP_OPTIONS:
            raise OSError(errno.EINVAL, f"{name} must be set before the connection opens")
        else:
            raise OSError(errno.ENOPROTOOPT, f"option {name} does not apply to a TCP socket")
        self._demux.kick(self._key)

    def get_option(self, name: str) -> Any:
        if name == "SO_BINDTODEVICE":
            return self.nic
        if name not in TCP_OPTIONS:
            raise OSError(errno.ENOPROTOOPT, f"option {name} does not apply to a TCP socket")
        if name == "TCP_MAXSEG":
            return self.ep.stats().mss  # Linux returns the current MSS once connected
        return getattr(self.ep.config, TCP_OPTIONS[name][0])

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        local, lport, remote, rport = self._key
        if name == "sockname":
            return sockaddr(local, lport, self._v6)
        if name == "peername":
            return sockaddr(remote, rport, self._v6)
        if name == "shard":
            return self._demux.shard
        if name == "tcp_info":
            return self.ep.stats()
        if name == "mss":
            return self.ep.stats().mss
        return default

    # --- events from the endpoint ---------------------------------------------
    def _on_event(self, event: Any) -> None:
        p = self._protocol
        if isinstance(event, Connected):
            if self.ep.tfo_cookie is not None and not self.ep.passive_open:
                self._demux.tfo_learn(self._key[2], self.ep)
            if self.connected is not None and not self.connected.done():
                if p is not None:  # an active open: the protocol learns it now
                    p.connection_made(self)
                self.connected.set_result(None)
        elif isinstance(event, DataReceived):
            self._pull()
        elif isinstance(event, Writable):
            self._flush()
        elif isinstance(event, PeerFin):
            self._eof_pending = True
            self._pull()
        elif isinstance(event, Reset):
            if event.errno:  # as the kernel's connect(): OSError(EHOSTUNREACH, ...)
                exc: OSError = OSError(event.errno, os.strerror(event.errno))
            else:
                exc = event.error(f"connection {event.reason}")
            if self.connected is not None and not self.connected.done():
                self.connected.set_exception(exc)
            self._lose(exc)
        elif isinstance(event, Closed):
            self._lose(None)

    def _pull(self) -> None:
        """Hand the endpoint's data to the protocol while it reads; the
        peer's FIN only once every byte before it was handed over (a
        protocol that paused reading sees the end after the data, as with
        asyncio's socket transports)."""
        p = self._protocol
        while self._reading and p is not None and not self._lost:
            data = self.ep.recv(1 << 16)
            if not data:
                break
            p.data_received(data)
        if self._eof_pending and self._reading and p is not None and not self._lost:
            if not self.ep.readable:
                self._eof_pending = False
                if not p.eof_received():
                    self.close()

    def _flush(self) -> None:
        """The endpoint has room again: move buffered bytes into it."""
        buffer = self._buffer
        while buffer:
            chunk = buffer[0]
            try:
                n = self.ep.send(chunk)
            except OSError:
                # Reset or timed out later in the same batch: the Reset
                # event that follows tells the protocol.
                buffer.clear()
                self._buffered = 0
                return
            self._buffered -= n
            if n < len(chunk):
                buffer[0] = memoryview(chunk)[n:]
                break
            buffer.popleft()
        if not buffer:
            if self._closing:
                self.ep.close(self._demux.now())
            elif self._eof_written:
                self.ep.shutdown_write()
        if self._writing_paused and self._buffered <= HIGH_WATER // 4:
            self._writing_paused = False
            if self._protocol is not None:
                self._protocol.resume_writing()

    def _check_high_water(self) -> None:
        if not self._writing_paused and self._buffered > HIGH_WATER and self._protocol is not None:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._demux.forget(self._key)
        if self._protocol is not None:
            asyncio.get_running_loop().call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        # As asyncio's own transports: the protocol is let go after its
        # connection_lost, so the protocol <-> transport cycle (and the
        # endpoint and buffers it holds, ~4 KiB) is freed at once by
        # reference counting, not at the next full collection: 10,000
        # closes left ~40 MB waiting for the cyclic GC.
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)


class Listening:
    """One listening socket in this shard (a copy exists in every shard)."""

    def __init__(
        self,
        demux: TcpDemux,
        res: Reservation,
        family: int,
        factory: Callable[[], asyncio.Protocol],
        config: TcpConfig,
        backlog: int = LISTEN_BACKLOG,
        serving: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.res = res
        self.options = dict(options or {})  # its socket options, over the stack's settings
        self.family = family
        self.factory = factory
        # Not serving (asyncio's start_serving=False): connections complete
        # into the accept queue, up to ``backlog``, and wait there, their data
        # too, until the server starts serving (listen(2) before accept(2)).
        self.serving = serving
        self.listener = TcpListener(
            config,
            res.local_port,
            backlog=backlog,
            isn=demux.isn.isn,
            cookies=demux.cookies,
            tfo=demux.tfo,
            mtu=demux.net.view.nics[demux.net.link_nic].mtu
            if demux.net.link_nic in demux.net.view.nics
            else 1500,
            ipv6=family == 6,
            endpoint_kw={"challenge_limiter": demux.challenge_limiter},
        )

    def score(self, dst: bytes, nic: int) -> int:
        """How well this listener fits a segment to ``dst`` that arrived on
        ``nic``: 0 not at all (another address, or bound by SO_BINDTODEVICE
        to another NIC); a specific address beats the wildcard, then a
        listener bound to the receiving NIC beats an unbound one (Linux's
        listener lookup: the address tables, then compute_score)."""
        res = self.res
        if (res.nic and res.nic != nic) or not self.matches(dst):
            return 0
        return 1 + (0 if res.wildcard else 2) + (1 if res.nic else 0)

    def matches(self, dst: bytes) -> bool:
        local = self.res.local_addr
        if len(dst) == 4:
            if self.family == 4:
                return local in (bytes(4), dst)
            return not self.res.v6only and local in (bytes(16), MAPPED + dst)
        return self.family == 6 and local in (bytes(16), dst)


class Accept:
    """A flow hook's decision: accept the connection with ``protocol_factory``."""

    __slots__ = ("protocol_factory",)

    def __init__(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self.protocol_factory = protocol_factory


REJECT = "reject"  # answer the SYN with RST
IGNORE = "ignore"  # drop the SYN silently

# (peer, local) as Python socket addresses -> Accept | REJECT | IGNORE
FlowDecider = Callable[[tuple[Any, ...], tuple[Any, ...]], Any]


class FlowHook:
    """``on_tcp_flow``: decides, per SYN that no listener takes, to accept it
    with a handler, reset it or ignore it — what user-space proxies build on.
    Caps the connections it created that are still open, in all and per
    source address; a SYN over a cap is reset and counted."""

    def __init__(
        self, decide: FlowDecider, *, max_in_flight: int = 1024, max_per_source: int = 64
    ) -> None:
        self.decide_fn = decide
        self.max_in_flight = max_in_flight
        self.max_per_source = max_per_source
        self.open: dict[Key, bytes] = {}  # connections it accepted -> their source address
        self.per_source: dict[bytes, int] = {}
        self.accepted = self.rejected = self.ignored = self.over_cap = 0

    def decide(
        self, demux: TcpDemux, src: bytes, sport: int, dst: bytes, dport: int, seg: Segment
    ) -> bool:
        """True when the SYN was consumed (accepted or ignored)."""
        verdict = self.decide_fn(
            sockaddr(src, sport, len(src) == 16), sockaddr(dst, dport, len(dst) == 16)
        )
        if verdict == IGNORE or verdict is None:
            self.ignored += 1
            return True
        if not isinstance(verdict, Accept):
            self.rejected += 1
            return False
        if (
            len(self.open) >= self.max_in_flight
            or self.per_source.get(src, 0) >= self.max_per_source
        ):
            self.over_cap += 1
            return False  # the caller resets it
        self.accepted += 1
        demux.accept_flow(self, src, dst, seg, verdict.protocol_factory)
        return True

    def stats(self) -> dict[str, int]:
        """More gauges and counters for ``ctl stats`` (a subclass's own)."""
        return {}

    def opened(self, key: Key) -> None:
        src = key[2]
        self.open[key] = src
        self.per_source[src] = self.per_source.get(src, 0) + 1

    def closed(self, key: Key) -> None:
        src = self.open.pop(key, None)
        if src is not None:
            left = self.per_source[src] - 1
            if left:
                self.per_source[src] = left
            else:
                del self.per_source[src]


class TcpDemux:
    def __init__(
        self,
        net: NetStack,
        ports: PortManager,
        *,
        shard: int,
        nshards: int,
        secret: bytes,
        config: TcpConfig | None = None,
        loop_time: Callable[[], float],
    ) -> None:
        self.net = net
        self.ports = ports
        self.shard = shard
        self.nshards = nshards
        self.config = config or TcpConfig()
        self.isn = IsnGenerator(secret)
        self.cookies = SynCookies(secret)
        # RFC 7413: the server's cookies (the same in every shard: one
        # secret) and the client's cache (this shard's own).
        self.tfo = TfoCookies(secret)
        self.tfo_cache = TfoCache()
        self.tfo_syn_data = 0  # active opens whose SYN carried data
        self.tfo_syn_data_acked = 0  # ... and whose SYN-ACK acknowledged it all
        # RFC 5961 §7: one challenge-ACK budget for the shard, not one per connection.
        self.challenge_limiter = TokenBucket(
            self.config.challenge_ack_per_s, self.config.challenge_ack_burst
        )
        self.now = loop_time
        # Super-segments when the link cuts them (TSO): the payload of one.
        self.tso_max = TSO_MAX_PAYLOAD if net.tx_offload else 0
        self.conns: dict[Key, TcpTransport] = {}
        self.reservations: dict[Key, Reservation] = {}
        # The connections' timers: a heap of (deadline, seq, key) and the
        # deadline each key was last scheduled at (others in the heap are
        # stale), so a timer turn costs O(due) instead of O(connections).
        # Every change to an endpoint passes through _after, which marks it
        # touched; its deadline is read once, at the next timer turn.
        self._timer_heap: list[tuple[float, int, Key]] = []
        self._scheduled: dict[Key, float] = {}
        self._timer_seq = itertools.count()
        self._touched: set[Key] = set()  # connections that ran since the last turn
        # Called when a deadline may have moved (the shard re-arms its timer).
        self.deadline_changed: Callable[[], None] = _nothing
        # The listeners' nearest deadline, read again after listener work.
        self._listener_deadline: float | None = None
        self._listeners_changed = False
        self.listeners: dict[int, list[Listening]] = {}
        self._dirty: set[Key] = set()
        self._in_after: Key | None = None  # the connection whose events are being delivered
        self._flush_scheduled = False
        self.resets_sent = 0
        self.app_errors = 0  # exceptions from application callbacks (connection aborted)
        self._log_app_error = RateLimitedLog(log)
        self.dropped_non_unicast = 0
        self.bound_elsewhere = 0  # segments for a connection bound to another NIC
        self._closed_totals = [0, 0, 0]  # segments in, out, retransmits of closed connections
        # Called with (nic, peer) when an ACK acknowledges new data: shard 0
        # confirms the neighbour (NUD) without a probe.
        self.on_progress: Callable[[int, bytes], None] | None = None
        self.flow_hook: FlowHook | None = None
        self.steering: Steering | None = None  # segments for another shard's port
        self._hooked: dict[Key, tuple[Listening, FlowHook]] = {}  # flows a hook accepted

    # --- receiving ---------------------------------------------------------------
    def deliver(self, d: Delivery) -> bool:
        payload = d.payload  # checked by the network layer
        src, dst = d.src, d.dst
        sport, dport, seq, ack, offset_flags, window = _TCP_FIXED.unpack_from(payload)
        if offset_flags & _NOT_PREDICTED == ACK and d.tos & 3 != _CE:
            # The common case first: ACK (PSH) alone on a known connection,
            # no option but NOP NOP TS (Linux's layout), no CE mark —
            # header prediction.
            t = self.conns.get((dst, dport, src, sport))
            hlen = offset_flags >> 12 << 2
            if (
                t is not None
                and (hlen == 20 or (hlen == 32 and payload[20:24] == _NOP_NOP_TS))
                and (not t.nic or t.nic == d.nic)
            ):
                ep = t.ep
                acked = ep.bytes_acked
                if hlen == 32:
                    tsval, tsecr = _TS_VALUES.unpack_from(payload, 24)
                else:
                    tsval = tsecr = 0
                if ep.handle_fast(
                    self.now(), seq, ack, window, tsval, tsecr, payload[hlen:], hlen == 32
                ):
                    t.last_tos = d.tos
                    if ep.bytes_acked != acked and self.on_progress is not None:
                        self.on_progress(d.nic, src)  # RFC 4861 §7.3.1
                    self.kick((dst, dport, src, sport))
                    return True
        view = TcpView(payload, (payload[12] >> 4) << 2)
        seg = Segment.from_view(view)
        seg.ecn = d.tos & 3  # RFC 3168 §5: the IP header's ECN field
        if d.broadcast or not addresses_acceptable(src, dst):
            # RFC 1122 §4.2.3.10: to or from a broadcast (limited or
            # subnet-directed) or multicast address: no reply of any kind.
            self.dropped_non_unicast += 1
            return True
        now = self.now()
        key = (dst, seg.dst_port, src, seg.src_port)
        t = self.conns.get(key)
        if t is not None and t.nic and t.nic != d.nic:
            # SO_BINDTODEVICE (socket(7)), as Linux's demux (the bound
            # device is part of the match): a connection bound to a NIC is
            # not found for a segment arriving on another, which goes on as
            # one for no connection: a listener's, else a reset (RFC 9293
            # §3.10.7.1).
            self.bound_elsewhere += 1
            t = None
        if t is not None:
            t.last_tos = d.tos
            t.rx_nic = d.nic
            acked = t.ep.bytes_acked
            t.ep.handle_segment(now, seg)
            if t.ep.bytes_acked != acked and self.on_progress is not None:
                self.on_progress(d.nic, src)  # RFC 4861 §7.3.1: reachability confirmed
            # Output and events once per batch of frames, not per segment:
            # one ACK for all the segments of a batch (RFC 9293 §3.8.6.3
            # lets a receiver hold ACKs back while more segments are queued),
            # and the application sees the batch's data at once.
            self.kick(key)
            return True
        # A promiscuous stack (a relay) takes any destination: its listeners
        # (and their steering to the shard owning a port) still serve only
        # its own addresses.
        foreign = self.net.promiscuous and dst not in self.net.view.local
        lst = None if foreign else self._listener_for(dst, seg.dst_port, d.nic)
        if lst is not None:
            lst.listener.handle_segment(now, src, dst, seg)
            self._after_listener(lst)
            return True
        hooked = self._hooked.get(key)
        if hooked is not None:  # a hooked flow still in its handshake
            hooked[0].listener.handle_segment(now, src, dst, seg)
            self._after_listener(hooked[0])
            return True
        if self.flow_hook is not None and seg.flags & (SYN | ACK | RST) == SYN:
            if self.flow_hook.decide(self, src, seg.src_port, dst, seg.dst_port, seg):
                return True
        # A listener on an ephemeral port (and its connections) lives in the
        # shard owning the port: hand the segment there (steer.py).
        if not foreign and self.steering is not None and self.steering.elsewhere(d, seg.dst_port):
            return True
        if not seg.flags & RST:
            rst = rst_for(seg)
            if rst is not None:
                self.resets_sent += 1
                self._send(dst, src, rst)
        return True

    def _after(self, key: Key, t: TcpTransport) -> None:
        # Events first, then the output: the application's answer (a reply,
        # a close) carries the ACK of what it answers, one segment where an
        # ACK and then the answer were two (RFC 9293 §3.8.6.3 lets an ACK
        # wait that long; 10,000 closes at once cost 10,000 fewer segments).
        now = self.now()
        self._in_after = key
        try:
            while (event := t.ep.next_event()) is not None:
                if isinstance(event, SynInTimeWait):
                    self._reuse_time_wait(key, event)
                    continue
                t._on_event(event)
        finally:
            self._in_after = None
        # What the application did meanwhile (a reply, a close) goes now.
        for seg in t.ep.poll_transmit(now):
            self._send(key[0], key[2], seg, t.nic)
        self._touched.add(key)  # its deadline is read once per timer-loop turn
        self.deadline_changed()

    def _schedule(self, key: Key, deadline: float | None) -> None:
        """Remember when ``key``'s endpoint wants ``handle_timeout``."""
        if deadline is None:
            self._scheduled.pop(key, None)
            return
        if self._scheduled.get(key) == deadline:
            return
        self._scheduled[key] = deadline
        heap = self._timer_heap
        heapq.heappush(heap, (deadline, next(self._timer_seq), key))
        if len(heap) > 2 * len(self._scheduled) + 64:  # mostly stale: rebuild
            self._timer_heap = [(d, next(self._timer_seq), k) for k, d in self._scheduled.items()]
            heapq.heapify(self._timer_heap)

    def _sync_touched(self) -> None:
        """Schedule the connections that ran since the last turn: their
        deadlines are read here, once, not after every segment."""
        touched = self._touched
        if not touched:
            return
        self._touched = set()
        conns = self.conns
        for key in touched:
            t = conns.get(key)
            self._schedule(key, t.ep.next_deadline() if t is not None else None)

    def _listener_for(self, dst: bytes, port: int, nic: int) -> Listening | None:
        """The listener a SYN to ``dst:port`` arriving on ``nic`` goes to: the
        best ``Listening.score``; among equals the first made."""
        best, best_score = None, 0
        for lst in self.listeners.get(port, ()):
            score = lst.score(dst, nic)
            if score > best_score:
                best, best_score = lst, score
        return best

    def _after_listener(self, lst: Listening) -> None:
        now = self.now()
        for local, remote, seg in lst.listener.poll_transmit(now):
            self._send(local, remote, seg, lst.res.nic)
        while lst.serving and (acc := lst.listener.accept()) is not None:
            ep = acc.endpoint
            key = (acc.local_addr, ep.local_port, acc.remote_addr, ep.remote_port)
            ep.tso_max = self.tso_max
            t = TcpTransport(self, key, ep, lst.family == 6)
            t.options = lst.options
            t.nic = lst.res.nic
            self.conns[key] = t
            hooked = self._hooked.get(key)
            if hooked is not None:
                hooked[1].opened(key)
            protocol = lst.factory()
            t.set_protocol(protocol)
            protocol.connection_made(t)
            self._after(key, t)
        self._listeners_changed = True
        self.deadline_changed()  # the listener's own (SYN-ACK retransmission, cookies)

    def _reuse_time_wait(self, key: Key, event: SynInTimeWait) -> None:
        """RFC 1122 §4.2.2.13: a new SYN above the old sequence space ends
        TIME-WAIT and goes to the listener of the port."""
        t = self.conns.get(key)
        nic = t.rx_nic if t is not None else 0
        self.forget(key)
        lst = self._listener_for(key[0], key[1], nic)
        if lst is not None:
            lst.listener.handle_segment(self.now(), key[2], key[0], event.segment)
            self._after_listener(lst)

    def accept_flow(
        self,
        hook: FlowHook,
        src: bytes,
        dst: bytes,
        seg: Segment,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        """A flow the hook accepted: a one-connection listener answers the
        SYN (SYN-RECEIVED, retransmissions, cookies: the same machinery)."""
        lst = Listening(
            self, Reservation(TCP, dst, seg.dst_port, src, seg.src_port), 6 if len(dst) == 16 else 4,
            factory, self.config,
        )  # fmt: skip
        self._hooked[(dst, seg.dst_port, src, seg.src_port)] = (lst, hook)
        lst.listener.handle_segment(self.now(), src, dst, seg)
        self._after_listener(lst)

    def forget(self, key: Key) -> None:
        hooked = self._hooked.pop(key, None)
        if hooked is not None:
            hooked[1].closed(key)
        t = self.conns.pop(key, None)
        if t is not None:  # keep its figures: the shard's counters never go down
            ep = t.ep
            self._closed_totals[0] += ep.segs_in
            self._closed_totals[1] += ep.segs_out
            self._closed_totals[2] += ep.retransmits
        res = self.reservations.pop(key, None)
        if res is not None:
            self.ports.release(res)

    def kick(self, key: Key) -> None:
        """The application changed something: send what is due, soon (one
        flush per loop turn batches writes)."""
        if key == self._in_after:
            return  # during its own events: _after sends it right after them
        self._dirty.add(key)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what is due and deliver events for every connection that
        changed since the last flush: at the end of each batch of frames
        (the shard loop calls it) and on the loop turn after a kick."""
        self._flush_scheduled = False
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            t = self.conns.get(key)
            if t is not None:
                try:
                    self._after(key, t)
                except Exception:  # an application's bug costs its connection, never the shard
                    self.app_errors += 1
                    self._log_app_error(logging.ERROR, "connection %s: application failed",
                                        _conn_name(key), exc_info=True)  # fmt: skip
                    t.abort()

    def _send(self, local: bytes, remote: bytes, seg: Segment, nic: int = 0) -> None:
        """The TCP header is built here; the payload goes to the link from
        the segment's own buffer, and the checksum is left to the network
        layer (the link's offload, or a sum over both parts). ``nic``: the
        socket's SO_BINDTODEVICE (0: by route)."""
        h = seg.header()
        head = bytearray(h.header_len)
        h.emit(head)
        if len(remote) == 4:
            # DF on every segment: path MTU discovery (RFC 1191 §3), as Linux.
            self.net.send_ipv4(
                remote, 6, head, src=local, checksum_at=16, df=True, data=seg.payload,
                gso_size=seg.gso_size, tos=seg.ecn, nic_id=nic or None,
            )  # fmt: skip
        else:
            self.net.send_ipv6(
                remote, 6, head, src=local, checksum_at=16, data=seg.payload,
                gso_size=seg.gso_size, traffic_class=seg.ecn, nic_id=nic or None,
            )  # fmt: skip

    def rows(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """``ctl conns``: connections ``offset`` to ``offset + limit`` of this
        shard, like ``ss -ti``, then its listeners (in the last page)."""
        end = None if limit is None else offset + limit
        out = []
        names = _STATS_FIELDS
        for (local, lport, remote, rport), t in itertools.islice(self.conns.items(), offset, end):
            stats = t.ep.stats()
            row = {name: getattr(stats, name) for name in names}  # flat: no asdict deep copy
            row.update(
                shard=self.shard,
                local=f"{format_ip(local)}:{lport}",
                remote=f"{format_ip(remote)}:{rport}",
            )
            out.append(row)
        if end is not None and end < len(self.conns):
            return out
        for port, group in self.listeners.items():
            for lst in group:
                out.append({
                    "shard": self.shard, "state": "LISTEN", "local": f"{format_ip(lst.res.local_addr)}:{port}",
                    "remote": "*", "accept_queue": lst.listener.accept_queue_len(),
                    "syn_queue": lst.listener.syn_queue_len(),
                })  # fmt: skip
        return out

    def totals(self) -> tuple[int, int, int]:
        """Segments in, out and retransmitted, over all connections ever."""
        live = self.conns.values()
        c = self._closed_totals
        return (
            c[0] + sum(t.ep.segs_in for t in live),
            c[1] + sum(t.ep.segs_out for t in live),
            c[2] + sum(t.ep.retransmits for t in live),
        )

    def gauges(self) -> dict[str, int]:
        """``shardnet_tcp_connections{state}``, the flow hook's counters and
        the listeners' (``tcp_listen/...``: SYNs received and dropped,
        handshake ACKs dropped on a full accept queue, cookies, resets),
        summed over this shard's listening sockets."""
        counts: dict[str, int] = {}
        for lst in self._all_listeners():
            listener = lst.listener
            for name in LISTENER_COUNTERS:
                key = f"tcp_listen/{name}"
                counts[key] = counts.get(key, 0) + getattr(listener, name)
        hook = self.flow_hook
        if hook is not None:
            counts.update({
                "flow_hook/accepted": hook.accepted, "flow_hook/rejected": hook.rejected,
                "flow_hook/ignored": hook.ignored, "flow_hook/over_cap": hook.over_cap,
                "flow_hook/open": len(hook.open),
            })  # fmt: skip
            counts.update(hook.stats())
        counts["tcp_fastopen/syn_data"] = self.tfo_syn_data
        counts["tcp_fastopen/syn_data_acked"] = self.tfo_syn_data_acked
        counts["tcp_fastopen/fallbacks"] = self.tfo_cache.fallbacks
        counts["tcp_fastopen/cached"] = len(self.tfo_cache)
        for t in self.conns.values():
            state = t.ep.state.value
            counts[f"tcp_connections/{state}"] = counts.get(f"tcp_connections/{state}", 0) + 1
        return counts

    # --- timers ----------------------------------------------------------------------
    def _all_listeners(self) -> list[Listening]:
        return [lst for group in self.listeners.values() for lst in group] + [
            lst for lst, _ in self._hooked.values()
        ]

    def next_deadline(self) -> float | None:
        self._sync_touched()
        heap, scheduled = self._timer_heap, self._scheduled
        while heap and scheduled.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale
        if self._listeners_changed:  # read again only after listener work
            self._listeners_changed = False
            times = [lst.listener.next_deadline() for lst in self._all_listeners()]
            self._listener_deadline = min((d for d in times if d is not None), default=None)
        best = heap[0][0] if heap else None
        other = self._listener_deadline
        if best is None or (other is not None and other < best):
            return other
        return best

    def handle_timeout(self, now: float) -> None:
        self._sync_touched()
        heap, scheduled = self._timer_heap, self._scheduled
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if scheduled.get(key) != deadline:
                continue  # stale
            del scheduled[key]
            t = self.conns.get(key)
            if t is None:
                continue
            actual = t.ep.next_deadline()
            if actual is not None and actual <= now:
                t.ep.handle_timeout(now)
            self._after(key, t)  # its next deadline is scheduled next turn
        if self._listener_deadline is None or self._listener_deadline > now:
            return  # no listener is due (their deadlines are read after listener work)
        self._listeners_changed = True
        for lst in self._all_listeners():
            due = lst.listener.next_deadline()
            if due is not None and due <= now:
                lst.listener.handle_timeout(now)
                self._after_listener(lst)
        for key, (lst, _) in list(self._hooked.items()):
            # A hooked handshake that never completed: nothing to keep.
            if (
                key not in self.conns
                and not lst.listener.syn_queue_len()
                and not lst.listener.accept_queue_len()
            ):
                del self._hooked[key]

    # --- the stack-wide settings ------------------------------------------------------
    def set_config(self, config: TcpConfig) -> None:
        """New stack-wide settings (``ctl tcp --set``): new connections,
        those of existing listeners included, take all of them; open ones
        the ``LIVE_SETTINGS`` their socket options did not set."""
        self.config = config
        # RFC 5961 §7: the shard's one challenge-ACK budget, shared by every endpoint.
        self.challenge_limiter.rate_per_s = float(config.challenge_ack_per_s)
        self.challenge_limiter.burst = float(config.challenge_ack_burst)
        for lst in self._all_listeners():
            lst.listener.config = config_with(config, lst.options)
        live = {name: getattr(config, name) for name in LIVE_SETTINGS}
        # A timer already armed (a connection in TIME-WAIT, a keepalive
        # due) keeps its time: the new value counts from the next arming.
        for t in self.conns.values():
            own = {TCP_OPTIONS[name][0] for name in t.options}
            changes = {k: v for k, v in live.items() if k not in own}
            t.ep.config = dataclasses.replace(t.ep.config, **changes)

    # --- opening ---------------------------------------------------------------------
    def listen(
        self, family: int, addr: bytes, port: int, factory: Callable[[], asyncio.Protocol], *,
        reuse_addr: bool = True, reuse_port: bool = False, v6only: bool = False, start: int = 0,
        options: dict[str, Any] | None = None, backlog: int = LISTEN_BACKLOG, serving: bool = True,
        nic: int = 0,
    ) -> Listening:  # fmt: skip
        """A listener; ``nic``: SO_BINDTODEVICE (0: every NIC)."""
        config = config_with(self.config, options)
        res = Reservation(
            TCP,
            addr,
            port,
            nic=nic,
            reuse_addr=reuse_addr,
            reuse_port=reuse_port,
            v6only=v6only,
            listener=True,
        )
        if port == 0:
            # A port this shard owns: segments that hash elsewhere are steered here.
            res = self.ports.reserve_ephemeral(
                res, shard=self.shard, nshards=self.nshards, start=start
            )
        else:
            res = self.ports.reserve(res)
        lst = Listening(self, res, family, factory, config, backlog, serving, options)
        self.listeners.setdefault(res.local_port, []).append(lst)
        return lst

    def start_serving(self, lst: Listening) -> None:
        """The connections waiting in ``lst``'s accept queue are accepted now,
        and the later ones as they complete."""
        lst.serving = True
        self._after_listener(lst)

    def stop_listening(self, lst: Listening) -> None:
        group = self.listeners.get(lst.res.local_port, [])
        if lst in group:
            group.remove(lst)
            if not group:
                del self.listeners[lst.res.local_port]
            lst.listener.close(self.now())
            self._after_listener(lst)
            self.ports.release(lst.res)

    def connect(
        self,
        family: int,
        local: bytes,
        remote: bytes,
        port: int,
        factory: Callable[[], asyncio.Protocol],
        *,
        start: int,
        options: dict[str, Any] | None = None,
        nic: int = 0,
        fastopen: bool = False,
    ) -> TcpTransport:
        """Active open: ``local`` is the source chosen for ``remote`` (wire
        forms, same family); the port hashes back to this shard. ``nic``:
        SO_BINDTODEVICE, the NIC every segment leaves by (0: by route).
        ``fastopen`` (RFC 7413, with the ``fastopen`` client bit): the SYN
        asks for a cookie or, with one cached, carries what the application
        writes before the next loop turn; the protocol is connected at once
        (as Linux's TCP_FASTOPEN_CONNECT)."""
        config = config_with(self.config, options)
        res = self.ports.reserve_ephemeral(
            Reservation(TCP, local, 0, remote, port, nic=nic),
            shard=self.shard,
            nshards=self.nshards,
            start=start,
        )
        key = (local, res.local_port, remote, port)
        now = self.now()
        route = self.net.view.routes.lookup(remote, nic=nic or None)
        out = self.net.view.nics.get(route.nic) if route is not None else None
        # IPv4's largest packet is 65535 bytes (lo's MTU is 65536).
        mtu = min(self.net.pmtu.mtu(now, remote, out.mtu), 65535) if out is not None else 1280
        iss = self.isn.isn(now, local, res.local_port, remote, port)
        tfo = None
        if fastopen and config.fastopen & 1:
            tfo = self.tfo_cache.for_connect(
                now, remote, advertised_mss(None, mtu, len(remote) == 16)
            )
        ep = TcpEndpoint.connect(
            now, config, res.local_port, port, iss=iss, mtu=mtu, ipv6=len(remote) == 16,
            ts_offset=int.from_bytes(os.urandom(4), "big"), challenge_limiter=self.challenge_limiter,
            fastopen=tfo[0] if tfo else None, fastopen_mss=tfo[1] if tfo else 0,
        )  # fmt: skip
        ep.tso_max = self.tso_max
        t = TcpTransport(self, key, ep, family == 6)
        t.options = dict(options or {})
        t.nic = nic
        t.connected = asyncio.get_running_loop().create_future()
        protocol = factory()
        t.set_protocol(protocol)
        self.conns[key] = t
        self.reservations[key] = res
        if fastopen:
            protocol.connection_made(t)
            t.connected.set_result(None)
            self.kick(key)  # the SYN leaves on the next turn, with what was written
        else:
            self._after(key, t)
        return t

    def tfo_learn(self, remote: bytes, ep: TcpEndpoint) -> None:
        """An active open that used Fast Open is established: the cache
        learns the cookie or the failure (RFC 7413 §4.1.3)."""
        if ep.tfo_sent:
            self.tfo_syn_data += 1
            if ep.tfo_acked >= ep.tfo_sent and not ep.tfo_syn_lost:
                self.tfo_syn_data_acked += 1
        self.tfo_cache.learn(
            self.now(), remote, cookie=ep.tfo_got, mss=ep.peer_mss, sent=ep.tfo_sent,
            acked=ep.tfo_acked, syn_lost=ep.tfo_syn_lost,
        )  # fmt: skip

    def icmp_error(
        self,
        v6: bool,
        unreachable: bool,
        code: int,
        local: bytes,
        lport: int,
        remote: bytes,
        rport: int,
        mtu: int = 0,
        seq: int | None = None,
    ) -> None:
        """An ICMP error about a segment we sent, ``seq`` the quoted sequence
        number (RFC 5927, RFC 1122 §4.2.3.9: fatal to a connect, soft
        otherwise until the RTO budget ends; PTB lowers the MSS)."""
        t = self.conns.get((local, lport, remote, rport))
        if t is None:
            return
        now = self.now()
        if mtu:
            t.ep.handle_pmtu(now, mtu)
        elif unreachable:
            hard = (not v6 and code in (2, 3, 4)) or (v6 and code == 4)
            err = (ICMPV6_ERRNO if v6 else ICMPV4_ERRNO).get(code, 0)
            t.ep.handle_icmp_unreachable(
                now, hard, "refused" if code in (3, 4) else os.strerror(err) if err else "unreachable",
                errno=err, seq=seq,
            )  # fmt: skip
        self._after((local, lport, remote, rport), t)


def _conn_name(key: Key) -> str:
    local, lport, remote, rport = key
    return f"{format_ip(local)}:{lport} <- {format_ip(remote)}:{rport}"


def _nothing() -> None:
    pass


def unmap(addr: bytes) -> bytes:
    return addr[12:] if len(addr) == 16 and is_ipv4_mapped(addr) else addr
