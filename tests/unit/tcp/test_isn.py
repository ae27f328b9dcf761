"""SipHash-2-4 against the reference vectors, RFC 6528 ISNs, and SYN cookies
(RFC 4987 §3.6) with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.shards.tcp.isn import (
    COOKIE_PERIOD_S,
    ISN_TICKS_PER_S,
    MSS_TABLE,
    IsnGenerator,
    SynCookies,
    siphash24,
)

KEY = bytes(range(16))
# SipHash-2-4 reference implementation (vectors.h, vectors_sip64): key
# 00 01 .. 0f, message i bytes 00 01 .. (i-1), output as the 8 bytes the
# reference writes (little-endian).
VECTORS = (
    "310e0edd47db6f72",
    "fd67dc93c539f874",
    "5a4fa9d909806c0d",
    "2d7efbd796666785",
    "b7877127e09427cf",
    "8da699cd64557618",
    "cee3fe586e46c9cb",
    "37d1018bf50002ab",
    "6224939a79f5f593",
    "b0e4a90bdf82009e",
    "f3b9dd94c5bb5d7a",
    "a7ad6b22462fb3f4",
    "fbe50e86bc8f1e75",
    "903d84c02756ea14",
    "eef27a8e90ca23f7",
    "e545be4961ca29a1",
    "db9bc2577fcc2a3f",
    "9447be2cf5e99a69",
    "9cd38d96f0b3c14b",
    "bd6179a71dc96dbb",
    "98eea21af25cd6be",
    "c7673b2eb0cbf2d0",
    "883ea3e395675393",
    "c8ce5ccd8c030ca8",
    "94af49f6c650adb8",
    "eab8858ade92e1bc",
    "f315bb5bb835d817",
    "adcf6b0763612e2f",
    "a5c91da7acaa4dde",
    "716595876650a2a6",
    "28ef495c53a387ad",
    "42c341d8fa92d832",
    "ce7cf2722f512771",
    "e37859f94623f3a7",
    "381205bb1ab0e012",
    "ae97a10fd434e015",
    "b4a31508beff4d31",
    "81396229f0907902",
    "4d0cf49ee5d4dcca",
    "5c73336a76d8bf9a",
    "d0a704536ba93e0e",
    "925958fcd6420cad",
    "a915c29bc8067318",
    "952b79f3bc0aa6d4",
    "f21df2e41d4535f9",
    "87577519048f53a9",
    "10a56cf5dfcd9adb",
    "eb75095ccd986cd0",
    "51a9cb9ecba312e6",
    "96afadfc2ce666c7",
    "72fe52975a4364ee",
    "5a1645b276d592a1",
    "b274cb8ebf87870a",
    "6f9bb4203de7b381",
    "eaecb2a30b22a87f",
    "9924a43cc1315724",
    "bd838d3aafbf8db7",
    "0b1a2a3265d51aea",
    "135079a3231ce660",
    "932b2846e4d70666",
    "e1915f5cb1eca46c",
    "f325965ca16d629f",
    "575ff28e60381be5",
    "724506eb4c328a95",
)
A4 = bytes([198, 18, 0, 1])
B4 = bytes([198, 18, 0, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")


@pytest.mark.parametrize("n", range(64))
def test_reference_vectors(n: int) -> None:
    got = siphash24(KEY, bytes(range(n)))
    assert got.to_bytes(8, "little").hex() == VECTORS[n]


def test_paper_vector() -> None:
    # the SipHash paper's Appendix A: 15-byte message 00..0e
    assert siphash24(KEY, bytes(range(15))) == 0xA129CA6149BE45E5


def test_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(40))
    want = siphash24(KEY, data)
    assert siphash24(KEY, bytearray(data)) == want
    assert siphash24(bytearray(KEY), memoryview(data)) == want


@pytest.mark.parametrize("n", [0, 15, 17, 32])
def test_key_must_be_16_bytes(n: int) -> None:
    with pytest.raises(ValueError):
        siphash24(bytes(n), b"x")


# -------------------------------------------------------------------- ISN


def test_isn_is_clock_plus_keyed_hash() -> None:
    # RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, key)
    gen = IsnGenerator(KEY)
    f = gen.offset(A4, 80, B4, 40000)
    assert f == siphash24(KEY, A4 + B4 + (80).to_bytes(2, "big") + (40000).to_bytes(2, "big")) & (
        2**32 - 1
    )
    assert gen.isn(0.0, A4, 80, B4, 40000) == f
    assert gen.isn(1e-3, A4, 80, B4, 40000) == (f + 250) % 2**32


def test_isn_clock_ticks_every_4_microseconds() -> None:
    # RFC 6528 §3 / RFC 9293 §3.4.1: two opens of the
    # same 4-tuple dt apart differ by dt / 4 us
    gen = IsnGenerator(KEY)
    a = gen.isn(100.0, A6, 443, B6, 50000)
    b = gen.isn(101.0, A6, 443, B6, 50000)
    assert (b - a) % 2**32 == ISN_TICKS_PER_S == 250_000
    assert gen.isn(100.0 + 3e-6, A6, 443, B6, 50000) == a  # within one tick
    # the clock wraps after 2**32 ticks (about 4.77 hours)
    period = 2**32 / ISN_TICKS_PER_S
    assert gen.isn(100.0 + period, A6, 443, B6, 50000) == a


def test_isn_differs_by_tuple_and_by_secret() -> None:
    gen = IsnGenerator(KEY)
    other = IsnGenerator(bytes(16))
    base = gen.isn(5.0, A4, 80, B4, 40000)
    variants = {
        gen.isn(5.0, A4, 80, B4, 40001),
        gen.isn(5.0, A4, 81, B4, 40000),
        gen.isn(5.0, B4, 80, A4, 40000),
        gen.isn(5.0, A4, 40000, B4, 80),
        other.isn(5.0, A4, 80, B4, 40000),
    }
    assert base not in variants and len(variants) == 5
    assert 0 <= base < 2**32


def test_isn_secret_length() -> None:
    with pytest.raises(ValueError):
        IsnGenerator(bytes(15))
    long = IsnGenerator(bytes(range(32)))  # derived key
    assert long.isn(1.0, A4, 1, B4, 2) != IsnGenerator(bytes(range(16))).isn(1.0, A4, 1, B4, 2)


# ------------------------------------------------------------ SYN cookies

TUP = (A4, 80, B4, 40000)
TUP6 = (A6, 443, B6, 50000)


@pytest.mark.parametrize("mss", MSS_TABLE)
def test_cookie_round_trip_for_every_table_entry(mss: int) -> None:
    sc = SynCookies(KEY)
    for tup in (TUP, TUP6):
        cookie = sc.make(10.0, tup, 123456789, mss)
        assert 0 <= cookie < 2**32
        assert sc.check(10.0, tup, cookie, 123456789) == mss


@pytest.mark.parametrize(
    ("client_mss", "got"),
    [(1, 536), (535, 536), (1000, 536), (1459, 1452), (1460, 1460), (65535, 8940)],
)
def test_cookie_mss_is_rounded_down_to_the_table(client_mss: int, got: int) -> None:
    sc = SynCookies(KEY)
    cookie = sc.make(0.0, TUP, 7, client_mss)
    assert sc.check(0.0, TUP, cookie, 7) == got


def test_cookie_rejects_other_tuples_isns_and_values() -> None:
    sc = SynCookies(KEY)
    cookie = sc.make(0.0, TUP, 1000, 1460)
    assert sc.check(0.0, (A4, 80, B4, 40001), cookie, 1000) is None
    assert sc.check(0.0, (B4, 80, A4, 40000), cookie, 1000) is None
    assert sc.check(0.0, TUP, cookie, 1001) is None
    assert sc.check(0.0, TUP, (cookie + 8) % 2**32, 1000) is None  # index out of the table
    assert sc.check(0.0, TUP, (cookie + (3 << 24)) % 2**32, 1000) is None  # counter
    assert sc.check(0.0, TUP, (cookie + (1 << 23)) % 2**32, 1000) is None  # hash bits
    assert SynCookies(bytes(16)).check(0.0, TUP, cookie, 1000) is None


def test_cookie_is_valid_for_two_counter_values() -> None:
    # Linux-style: a 64 s counter, accepted when 0 or 1 steps old
    sc = SynCookies(KEY)
    p = COOKIE_PERIOD_S
    cookie = sc.make(10 * p, TUP, 42, 1440)
    assert sc.check(10 * p, TUP, cookie, 42) == 1440
    assert sc.check(11 * p - 0.001, TUP, cookie, 42) == 1440
    assert sc.check(11 * p, TUP, cookie, 42) == 1440
    assert sc.check(12 * p - 0.001, TUP, cookie, 42) == 1440
    assert sc.check(12 * p, TUP, cookie, 42) is None
    # from the future (the clock went backwards): refused
    assert sc.check(9 * p, TUP, cookie, 42) is None
    # the 8-bit counter wraps after 256 steps, but the second hash has the
    # whole counter: still refused
    assert sc.check(10 * p + 256 * p, TUP, cookie, 42) is None


def test_cookie_configuration() -> None:
    sc = SynCookies(KEY, mss_table=(536, 1460), period_s=1.0, max_age=3)
    cookie = sc.make(0.0, TUP, 1, 9000)
    assert sc.check(2.5, TUP, cookie, 1) == 1460
    assert sc.check(3.0, TUP, cookie, 1) is None
    for bad in (
        {"mss_table": ()},
        {"mss_table": tuple(range(1, 10))},
        {"mss_table": (1460, 536)},
        {"period_s": 0.0},
        {"max_age": 0},
    ):
        with pytest.raises(ValueError):
            SynCookies(KEY, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SynCookies(bytes(8))


@given(
    st.binary(min_size=16, max_size=16),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(1, 65535),
    st.floats(0, 1e7),
    st.floats(0, COOKIE_PERIOD_S),
)
def test_cookie_round_trip_property(
    secret: bytes, lport: int, rport: int, isn: int, mss: int, now: float, later: float
) -> None:
    sc = SynCookies(secret)
    tup = (A6, lport, B6, rport)
    cookie = sc.make(now, tup, isn, mss)
    expect = MSS_TABLE[sc.mss_index(mss)]
    assert sc.check(now + later, tup, cookie, isn) == expect
