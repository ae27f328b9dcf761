"""Internet checksum (RFC 1071), pseudo-headers and RFC 1624 updates, against scapy."""

from __future__ import annotations

import os
import socket

from hypothesis import given
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from shardnet.common import checksum as csum


@given(st.binary(max_size=4000))
def test_checksum_matches_scapy(data: bytes) -> None:
    assert csum.checksum(data) == scapy_checksum(data)


def test_large_buffers_take_the_numpy_path_and_agree() -> None:
    for n in (2048, 2049, 65535, 65536):
        data = os.urandom(n)
        assert csum.checksum(data) == scapy_checksum(data)
        assert csum.checksum(memoryview(bytearray(data))) == scapy_checksum(data)


def test_sum_that_is_a_multiple_of_ffff_is_negative_zero() -> None:
    """A non-zero sum never folds to 0 (RFC 1071 §2): b'\\xff\\xff' sums to 0xFFFF."""
    assert csum.ones_sum(b"\xff\xff") == 0xFFFF
    assert csum.ones_sum(b"\x00\x00") == 0
    assert csum.ones_sum(b"\x12\x34\xed\xcb") == 0xFFFF
    assert csum.ones_sum(b"\x80\x00", 0x7FFF) == 0xFFFF  # through ``initial`` too


def test_checksum_of_negative_zero_sum_is_zero() -> None:
    """Data summing to -0 gets the field 0x0000 (as scapy and Linux write it),
    and verifies; all-zero data gets 0xFFFF."""
    data = b"\x12\x34\xed\xcb"
    assert csum.checksum(data) == 0 == scapy_checksum(data)
    assert csum.verify(data + b"\0\0")
    assert csum.checksum(bytes(4)) == 0xFFFF == scapy_checksum(bytes(4))
    assert csum.verify(bytes(4) + b"\xff\xff")
    assert not csum.verify(bytes(6))  # +0: nothing was summed


@given(st.binary(min_size=2, max_size=200))
def test_verify_accepts_what_checksum_wrote(data: bytes) -> None:
    data = data + b"\0" * (len(data) & 1)
    value = csum.checksum(data + b"\0\0")
    assert csum.verify(data + value.to_bytes(2, "big"))


def test_pseudo_headers_match_scapy() -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    for ip, fam in (
        (IP(src="198.18.0.1", dst="198.18.0.2"), socket.AF_INET),
        (IPv6(src="2001:db8::1", dst="2001:db8::2"), socket.AF_INET6),
    ):
        pkt = ip / UDP(sport=1, dport=2) / b"abc"
        raw = bytes(pkt)
        seg = raw[20:] if fam == socket.AF_INET else raw[40:]
        src = socket.inet_pton(fam, ip.src)
        dst = socket.inet_pton(fam, ip.dst)
        assert csum.verify(seg, csum.pseudo_header(src, dst, 17, len(seg)))


@given(st.binary(min_size=20, max_size=20), st.integers(0, 9), st.integers(0, 0xFFFF))
def test_incremental_update_equals_recompute(header: bytes, word: int, new: int) -> None:
    """RFC 1624 eqn. 3 gives the same field as a full recompute."""
    buf = bytearray(header)
    buf[10:12] = b"\0\0"
    if word == 5:
        return  # the checksum field itself
    buf[10:12] = csum.checksum(buf).to_bytes(2, "big")
    old_word = int.from_bytes(buf[word * 2 : word * 2 + 2], "big")
    updated = csum.update16(int.from_bytes(buf[10:12], "big"), old_word, new)
    buf[word * 2 : word * 2 + 2] = new.to_bytes(2, "big")
    if not any(buf[:10] + buf[12:]):
        # RFC 1624 §3: eqn. 3 gives +0 (0x0000) when everything else is zero,
        # where a recompute gives 0xFFFF; no real header is all zeros.
        assert updated in (0, 0xFFFF)
        return
    assert csum.verify(buf[:10] + updated.to_bytes(2, "big") + buf[12:])
