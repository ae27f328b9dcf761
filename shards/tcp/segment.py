"""The segment record the endpoint consumes and produces.

One ``@dataclass(slots=True)`` for both directions (STYLE.md §1: per-packet
records are not frozen). ``Segment.from_view`` builds it from a checked
``TcpView`` (options parsed once); ``OutSegment`` is the same record, and
``header()`` / ``emit()`` turn it back into wire bytes with the codec in
common/wire/tcp.py. Addresses are not in the record: the endpoint knows its
4-tuple, the caller (the shard) adds the IP header.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shardnet.common.wire.tcp import (
    ACK,
    FIN,
    SYN,
    TcpHeader,
    TcpOptions,
    TcpView,
    flags_str,
    parse_options,
)


@dataclass(slots=True)
class Segment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int  # as on the wire (not scaled)
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes | memoryview = b""
    # Outgoing only: a super-segment for the link to cut into segments of
    # this many payload bytes (TSO); 0 for a segment that goes as it is.
    gso_size: int = 0
    # The IP header's ECN field (RFC 3168 §5): as received (CE = 3), or to
    # send (ECT(0) = 2 on new data of an ECN-capable connection).
    ecn: int = 0

    @classmethod
    def from_view(cls, view: TcpView) -> Segment:
        sp, dp, seq, ack, of, win = view.fields()
        return cls(sp, dp, seq, ack, of & 0x1FF, win, parse_options(view), view.payload)

    @property
    def seg_len(self) -> int:
        """RFC 9293 §3.4 SEG.LEN: payload plus one for SYN and one for FIN."""
        n = len(self.payload)
        if self.flags & SYN:
            n += 1
        if self.flags & FIN:
            n += 1
        return n

    def header(self) -> TcpHeader:
        return TcpHeader(
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            self.flags,
            self.window,
            options=self.options,
        )

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        """Header, options and payload at ``offset``; returns the length.
        With ``pseudo`` (the pseudo-header sum) the checksum is computed."""
        h = self.header()
        hlen = h.header_len
        n = len(self.payload)
        buf[offset + hlen : offset + hlen + n] = self.payload
        h.emit(buf, offset, pseudo=pseudo, payload_len=n)
        return hlen + n

    def to_bytes(self, pseudo: int | None = None) -> bytes:
        buf = bytearray(self.header().header_len + len(self.payload))
        self.emit(buf, pseudo=pseudo)
        return bytes(buf)

    def summary(self) -> str:
        s = f"{flags_str(self.flags)} seq {self.seq}"
        if self.flags & ACK:
            s += f" ack {self.ack}"
        return f"{s} win {self.window} len {len(self.payload)}"


OutSegment = Segment  # what poll_transmit() returns (the brief's name)
