"""Software segmentation of a TCP super-segment (``shards/net/gso.py``),
checked with scapy as the oracle: every piece is a valid segment (IP and TCP
checksums), sequence numbers follow the payload, FIN and PSH ride on the
last piece only, CWR on the first only, and the payload is intact."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from shardnet.shards.net.gso import segment_tcp

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.mark.parametrize("v6", [False, True])
def test_a_super_segment_becomes_valid_segments(v6: bool) -> None:
    tcp = TCP(
        sport=7, dport=40000, seq=4294967000, ack=5, flags="FPAC", options=[("NOP", None)] * 4
    )
    ip = (
        IPv6(src="2001:db8::2", dst="2001:db8::1")
        if v6
        else IP(src="198.18.0.2", dst="198.18.0.1", id=100, flags="DF")
    )
    packet = bytearray(bytes(ip / tcp / PAYLOAD))
    pieces = [(IPv6 if v6 else IP)(bytes(p)) for p in segment_tcp(packet, 1448)]
    assert len(pieces) == 8  # 7 full segments and a tail
    seq = 4294967000
    for i, p in enumerate(pieces):
        t = p[TCP]
        check = t.chksum
        del t.chksum
        assert (IPv6 if v6 else IP)(bytes(p))[TCP].chksum == check  # scapy recomputes
        if not v6:
            ip_check = p[IP].chksum
            del p[IP].chksum
            assert IP(bytes(p)).chksum == ip_check and p[IP].id == 100 + i
        assert t.seq == seq % 2**32 and len(t.payload) <= 1448
        seq += len(t.payload)
        last = i == len(pieces) - 1
        assert ("F" in t.flags, "P" in t.flags, "C" in t.flags) == (last, last, i == 0)
    assert b"".join(bytes(p[TCP].payload) for p in pieces) == PAYLOAD


def test_gso_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        segment_tcp(bytearray(60), 0)
