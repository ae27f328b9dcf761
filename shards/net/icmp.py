"""ICMP for one shard (RFC 792, RFC 1122 §3.2.2, RFC 4443): echo answers,
errors heard (handed to the transports, Path MTU updates: RFC 1191 §5,
RFC 8201), errors sent, and NDP/MLD handed to shard 0's control plane.

Echo requests are answered from the address they were sent to (RFC 4443
§4.1; a multicast request from a chosen source), never to a broadcast
(Linux's icmp_echo_ignore_broadcasts, against smurf amplification) nor to an
unspecified source. Errors are never sent about an ICMP error, a datagram
sent to a broadcast or multicast address, a non-initial fragment, or from a
non-unicast source (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)), and are
rate-limited by a token bucket (1000/s, burst 50 by default). ICMPv4
redirects go to shard 0's control plane (``redirect_hook_v4``,
``redirect.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardnet.common.addr import IPV4_ANY, IPV6_ANY, is_unicast
from shardnet.common.checksum import pseudo_header_v6
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ethernet import ETHERTYPE_IPV4
from shardnet.common.wire.icmpv4 import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_ERROR_TYPES,
    ICMP_EXC_FRAGTIME,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    ICMP_REDIRECT,
    ICMP_TIME_EXCEEDED,
    Icmpv4Header,
    Icmpv4View,
    build_icmpv4_error,
)
from shardnet.common.wire.icmpv6 import (
    ICMPV6_DST_UNREACH,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    ICMPV6_TIME_EXCEEDED,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_ADDRESS,
    Icmpv6View,
    build_echo_reply,
    build_icmpv6_error,
)
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, Ipv4View
from shardnet.common.wire.ipv6 import NH_ICMPV6, Ipv6View, walk_extensions

from ..counters import NetEvent
from .datagram import Delivery
from .ratelimit import TokenBucket

if TYPE_CHECKING:
    from .stack import NetStack


class Icmp:
    """ICMPv4 and ICMPv6 of ``stack``; ``rate`` is the error bucket's
    (tokens per second, burst)."""

    def __init__(self, stack: NetStack, rate: tuple[float, int]) -> None:
        self.stack = stack
        self.view = stack.view
        self.counters = stack.counters
        self.clock = stack.clock
        self.pmtu = stack.pmtu
        self.link_nic = stack.link_nic
        self.bucket = TokenBucket(*rate)

    # --- input -----------------------------------------------------------------------------
    def handle_v4(
        self, ip: Ipv4View, nic: int, payload: memoryview, trusted: bool, broadcast: bool
    ) -> None:
        msg = Icmpv4View.checked(payload, verify_checksum=not trusted)
        if msg.type == ICMP_ECHO_REQUEST:
            if broadcast:  # Linux icmp_echo_ignore_broadcasts=1 (smurf amplification)
                self.counters.refuse("icmpv4", Drop.ICMPV4_ECHO_BROADCAST_IGNORED)
                return
            if ip.src == IPV4_ANY:  # nobody to answer (a reply would go to 0.0.0.0)
                self.counters.refuse("icmpv4", Drop.ICMPV4_ECHO_UNSPECIFIED_SOURCE)
                return
            echo = self.stack.echo_hook  # the relay's: the destination answers, not us
            if echo is not None and echo(ip.src, ip.dst, msg.ident, msg.seq, bytes(msg.data)):
                return
            reply = bytearray(payload)
            Icmpv4Header(ICMP_ECHO_REPLY, 0, 0, msg.rest).emit(reply)  # RFC 792: same id, seq, data
            self.stack.send_ipv4(ip.src, IPPROTO_ICMP, reply, src=ip.dst, tos=ip.tos)
            self.counters.events[NetEvent.ICMPV4_ECHO_REPLIES] += 1
            return
        if msg.type == ICMP_REDIRECT:
            # RFC 1122 §3.2.2.2: the routes are shard 0's (the dispatcher
            # sends redirects there).
            redirect = self.stack.redirect_hook_v4
            if redirect is None:
                self.counters.refuse("icmpv4", Drop.REDIRECT_NOT_HERE)
            else:
                redirect(ip, nic, msg)
            return
        if msg.is_error:
            hook = self.stack.transport_v4.get(-IPPROTO_ICMP)  # ICMP errors for transport endpoints
            if msg.type == ICMP_DEST_UNREACH and msg.code == ICMP_FRAG_NEEDED:
                quoted = msg.quoted
                if len(quoted) >= 20:
                    # RFC 1191 §5: a next-hop MTU of 0 is guessed from the
                    # quoted total length.
                    self.pmtu.update(
                        self.clock(),
                        bytes(quoted[16:20]),
                        msg.next_hop_mtu,
                        original_len=(quoted[2] << 8) | quoted[3],
                    )
            if hook is not None:
                hook(
                    Delivery(
                        nic,
                        ip.src,
                        ip.dst,
                        IPPROTO_ICMP,
                        ip.tos,
                        ip.ttl,
                        payload,
                        broadcast,
                        ip.buf,
                    )
                )
            return
        self.counters.refuse("icmpv4", Drop.ICMPV4_OTHER)

    def handle_v6(
        self, ip: Ipv6View, nic: int, payload: memoryview, trusted: bool, multicast: bool
    ) -> None:
        pseudo = None if trusted else pseudo_header_v6(ip.src, ip.dst, NH_ICMPV6, len(payload))
        msg = Icmpv6View.checked(payload, pseudo=pseudo)
        t = msg.type
        if t == ICMPV6_ECHO_REQUEST:
            if ip.dst in self.view.tentative:
                return
            if ip.src == IPV6_ANY:  # nobody to answer (a reply would go to ::)
                self.counters.refuse("icmpv6", Drop.ICMPV6_ECHO_UNSPECIFIED_SOURCE)
                return
            echo = self.stack.echo_hook  # the relay's: the destination answers, not us
            if (
                echo is not None
                and not multicast
                and echo(ip.src, ip.dst, msg.ident, msg.seq, bytes(msg.data))
            ):
                return
            # RFC 4443 §4.1/§2.2: answer from the address the request was
            # sent to, or a chosen one when it went to a multicast group. The
            # checksum is filled in by send_ipv6 once the source is known.
            reply = build_echo_reply(msg.ident, msg.seq, msg.data, src=bytes(16), dst=bytes(16))
            self.stack.send_ipv6(
                ip.src,
                NH_ICMPV6,
                reply,
                src=None if multicast else ip.dst,
                nic_id=nic,
                traffic_class=ip.traffic_class,
                checksum_at=2,
            )
            self.counters.events[NetEvent.ICMPV6_ECHO_REPLIES] += 1
            return
        if 133 <= t <= 137 or t in (130, 131, 132, 143):
            ndp = self.stack.ndp_hook
            if ndp is not None:
                ndp(ip, nic, payload)
            else:
                self.counters.refuse("icmpv6", Drop.ICMPV6_NDP_NOT_HERE)
            return
        if t < 128:
            if t == ICMPV6_PACKET_TOO_BIG:
                quoted = msg.quoted
                if len(quoted) >= 40:
                    self.pmtu.update(self.clock(), bytes(quoted[24:40]), msg.mtu)
            hook = self.stack.transport_v6.get(-NH_ICMPV6)
            if hook is not None:
                hook(
                    Delivery(
                        nic,
                        ip.src,
                        ip.dst,
                        NH_ICMPV6,
                        ip.traffic_class,
                        ip.hop_limit,
                        payload,
                        multicast,
                        ip.buf,
                    )
                )
            return
        self.counters.refuse("icmpv6", Drop.ICMPV6_OTHER)

    # --- errors sent ----------------------------------------------------------------------
    def _may_send_error(self, d: Delivery) -> bool:
        if d.broadcast or not is_unicast(d.src):
            return False
        if not self.bucket.allow(self.clock()):
            self.counters.refuse("icmp", Drop.ICMP_RATE_LIMITED)
            return False
        return True

    def error_v4(self, d: Delivery, type_: int, code: int, rest: int = 0) -> None:
        if d.protocol == IPPROTO_ICMP:  # never about an ICMP error (RFC 1122 §3.2.2)
            if len(d.payload) < 1 or d.payload[0] in ICMP_ERROR_TYPES:
                return
        if not self._may_send_error(d):
            return
        msg = build_icmpv4_error(type_, code, d.packet, rest=rest)
        self.stack.send_ipv4(
            d.src, IPPROTO_ICMP, msg, src=d.dst if d.dst in self.view.local else None
        )
        self.counters.icmp_errors[(4, type_, code)] += 1

    def error_v6(self, d: Delivery, type_: int, code: int, rest: int = 0) -> None:
        if d.protocol == NH_ICMPV6 and (len(d.payload) < 1 or d.payload[0] < 128):
            return  # RFC 4443 §2.4 (e.1)
        if not self._may_send_error(d):
            return
        src = d.dst if d.dst in self.view.local else None
        body = build_icmpv6_error(type_, code, d.packet, src=bytes(16), dst=bytes(16), rest=rest)
        self.stack.send_ipv6(d.src, NH_ICMPV6, body, src=src, nic_id=d.nic, checksum_at=2)
        self.counters.icmp_errors[(6, type_, code)] += 1

    def error_v6_raw(
        self, ip: Ipv6View, nic: int, type_: int, code: int, rest: int, *, multicast: bool
    ) -> None:
        d = Delivery(
            nic,
            ip.src,
            ip.dst,
            ip.next_header,
            ip.traffic_class,
            ip.hop_limit,
            ip.payload,
            multicast,
            ip.buf,
        )
        self.error_v6(d, type_, code, rest)

    def reassembly_expired(self, first_fragment: bytes) -> None:
        """The dispatcher gave up on a datagram whose first fragment arrived:
        ICMP time exceeded, fragment reassembly (RFC 792 code 1, RFC 8200 §4.5)."""
        view = memoryview(first_fragment)
        try:
            if first_fragment[:1] and first_fragment[0] >> 4 == 4:
                ip = Ipv4View.checked(view)
                local = ip.dst in self.view.local
                d = Delivery(
                    self.link_nic,
                    ip.src,
                    ip.dst,
                    ip.protocol,
                    ip.tos,
                    ip.ttl,
                    ip.payload,
                    not local,
                    ip.buf,
                )
                self.error_v4(d, ICMP_TIME_EXCEEDED, ICMP_EXC_FRAGTIME)
            else:
                ip6 = Ipv6View.checked(view)
                local = ip6.dst in self.view.local
                # The upper protocol follows the Fragment header: an ICMPv6
                # error in the first fragment gets no error (RFC 4443 §2.4 (e)).
                chain = walk_extensions(ip6)
                d = Delivery(
                    self.link_nic,
                    ip6.src,
                    ip6.dst,
                    chain.upper_protocol,
                    ip6.traffic_class,
                    ip6.hop_limit,
                    ip6.upper_payload(chain),
                    not local,
                    ip6.buf,
                )
                self.error_v6(d, ICMPV6_TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY)
        except MalformedPacket:
            self.counters.refuse("reassembly", Drop.REASSEMBLY_EXPIRED_MALFORMED)

    def unreachable(self, ethertype: int, packet: bytes) -> None:
        """A packet whose next hop could not be resolved: counted and dropped.
        Its sender is told (RFC 1122 §2.3.2.2: host unreachable; RFC 4861
        §7.2.2: address unreachable) unless it is us: a local endpoint learns
        it from its transport (retransmission timeouts, EHOSTUNREACH), never
        from an ICMP error sent to ourselves. No error about a non-initial
        fragment (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)) either."""
        self.counters.refuse("neighbour", Drop.NEIGHBOUR_UNRESOLVED)
        view = memoryview(packet)
        try:
            if ethertype == ETHERTYPE_IPV4:
                ip = Ipv4View.checked(view)
                if ip.src in self.view.local or ip.frag_offset:
                    return
                d = Delivery(
                    self.link_nic,
                    ip.src,
                    ip.dst,
                    ip.protocol,
                    ip.tos,
                    ip.ttl,
                    ip.payload,
                    False,
                    ip.buf,
                )
                self.error_v4(d, ICMP_DEST_UNREACH, ICMP_HOST_UNREACH)
            else:
                ip6 = Ipv6View.checked(view)
                if ip6.src in self.view.local:
                    return
                chain = walk_extensions(ip6)
                if chain.fragment is not None and chain.fragment.fragment_offset:
                    return
                d = Delivery(
                    self.link_nic,
                    ip6.src,
                    ip6.dst,
                    chain.upper_protocol,
                    ip6.traffic_class,
                    ip6.hop_limit,
                    ip6.upper_payload(chain),
                    False,
                    ip6.buf,
                )
                self.error_v6(d, ICMPV6_DST_UNREACH, UNREACH_ADDRESS)
        except MalformedPacket:
            return
