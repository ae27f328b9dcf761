"""TCP sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 in spirit).

Plain functions on ints in [0, 2**32), no class (STYLE.md §3). Comparisons
follow Linux's ``before()``/``after()`` (include/net/tcp.h): ``a`` is before
``b`` when the signed 32-bit distance ``a - b`` is negative. Two numbers
exactly 2**31 apart are each "before" the other; RFC 1982 §3.2 leaves that
case undefined, and a TCP never compares numbers that far apart because a
window is at most 2**30 bytes (RFC 7323 §2.3).
"""

from __future__ import annotations

SEQ_MOD = 1 << 32  # RFC 9293 §3.4: sequence space is 0 .. 2**32 - 1
SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` mod 2**32 (``n`` may be negative)."""
    return (a + n) & SEQ_MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a``, in [-2**31, 2**31)."""
    return ((a - b + _HALF) & SEQ_MASK) - _HALF


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` (RFC 9293 §3.4 "<")."""
    return ((a - b) & SEQ_MASK) >= _HALF


def seq_leq(a: int, b: int) -> bool:
    d = (a - b) & SEQ_MASK
    return d == 0 or d >= _HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` comes after ``b``: exactly ``seq_lt(b, a)``."""
    return ((b - a) & SEQ_MASK) >= _HALF


def seq_geq(a: int, b: int) -> bool:
    d = (b - a) & SEQ_MASK
    return d == 0 or d >= _HALF


def seq_in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` in sequence space (RFC 9293 §3.10.7.4
    acceptability tests). A zero ``size`` contains nothing: the RFC's
    zero-window special cases are the caller's."""
    return ((x - start) & SEQ_MASK) < size


def seq_max(a: int, b: int) -> int:
    return b if seq_lt(a, b) else a


def seq_min(a: int, b: int) -> int:
    return a if seq_leq(a, b) else b
