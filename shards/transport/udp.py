"""UDP endpoints of one shard (RFC 768, RFC 1122 §4.1) and their demux.

Every shard runs its own copy of each application, so a bound but
unconnected socket exists in every shard and datagrams from any peer reach
one (DESIGN.md: UDP flows are sharded like TCP). A socket bound to the
IPv6 wildcard without V6ONLY also receives IPv4, with the peer reported as
an IPv4-mapped address (RFC 3493 §3.7).

Lookup order, as gVisor's transport demuxer: the exact
4-tuple (connected sockets), then the bound address, then the wildcard;
within a reuse-port group the member is chosen by a hash of the 4-tuple, so
one peer always reaches the same socket (the group kept in bind order). Broadcast and multicast
datagrams go to every matching socket (broadcasts whether or not
SO_BROADCAST is set, which governs sending only; group datagrams, with
IP_MULTICAST_ALL off, only to sockets that joined the group themselves).

Multicast membership (IP_ADD_MEMBERSHIP, IPV6_JOIN_GROUP) is kept per socket
and counted per shard (``multicast.ShardGroups``); shard 0 runs IGMPv3 /
MLDv2 for the host. Closing a socket leaves its groups.

ICMP errors about a datagram a connected socket sent reach it as the
matching ``OSError`` (RFC 1122 §4.1.3.3: ConnectionRefusedError for port
unreachable, and so on); unconnected sockets ignore them, as Linux does
without IP_RECVERR.
"""

from __future__ import annotations

import contextlib
import errno
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shardnet.common.addr import IPV4_ANY, IPV6_ANY, is_ipv4_mapped, is_ipv4_multicast
from shardnet.common.wire.udp import UDP_HEADER_LEN, UdpHeader, UdpView

from ..net.datagram import Delivery
from .multicast import MAX_MEMBERSHIPS_PER_SOCKET, ShardGroups
from .ports import UDP, PortManager, Reservation
from .steer import Steering

MAPPED_PREFIX = bytes(10) + b"\xff\xff"
RCVBUF_DEFAULT = 212_992  # bytes, Linux's net.core.rmem_default
MAX_QUEUED = 1024  # datagrams queued on a socket nobody reads


def mapped(v4: bytes) -> bytes:
    return MAPPED_PREFIX + v4


@dataclass(slots=True)
class Datagram:
    """One received datagram, as its socket sees it: what ``recvmsg(2)``
    would report beside the data (``UdpTransport.last_datagram``)."""

    data: bytes
    peer: tuple[bytes, int]  # as the socket reports it (v4-mapped on a dual-stack socket)
    local: bytes  # the destination address (IP_PKTINFO's)
    # IPv4 TOS or IPv6 traffic class, ECN bits included (RFC 2474 §3, RFC
    # 3168 §5); None unless the socket asked, with IP_RECVTOS for IPv4
    # datagrams, IPV6_RECVTCLASS for IPv6 ones.
    tos: int | None
    nic: int


@dataclass(slots=True)
class UdpOptions:
    v6only: bool = False  # IPV6_V6ONLY (RFC 3493 §5.3)
    # Linux keeps two flags: IP_RECVTOS reports IPv4 datagrams' TOS (ip(7),
    # on a dual-stack socket too), IPV6_RECVTCLASS IPv6 ones' traffic class
    # (RFC 3542 §6.5).
    recv_tos: bool = False
    recv_tclass: bool = False
    broadcast: bool = False  # SO_BROADCAST
    reuse_addr: bool = False
    reuse_port: bool = False
    bind_nic: int = 0  # SO_BINDTODEVICE (socket(7))
    tos: int = 0  # IP_TOS / IPV6_TCLASS for what is sent
    rcvbuf: int = RCVBUF_DEFAULT
    # RFC 1112 §6.1 / RFC 3493 §5.2: multicast is sent with TTL (hop limit) 1,
    # looped back to members on this host, out of the NIC the route picks.
    multicast_ttl: int = 1  # IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS
    multicast_loop: bool = True  # IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP
    multicast_nic: int = 0  # IP_MULTICAST_IF / IPV6_MULTICAST_IF (0: by route)
    # Linux's IP_MULTICAST_ALL: a wildcard-bound socket receives every group
    # the host joined; off, only the groups it joined itself.
    multicast_all: bool = True


@dataclass(slots=True)
class UdpSocket:
    family: int  # 4 or 6 (AF_INET / AF_INET6)
    options: UdpOptions = field(default_factory=UdpOptions)
    reservation: Reservation | None = None
    # Called with each datagram (the asyncio transport); without one,
    # datagrams queue in ``rx`` up to the receive buffer.
    on_datagram: Callable[[Datagram], None] | None = None
    on_error: Callable[[OSError], None] | None = None
    rx: deque[Datagram] = field(default_factory=deque)
    rx_bytes: int = 0
    drops: int = 0
    memberships: set[tuple[int, bytes]] = field(default_factory=set)  # (NIC, group)

    @property
    def local(self) -> tuple[bytes, int] | None:
        r = self.reservation
        return None if r is None else (r.local_addr, r.local_port)

    @property
    def remote(self) -> tuple[bytes, int] | None:
        r = self.reservation
        return None if r is None or r.remote_addr is None else (r.remote_addr, r.remote_port)

    def deliver(self, dgram: Datagram) -> None:
        if self.on_datagram is not None:
            self.on_datagram(dgram)
            return
        if self.rx_bytes + len(dgram.data) > self.options.rcvbuf or len(self.rx) >= MAX_QUEUED:
            self.drops += 1  # a full receive buffer drops, as Linux does
            return
        self.rx.append(dgram)
        self.rx_bytes += len(dgram.data)

    def recv(self) -> Datagram | None:
        if not self.rx:
            return None
        dgram = self.rx.popleft()
        self.rx_bytes -= len(dgram.data)
        return dgram


# ICMP errors a connected socket reports (RFC 1122 §4.1.3.3), Linux's mapping
# of ICMP unreachable codes to errno (icmp_err_convert).
ICMPV4_ERRNO = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED,
                4: errno.EMSGSIZE, 9: errno.ENETUNREACH, 10: errno.EHOSTUNREACH, 13: errno.EHOSTUNREACH}  # fmt: skip
ICMPV6_ERRNO = {0: errno.ENETUNREACH, 1: errno.EACCES, 3: errno.EHOSTUNREACH, 4: errno.ECONNREFUSED}


class UdpDemux:
    """The UDP sockets of one shard, by local port."""

    def __init__(
        self, ports: PortManager, *, seed: int = 0, groups: ShardGroups | None = None
    ) -> None:
        self.ports = ports
        self.seed = seed
        self.groups = groups if groups is not None else ShardGroups()
        self.by_port: dict[int, list[UdpSocket]] = {}
        self.no_socket = 0

    # --- binding -------------------------------------------------------------------
    def bind(
        self, sock: UdpSocket, addr: bytes, port: int, *, shard: int, nshards: int, start: int
    ) -> None:
        """bind(2); port 0 picks an ephemeral port. The family must match
        the socket's (bind of an IPv4 address on an IPv6 socket is EINVAL, as Linux)."""
        if sock.reservation is not None:
            raise OSError(errno.EINVAL, "socket is already bound")
        if (len(addr) == 4) != (sock.family == 4):
            raise OSError(errno.EINVAL, "address family does not match the socket")
        o = sock.options
        res = Reservation(
            UDP, addr, port, nic=o.bind_nic, reuse_addr=o.reuse_addr, reuse_port=o.reuse_port,
            v6only=o.v6only,
        )  # fmt: skip
        if port == 0:
            # An unconnected socket's port is one its shard owns, so that a
            # reply hashed to another shard is steered here (UdpHooks).
            res = self.ports.reserve_ephemeral(res, shard=shard, nshards=nshards, start=start)
        else:
            res = self.ports.reserve(res)
        sock.reservation = res
        self.by_port.setdefault(res.local_port, []).append(sock)

    def connect(
        self,
        sock: UdpSocket,
        local: bytes,
        remote: bytes,
        port: int,
        *,
        shard: int,
        nshards: int,
        start: int,
    ) -> None:
        """connect(2): fixes the peer; an unbound socket gets a port whose flow
        hashes back to this shard, so replies arrive here."""
        old = sock.reservation
        lport = old.local_port if old is not None else 0
        o = sock.options
        res = Reservation(
            UDP, local, lport, remote, port, nic=o.bind_nic, reuse_addr=o.reuse_addr,
            reuse_port=o.reuse_port, v6only=o.v6only,
        )  # fmt: skip
        if old is not None:
            self._unlink(sock)
            self.ports.release(old)
        try:
            if lport == 0:
                hash_remote = remote[12:] if is_ipv4_mapped(remote) else remote
                hash_local = local[12:] if is_ipv4_mapped(local) else local
                probe = Reservation(UDP, hash_local, 0, hash_remote, port)
                picked = self.ports.reserve_ephemeral(
                    probe, shard=shard, nshards=nshards, start=start
                )
                self.ports.release(picked)
                res = self.ports.reserve(Reservation(
                    UDP, local, picked.local_port, remote, port, nic=o.bind_nic,
                    reuse_addr=o.reuse_addr, reuse_port=o.reuse_port, v6only=o.v6only,
                ))  # fmt: skip
            else:
                res = self.ports.reserve(res)
        except OSError:
            if old is not None:  # keep the old binding
                sock.reservation = self.ports.reserve(old)
                self.by_port.setdefault(old.local_port, []).append(sock)
            raise
        sock.reservation = res
        self.by_port.setdefault(res.local_port, []).append(sock)

    # --- multicast membership ----------------------------------------------------------
    def join(self, sock: UdpSocket, nic: int, group: bytes) -> None:
        """IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP (errors as Linux's)."""
        key = (nic, group)
        if key in sock.memberships:
            raise OSError(errno.EADDRINUSE, "already a member of that group")
        if len(sock.memberships) >= MAX_MEMBERSHIPS_PER_SOCKET:
            raise OSError(errno.ENOBUFS, "too many memberships on this socket")
        self.groups.join(nic, group)
        sock.memberships.add(key)

    def leave(self, sock: UdpSocket, nic: int, group: bytes) -> None:
        """IP_DROP_MEMBERSHIP / IPV6_LEAVE_GROUP."""
        key = (nic, group)
        if key not in sock.memberships:
            raise OSError(errno.EADDRNOTAVAIL, "not a member of that group")
        sock.memberships.discard(key)
        self.groups.leave(nic, group)

    def close(self, sock: UdpSocket) -> None:
        for nic, group in list(sock.memberships):  # close(2) leaves every group
            with contextlib.suppress(OSError):  # the NIC may be gone: left anyway
                self.leave(sock, nic, group)
        if sock.reservation is None:
            return
        self._unlink(sock)
        self.ports.release(sock.reservation)
        sock.reservation = None

    def _unlink(self, sock: UdpSocket) -> None:
        group = self.by_port.get(sock.reservation.local_port, []) if sock.reservation else []
        if sock in group:
            group.remove(sock)
        if sock.reservation is not None and not group:
            self.by_port.pop(sock.reservation.local_port, None)

    # --- receiving ------------------------------------------------------------------
    def deliver(
        self,
        nic: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        data: bytes,
        tos: int,
        group: bool,
    ) -> bool:
        """A datagram for ``dst:dport``; False when no socket takes it (the
        caller answers port unreachable for unicast)."""
        socks = self.by_port.get(dport)
        if not socks:
            self.no_socket += 1
            return False
        v4 = len(src) == 4
        if len(socks) == 1 and not group:  # the common case: one socket on the port
            sock = socks[0]
            if not self._matches(sock, nic, src, sport, dst, v4):
                self.no_socket += 1
                return False
            sock.deliver(self._datagram(sock, src, sport, dst, data, tos, nic))
            return True
        matches = [s for s in socks if self._matches(s, nic, src, sport, dst, v4)]
        if not matches:
            self.no_socket += 1
            return False
        if group:
            if len(dst) == 4 and not is_ipv4_multicast(dst):
                # A broadcast reaches every socket bound to the wildcard or
                # to that broadcast address: SO_BROADCAST governs sending
                # only (RFC 1122 §3.3.6, Linux).
                targets = matches
            else:  # a group datagram: every member socket, IP_MULTICAST_ALL
                targets = [
                    s for s in matches if s.options.multicast_all or (nic, dst) in s.memberships
                ]
            for sock in targets:
                sock.deliver(self._datagram(sock, src, sport, dst, data, tos, nic))
            return bool(targets)
        # Most specific first: connected, then bound address, then wildcard.
        best = max(self._specificity(s) for s in matches)
        candidates = sorted(
            (s for s in matches if self._specificity(s) == best),
            key=lambda s: (
                s.reservation.ident if s.reservation is not None else 0
            ),  # all matched one
        )
        if len(candidates) == 1:
            sock = candidates[0]
        else:  # a reuse-port group: one peer always reaches one member
            h = zlib.crc32(
                src + sport.to_bytes(2, "big") + dst + dport.to_bytes(2, "big"), self.seed
            )
            sock = candidates[(h * len(candidates)) >> 32]
        sock.deliver(self._datagram(sock, src, sport, dst, data, tos, nic))
        return True

    @staticmethod
    def _specificity(sock: UdpSocket) -> int:
        r = sock.reservation
        assert r is not None
        return (2 if r.remote_addr is not None else 0) + (0 if r.wildcard else 1)

    @staticmethod
    def _matches(sock: UdpSocket, nic: int, src: bytes, sport: int, dst: bytes, v4: bool) -> bool:
        r = sock.reservation
        if r is None or (r.nic and r.nic != nic):
            return False
        local = r.local_addr
        if v4:
            if sock.family == 6:
                if sock.options.v6only or not (local == IPV6_ANY or local == mapped(dst)):
                    return False
            elif local not in (IPV4_ANY, dst):
                return False
            peer = src if sock.family == 4 else mapped(src)
        else:
            if sock.family != 6 or local not in (IPV6_ANY, dst):
                return False
            peer = src
        return r.remote_addr is None or (r.remote_addr == peer and r.remote_port == sport)

    @staticmethod
    def _datagram(
        sock: UdpSocket, src: bytes, sport: int, dst: bytes, data: bytes, tos: int, nic: int
    ) -> Datagram:
        options = sock.options
        # ip(7), RFC 3542 §6.5: no TOS / traffic class ancillary data unless
        # asked, by the option of the datagram's own IP version.
        asked = options.recv_tos if len(src) == 4 else options.recv_tclass
        if sock.family == 6 and len(src) == 4:
            src, dst = mapped(src), mapped(dst)
        return Datagram(data, (src, sport), dst, tos if asked else None, nic)

    # --- ICMP errors -----------------------------------------------------------------
    def icmp_error(
        self, v6: bool, code: int, quoted_src: bytes, sport: int, quoted_dst: bytes, dport: int
    ) -> bool:
        """An ICMP destination-unreachable about a datagram we sent from
        ``quoted_src:sport`` to ``quoted_dst:dport``: the connected socket of
        that 4-tuple gets the matching OSError."""
        err = (ICMPV6_ERRNO if v6 else ICMPV4_ERRNO).get(code)
        if err is None:
            return False
        for sock in self.by_port.get(sport, ()):
            remote = sock.remote
            if remote is None:
                continue
            peer = (
                remote[0][12:]
                if (len(quoted_dst) == 4 and is_ipv4_mapped(remote[0]))
                else remote[0]
            )
            if peer == quoted_dst and remote[1] == dport and sock.on_error is not None:
                sock.on_error(OSError(err, _strerror(err)))
                return True
        return False


def _strerror(err: int) -> str:
    import os

    return os.strerror(err)


def build_datagram(sport: int, dport: int, data: bytes | bytearray | memoryview) -> bytearray:
    """The UDP header and payload; the checksum is filled in by the IP
    layer once the source address is chosen."""
    length = UDP_HEADER_LEN + len(data)
    if length > 0xFFFF:
        raise OSError(errno.EMSGSIZE, "message too long")
    buf = bytearray(length)
    UdpHeader(sport, dport, length, 0).emit(buf)
    buf[UDP_HEADER_LEN:] = data
    return buf


# (delivery, source port, destination port, payload) -> True if relayed
RelayHook = Callable[[Delivery, int, int, bytes], bool]


class UdpHooks:
    """The network layer's transport hook for UDP datagrams: a datagram no
    socket here takes may belong to another shard's unconnected socket
    (``steer.Steering``)."""

    def __init__(
        self, udp: UdpDemux, steering: Steering | None = None, relay: RelayHook | None = None
    ) -> None:
        self.udp = udp
        self.steering = steering
        self.relay = relay  # relay mode: datagrams to addresses not ours

    def datagram(self, d: Delivery) -> bool:
        sport, dport, length, _ = UdpView(d.payload).fields()
        data = bytes(d.payload[8:length])
        if self.relay is not None and self.relay(d, sport, dport, data):
            return True
        if self.udp.deliver(d.nic, d.src, sport, d.dst, dport, data, d.tos, d.broadcast):
            return True
        return self.steering is not None and self.steering.elsewhere(d, dport)
