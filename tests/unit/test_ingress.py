"""A shard's first step: every frame counted, bad ones dropped by reason,
and nothing a handler does can stop the loop."""

from __future__ import annotations

import logging

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from shardnet.common.checksum import pseudo_header_v4
from shardnet.common.ratelog import RateLimitedLog
from shardnet.common.record import TAG_LOOPED, TAG_WIRE
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ethernet import EthernetView
from shardnet.common.wire.ipv4 import Ipv4View
from shardnet.common.wire.udp import UdpView
from shardnet.shards.counters import ShardCounters
from shardnet.shards.ingress import Ingress

MAC = bytes.fromhex("020000000002")


def frame(**ip: object) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="198.18.0.1", dst="198.18.0.2", **ip)
        / UDP(sport=1, dport=2)
        / b"hi"
    )


def validate_udp(eth: EthernetView, vnet: memoryview) -> None:
    """A stand-in protocol handler: the codecs' checks, as a real one runs them."""
    ip = Ipv4View.checked(eth.payload)
    trusted = bool(vnet) and bool(vnet[0] & 0x03)
    pseudo = None if trusted else pseudo_header_v4(ip.src, ip.dst, 17, len(ip.payload))
    UdpView.checked(ip.payload, pseudo=pseudo)
    SEEN.append(bytes(ip.payload[8:]))


SEEN: list[bytes] = []


def record(raw: bytes | bytearray, tag: int = TAG_WIRE) -> memoryview:
    """A ring record as the dispatcher writes it (common/record.py)."""
    return memoryview(bytes([tag]) + bytes(raw))


@pytest.fixture
def ingress() -> Ingress:
    SEEN.clear()
    ing = Ingress(MAC, ShardCounters())
    ing.register(0x0800, validate_udp)
    return ing


def test_good_frames_pass_and_bad_ones_are_counted_by_reason(ingress: Ingress) -> None:
    ingress.handle_record(record(frame()))
    bad_csum = bytearray(frame())
    bad_csum[-1] ^= 0xFF  # payload byte: the UDP checksum no longer matches
    ingress.handle_record(record(bad_csum))
    bad_version = bytearray(frame())
    bad_version[14] = 0x55
    ingress.handle_record(record(bad_version))
    c = ingress.counters
    assert c.rx_frames == 3 and SEEN == [b"hi"]
    assert c.drops == {("udp", Drop.UDP_BAD_CHECKSUM): 1, ("ipv4", Drop.IPV4_BAD_VERSION): 1}


def test_vnet_header_is_stripped_and_handed_over() -> None:
    """A virtio-net header with NEEDS_CSUM: the L4 checksum is not computed yet."""
    SEEN.clear()
    ing = Ingress(MAC, ShardCounters(), vnet_hdr_len=10)
    ing.register(0x0800, validate_udp)
    bad_csum = bytearray(frame())
    bad_csum[-1] ^= 0xFF
    ing.handle_record(record(bytes([1]) + bytes(9) + bad_csum))
    assert SEEN == [bytes([ord("h"), ord("i") ^ 0xFF])] and not ing.counters.drops


def test_unknown_ethertype_is_unhandled(ingress: Ingress) -> None:
    raw = bytearray(frame())
    raw[12:14] = b"\x88\xb5"
    ingress.handle_record(record(raw))
    assert ingress.counters.unhandled == 1


def test_frames_for_another_mac_are_not_ours(ingress: Ingress) -> None:
    other = bytearray(frame())
    other[0:6] = bytes.fromhex("020000000099")
    ingress.handle_record(record(other))
    assert ingress.counters.not_for_us == 1 and SEEN == []


def test_looped_frames_go_to_the_looped_handler_without_the_mac_check(
    ingress: Ingress,
) -> None:
    """Loopback routing: a frame the stack looped back to itself."""
    ingress.handle_record(record(frame(), TAG_LOOPED))
    assert ingress.counters.unhandled == 1 and SEEN == []  # no looped handler: not looped
    looped: list[bytes] = []
    ingress.register(0x0800, validate_udp, looped=lambda eth, vnet: looped.append(bytes(eth.buf)))
    other = bytearray(frame())
    other[0:6] = bytes(6)
    ingress.handle_record(record(other, TAG_LOOPED))
    assert looped == [bytes(other)] and SEEN == [] and ingress.counters.not_for_us == 0


def test_a_record_with_an_unknown_tag_is_a_bug_not_a_frame(ingress: Ingress) -> None:
    ingress.handle_record(record(frame(), 7))
    assert ingress.counters.internal_errors == 1 and SEEN == []


def test_a_handler_bug_costs_one_frame_not_the_shard(
    ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(eth: object, vnet: object) -> None:
        raise KeyError("bug")

    ingress.register(0x0800, broken)
    for _ in range(20):
        ingress.handle_record(record(frame()))
    assert ingress.counters.internal_errors == 20
    assert sum("frame handler failed" in r.message for r in caplog.records) <= 5  # rate-limited


def test_rate_limited_log_says_how_many_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=1.0, per_interval=2)
    written = [rl(logging.INFO, "x", now=0.1 * i) for i in range(5)]
    assert written == [True, True, False, False, False]
    assert rl(logging.INFO, "y", now=1.5)
    assert caplog.records[-1].message == "y (3 similar lines suppressed)"


# --- the SYN gate --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


_TEMPLATES: dict[tuple[str, bool], bytes] = {}


def syn(i: int, *, flags: str = "S", ident: int = 0, v6: bool = False) -> bytes:
    """A TCP segment from a source of its own (``i``); built once by scapy,
    then patched (the gate reads no checksum)."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6

    key = (flags, v6)
    if key not in _TEMPLATES:
        ip = (
            IPv6(src="2001:db8:5f::1", dst="2001:db8::2")
            if v6
            else IP(src="198.19.0.1", dst="198.18.0.2")
        )
        tcp = TCP(sport=1024, dport=7, flags=flags, seq=0)
        _TEMPLATES[key] = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / tcp)
    f = bytearray(_TEMPLATES[key])
    l4 = 54 if v6 else 34
    f[l4 - 4 : l4] = i.to_bytes(4, "big")  # the source address's last bytes
    f[l4 + 4 : l4 + 8] = (i * 7919 & 0xFFFFFFFF).to_bytes(4, "big")  # the ISN
    if not v6:
        f[18:20] = ident.to_bytes(2, "big")
    return bytes(f)


def gated() -> tuple[Ingress, FakeClock, list[int]]:
    clock = FakeClock()
    seen: list[int] = []
    ingress = Ingress(MAC, ShardCounters(), clock=clock)
    ingress.register(0x0800, lambda eth, vnet: seen.append(1))
    ingress.register(0x86DD, lambda eth, vnet: seen.append(1))
    return ingress, clock, seen


def feed(ingress: Ingress, frames: list[bytes]) -> None:
    for f in frames:
        ingress.handle_record(memoryview(bytes((TAG_WIRE,)) + f))


@pytest.mark.parametrize("v6", [False, True])
def test_syns_beyond_the_rate_are_dropped_and_counted_other_segments_never(v6: bool) -> None:
    from shardnet.shards.ingress import SYN_BURST, SYN_RATE_PER_S

    ingress, clock, seen = gated()
    feed(ingress, [syn(i, v6=v6) for i in range(SYN_BURST + 500)])
    assert len(seen) == SYN_BURST and ingress.counters.by_reason()[Drop.TCP_SYN_OVER_RATE] == 500
    stats = ingress.counters.snapshot(0)
    assert stats.counters["syn_gate_drops"] == 500 and stats.drops["tcp/tcp_syn_over_rate"] == 500
    feed(ingress, [syn(i, flags="A", v6=v6) for i in range(300)])  # established traffic
    feed(ingress, [syn(i, flags="SA", v6=v6) for i in range(300)])  # answers to our SYNs
    assert len(seen) == SYN_BURST + 600
    clock.now += 0.125  # the bucket refills at its rate
    feed(ingress, [syn(10_000 + i, v6=v6) for i in range(1200)])
    assert len(seen) == SYN_BURST + 600 + SYN_RATE_PER_S * 0.125


def test_a_retransmitted_syn_passes_the_gate() -> None:
    """A client's SYN dropped under a flood gets through when it is sent
    again (same addresses, ports and sequence number; another IP ID)."""
    from shardnet.shards.ingress import SYN_BURST

    ingress, _, seen = gated()
    feed(ingress, [syn(i) for i in range(SYN_BURST)])  # the bucket is empty now
    feed(ingress, [syn(50_000, ident=1)])
    assert len(seen) == SYN_BURST and ingress.counters.by_reason()[Drop.TCP_SYN_OVER_RATE] == 1
    feed(ingress, [syn(50_001, ident=5)])  # another flood SYN: dropped
    feed(ingress, [syn(50_000, ident=2)])  # the retransmission
    assert len(seen) == SYN_BURST + 1 and ingress.counters.by_reason()[Drop.TCP_SYN_OVER_RATE] == 2
