"""The TUN link's receive side (dispatcher/link/tun.py) over a socketpair
that stands in for the TUN fd: IP packets in, Ethernet frames with the
virtio-net header's offsets moved by the header out. No device, no root."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from shardnet.common.classify import classify
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.virtio import F_NEEDS_CSUM, GSO_TCPV4, VirtioNetHeader
from shardnet.dispatcher.link import TunLink

MAC = bytes.fromhex("020000000002")
V4 = bytes(IP(src="198.18.0.1", dst="198.19.0.10") / TCP(sport=40000, dport=80, flags="S"))
V6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8:19::10") / TCP(sport=40000, dport=80))


@pytest.fixture
def pair() -> Iterator[tuple[TunLink, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = a.detach()
    link = TunLink(
        fd, "sntun0", mtu=1500, mac=MAC, vnet_hdr_len=10, multi_queue=False, created=False
    )
    yield link, b
    link.close()
    b.close()


def test_packets_read_become_frames_for_our_mac(pair: tuple[TunLink, socket.socket]) -> None:
    link, peer = pair
    peer.send(bytes(10) + V4)
    peer.send(bytes(10) + V6)
    (f4, f6) = link.read_batch()
    assert bytes(f4.data[:6]) == MAC and bytes(f4.data[12:14]) == b"\x08\x00"
    assert bytes(f4.data[14:]) == V4
    assert bytes(f6.data[12:14]) == b"\x86\xdd" and bytes(f6.data[14:]) == V6
    assert classify(f4.data, 4) == classify(b"\0" * 12 + b"\x08\x00" + V4, 4)
    assert (link.rx_frames, link.rx_bytes) == (2, 28 + len(V4) + len(V6))


def test_offload_offsets_count_from_the_ethernet_header(
    pair: tuple[TunLink, socket.socket],
) -> None:
    link, peer = pair
    # On a TUN the kernel counts csum_start and hdr_len from the IP header.
    hdr = VirtioNetHeader(F_NEEDS_CSUM, GSO_TCPV4, hdr_len=40, gso_size=1448, csum_start=20,
                          csum_offset=16)  # fmt: skip
    buf = bytearray(10)
    hdr.emit(buf, size=10)
    peer.send(bytes(buf) + V4)
    (frame,) = link.read_batch()
    assert frame.vnet is not None
    got = frame.vnet.header()
    assert (got.csum_start, got.hdr_len, got.csum_offset, got.gso_size) == (34, 54, 16, 1448)


def test_a_read_shorter_than_the_header_is_dropped_and_counted(
    pair: tuple[TunLink, socket.socket],
) -> None:
    link, peer = pair
    peer.send(bytes(4))
    assert link.read_batch() == []
    assert link.drop_reasons == {Drop.VNET_TRUNCATED: 1}


def test_not_ip_is_framed_with_no_ethertype(pair: tuple[TunLink, socket.socket]) -> None:
    link, peer = pair
    peer.send(bytes(10) + b"\x10" + bytes(30))  # version 1: the stack counts it unhandled
    (frame,) = link.read_batch()
    assert bytes(frame.data[12:14]) == b"\0\0" and classify(frame.data, 4) == 0
