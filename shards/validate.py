"""Header validation for every frame a shard receives, before the protocol
machines exist to consume them (the network-layer issue replaces these
handlers with real ones that build on the same checks).

Each handler runs the codecs' ``checked()`` down the layers so that bad
input is dropped and counted by layer and reason (``MalformedPacket``
propagates to ``Ingress``, which counts it); what passes is counted as
unhandled. Transport checksums are not verified when the link's virtio-net
header says they are valid or not yet computed (NEEDS_CSUM / DATA_VALID).
"""

from __future__ import annotations

from shardnet.common.checksum import pseudo_header_v4, pseudo_header_v6
from shardnet.common.wire.arp import ArpView
from shardnet.common.wire.ethernet import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetView,
)
from shardnet.common.wire.icmpv4 import Icmpv4View
from shardnet.common.wire.icmpv6 import Icmpv6View
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4View
from shardnet.common.wire.ipv6 import NH_ICMPV6, Ipv6View, walk_extensions
from shardnet.common.wire.tcp import TcpView
from shardnet.common.wire.udp import UdpView

from .counters import ShardCounters
from .ingress import Ingress

_CSUM_TRUSTED = 0x03  # virtio-net NEEDS_CSUM | DATA_VALID


def _trusted(vnet: memoryview) -> bool:
    return bool(vnet) and bool(vnet[0] & _CSUM_TRUSTED)


def install_validators(ingress: Ingress) -> None:
    counters = ingress.counters
    ingress.register(ETHERTYPE_ARP, lambda eth, vnet: _arp(eth, counters))
    ingress.register(ETHERTYPE_IPV4, lambda eth, vnet: _ipv4(eth, vnet, counters))
    ingress.register(ETHERTYPE_IPV6, lambda eth, vnet: _ipv6(eth, vnet, counters))


def _arp(eth: EthernetView, c: ShardCounters) -> None:
    ArpView.checked(eth.payload)
    c.unhandled += 1


def _ipv4(eth: EthernetView, vnet: memoryview, c: ShardCounters) -> None:
    ip = Ipv4View.checked(eth.payload)
    if not ip.is_fragment:  # fragments are checked once reassembled
        proto, payload = ip.protocol, ip.payload
        verify = not _trusted(vnet)
        if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
            pseudo = pseudo_header_v4(ip.src, ip.dst, proto, len(payload)) if verify else None
            (TcpView if proto == IPPROTO_TCP else UdpView).checked(payload, pseudo=pseudo)
        elif proto == IPPROTO_ICMP:
            Icmpv4View.checked(payload, verify_checksum=verify)
    c.unhandled += 1


def _ipv6(eth: EthernetView, vnet: memoryview, c: ShardCounters) -> None:
    ip = Ipv6View.checked(eth.payload)
    chain = walk_extensions(ip)
    if chain.fragment is None:
        proto, payload = chain.upper_protocol, ip.upper_payload(chain)
        verify = not _trusted(vnet)
        pseudo = pseudo_header_v6(ip.src, ip.dst, proto, len(payload)) if verify else None
        if proto == IPPROTO_TCP:
            TcpView.checked(payload, pseudo=pseudo)
        elif proto == IPPROTO_UDP:
            UdpView.checked(payload, pseudo=pseudo, require_checksum=True)  # RFC 8200 §8.1
        elif proto == NH_ICMPV6:
            Icmpv6View.checked(payload, pseudo=pseudo)
    c.unhandled += 1
