"""The fault injector behind ``--fault``: rates, delays, reordering, parsing."""

from __future__ import annotations

import pytest

from shardnet.common.config import ConfigError
from shardnet.common.fault import REORDER_S, FaultInjector, FaultSpec, mark_ce


def run(spec: str, n: int = 10_000) -> tuple[FaultInjector, list[int]]:
    inj = FaultInjector(FaultSpec.parse(spec))
    out: list[int] = []
    for i in range(n):
        out += inj.apply(i * 0.001, i)
        out += inj.due(i * 0.001)
    out += inj.flush()
    return inj, out


def test_drop_rate_is_about_right_and_seeded() -> None:
    inj, out = run("drop=0.05,seed=1")
    assert 400 < inj.dropped < 600 and len(out) == 10_000 - inj.dropped
    assert run("drop=0.05,seed=1")[1] == out  # same seed, same faults


def test_duplicates_and_reordering_lose_nothing() -> None:
    inj, out = run("dup=0.02,reorder=0.05,seed=2")
    assert sorted(set(out)) == list(range(10_000))
    assert len(out) == 10_000 + inj.duplicated
    assert out != sorted(out) and inj.reordered > 300


def test_delayed_frames_come_back_after_their_delay() -> None:
    inj = FaultInjector(FaultSpec.parse("delay=1,delay_ms=30"))
    assert inj.apply(1.0, "a") == []
    assert inj.next_deadline() == pytest.approx(1.03)
    assert inj.due(1.02) == [] and inj.due(1.03) == ["a"]


def test_a_reordered_frame_is_overtaken() -> None:
    inj = FaultInjector(FaultSpec.parse("reorder=1"))
    assert inj.apply(0.0, "first") == []
    inj.spec = FaultSpec()  # the next one passes
    assert inj.apply(0.0005, "second") == ["second"]
    assert inj.due(REORDER_S) == ["first"]


def test_latency_delays_every_frame_in_order_under_the_reordering() -> None:
    inj = FaultInjector(FaultSpec.parse("latency_ms=10"))
    assert inj.apply(0.0, "a") == [] and inj.apply(0.001, "b") == []
    assert inj.due(0.0105) == ["a"] and inj.due(0.011) == ["b"]
    inj.spec = FaultSpec.parse("latency_ms=10,reorder=1")
    assert inj.apply(1.0, "late") == []
    inj.spec = FaultSpec.parse("latency_ms=10")
    assert inj.apply(1.0005, "early") == []
    assert inj.due(1.0 + 0.010 + REORDER_S) == ["early", "late"]


@pytest.mark.parametrize(
    "text", ["drop=2", "loss=0.1", "drop", "delay_ms=-1", "latency_ms=-1", "seed=x"]
)
def test_bad_specs_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        FaultSpec.parse(text)
    assert "--fault" in str(exc.value) and "\n" not in str(exc.value)


def test_ce_marks_ecn_capable_packets_only() -> None:
    """ce=P: ECT(0)/ECT(1) become CE (RFC 3168 §5), the IPv4 header
    checksum stays right (scapy recomputes it); Not-ECT is left alone."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    v4 = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", tos=0x22) / TCP() / b"x")
    marked = mark_ce(v4)
    assert marked is not None
    ip = Ether(marked)[IP]
    assert ip.tos == 0x23
    good = ip.chksum
    del ip.chksum
    assert IP(bytes(ip)).chksum == good
    v6 = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x01) / TCP())
    m6 = mark_ce(v6)
    assert m6 is not None and Ether(m6)[IPv6].tc == 0x03
    assert mark_ce(bytes(Ether() / IP(tos=0x20) / TCP())) is None
    inj = FaultInjector(FaultSpec.parse("ce=1"))
    assert inj.apply(0.0, (v4, b"")) == [(marked, b"")] and inj.ce_marked == 1
