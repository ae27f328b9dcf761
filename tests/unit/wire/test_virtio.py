"""virtio-net header codec: golden bytes, every Drop reason, hypothesis.

No scapy oracle: scapy has no virtio-net layer. The golden header is the one
the kernel delivered for a TSO super-frame in a measurement on this machine (flags
NEEDS_CSUM, gso TCPV4, hdr_len 54, gso_size 1460, csum_start 34, offset 16),
little-endian as ``struct virtio_net_hdr`` is laid out in linux/virtio_net.h.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.virtio import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    VIRTIO_NET_HDR_LEN,
    VIRTIO_NET_HDR_MRG_LEN,
    VirtioNetHeader,
    VirtioNetView,
)

# flags=1 gso_type=1 hdr_len=54 gso_size=1460 csum_start=34 csum_offset=16
GOLDEN = bytes.fromhex("01 01 3600 b405 2200 1000".replace(" ", ""))
FRAME = bytes(range(60))  # csum_start 34 + offset 16 + 2 <= 60
GOLDEN_HEADER = VirtioNetHeader(F_NEEDS_CSUM, GSO_TCPV4, 54, 1460, 34, 16)


def test_deconstruct() -> None:
    v = VirtioNetView.checked(GOLDEN + FRAME)
    assert (v.flags, v.gso_type, v.hdr_len, v.gso_size, v.csum_start, v.csum_offset) == (
        1,
        1,
        54,
        1460,
        34,
        16,
    )
    assert v.fields() == (1, 1, 54, 1460, 34, 16)
    assert v.num_buffers == 0
    assert v.checksum_trusted and v.is_gso
    assert bytes(v.raw) == GOLDEN
    assert bytes(v.payload) == FRAME


def test_construct() -> None:
    buf = bytearray(10)
    assert GOLDEN_HEADER.emit(buf) == VIRTIO_NET_HDR_LEN
    assert bytes(buf) == GOLDEN


def test_parse() -> None:
    assert VirtioNetHeader.parse(GOLDEN + FRAME) == GOLDEN_HEADER


def test_emit_at_offset() -> None:
    buf = bytearray(14)
    assert GOLDEN_HEADER.emit(buf, 2) == 10
    assert bytes(buf[2:12]) == GOLDEN


def test_mergeable_header_has_num_buffers() -> None:
    h = VirtioNetHeader(F_DATA_VALID, num_buffers=1)
    buf = bytearray(12)
    assert h.emit(buf, size=VIRTIO_NET_HDR_MRG_LEN) == 12
    assert bytes(buf) == bytes.fromhex("020000000000000000000100")
    v = VirtioNetView.checked(bytes(buf) + FRAME, size=12)
    assert v.num_buffers == 1 and bytes(v.payload) == FRAME
    assert VirtioNetHeader.parse(bytes(buf), size=12) == h


def test_zero_header_is_plain() -> None:
    v = VirtioNetView.checked(bytes(10))
    h = v.header()
    assert h == VirtioNetHeader()
    assert h.is_plain and not h.checksum_trusted and not v.is_gso
    assert bytes(v.payload) == b""


def test_data_valid_is_trusted_and_plain() -> None:
    h = VirtioNetHeader(F_DATA_VALID)
    assert h.checksum_trusted and h.is_plain


def test_ecn_bit_keeps_type() -> None:
    h = VirtioNetHeader(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 74, 1440, 54, 16)
    buf = bytearray(10)
    h.emit(buf)
    v = VirtioNetView.checked(bytes(buf) + bytes(80))
    assert v.is_gso and v.header() == h
    assert "gso tcpv6|ecn" in h.summary()


def test_bad_size_is_api_misuse() -> None:
    with pytest.raises(ValueError) as exc:
        VirtioNetView.checked(GOLDEN, size=11)
    assert not isinstance(exc.value, MalformedPacket)
    with pytest.raises(ValueError):
        GOLDEN_HEADER.emit(bytearray(16), size=8)


@pytest.mark.parametrize(
    ("data", "size", "reason"),
    [
        (GOLDEN[:9], 10, Drop.VNET_TRUNCATED),
        (GOLDEN + b"\0", 12, Drop.VNET_TRUNCATED),
        (b"\x04" + GOLDEN[1:] + FRAME, 10, Drop.VNET_BAD_FLAGS),  # RSC_INFO
        (b"\x80" + GOLDEN[1:] + FRAME, 10, Drop.VNET_BAD_FLAGS),
        (GOLDEN[:1] + b"\x02" + GOLDEN[2:] + FRAME, 10, Drop.VNET_BAD_GSO_TYPE),
        (GOLDEN[:1] + b"\x86" + GOLDEN[2:] + FRAME, 10, Drop.VNET_BAD_GSO_TYPE),
        (GOLDEN[:4] + b"\0\0" + GOLDEN[6:] + FRAME, 10, Drop.VNET_BAD_GSO_SIZE),
        (GOLDEN + FRAME[:51], 10, Drop.VNET_BAD_CSUM_OFFSET),  # field at 50..51 cut
        (GOLDEN[:6] + b"\xff\xff" + GOLDEN[8:] + FRAME, 10, Drop.VNET_BAD_CSUM_OFFSET),
    ],
)
def test_drop_reasons(data: bytes, size: int, reason: Drop) -> None:
    with pytest.raises(MalformedPacket) as exc:
        VirtioNetView.checked(data, size=size)
    assert exc.value.reason is reason
    assert exc.value.layer == "vnet"


def test_checksum_field_exactly_at_end_is_accepted() -> None:
    assert bytes(VirtioNetView.checked(GOLDEN + FRAME[:52]).payload) == FRAME[:52]


def test_csum_fields_ignored_without_needs_csum() -> None:
    h = VirtioNetHeader(F_DATA_VALID, GSO_NONE, 0, 0, 0xFFFF, 0xFFFF)
    buf = bytearray(10)
    h.emit(buf)
    assert VirtioNetView.checked(buf).header() == h


def test_summary() -> None:
    assert GOLDEN_HEADER.summary() == (
        "vnet flags needs_csum gso tcpv4 gso_size 1460 hdr_len 54 csum_start 34 csum_offset 16"
    )
    assert VirtioNetHeader().summary() == "vnet flags none gso none"
    assert VirtioNetView.checked(GOLDEN + FRAME).summary() == GOLDEN_HEADER.summary()


headers = st.builds(
    VirtioNetHeader,
    flags=st.sampled_from([0, F_NEEDS_CSUM, F_DATA_VALID, F_NEEDS_CSUM | F_DATA_VALID]),
    gso_type=st.sampled_from([0, 1, 3, 4, 5]).flatmap(lambda t: st.sampled_from([t, t | GSO_ECN])),
    hdr_len=st.integers(0, 0xFFFF),
    gso_size=st.integers(1, 0xFFFF),
    csum_start=st.integers(0, 200),
    csum_offset=st.integers(0, 50),
    num_buffers=st.integers(0, 0xFFFF),
)


@given(headers, st.sampled_from([VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_MRG_LEN]))
def test_roundtrip(h: VirtioNetHeader, size: int) -> None:
    if size == VIRTIO_NET_HDR_LEN:
        h.num_buffers = 0
    buf = bytearray(size + 256)
    assert h.emit(buf, size=size) == size
    assert VirtioNetHeader.parse(buf, size=size) == h


@given(st.binary(max_size=80), st.sampled_from([VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_MRG_LEN]))
def test_arbitrary_bytes_raise_only_malformed(data: bytes, size: int) -> None:
    try:
        v = VirtioNetView.checked(data, size=size)
    except MalformedPacket:
        return
    v.fields()
    _ = (v.flags, v.gso_type, v.hdr_len, v.gso_size, v.csum_start, v.csum_offset)
    _ = (v.num_buffers, v.checksum_trusted, v.is_gso, v.raw, v.payload)
    v.header().summary()
