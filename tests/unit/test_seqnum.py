"""Sequence-number arithmetic mod 2**32 (RFC 9293 §3.4): examples at the wrap
and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shardnet.common.seqnum import (
    seq_add,
    seq_geq,
    seq_gt,
    seq_in_window,
    seq_leq,
    seq_lt,
    seq_max,
    seq_min,
    seq_sub,
)

M = 1 << 32
H = 1 << 31
seqs = st.integers(0, M - 1)
dists = st.integers(-H, H - 1)  # the range of seq_sub


def test_examples_across_the_wrap() -> None:
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_add(5, -10) == 0xFFFFFFFB
    assert seq_sub(0x10, 0xFFFFFFF0) == 0x20
    assert seq_sub(0xFFFFFFF0, 0x10) == -0x20
    assert seq_lt(0xFFFFFFF0, 0x10) and not seq_lt(0x10, 0xFFFFFFF0)
    assert seq_gt(0x10, 0xFFFFFFF0) and seq_geq(0x10, 0xFFFFFFF0)
    assert seq_leq(7, 7) and seq_geq(7, 7) and not seq_lt(7, 7) and not seq_gt(7, 7)
    assert seq_in_window(2, 0xFFFFFFFE, 5) and not seq_in_window(3, 0xFFFFFFFE, 5)
    assert seq_in_window(0xFFFFFFFE, 0xFFFFFFFE, 1) and not seq_in_window(0xFFFFFFFD, 0xFFFFFFFE, 5)
    assert not seq_in_window(0, 0, 0)
    assert seq_max(0xFFFFFFF0, 0x10) == 0x10 and seq_min(0xFFFFFFF0, 0x10) == 0xFFFFFFF0


def test_half_space_is_before_both_ways() -> None:
    # Linux before()/after(): numbers 2**31 apart are each "before" the other.
    assert seq_sub(0, H) == seq_sub(H, 0) == -H
    assert seq_lt(0, H) and seq_lt(H, 0)


@pytest.mark.parametrize("a", [0, 1, H - 1, H, M - 1])
def test_sub_range(a: int) -> None:
    for b in (0, 1, H - 1, H, H + 1, M - 1):
        assert -H <= seq_sub(a, b) < H


@given(seqs, dists)
def test_add_then_sub_is_identity(a: int, n: int) -> None:
    assert seq_sub(seq_add(a, n), a) == n


@given(seqs, seqs)
def test_sub_then_add_is_identity(a: int, b: int) -> None:
    assert seq_add(b, seq_sub(a, b)) == a


@given(seqs, seqs)
def test_antisymmetry_and_trichotomy(a: int, b: int) -> None:
    assert seq_lt(a, b) == seq_gt(b, a)
    assert seq_leq(a, b) == seq_geq(b, a)
    assert seq_leq(a, b) == (seq_lt(a, b) or a == b)
    assert seq_geq(a, b) == (seq_gt(a, b) or a == b)
    assume(seq_sub(a, b) != -H)  # 2**31 apart: undefined (RFC 1982 §3.2)
    assert seq_lt(a, b) != seq_lt(b, a) or a == b
    assert [seq_lt(a, b), a == b, seq_gt(a, b)].count(True) == 1
    assert seq_sub(a, b) == -seq_sub(b, a)


@given(seqs, seqs, seqs)
def test_translation_invariant_across_2_32(a: int, b: int, k: int) -> None:
    # Shifting both numbers, wrapping past 2**32, keeps every relation.
    a2, b2 = seq_add(a, k), seq_add(b, k)
    assert seq_sub(a2, b2) == seq_sub(a, b)
    assert (seq_lt(a2, b2), seq_leq(a2, b2)) == (seq_lt(a, b), seq_leq(a, b))
    assert (seq_gt(a2, b2), seq_geq(a2, b2)) == (seq_gt(a, b), seq_geq(a, b))


@given(seqs, st.integers(1, H - 1))
def test_add_positive_is_after(a: int, n: int) -> None:
    assert seq_lt(a, seq_add(a, n)) and seq_gt(seq_add(a, n), a)


@given(seqs, st.integers(0, M - 1), st.integers(0, H))
def test_in_window(start: int, k: int, size: int) -> None:
    assert seq_in_window(seq_add(start, k), start, size) == (k < size)


@given(seqs, seqs)
def test_max_min(a: int, b: int) -> None:
    assume(seq_sub(a, b) != -H)
    hi, lo = seq_max(a, b), seq_min(a, b)
    assert {hi, lo} == {a, b}
    assert seq_geq(hi, lo)
    assert hi == seq_max(b, a) and lo == seq_min(b, a)
