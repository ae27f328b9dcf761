"""``shardnet bench codecs``: nanoseconds per operation of the wire codecs and
the Internet checksum, measured with ``timeit`` (garbage collection off); each
figure is the median of a few repeats.

Frames fill a 1500-byte IP MTU unless ``--payload`` says otherwise, and sit
in a ``memoryview`` over a ``bytearray`` as they do in the ring. Rows:

* ``parse ..., csum verified``: the ``checked()`` chain Ethernet -> IP ->
  transport with every checksum verified (pseudo-header sum included; for
  IPv6 also ``walk_extensions``), then ``header()`` of every layer;
* ``parse ..., csum offloaded``: the same without checksum verification, as
  on a link whose virtio-net header says DATA_VALID;
* ``parse ..., fields() only``: the hot path of the shard: the ``checked()``
  chain without checksums, then one ``fields()`` per layer (no dataclasses);
* ``build ..., csum computed``: ``emit()`` of every header into a
  preallocated buffer whose payload is already in place, TCP checksum over
  header and payload computed in software;
* ``build ..., csum offloaded``: the same, TCP checksum left to the kernel
  (NEEDS_CSUM: the folded pseudo-header sum is written);
* ``checksum N B``: ``common.checksum.checksum`` of N bytes.

The IPv4/TCP frame carries NOP NOP TS (every Linux data segment), the
IPv6/TCP one timestamps and one SACK block.

    python -m shardnet.scripts.bench_codecs [--quick] [--json] [--payload BYTES]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass

from shardnet.common import checksum as csum
from shardnet.common.addr import parse_ip, parse_mac
from shardnet.common.wire.ethernet import (
    ETH_HEADER_LEN,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
    EthernetView,
)
from shardnet.common.wire.ipv4 import IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, Ipv4View
from shardnet.common.wire.ipv6 import IPV6_HEADER_LEN, Ipv6Header, Ipv6View, walk_extensions
from shardnet.common.wire.tcp import ACK, PSH, TcpHeader, TcpOptions, TcpView
from shardnet.common.wire.udp import UDP_HEADER_LEN, UdpHeader, UdpView

MTU = 1500  # bytes of IP packet, Ethernet
CHECKSUM_SIZES = (1500, 65536)  # bytes
REPEATS, QUICK_REPEATS = 5, 3
TARGET_S, QUICK_TARGET_S = 0.1, 0.002  # seconds per repeat

MAC_DST, MAC_SRC = parse_mac("02:00:00:00:00:02"), parse_mac("02:00:00:00:00:01")
SRC4, DST4 = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
SRC6, DST6 = parse_ip("2001:db8::1"), parse_ip("2001:db8::2")

Op = Callable[[], object]


@dataclass(slots=True)
class Result:
    operation: str
    ns_per_op: float
    number: int  # calls per repeat
    repeats: int


def _payload(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


IpView = Ipv4View | Ipv6View


def _ipv4_checked(data: memoryview, verify: bool) -> tuple[IpView, memoryview, int | None]:
    """The IPv4 layer of a parse: (view, transport segment, pseudo-header
    sum, or None without verification)."""
    ip = Ipv4View.checked(data, verify_checksum=verify)
    seg = ip.payload
    return ip, seg, csum.pseudo_header(ip.src, ip.dst, ip.protocol, len(seg)) if verify else None


def _ipv6_checked(data: memoryview, verify: bool) -> tuple[IpView, memoryview, int | None]:
    """The IPv6 layer of a parse, extension header walk included."""
    ip = Ipv6View.checked(data)
    chain = walk_extensions(ip)
    seg = ip.upper_payload(chain)
    if not verify:
        return ip, seg, None
    return ip, seg, csum.pseudo_header(ip.src, ip.dst, chain.upper_protocol, len(seg))


def _tcp_ops(
    label: str, ip: Ipv4Header | Ipv6Header, options: TcpOptions, payload_len: int | None
) -> dict[str, Op]:
    """Parse and build rows for Ethernet + ``ip`` + TCP with ``options``."""
    tcp = TcpHeader(40000, 443, 0x12345678, 0x9ABCDEF0, PSH | ACK, 502, options=options)
    v6 = isinstance(ip, Ipv6Header)
    ip_len = IPV6_HEADER_LEN if isinstance(ip, Ipv6Header) else ip.header_len
    n = MTU - ip_len - tcp.header_len if payload_len is None else payload_len
    seg_len = tcp.header_len + n
    if isinstance(ip, Ipv6Header):
        ip.payload_length = seg_len
    else:
        ip.total_length = ip_len + seg_len
    ip_checked = _ipv6_checked if v6 else _ipv4_checked
    eth = EthernetHeader(MAC_DST, MAC_SRC, ETHERTYPE_IPV6 if v6 else ETHERTYPE_IPV4)
    l4 = ETH_HEADER_LEN + ip_len
    buf = bytearray(l4 + seg_len)
    buf[l4 + tcp.header_len :] = _payload(n)

    def build(offload: bool) -> None:
        eth.emit(buf)
        ip.emit(buf, ETH_HEADER_LEN)
        pseudo = csum.pseudo_header(ip.src, ip.dst, IPPROTO_TCP, seg_len)
        tcp.emit(buf, l4, pseudo=pseudo, payload_len=n, offload=offload)

    build(False)
    frame = memoryview(bytearray(buf))

    def parse(verify: bool) -> object:
        e = EthernetView.checked(frame)
        i, seg, pseudo = ip_checked(e.payload, verify)
        return e.header(), i.header(), TcpView.checked(seg, pseudo=pseudo).header()

    def hot() -> object:
        e = EthernetView.checked(frame)
        i, seg, _ = ip_checked(e.payload, False)
        return e.ethertype, i.fields(), TcpView.checked(seg).fields()

    _check(parse(True), (eth, ip, tcp))
    return {
        f"parse {label}, csum verified": lambda: parse(True),
        f"parse {label}, csum offloaded": lambda: parse(False),
        f"parse {label}, fields() only": hot,
        f"build {label}, csum computed": lambda: build(False),
        f"build {label}, csum offloaded": lambda: build(True),
    }


def _udp_ops(payload_len: int | None) -> dict[str, Op]:
    """Parse of Ethernet + IPv4 + UDP."""
    n = MTU - 20 - UDP_HEADER_LEN if payload_len is None else payload_len
    total = 20 + UDP_HEADER_LEN + n
    eth = EthernetHeader(MAC_DST, MAC_SRC, ETHERTYPE_IPV4)
    ip = Ipv4Header(SRC4, DST4, IPPROTO_UDP, ident=2, total_length=total)
    udp = UdpHeader(5353, 53, UDP_HEADER_LEN + n)
    l4 = ETH_HEADER_LEN + 20
    buf = bytearray(l4 + UDP_HEADER_LEN + n)
    buf[l4 + UDP_HEADER_LEN :] = _payload(n)
    eth.emit(buf)
    ip.emit(buf, ETH_HEADER_LEN)
    udp.emit(buf, l4, pseudo=csum.pseudo_header(SRC4, DST4, IPPROTO_UDP, udp.length))
    frame = memoryview(buf)

    def parse() -> object:
        e = EthernetView.checked(frame)
        i, seg, pseudo = _ipv4_checked(e.payload, True)
        return e.header(), i.header(), UdpView.checked(seg, pseudo=pseudo).header()

    _check(parse(), (eth, ip, udp))
    return {"parse eth/ipv4/udp, csum verified": parse}


def _checksum_of(data: memoryview) -> Op:
    return lambda: csum.checksum(data)


def _checksum_ops() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for size in CHECKSUM_SIZES:
        data = memoryview(bytearray(_payload(size)))
        ops[f"checksum {size} B"] = _checksum_of(data)
    return ops


def _check(parsed: object, built: tuple[object, ...]) -> None:
    """What the bench parses is what it built (a broken codec must not
    produce figures)."""
    if parsed != built:
        raise RuntimeError(f"bench frame does not round-trip: {parsed!r} != {built!r}")


def operations(payload_len: int | None = None) -> dict[str, Op]:
    """Every measured operation by row name, in table order."""
    ipv4 = Ipv4Header(SRC4, DST4, IPPROTO_TCP, ident=1, df=True)
    ipv6 = Ipv6Header(SRC6, DST6, IPPROTO_TCP)
    timestamps = TcpOptions(timestamp=(1000, 2000))  # NOP NOP TS, as Linux sends data
    sack = TcpOptions(timestamp=(1000, 2000), sack_blocks=((0x12345000, 0x12346000),))
    return (
        _tcp_ops("eth/ipv4/tcp ts", ipv4, timestamps, payload_len)
        | _tcp_ops("eth/ipv6/tcp ts+sack", ipv6, sack, payload_len)
        | _udp_ops(payload_len)
        | _checksum_ops()
    )


def measure(name: str, fn: Op, *, quick: bool = False) -> Result:
    """Median ns per call of ``fn`` over a few repeats, each sized to run
    for about ``TARGET_S`` (``QUICK_TARGET_S`` with ``quick``)."""
    target = QUICK_TARGET_S if quick else TARGET_S
    repeats = QUICK_REPEATS if quick else REPEATS
    timer = timeit.Timer(fn)
    number = 1
    while (elapsed := timer.timeit(number)) < target / 8 and number < 10**8:
        number *= 8
    number = max(1, round(number * target / max(elapsed, 1e-9)))
    runs = timer.repeat(repeat=repeats, number=number)
    return Result(name, statistics.median(runs) / number * 1e9, number, repeats)


def format_table(results: list[Result]) -> str:
    width = max(len("operation"), *(len(r.operation) for r in results))
    lines = [f"{'operation':<{width}}  {'ns/op':>10}"]
    lines += [f"{r.operation:<{width}}  {r.ns_per_op:>10,.0f}" for r in results]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="shardnet bench codecs",
        description="ns per operation of the wire codecs and the checksum",
    )
    p.add_argument("--quick", action="store_true", help="few, short repeats (for tests)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--payload",
        type=int,
        default=None,
        metavar="BYTES",
        help=f"transport payload per frame (default: fill a {MTU}-byte MTU)",
    )
    args = p.parse_args(argv)
    if args.payload is not None and not 0 <= args.payload <= 9000:
        p.error("--payload takes 0 to 9000 bytes")
    return args


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``shardnet bench codecs``; returns the exit status."""
    args = _parse(argv)
    results = [measure(name, fn, quick=args.quick) for name, fn in operations(args.payload).items()]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        payload = "to fill a 1500-byte MTU" if args.payload is None else f"{args.payload} B"
        repeats = results[0].repeats if results else 0
        print(f"shardnet bench codecs: median of {repeats} repeats, payload {payload}")
        print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(run())
