"""TCP codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from shardnet.common import checksum as csum
from shardnet.common.addr import parse_ip
from shardnet.common.checksum import pseudo_header
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.tcp import (
    ACK,
    AE,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_HEADER_LEN,
    URG,
    TcpHeader,
    TcpOptions,
    TcpView,
    emit_options,
    flags_str,
    options_len,
    parse_options,
    patch_header,
    patch_timestamp,
)

from .helpers import assert_drop, behind_ip, ip_payload, scapy_checksum

ADDRS = {False: ("198.18.0.1", "198.18.0.2"), True: ("2001:db8::1", "2001:db8::2")}  # by v6
SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
DATA_OPTIONS = [
    ("NOP", None),
    ("NOP", None),
    ("Timestamp", (5, 6)),
    ("NOP", None),
    ("NOP", None),
    ("SAck", (1001, 2001, 3001, 4001)),
]

# scapy: IP(src=198.18.0.1, dst=198.18.0.2) / TCP(sport=40000, dport=80, seq=1,
# ack=2, flags="SA", window=65535, options=SYN_OPTIONS); the TCP part.
GOLDEN_SYN = bytes.fromhex(
    "9c40 0050 00000001 00000002 a012 ffff 1f34 0000"
    " 020405b4 0402080a 00000001 00000000 01030307".replace(" ", "")
)
SYN_HEADER = TcpHeader(
    40000, 80, 1, 2, SYN | ACK, 65535, 0x1F34, 0,
    TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamp=(1, 0)),
)  # fmt: skip
# scapy: the same addresses, TCP(sport=80, dport=40000, seq=1001, ack=5001,
# flags="PA", window=502, options=DATA_OPTIONS) / b"hello".
GOLDEN_DATA = bytes.fromhex(
    "0050 9c40 000003e9 00001389 d018 01f6 7377 0000"
    " 0101080a 00000005 00000006 01010512 000003e9 000007d1 00000bb9 00000fa1"
    " 68656c6c6f".replace(" ", "")
)
DATA_HEADER = TcpHeader(
    80, 40000, 1001, 5001, PSH | ACK, 502, 0x7377, 0,
    TcpOptions(sack_blocks=((1001, 2001), (3001, 4001)), timestamp=(5, 6)),
)  # fmt: skip


def pseudo(length: int, v6: bool = False) -> int:
    return pseudo_header(*map(parse_ip, ADDRS[v6]), 6, length)


def segment(**kw: object) -> bytes:
    """A bare 20-byte header with the given scapy fields (checksum unset)."""
    return bytes(TCP(sport=1, dport=2, **kw))


def with_options(opts: bytes) -> bytes:
    """GOLDEN_DATA's fixed header with ``opts`` (a multiple of 4) as options."""
    data_offset = (TCP_HEADER_LEN + len(opts)) // 4
    return GOLDEN_DATA[:12] + bytes([data_offset << 4]) + GOLDEN_DATA[13:20] + opts


# --- golden bytes: deconstruct, construct, parse, emit


def test_deconstruct() -> None:
    v = TcpView.checked(GOLDEN_SYN, pseudo=pseudo(len(GOLDEN_SYN)))
    assert (v.src_port, v.dst_port, v.seq, v.ack) == (40000, 80, 1, 2)
    assert (v.data_offset, v.header_len, v.flags, v.ae) == (10, 40, SYN | ACK, False)
    assert (v.window, v.checksum, v.urgent) == (65535, 0x1F34, 0)
    assert bytes(v.payload) == b""
    assert v.fields() == (40000, 80, 1, 2, 0xA012, 65535)
    assert bytes(v.options_bytes) == GOLDEN_SYN[20:]
    assert parse_options(v) == SYN_HEADER.options

    v = TcpView.checked(GOLDEN_DATA, pseudo=pseudo(len(GOLDEN_DATA)))
    assert (v.seq, v.ack, v.header_len, v.flags) == (1001, 5001, 52, PSH | ACK)
    assert bytes(v.payload) == b"hello"
    assert parse_options(v) == DATA_HEADER.options


def test_construct() -> None:
    buf = bytearray(len(GOLDEN_SYN))
    h = TcpHeader(
        40000, 80, 1, 2, SYN | ACK, 65535,
        options=TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamp=(1, 0)),
    )  # fmt: skip
    assert h.emit(buf, pseudo=pseudo(len(buf))) == 40
    assert bytes(buf) == GOLDEN_SYN
    assert h.checksum == 0x1F34

    buf = bytearray(len(GOLDEN_DATA))
    buf[52:] = b"hello"
    h = TcpHeader(
        80, 40000, 1001, 5001, PSH | ACK, 502,
        options=TcpOptions(sack_blocks=((1001, 2001), (3001, 4001)), timestamp=(5, 6)),
    )  # fmt: skip
    assert h.emit(buf, pseudo=pseudo(len(buf)), payload_len=5) == 52
    assert bytes(buf) == GOLDEN_DATA
    assert h.checksum == 0x7377


def test_parse() -> None:
    assert TcpHeader.parse(GOLDEN_SYN) == SYN_HEADER
    assert TcpHeader.parse(GOLDEN_DATA, pseudo=pseudo(len(GOLDEN_DATA))) == DATA_HEADER


def test_emit() -> None:
    buf = bytearray(2 + 52)
    assert DATA_HEADER.emit(buf, 2) == 52
    assert bytes(buf[2:]) == GOLDEN_DATA[:52]
    assert SYN_HEADER.header_len == 40 and SYN_HEADER.data_offset == 10


# --- options


def test_options_layout_matches_linux_syn() -> None:
    opts = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamp=(0xAABBCCDD, 0))
    buf = bytearray(20)
    assert emit_options(opts, buf, 0) == options_len(opts) == 20
    assert buf.hex(" ") == "02 04 05 b4 04 02 08 0a aa bb cc dd 00 00 00 00 01 03 03 07"


@pytest.mark.parametrize(
    ("opts", "wire"),
    [
        (TcpOptions(), ""),
        (TcpOptions(mss=536), "02040218"),
        (TcpOptions(sack_permitted=True), "01010402"),
        (TcpOptions(window_scale=0), "01030300"),
        (TcpOptions(timestamp=(1, 2)), "0101080a 00000001 00000002"),
        (TcpOptions(sack_permitted=True, timestamp=(1, 2)), "0402080a 00000001 00000002"),
        (TcpOptions(mss=1440, sack_permitted=True, window_scale=9), "020405a0 01010402 01030309"),
        (TcpOptions(sack_blocks=((7, 8),)), "0101050a 00000007 00000008"),
        # RFC 7413 §4.1.1: Fast Open, a cookie request and an 8-byte cookie
        (TcpOptions(fastopen=b""), "22020101"),
        (TcpOptions(fastopen=bytes(range(1, 9))), "220a0102 03040506 07080101"),
        (TcpOptions(mss=1460, fastopen=bytes(4)), "020405b4 22060000 00000101"),
    ],
)
def test_options_layout(opts: TcpOptions, wire: str) -> None:
    want = bytes.fromhex(wire.replace(" ", ""))
    buf = bytearray(40)
    assert emit_options(opts, buf, 0) == options_len(opts) == len(want)
    assert bytes(buf[: len(want)]) == want
    assert parse_options(TcpView.checked(with_options(want))) == opts


def test_emit_options_too_long_is_a_value_error() -> None:
    opts = TcpOptions(timestamp=(1, 2), sack_blocks=((1, 2),) * 4)  # 12 + 36 bytes
    with pytest.raises(ValueError):
        emit_options(opts, bytearray(60), 0)


def test_window_scale_above_14_is_clamped() -> None:
    # RFC 7323 §2.3: a shift count above 14 is used as 14.
    v = TcpView.checked(with_options(bytes.fromhex("01030320")))
    assert parse_options(v).window_scale == 14
    assert "wscale 32" in v.summary()  # the summary shows the wire value


def test_unknown_options_skipped_and_eol_ends() -> None:
    # MPTCP-like kind 30 len 4, then MSS, then EOL followed by garbage.
    opts = bytes.fromhex("1e04abcd 02040578 00ff0203")
    v = TcpView.checked(with_options(opts))
    assert parse_options(v) == TcpOptions(mss=1400)
    assert v.summary().endswith("<unknown-30,mss 1400,eol>")


def test_last_duplicate_option_wins() -> None:
    v = TcpView.checked(with_options(bytes.fromhex("02040578 020405b4")))
    assert parse_options(v).mss == 1460


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sack_block_counts(n: int) -> None:
    blocks = tuple((i * 100, i * 100 + 50) for i in range(n))
    opts = TcpOptions(sack_blocks=blocks)
    buf = bytearray(40)
    k = emit_options(opts, buf, 0)
    assert parse_options(TcpView.checked(with_options(bytes(buf[:k])))).sack_blocks == blocks


# --- one test per Drop reason


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (GOLDEN_SYN[:19], {}, Drop.TCP_TRUNCATED),
        (b"", {}, Drop.TCP_TRUNCATED),
        (GOLDEN_SYN[:12] + b"\x40" + GOLDEN_SYN[13:], {}, Drop.TCP_BAD_DATA_OFFSET),
        (GOLDEN_SYN[:12] + b"\xb0" + GOLDEN_SYN[13:], {}, Drop.TCP_BAD_DATA_OFFSET),
        (GOLDEN_SYN[:36], {}, Drop.TCP_BAD_DATA_OFFSET),
        (GOLDEN_DATA[:-1] + b"x", {"pseudo": pseudo(len(GOLDEN_DATA))}, Drop.TCP_BAD_CHECKSUM),
        (GOLDEN_DATA, {"pseudo": pseudo(len(GOLDEN_DATA) + 1)}, Drop.TCP_BAD_CHECKSUM),
    ],
)
def test_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "tcp", TcpView.checked, data, **kwargs)


@pytest.mark.parametrize(
    "opts",
    [
        "02030501",  # MSS len 3
        "020505b4 00000000",  # MSS len 5
        "01030203",  # window scale len 2
        "03040700",  # window scale len 4
        "01010403",  # SACK-permitted len 3
        "0101080b 00000001 00000002 00000000",  # timestamps len 11
        "01010808 00000001 00000002",  # timestamps len 8
        "01010502",  # SACK with no blocks
        "0101050b 00000001 00000002 00000000",  # SACK len 11
        "01010512 00000001 00000002 000000",  # SACK len 18 past the end
        "01010501",  # length 1
        "01011e00",  # length 0
        "01011e08",  # unknown option past the end
        "0101011e",  # kind with no length byte
    ],
)
def test_bad_options(opts: str) -> None:
    raw = bytes.fromhex(opts.replace(" ", ""))
    raw += bytes(-len(raw) % 4)
    assert_drop(Drop.TCP_BAD_OPTION, "tcp", TcpView.checked, with_options(raw))


def test_sack_of_five_blocks_rejected() -> None:
    raw = bytes.fromhex("0101052a") + bytes(36)  # 40 bytes, len 42 > area
    assert_drop(Drop.TCP_BAD_OPTION, "tcp", TcpView.checked, with_options(raw))


# --- flags and summaries


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (0, "none"),
        (SYN, "S"),
        (SYN | ACK, "S."),
        (FIN | PSH | ACK, "FP."),
        (RST, "R"),
        (URG | ECE | CWR | AE, "UEWe"),
    ],
)
def test_flags_str(flags: int, text: str) -> None:
    assert flags_str(flags) == text


def test_summary() -> None:
    want = "TCP 40000 > 80 [S.] seq 1 ack 2 win 65535 len 0 <mss 1460,sackOK,TS 1 0,nop,wscale 7>"
    assert SYN_HEADER.summary() == want
    assert TcpView.checked(GOLDEN_SYN).summary() == want
    want = "TCP 80 > 40000 [P.] seq 1001 ack 5001 win 502 len 5 <nop,nop,TS 5 6,nop,nop,sack 2 {1001:2001}{3001:4001}>"
    assert TcpView.checked(GOLDEN_DATA).summary() == want
    assert DATA_HEADER.summary(payload_len=5) == want
    assert TcpHeader(1, 2, 3, 4, SYN, 5).summary() == "TCP 1 > 2 [S] seq 3 win 5 len 0"
    assert TcpHeader(1, 2, 3, 4, URG | ACK, 5, urgent=9).summary() == (
        "TCP 1 > 2 [.U] seq 3 ack 4 win 5 urg 9 len 0"
    )


def test_ae_bit_roundtrips() -> None:
    raw = segment(flags="SECN")  # scapy's N is RFC 3540's NS, now AccECN's AE
    v = TcpView.checked(raw)
    assert v.ae and v.flags == SYN | ECE | CWR | AE
    buf = bytearray(20)
    v.header().emit(buf)
    assert TCP(bytes(buf)).flags == "SECN"


def test_reserved_bits_ignored() -> None:
    raw = bytearray(segment(flags="A"))
    raw[12] |= 0x0E
    assert TcpView.checked(raw).flags == ACK


# --- hot-path helpers


def test_patch_header_and_timestamp() -> None:
    template = TcpHeader(80, 40000, 0, 0, ACK, 0, options=TcpOptions(timestamp=(0, 0)))
    buf = bytearray(32)
    template.emit(buf)
    patch_header(buf, 0, 0xDEADBEEF, 7, PSH | ACK | AE, 1234, checksum=0xABCD)
    patch_timestamp(buf, 0, 100, 200)
    want = TcpHeader(
        80,
        40000,
        0xDEADBEEF,
        7,
        PSH | ACK | AE,
        1234,
        0xABCD,
        options=TcpOptions(timestamp=(100, 200)),
    )
    assert TcpHeader.parse(buf) == want
    # the SACK-permitted + TS layout puts TSval at the same place
    buf = bytearray(32)
    TcpHeader(1, 2, 0, 0, ACK, 0, options=TcpOptions(sack_permitted=True, timestamp=(0, 0))).emit(
        buf
    )
    patch_timestamp(buf, 0, 5, 6)
    assert TcpHeader.parse(buf).options.timestamp == (5, 6)


def test_fields_hot_path() -> None:
    sp, dp, seq, ack, of, win = TcpView.checked(GOLDEN_DATA).fields()
    assert (sp, dp, seq, ack, of >> 12, of & 0x1FF, win) == (
        80,
        40000,
        1001,
        5001,
        13,
        PSH | ACK,
        502,
    )


# --- scapy as the oracle


def over_ip(v6: bool, seg: bytes) -> Packet:
    """``seg`` behind an IP header, as scapy dissects it from the wire."""
    return behind_ip(seg, *ADDRS[v6], 6)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("options", [SYN_OPTIONS, DATA_OPTIONS])
def test_scapy_built_parses(v6: bool, options: list) -> None:
    tcp = TCP(sport=40000, dport=443, seq=0xFFFFFFF0, ack=99, flags="SA", window=29200)
    tcp.options = options
    src, dst = ADDRS[v6]
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    seg = ip_payload(ip / tcp / b"payload!")
    v = TcpView.checked(seg, pseudo=pseudo(len(seg), v6))
    h = v.header()
    assert (h.src_port, h.dst_port, h.seq, h.ack, h.flags, h.window) == (
        40000, 443, 0xFFFFFFF0, 99, SYN | ACK, 29200,
    )  # fmt: skip
    assert bytes(v.payload) == b"payload!"
    assert h.options == (SYN_HEADER.options if options is SYN_OPTIONS else DATA_HEADER.options)


def emit_segment(h: TcpHeader, payload: bytes, v6: bool, *, offload: bool = False) -> bytes:
    buf = bytearray(h.header_len + len(payload))
    buf[h.header_len :] = payload
    h.emit(buf, pseudo=pseudo(len(buf), v6), payload_len=len(payload), offload=offload)
    return bytes(buf)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("h", [SYN_HEADER, DATA_HEADER], ids=["syn", "data"])
def test_emitted_dissects_in_scapy(v6: bool, h: TcpHeader) -> None:
    payload = b"x" * 33
    seg = emit_segment(h, payload, v6)
    pkt = over_ip(v6, seg)
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (h.src_port, h.dst_port, h.seq, h.ack)
    assert (int(tcp.flags), tcp.window, tcp.dataofs) == (h.flags, h.window, h.data_offset)
    assert bytes(tcp.payload) == payload
    assert tcp.options == (SYN_OPTIONS if h is SYN_HEADER else DATA_OPTIONS)
    assert tcp.chksum == h.checksum == scapy_checksum(pkt, TCP)  # scapy recomputes the same


@pytest.mark.parametrize("v6", [False, True])
def test_offload_checksum_completes_to_scapy_checksum(v6: bool) -> None:
    """virtio-net NEEDS_CSUM: the field holds the folded pseudo-header sum;
    the kernel sums from csum_start (the TCP header) to the end and inverts."""
    payload = bytes(range(256)) * 5 + b"odd"
    h = TcpHeader(40000, 80, 12345, 67890, PSH | ACK, 1000, options=TcpOptions(timestamp=(9, 8)))
    seg = emit_segment(h, payload, v6, offload=True)
    assert h.checksum == int.from_bytes(seg[16:18], "big")
    assert h.checksum == csum.fold(pseudo(len(seg), v6))
    completed = csum.checksum(seg)  # what the kernel does
    assert completed == scapy_checksum(over_ip(v6, seg), TCP)
    assert completed == TcpHeader.parse(emit_segment(h, payload, v6)).checksum


# --- hypothesis

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
options = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4).map(tuple),
    timestamp=st.none() | st.tuples(u32, u32),
    fastopen=st.none() | st.integers(0, 6).map(lambda n: bytes(2 * n + (n and 2))),
).filter(lambda o: options_len(o) <= 40)
headers = st.builds(
    TcpHeader,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0x1FF),
    window=u16,
    checksum=u16,
    urgent=u16,
    options=options,
)


@given(headers)
def test_roundtrip(h: TcpHeader) -> None:
    buf = bytearray(60)
    n = h.emit(buf)
    assert n == h.header_len and n % 4 == 0
    assert TcpHeader.parse(buf[:n]) == h
    h.summary()


@given(headers, st.binary(max_size=100), st.booleans())
def test_emitted_checksum_verifies(h: TcpHeader, payload: bytes, v6: bool) -> None:
    seg = emit_segment(h, payload, v6)
    TcpView.checked(seg, pseudo=pseudo(len(seg), v6))


def _check_accepted(data: bytes) -> None:
    try:
        v = TcpView.checked(data, pseudo=pseudo(len(data)))
    except MalformedPacket:
        try:
            v = TcpView.checked(data)  # options still walked without the checksum
        except MalformedPacket:
            return
    v.fields()
    _ = (v.src_port, v.dst_port, v.seq, v.ack, v.data_offset, v.flags, v.ae, v.window)
    _ = (v.checksum, v.urgent, bytes(v.payload), bytes(v.options_bytes))
    v.header().summary()
    v.summary()


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    _check_accepted(data)


@given(st.integers(5, 15), st.binary(max_size=40))
def test_arbitrary_options_raise_only_malformed(data_offset: int, opts: bytes) -> None:
    _check_accepted(GOLDEN_DATA[:12] + bytes([data_offset << 4]) + GOLDEN_DATA[13:20] + opts)


def test_offload_without_pseudo_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        TcpHeader(1, 2, 3, 4, ACK, 5).emit(bytearray(20), offload=True)
