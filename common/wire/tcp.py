"""TCP header and options (RFC 9293 §3.1, §3.2).

Options: MSS (RFC 9293 §3.2), window scale (RFC 7323 §2), SACK-permitted and
SACK (RFC 2018), timestamps (RFC 7323 §3), TCP Fast Open (RFC 7413 §4.1.1,
kind 34: an empty option asks for a cookie, a 4 to 16 byte even-length
cookie is one; other lengths are ignored, as Linux does). ``checked()`` walks and validates
the whole options area; the options are *parsed* only when asked
(``parse_options``), so the data path pays for one ``unpack_from``.

Checksums: verified in ``checked()`` when the caller passes the pseudo-header
sum (``pseudo=None`` skips it, for a link that marked it valid). ``emit()``
either computes the full checksum over header and payload, or, for checksum
offload, writes the folded *non-inverted* pseudo-header sum, which is what a
virtio-net header with ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` expects (the kernel sums
from ``csum_start`` to the end and stores the complement at ``csum_offset``,
virtio 1.1 §5.1.6.2).

Flags: the eight control bits of RFC 9293 §3.1 plus ``AE`` (0x100), the bit
just below them in the reserved nibble (RFC 3540's NS, historic; AE in
AccECN). It is parsed and emitted, as scapy and tcpdump do, but the stack
does not act on it. The other three reserved bits are ignored on receipt and
sent as zero (RFC 9293 §3.1).

Left out: TCP-AO/MD5 (RFC 5925/2385), the experimental Fast Open kind
254/0xF989 (Linux's client and server use kind 34), MPTCP
(RFC 8684), user timeout (RFC 5482) and the rest: unknown options are
validated for length and skipped. Duplicate options: the last one wins.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .. import checksum as csum
from .errors import Drop, MalformedPacket

TCP_HEADER_LEN = 20  # bytes, without options (RFC 9293 §3.1)
TCP_MAX_HEADER_LEN = 60  # data offset is 4 bits of 32-bit words
TCP_MAX_OPTIONS_LEN = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN

# Control bits (RFC 9293 §3.1; ECE/CWR RFC 3168 §6.1; AE see module docstring).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80
AE = 0x100
FLAGS_MASK = 0x1FF  # of the 16-bit data offset / flags word

# Option kinds (IANA "TCP Option Kind Numbers").
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2  # RFC 9293 §3.2
OPT_WINDOW_SCALE = 3  # RFC 7323 §2.2
OPT_SACK_PERMITTED = 4  # RFC 2018 §2
OPT_SACK = 5  # RFC 2018 §3
OPT_TIMESTAMP = 8  # RFC 7323 §3.2
OPT_FASTOPEN = 34  # RFC 7413 §4.1.1

TFO_COOKIE_MIN = 4  # bytes, RFC 7413 §4.1.1
TFO_COOKIE_MAX = 16

MAX_WINDOW_SCALE = 14  # RFC 7323 §2.3: a larger shift count is used as 14
MAX_SACK_BLOCKS = 4  # RFC 2018 §3: 2 + 8 * 4 = 34 of the 40 option bytes
_FIXED_LEN = {OPT_MSS: 4, OPT_WINDOW_SCALE: 3, OPT_SACK_PERMITTED: 2, OPT_TIMESTAMP: 10}

# Offset of TSval from the start of a header emitted by emit_options() with
# a timestamp and no MSS (NOP NOP TS, or SACK-permitted TS).
TS_VALUE_OFFSET = 24

_TCP = struct.Struct("!HHIIHHHH")
_HOT = struct.Struct("!HHIIHH")  # src_port dst_port seq ack offset_flags window
_PATCH = struct.Struct("!IIBBHH")  # at +4: seq ack offset/AE flags window checksum
_U16 = struct.Struct("!H")
_II = struct.Struct("!II")  # seq ack, or TSval TSecr
_OPT4 = struct.Struct("!BBBB")
_OPT_MSS = struct.Struct("!BBH")
_OPT_TS = struct.Struct("!BBBBII")  # two bytes of NOP or SACK-permitted, then TS
_SACK = {n: struct.Struct(f"!{2 * n}I") for n in range(1, MAX_SACK_BLOCKS + 1)}
_NOP_NOP_TS = b"\x01\x01\x08\x0a"

_FLAG_CHARS = (
    (FIN, "F"),
    (SYN, "S"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "."),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "W"),
    (AE, "e"),
)  # tcpdump print-tcp.c order


def flags_str(flags: int) -> str:
    """tcpdump's spelling: SYN|ACK is "S.", no flags is "none"."""
    return "".join(c for bit, c in _FLAG_CHARS if flags & bit) or "none"


@dataclass(slots=True)
class TcpOptions:
    mss: int | None = None
    window_scale: int | None = None  # shift count, clamped to 14 when parsed
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()  # (left edge, right edge)
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)
    # RFC 7413: None no option, b"" a cookie request, else the cookie
    fastopen: bytes | None = None


def _bad(detail: str) -> MalformedPacket:
    return MalformedPacket(Drop.TCP_BAD_OPTION, detail, layer="tcp")


def _walk_options(buf: memoryview, end: int, out: TcpOptions | None) -> None:
    """Validate the options in ``buf[20:end]``; fill ``out`` if given."""
    i = TCP_HEADER_LEN
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:  # RFC 9293 §3.2: the rest is padding
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise _bad(f"kind {kind} at {i} has no length")
        length = buf[i + 1]
        if length < 2 or i + length > end:
            raise _bad(f"kind {kind} at {i} length {length}, header {end}")
        want = _FIXED_LEN.get(kind)
        if want is not None and length != want:
            raise _bad(f"kind {kind} length {length}, want {want}")
        if kind == OPT_SACK and (length < 10 or length > 34 or (length - 2) % 8):
            raise _bad(f"SACK length {length}")
        if out is not None:
            if kind == OPT_MSS:
                out.mss = _U16.unpack_from(buf, i + 2)[0]
            elif kind == OPT_WINDOW_SCALE:
                # RFC 7323 §2.3: "MUST use 14 instead of the specified value".
                out.window_scale = min(buf[i + 2], MAX_WINDOW_SCALE)
            elif kind == OPT_SACK_PERMITTED:
                out.sack_permitted = True
            elif kind == OPT_SACK:
                edges = _SACK[(length - 2) // 8].unpack_from(buf, i + 2)
                out.sack_blocks = tuple(zip(edges[::2], edges[1::2], strict=True))
            elif kind == OPT_TIMESTAMP:
                out.timestamp = _II.unpack_from(buf, i + 2)
            elif kind == OPT_FASTOPEN:
                n = length - 2
                # RFC 7413 §4.1.1: 4 to 16 bytes; Linux also wants an even length
                if n == 0 or (TFO_COOKIE_MIN <= n <= TFO_COOKIE_MAX and not n & 1):
                    out.fastopen = bytes(buf[i + 2 : i + length])
        i += length


def _format_options(buf: memoryview | bytearray, start: int, end: int) -> str:
    """tcpdump-like option list of validated bytes, in wire order."""
    parts: list[str] = []
    i = start
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:
            parts.append("eol")
            break
        if kind == OPT_NOP:
            parts.append("nop")
            i += 1
            continue
        length = buf[i + 1]
        if kind == OPT_MSS:
            parts.append(f"mss {_U16.unpack_from(buf, i + 2)[0]}")
        elif kind == OPT_WINDOW_SCALE:
            parts.append(f"wscale {buf[i + 2]}")
        elif kind == OPT_SACK_PERMITTED:
            parts.append("sackOK")
        elif kind == OPT_SACK:
            n = (length - 2) // 8
            e = _SACK[n].unpack_from(buf, i + 2)
            blocks = "".join(f"{{{e[k]}:{e[k + 1]}}}" for k in range(0, 2 * n, 2))
            parts.append(f"sack {n} {blocks}")
        elif kind == OPT_TIMESTAMP:
            parts.append("TS {} {}".format(*_II.unpack_from(buf, i + 2)))
        elif kind == OPT_FASTOPEN:
            cookie = bytes(buf[i + 2 : i + length]).hex()
            parts.append(f"tfo cookie {cookie}" if cookie else "tfo cookiereq")
        else:
            parts.append(f"unknown-{kind}")
        i += length
    return ",".join(parts)


def _summary(
    sp: int, dp: int, seq: int, ack: int, flags: int, win: int, urg: int, n: int, opts: str
) -> str:
    s = f"TCP {sp} > {dp} [{flags_str(flags)}] seq {seq}"
    if flags & ACK:
        s += f" ack {ack}"
    s += f" win {win}"
    if flags & URG:
        s += f" urg {urg}"
    s += f" len {n}"
    return f"{s} <{opts}>" if opts else s


class TcpView:
    """Zero-copy view of a TCP segment (header, options, payload)."""

    __slots__ = ("buf", "header_len")

    def __init__(self, buf: memoryview, header_len: int = TCP_HEADER_LEN) -> None:
        self.buf = buf  # unchecked: for our own output
        self.header_len = header_len  # bytes, options included

    @classmethod
    def checked(cls, buf: bytes | bytearray | memoryview, *, pseudo: int | None = None) -> TcpView:
        """Validate ``buf`` (the whole IP payload: TCP has no length field).
        ``pseudo`` is the pseudo-header sum over ``len(buf)`` to verify
        against, or None to skip verification."""
        buf = memoryview(buf)
        n = len(buf)
        if n < TCP_HEADER_LEN:
            raise MalformedPacket(Drop.TCP_TRUNCATED, f"{n} bytes", layer="tcp")
        hlen = (buf[12] >> 4) << 2
        if hlen < TCP_HEADER_LEN or hlen > n:
            raise MalformedPacket(
                Drop.TCP_BAD_DATA_OFFSET, f"header {hlen}, {n} bytes", layer="tcp"
            )
        if pseudo is not None and not csum.verify(buf, pseudo):
            raise MalformedPacket(Drop.TCP_BAD_CHECKSUM, layer="tcp")
        # Fast path: the NOP NOP TS that every Linux data segment carries.
        if hlen > TCP_HEADER_LEN and not (hlen == 32 and buf[20:24] == _NOP_NOP_TS):
            _walk_options(buf, hlen, None)
        return cls(buf, hlen)

    def fields(self) -> tuple[int, int, int, int, int, int]:
        """(src_port, dst_port, seq, ack, offset_flags, window) in one call;
        ``offset_flags & FLAGS_MASK`` are the flags."""
        return _HOT.unpack_from(self.buf)

    @property
    def src_port(self) -> int:
        return (self.buf[0] << 8) | self.buf[1]

    @property
    def dst_port(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def seq(self) -> int:
        return _II.unpack_from(self.buf, 4)[0]

    @property
    def ack(self) -> int:
        return _II.unpack_from(self.buf, 4)[1]

    @property
    def data_offset(self) -> int:
        """Header length in 32-bit words."""
        return self.header_len >> 2

    @property
    def flags(self) -> int:
        return ((self.buf[12] << 8) | self.buf[13]) & FLAGS_MASK

    @property
    def ae(self) -> bool:
        return bool(self.buf[12] & 0x01)

    @property
    def window(self) -> int:
        return (self.buf[14] << 8) | self.buf[15]

    @property
    def checksum(self) -> int:
        return (self.buf[16] << 8) | self.buf[17]

    @property
    def urgent(self) -> int:
        return (self.buf[18] << 8) | self.buf[19]

    @property
    def options_bytes(self) -> memoryview:
        """The raw options area (padding included)."""
        return self.buf[TCP_HEADER_LEN : self.header_len]

    @property
    def payload(self) -> memoryview:
        return self.buf[self.header_len :]

    def header(self) -> TcpHeader:
        sp, dp, seq, ack, of, win, cs, urg = _TCP.unpack_from(self.buf)
        return TcpHeader(sp, dp, seq, ack, of & FLAGS_MASK, win, cs, urg, parse_options(self))

    def summary(self) -> str:
        """One line, options in wire order."""
        sp, dp, seq, ack, of, win, _, urg = _TCP.unpack_from(self.buf)
        opts = _format_options(self.buf, TCP_HEADER_LEN, self.header_len)
        n = len(self.buf) - self.header_len
        return _summary(sp, dp, seq, ack, of & FLAGS_MASK, win, urg, n, opts)


def parse_options(view: TcpView) -> TcpOptions:
    """The options of a checked view (cannot raise then)."""
    opts = TcpOptions()
    buf, hlen = view.buf, view.header_len
    if hlen == 32 and buf[20:24] == _NOP_NOP_TS:
        opts.timestamp = _II.unpack_from(buf, 24)
    elif hlen > TCP_HEADER_LEN:
        _walk_options(buf, hlen, opts)
    return opts


def options_len(opts: TcpOptions) -> int:
    """Bytes ``emit_options`` writes (a multiple of 4)."""
    n = 0
    if opts.mss is not None:
        n += 4
    if opts.timestamp is not None:
        n += 12
    elif opts.sack_permitted:
        n += 4
    if opts.window_scale is not None:
        n += 4
    if opts.sack_blocks:
        n += 4 + 8 * len(opts.sack_blocks)
    if opts.fastopen is not None:
        n += (2 + len(opts.fastopen) + 3) & ~3
    return n


def emit_options(opts: TcpOptions, buf: bytearray | memoryview, offset: int) -> int:
    """Write ``opts`` at ``offset`` in Linux's layout (tcp_options_write()),
    NOP-padded to a multiple of 4; returns the bytes written. A SYN gets
    "MSS, SACK-permitted, TS, NOP, wscale" (SACK-permitted takes the place of
    the two NOPs before TS), then Fast Open NOP-padded; a data segment
    "NOP NOP TS, NOP NOP SACK".
    Raises ValueError if they do not fit in 40 bytes."""
    n = options_len(opts)
    if n == 0:
        return 0
    if n > TCP_MAX_OPTIONS_LEN or len(opts.sack_blocks) > MAX_SACK_BLOCKS:
        raise ValueError(f"TCP options need {n} bytes, {len(opts.sack_blocks)} SACK blocks")
    i = offset
    if opts.mss is not None:
        _OPT_MSS.pack_into(buf, i, OPT_MSS, 4, opts.mss)
        i += 4
    if opts.timestamp is not None:
        a, b = (OPT_SACK_PERMITTED, 2) if opts.sack_permitted else (OPT_NOP, OPT_NOP)
        _OPT_TS.pack_into(buf, i, a, b, OPT_TIMESTAMP, 10, *opts.timestamp)
        i += 12
    elif opts.sack_permitted:
        _OPT4.pack_into(buf, i, OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2)
        i += 4
    if opts.window_scale is not None:
        _OPT4.pack_into(buf, i, OPT_NOP, OPT_WINDOW_SCALE, 3, opts.window_scale)
        i += 4
    if opts.sack_blocks:
        k = len(opts.sack_blocks)
        _OPT4.pack_into(buf, i, OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * k)
        _SACK[k].pack_into(buf, i + 4, *(e for block in opts.sack_blocks for e in block))
        i += 4 + 8 * k
    if opts.fastopen is not None:
        cookie = opts.fastopen
        end = i + 2 + len(cookie)
        buf[i] = OPT_FASTOPEN
        buf[i + 1] = 2 + len(cookie)
        buf[i + 2 : end] = cookie
        while end & 3 != offset & 3:
            buf[end] = OPT_NOP
            end += 1
        i = end
    return i - offset


@dataclass(slots=True)
class TcpHeader:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int  # FIN..CWR, AE
    window: int  # unscaled, as on the wire
    checksum: int = 0
    urgent: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)

    @property
    def header_len(self) -> int:
        return TCP_HEADER_LEN + options_len(self.options)

    @property
    def data_offset(self) -> int:
        return self.header_len >> 2

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, *, pseudo: int | None = None) -> TcpHeader:
        return TcpView.checked(buf, pseudo=pseudo).header()

    def emit(
        self,
        buf: bytearray | memoryview,
        offset: int = 0,
        *,
        pseudo: int | None = None,
        payload_len: int = 0,
        offload: bool = False,
    ) -> int:
        """Write header and options at ``offset``; returns the header length.

        ``pseudo`` is the pseudo-header sum over the whole TCP length
        (header + payload). Without it ``self.checksum`` is written as is.
        With it and ``offload=False``, the ``payload_len`` payload bytes must
        already follow the header in ``buf``: the checksum is computed over
        both. With ``offload=True`` the folded, non-inverted ``pseudo`` is
        written for the kernel to finish (virtio-net NEEDS_CSUM) and the
        payload need not be in ``buf``. Either way the value written is also
        stored in ``self.checksum``."""
        hlen = TCP_HEADER_LEN + emit_options(self.options, buf, offset + TCP_HEADER_LEN)
        of = (hlen << 10) | (self.flags & FLAGS_MASK)  # (hlen // 4) << 12
        if offload:
            if pseudo is None:
                raise ValueError("offload needs the pseudo-header sum")
            self.checksum = csum.fold(pseudo)
        full = None if offload else pseudo  # the pseudo-header sum when we sum it all
        cs, h = (0 if full is not None else self.checksum), self
        _TCP.pack_into(
            buf, offset, h.src_port, h.dst_port, h.seq, h.ack, of, h.window, cs, h.urgent
        )
        if full is not None:
            seg = memoryview(buf)[offset : offset + hlen + payload_len]
            self.checksum = csum.checksum(seg, full)
            _U16.pack_into(buf, offset + 16, self.checksum)
        return hlen

    def summary(self, payload_len: int = 0) -> str:
        """One line; options in the order ``emit`` lays them out."""
        scratch = bytearray(TCP_MAX_OPTIONS_LEN)
        n = emit_options(self.options, scratch, 0)
        opts = _format_options(scratch, 0, n)
        h = self
        return _summary(
            h.src_port, h.dst_port, h.seq, h.ack, h.flags, h.window, h.urgent, payload_len, opts
        )


def patch_header(
    buf: bytearray | memoryview,
    offset: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    checksum: int = 0,
) -> None:
    """Hot path for our own output: overwrite seq, ack, flags, window and
    checksum of a header template already emitted at ``offset`` (ports, data
    offset, urgent pointer and options stay). One ``pack_into``."""
    _PATCH.pack_into(
        buf,
        offset + 4,
        seq,
        ack,
        (buf[offset + 12] & 0xF0) | (flags >> 8),
        flags & 0xFF,
        window,
        checksum,
    )


def patch_timestamp(buf: bytearray | memoryview, offset: int, tsval: int, tsecr: int) -> None:
    """Overwrite TSval/TSecr of a template emitted at ``offset`` from
    ``TcpOptions`` with a timestamp and no MSS (see ``TS_VALUE_OFFSET``)."""
    _II.pack_into(buf, offset + TS_VALUE_OFFSET, tsval, tsecr)
