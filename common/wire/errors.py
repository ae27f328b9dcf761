"""The one error every codec raises for bad input, and the reasons it carries.

A ``Drop`` value is the ``reason`` label of ``shardnet_drops_total{layer,reason}``:
the shard loop catches ``MalformedPacket`` once per layer, counts it and goes
on. Tests assert ``exc.reason``, never the message text.

Each protocol owns one block of ``Drop`` below; add a reason to your block only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@enum.unique  # two reasons with one value would be one label
class Drop(enum.Enum):
    # --- ethernet / 802.1Q
    ETH_TRUNCATED = "eth_truncated"
    VLAN_TRUNCATED = "vlan_truncated"
    ETH_NOT_FOR_US = "not_for_us"  # unicast to another MAC (promiscuous links)
    # --- ARP (RFC 826)
    ARP_TRUNCATED = "arp_truncated"
    ARP_UNSUPPORTED = "arp_unsupported"  # not Ethernet/IPv4 (htype, ptype, hlen, plen)
    ARP_BAD_OPCODE = "arp_bad_opcode"
    # --- IPv4 (RFC 791)
    IPV4_TRUNCATED = "ipv4_truncated"
    IPV4_BAD_VERSION = "ipv4_bad_version"
    IPV4_BAD_IHL = "ipv4_bad_ihl"
    IPV4_BAD_TOTAL_LENGTH = "ipv4_bad_total_length"
    IPV4_BAD_CHECKSUM = "ipv4_bad_checksum"
    IPV4_BAD_OPTIONS = "ipv4_bad_options"
    IPV4_BAD_FRAGMENT = "ipv4_bad_fragment"
    # --- IPv6 (RFC 8200) and extension headers
    IPV6_TRUNCATED = "ipv6_truncated"
    IPV6_BAD_VERSION = "ipv6_bad_version"
    IPV6_BAD_PAYLOAD_LENGTH = "ipv6_bad_payload_length"
    IPV6_EXT_TRUNCATED = "ipv6_ext_truncated"
    IPV6_HOP_BY_HOP_NOT_FIRST = "ipv6_hop_by_hop_not_first"
    IPV6_BAD_OPTION = "ipv6_bad_option"
    IPV6_ROUTING_TYPE0 = "ipv6_routing_type0"
    IPV6_BAD_ROUTING = "ipv6_bad_routing"
    IPV6_BAD_FRAGMENT = "ipv6_bad_fragment"
    IPV6_TOO_MANY_EXTENSIONS = "ipv6_too_many_extensions"
    # --- ICMPv4 (RFC 792)
    ICMPV4_TRUNCATED = "icmpv4_truncated"
    ICMPV4_BAD_CHECKSUM = "icmpv4_bad_checksum"
    # --- ICMPv6 (RFC 4443)
    ICMPV6_TRUNCATED = "icmpv6_truncated"
    ICMPV6_BAD_CHECKSUM = "icmpv6_bad_checksum"
    # --- NDP (RFC 4861, 8106) and MLDv2 (RFC 3810)
    NDP_TRUNCATED = "ndp_truncated"
    NDP_BAD_HOP_LIMIT = "ndp_bad_hop_limit"
    NDP_BAD_CODE = "ndp_bad_code"
    NDP_BAD_OPTION_LENGTH = "ndp_bad_option_length"
    NDP_ZERO_LENGTH_OPTION = "ndp_zero_length_option"
    NDP_BAD_TARGET = "ndp_bad_target"
    NDP_BAD_SOURCE = "ndp_bad_source"
    NDP_BAD_TYPE = "ndp_bad_type"
    NDP_BAD_OPTION_BODY = "ndp_bad_option_body"  # RDNSS server not unicast, DNSSL bad name
    NDP_BAD_DESTINATION = "ndp_bad_destination"  # RFC 4861 §7.1.1/§7.1.2 address rules
    MLD_TRUNCATED = "mld_truncated"
    MLD_BAD_RECORD = "mld_bad_record"
    MLD_BAD_TYPE = "mld_bad_type"
    MLD_BAD_HOP_LIMIT = "mld_bad_hop_limit"  # RFC 3810 §5.1.14/§5.2.13: hop limit 1
    MLD_BAD_ADDRESS = "mld_bad_address"  # multicast address field not multicast (or ::)
    # --- IGMP (RFC 1112, 2236, 3376)
    IGMP_TRUNCATED = "igmp_truncated"  # also RFC 3376 §7.1 query lengths 9-11 (ignored)
    IGMP_BAD_CHECKSUM = "igmp_bad_checksum"
    IGMP_BAD_TYPE = "igmp_bad_type"
    IGMP_BAD_RECORD = "igmp_bad_record"  # group record's group not multicast
    IGMP_BAD_ADDRESS = "igmp_bad_address"  # group address not multicast (or 0.0.0.0 in a query)
    # --- UDP (RFC 768)
    UDP_TRUNCATED = "udp_truncated"
    UDP_BAD_LENGTH = "udp_bad_length"
    UDP_BAD_CHECKSUM = "udp_bad_checksum"
    # --- DHCPv4 (RFC 2131, RFC 2132)
    DHCP_TRUNCATED = "dhcp_truncated"  # shorter than the fixed header and the magic cookie
    DHCP_BAD_COOKIE = "dhcp_bad_cookie"  # RFC 2131 §3: 99.130.83.99 before the options
    DHCP_BAD_OPTION = "dhcp_bad_option"  # an option past the end, or of a wrong length
    DHCP_NOT_REPLY = "dhcp_not_reply"  # op not BOOTREPLY: another client's request
    DHCP_NOT_OURS = "dhcp_not_ours"  # another client's xid or chaddr
    DHCP_UNEXPECTED = "dhcp_unexpected"  # a message the client's state does not take
    # --- DHCPv6 (RFC 8415)
    DHCP6_TRUNCATED = "dhcp6_truncated"  # shorter than the 4-byte header
    DHCP6_BAD_OPTION = "dhcp6_bad_option"  # an option past the end, or a body of a wrong length
    DHCP6_TOO_MANY = "dhcp6_too_many"  # more addresses, IAs or DNS servers than the client keeps
    DHCP6_NOT_REPLY = "dhcp6_not_reply"  # not a server's message type (another client's, a relay's)
    DHCP6_NOT_OURS = "dhcp6_not_ours"  # another exchange's transaction id, or not our client id
    DHCP6_UNEXPECTED = "dhcp6_unexpected"  # a message the client's state does not take
    DHCP6_RECONFIGURE = "dhcp6_reconfigure"  # RFC 8415 §18.2.11: unauthenticated Reconfigure
    DHCP6_BAD_LIFETIMES = "dhcp6_bad_lifetimes"  # RFC 8415 §21.4, §21.6: T1 > T2, preferred > valid
    DHCP6_NO_SOURCE = "dhcp6_no_source"  # not sent: no usable link-local address yet (DAD)
    # --- TCP (RFC 9293)
    TCP_TRUNCATED = "tcp_truncated"
    TCP_BAD_DATA_OFFSET = "tcp_bad_data_offset"
    TCP_BAD_CHECKSUM = "tcp_bad_checksum"
    TCP_BAD_OPTION = "tcp_bad_option"
    TCP_NOT_UNICAST = "tcp_not_unicast"  # RFC 1122 §4.2.3.10: broadcast or multicast ends
    TCP_SYN_OVER_RATE = "tcp_syn_over_rate"  # a SYN beyond the shard's rate (shards/ingress.py)
    # --- virtio-net header (virtio 1.2 §5.1.6) and link reads
    VNET_TRUNCATED = "vnet_truncated"  # read shorter than the virtio-net header
    VNET_BAD_FLAGS = "vnet_bad_flags"  # a flag other than NEEDS_CSUM / DATA_VALID
    VNET_BAD_GSO_TYPE = "vnet_bad_gso_type"
    VNET_BAD_GSO_SIZE = "vnet_bad_gso_size"  # GSO with gso_size 0
    VNET_BAD_CSUM_OFFSET = "vnet_bad_csum_offset"  # checksum field beyond the frame
    LINK_FRAME_TOO_LONG = "link_frame_too_long"  # filled the whole read buffer: maybe cut
    # --- the network layer's refusals of well-formed packets (shards/net): the
    # values are also the ``net/<reason>`` keys of ``ctl stats``.
    # IPv4 input (RFC 1122 §3.2.1.3, RFC 1112 §7.2)
    IPV4_MARTIAN = "ipv4_martian"  # 127/8 on the wire (RFC 1122 §3.2.1.3 (g))
    IPV4_SRC_IS_LOCAL = "ipv4_src_is_local"  # our own address as source (CERT CA-96.21)
    IPV4_BAD_SOURCE = "ipv4_bad_source"  # broadcast or multicast source
    IPV4_MULTICAST_NOT_JOINED = "ipv4_multicast_not_joined"
    IPV4_NOT_FOR_US = "ipv4_not_for_us"  # not a local address and not forwarding
    IPV4_FRAGMENT_UNREASSEMBLED = "ipv4_fragment_unreassembled"  # the dispatcher reassembles
    # IPv4 output
    IPV4_LOCAL_NOT_LOOPED = "ipv4_local_not_looped"  # for ourselves, and no loopback
    IPV4_NO_SOURCE = "ipv4_no_source"
    IPV4_NO_ROUTE = "ipv4_no_route"
    IPV4_NIC_DOWN = "ipv4_nic_down"
    IPV4_DF_TOO_BIG = "ipv4_df_too_big"  # DF set and larger than the path MTU (RFC 1191)
    # IPv6 input (RFC 4291 §2.5.3, §2.7; RFC 4862 §5.4)
    IPV6_BAD_SOURCE = "ipv6_bad_source"  # multicast source
    IPV6_MARTIAN = "ipv6_martian"  # ::1 on the wire
    IPV6_SRC_IS_LOCAL = "ipv6_src_is_local"
    IPV6_NOT_FOR_US = "ipv6_not_for_us"
    IPV6_MULTICAST_NOT_JOINED = "ipv6_multicast_not_joined"
    IPV6_FRAGMENT_UNREASSEMBLED = "ipv6_fragment_unreassembled"
    IPV6_TO_TENTATIVE = "ipv6_to_tentative"  # only NDP may use a tentative address
    # IPv6 output
    IPV6_LOCAL_NOT_LOOPED = "ipv6_local_not_looped"
    IPV6_NO_ROUTE = "ipv6_no_route"
    IPV6_NIC_DOWN = "ipv6_nic_down"
    IPV6_NO_SOURCE = "ipv6_no_source"
    # ICMP input and errors (RFC 1122 §3.2.2.6, RFC 4443 §2.4)
    ICMPV4_ECHO_BROADCAST_IGNORED = "icmpv4_echo_broadcast_ignored"  # smurf amplification
    ICMPV4_ECHO_UNSPECIFIED_SOURCE = "icmpv4_echo_unspecified_source"
    ICMPV4_OTHER = "icmpv4_other"  # a type this host does not handle
    ICMPV6_ECHO_UNSPECIFIED_SOURCE = "icmpv6_echo_unspecified_source"
    ICMPV6_NDP_NOT_HERE = "icmpv6_ndp_not_here"  # NDP/MLD on a shard other than 0
    ICMPV6_OTHER = "icmpv6_other"
    ICMP_RATE_LIMITED = "icmp_rate_limited"  # an ICMP error not sent (token bucket)
    # Redirects (RFC 4861 §8.1, §8.3; RFC 1122 §3.2.2.2)
    REDIRECT_NOT_ACCEPTED = "redirect_not_accepted"  # accept_redirects off, or forwarding
    REDIRECT_NOT_FROM_FIRST_HOP = "redirect_not_from_first_hop"  # not our gateway for it
    REDIRECT_BAD_TARGET = "redirect_bad_target"  # new next hop not on-link, not unicast, ours
    REDIRECT_NOT_HERE = "redirect_not_here"  # an ICMPv4 redirect on a shard other than 0
    # Forwarding (RFC 1812 §5.3, RFC 8200 §3, RFC 3927 §7, RFC 4291 §2.5.6)
    FORWARD_LINK_LOCAL = "forward_link_local"
    FORWARD_TTL_EXCEEDED = "forward_ttl_exceeded"
    FORWARD_NO_ROUTE = "forward_no_route"
    # Loopback routing (RFC 1122 §3.2.1.3)
    LOOPBACK_NOT_LOOPED = "loopback_not_looped"  # a loopback NIC, and no way back
    LOOP_BACK_DROPPED = "loop_back_dropped"  # the uplink ring was full
    # Next-hop resolution (RFC 4861 §7.2.2, RFC 1122 §2.3.2.2)
    NEIGHBOUR_QUEUE_OVERFLOW = "neighbour_queue_overflow"  # the oldest waiting packet went
    NEIGHBOUR_INCOMPLETE_OVERFLOW = "neighbour_incomplete_overflow"  # too many resolutions
    NEIGHBOUR_TABLE_FULL = "neighbour_table_full"  # no entry could be made
    NEIGHBOUR_UNRESOLVED = "neighbour_unresolved"  # resolution failed: the packet went
    # An NS, RS, RA, NA, redirect or ARP from a sender the tables do not know,
    # beyond shard 0's rate of new senders (shards/net/control.py)
    NEIGHBOUR_NEW_SENDER_OVER_RATE = "neighbour_new_sender_over_rate"
    REASSEMBLY_EXPIRED_MALFORMED = "reassembly_expired_malformed"  # expired, unquotable


class IcmpHintKind(enum.Enum):
    """What ICMP error the receiver should answer a malformed packet with."""

    PARAMETER_PROBLEM = "parameter_problem"  # RFC 4443 §3.4 / RFC 792
    UNRECOGNIZED_NEXT_HEADER = "unrecognized_next_header"  # ICMPv6 code 1


@dataclass(frozen=True, slots=True)
class IcmpHint:
    """Set when the RFC asks for an ICMP error back: ``pointer`` is the byte
    offset of the offending field from the start of the IP header
    (RFC 4443 §3.4, RFC 792 Parameter Problem)."""

    kind: IcmpHintKind
    code: int
    pointer: int


class MalformedPacket(ValueError):
    """Bad input from the wire. ``reason`` is the metric label."""

    def __init__(
        self, reason: Drop, detail: str = "", *, layer: str, icmp: IcmpHint | None = None
    ) -> None:
        super().__init__(f"{layer}: {reason.value}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail
        self.layer = layer
        self.icmp = icmp
