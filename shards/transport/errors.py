"""ICMP errors about what this shard sent, to the endpoint they concern.

The dispatcher hashes an ICMP error by the flow it quotes, so it reaches the
shard that owns that flow (DESIGN.md); here it is parsed once and handed to
UDP (the connected socket's OSError, RFC 1122 §4.1.3.3) or TCP (soft or hard
errors, RFC 5927; Packet Too Big lowers the MSS, RFC 8201/1191).
"""

from __future__ import annotations

from shardnet.common.wire.icmpv4 import ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, Icmpv4View
from shardnet.common.wire.icmpv4 import quoted_flow as quoted_flow_v4
from shardnet.common.wire.icmpv6 import ICMPV6_DST_UNREACH, ICMPV6_PACKET_TOO_BIG, Icmpv6View
from shardnet.common.wire.icmpv6 import quoted_flow as quoted_flow_v6
from shardnet.common.wire.ipv4 import IPV4_HEADER_LEN
from shardnet.common.wire.ipv6 import IPV6_HEADER_LEN

from ..net.datagram import Delivery
from .steer import Steering
from .tcp import TcpDemux
from .udp import UdpDemux


def quoted_tcp_seq(quoted: memoryview, v6: bool) -> int | None:
    """The sequence number of the TCP segment an ICMP error quotes (RFC 792
    and RFC 4443 §2.4 (d) quote at least 8 bytes past the IP header), None
    if cut short. Our segments carry no IPv6 extension header, so a quote
    with one is not about a segment of ours and gets None."""
    if v6:
        off = IPV6_HEADER_LEN if len(quoted) > 6 and quoted[6] == 6 else -1
    else:
        off = (quoted[0] & 0x0F) * 4 if quoted else -1
    if off < IPV4_HEADER_LEN or len(quoted) < off + 8:
        return None
    return int.from_bytes(quoted[off + 4 : off + 8], "big")


class IcmpErrorRouter:
    def __init__(self, udp: UdpDemux, tcp: TcpDemux, steering: Steering | None = None) -> None:
        self.udp = udp
        self.tcp = tcp
        self.steering = steering

    def _elsewhere(self, d: Delivery, src: bytes, sport: int, dst: bytes, dport: int) -> bool:
        """An error about a TCP connection of another shard's ephemeral
        listener (the quoted flow hashed here, the connection lives in the
        port's owner, steer.py): hand the error to that shard."""
        return (
            self.steering is not None
            and (src, sport, dst, dport) not in self.tcp.conns
            and self.steering.elsewhere(d, sport)
        )

    def icmpv4_error(self, d: Delivery) -> bool:
        msg = Icmpv4View(d.payload)
        flow = quoted_flow_v4(msg.quoted)
        if flow is None or msg.type != ICMP_DEST_UNREACH:
            return False
        proto, src, dst, sport, dport = flow
        if proto == 17:
            return self.udp.icmp_error(False, msg.code, src, sport, dst, dport)
        if proto == 6:
            if self._elsewhere(d, src, sport, dst, dport):
                return True
            mtu = msg.next_hop_mtu if msg.code == ICMP_FRAG_NEEDED else 0
            seq = quoted_tcp_seq(msg.quoted, False)
            self.tcp.icmp_error(False, True, msg.code, src, sport, dst, dport, mtu, seq)
            return True
        return False

    def icmpv6_error(self, d: Delivery) -> bool:
        msg = Icmpv6View(d.payload)
        flow = quoted_flow_v6(msg.quoted)
        if flow is None or msg.type not in (ICMPV6_DST_UNREACH, ICMPV6_PACKET_TOO_BIG):
            return False
        proto, src, dst, sport, dport = flow
        if proto == 17 and msg.type == ICMPV6_DST_UNREACH:
            return self.udp.icmp_error(True, msg.code, src, sport, dst, dport)
        if proto == 6:
            if self._elsewhere(d, src, sport, dst, dport):
                return True
            mtu = msg.mtu if msg.type == ICMPV6_PACKET_TOO_BIG else 0
            seq = quoted_tcp_seq(msg.quoted, True)
            self.tcp.icmp_error(
                True, msg.type == ICMPV6_DST_UNREACH, msg.code, src, sport, dst, dport, mtu, seq
            )
            return True
        return False
