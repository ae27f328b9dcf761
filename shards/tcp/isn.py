"""Initial sequence numbers (RFC 6528, keyed with SipHash-2-4) and SYN cookies
(RFC 4987 §3.6).

* :func:`siphash24` — SipHash-2-4 (Aumasson and Bernstein, 2012), pure
  Python, 64-bit output; checked against the reference implementation's 64
  test vectors.
* :class:`IsnGenerator` — RFC 6528 §3: ISN = M + F(localip, localport,
  remoteip, remoteport, secretkey) mod 2**32, M a 4 µs timer (RFC 9293
  §3.4.1), F SipHash-2-4 keyed with the stack's secret (gVisor used Jenkins
  one-at-a-time, Linux uses SipHash over the same
  tuple with a 64 ns clock).
* :class:`SynCookies` — stateless SYN-ACK sequence numbers when the SYN queue
  is full, the Linux layout (net/ipv4/syncookies.c): a keyed hash of the
  4-tuple plus the client's ISN, plus an 8-bit time counter (64 s steps) in
  the top bits, plus a second keyed hash (of the 4-tuple, the counter and,
  unlike Linux, the client's ISN, so that a wrong ISN does not just shift the
  MSS index) plus a 3-bit MSS index in the low 24 bits. A cookie is accepted for two counter
  values (64 to 128 s). The cookie hashes are keyed BLAKE2b (hashlib, in C:
  1 µs against 30 µs for the pure-Python SipHash): cookies are computed
  for every SYN of a flood, ISNs once per connection.

* :class:`TfoCookies` — RFC 7413 §4.1.2 Fast Open cookies: a keyed MAC
  (BLAKE2b, 8 bytes as Linux's) of the client's address, keyed from the
  same secret, so every shard issues and accepts the same cookie.

Sans-I/O: the secret comes from the caller (the stack draws it once from
``os.urandom``) and ``now`` is the shard clock in seconds. ``now`` should
be one clock for all shards (a flow always lands on the same shard, so a
per-process clock is also fine). Left out: encoding window scale, SACK and
ECN in the timestamp option of cookie SYN-ACKs (Linux cookie_init_timestamp):
a connection made from a cookie has no window scaling and no SACK.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence

_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF
_KEY = struct.Struct("<QQ")
_WORD = struct.Struct("<Q")
_PORTS = struct.Struct("!HH")
_COUNT2 = struct.Struct("!II")  # counter, client ISN
SECRET_LEN = 16  # bytes, SipHash key (RFC 6528 §3 recommends at least 128 bits)
ISN_TICK_S = 4e-6  # RFC 6528 §3 / RFC 9293 §3.4.1: M is a timer that ticks every 4 µs
ISN_TICKS_PER_S = 250_000

COOKIE_PERIOD_S = 64.0  # time counter step (Linux: 60 s, tcp_cookie_time)
COOKIE_MAX_AGE = 2  # counter values accepted (Linux MAX_SYNCOOKIE_AGE)
COOKIE_BITS = 24  # low bits: hash + MSS index; high 8 bits: the counter
COOKIE_MASK = (1 << COOKIE_BITS) - 1
# 3-bit MSS table, ascending: the v4 and v6 values seen most (Linux's v4
# table is 536/1300/1440/1460, its v6 table 1220/1420/1440/8940), plus
# PPPoE's 1452 and jumbo frames (9000 - 60). A client below 536 gets 536 as
# in Linux (RFC 9293 §3.7.1 default send MSS).
MSS_TABLE: tuple[int, ...] = (536, 1220, 1300, 1420, 1440, 1452, 1460, 8940)

FourTuple = tuple[bytes, int, bytes, int]  # (local_addr, local_port, remote_addr, remote_port)


def _sip_rounds(v0: int, v1: int, v2: int, v3: int, rounds: int) -> tuple[int, int, int, int]:
    """``rounds`` SipRounds (SipHash paper §2). ``x & m ^ y`` is ``(x & m) ^ y``."""
    m64 = _M64
    for _ in range(rounds):
        v0 = (v0 + v1) & m64
        v1 = ((v1 << 13) | (v1 >> 51)) & m64 ^ v0
        v0 = ((v0 << 32) | (v0 >> 32)) & m64
        v2 = (v2 + v3) & m64
        v3 = ((v3 << 16) | (v3 >> 48)) & m64 ^ v2
        v0 = (v0 + v3) & m64
        v3 = ((v3 << 21) | (v3 >> 43)) & m64 ^ v0
        v2 = (v2 + v1) & m64
        v1 = ((v1 << 17) | (v1 >> 47)) & m64 ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & m64
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` under the 16-byte ``key``, as an int (the
    reference output's 8 bytes read little-endian)."""
    if len(key) != 16:
        raise ValueError(f"SipHash key must be 16 bytes, got {len(key)}")
    k0, k1 = _KEY.unpack(key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(data)
    end = n & ~7
    # c = 2 rounds per word (the message words, then the length word), then
    # d = 4. Used once per connection (SYN cookies use BLAKE2b), so clarity
    # over unrolling.
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    words = [m for (m,) in _WORD.iter_unpack(data[:end])] if end else []
    for m in (*words, last):
        v3 ^= m
        v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 2)
        v0 ^= m
    v2 ^= 0xFF
    v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def _derive(secret: bytes, person: bytes, n: int) -> bytes:
    """A 16-byte key (or ``n`` of them) from a secret of any length >= 16."""
    if len(secret) < SECRET_LEN:
        raise ValueError(f"secret must be at least {SECRET_LEN} bytes, got {len(secret)}")
    if n == 1 and len(secret) == SECRET_LEN:
        return bytes(secret)
    return hashlib.blake2b(secret, digest_size=16 * n, person=person).digest()


def _tuple_bytes(local_addr: bytes, local_port: int, remote_addr: bytes, remote_port: int) -> bytes:
    return b"".join((local_addr, remote_addr, _PORTS.pack(local_port, remote_port)))


class IsnGenerator:
    """RFC 6528 §3 ISNs: ``(M + F(4-tuple, secret)) mod 2**32``."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        self._key = _derive(secret, b"shardnet-isn", 1)

    def offset(
        self, local_addr: bytes, local_port: int, remote_addr: bytes, remote_port: int
    ) -> int:
        """F of RFC 6528 §3: the 4-tuple's constant offset (32 bits)."""
        return (
            siphash24(self._key, _tuple_bytes(local_addr, local_port, remote_addr, remote_port))
            & _M32
        )

    def isn(
        self,
        now: float,
        local_addr: bytes,
        local_port: int,
        remote_addr: bytes,
        remote_port: int,
    ) -> int:
        m = int(now * ISN_TICKS_PER_S)  # RFC 6528 §3: M, 4 µs ticks
        return (m + self.offset(local_addr, local_port, remote_addr, remote_port)) & _M32


class SynCookies:
    """RFC 4987 §3.6 SYN cookies, Linux layout (module docstring).

    ``make`` gives the ISN of the SYN-ACK (for the client's SYN with ISN
    ``client_isn`` and MSS option ``mss``); ``check`` takes the third ACK's
    ``ack - 1`` as ``cookie`` and its ``seq - 1`` as ``client_isn`` and
    returns the MSS to use, or None if the cookie is not ours or too old.
    As in Linux, the MSS index is protected by the hashes only in that a
    forger must know them: whoever saw the SYN-ACK can add 1 to the cookie
    and get the next table entry (harmless: that one can finish the
    handshake anyway)."""

    __slots__ = ("_k1", "_k2", "mss_table", "period_s", "max_age")

    def __init__(
        self,
        secret: bytes,
        *,
        mss_table: Sequence[int] = MSS_TABLE,
        period_s: float = COOKIE_PERIOD_S,
        max_age: int = COOKIE_MAX_AGE,
    ) -> None:
        keys = _derive(secret, b"shardnet-cookie", 2)
        self._k1 = keys[:16]
        self._k2 = keys[16:]
        table = tuple(mss_table)
        if not 1 <= len(table) <= 8 or list(table) != sorted(table) or table[0] < 1:
            raise ValueError("mss_table: 1 to 8 ascending positive values (3 bits)")
        if period_s <= 0 or not 1 <= max_age <= 255:
            raise ValueError("need period_s > 0 and 1 <= max_age <= 255")
        self.mss_table = table
        self.period_s = period_s
        self.max_age = max_age

    def counter(self, now: float) -> int:
        return int(now // self.period_s) & _M32

    def mss_index(self, mss: int) -> int:
        """The largest table entry not above ``mss`` (entry 0 if all are)."""
        table = self.mss_table
        i = len(table) - 1
        while i > 0 and table[i] > mss:
            i -= 1
        return i

    def _h(self, key: bytes, data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, key=key, digest_size=4).digest(), "little")

    def make(self, now: float, tup: FourTuple, client_isn: int, mss: int) -> int:
        t = _tuple_bytes(*tup)
        count = self.counter(now)
        h1 = self._h(self._k1, t)
        h2 = self._h(self._k2, t + _COUNT2.pack(count, client_isn & _M32))
        low = (h2 + self.mss_index(mss)) & COOKIE_MASK
        return (h1 + client_isn + (count << COOKIE_BITS) + low) & _M32

    def check(self, now: float, tup: FourTuple, cookie: int, client_isn: int) -> int | None:
        t = _tuple_bytes(*tup)
        c = (cookie - self._h(self._k1, t) - client_isn) & _M32
        count = self.counter(now)
        diff = (count - (c >> COOKIE_BITS)) & 0xFF
        if diff >= self.max_age:
            return None
        h2 = self._h(self._k2, t + _COUNT2.pack((count - diff) & _M32, client_isn & _M32))
        idx = (c - h2) & COOKIE_MASK
        table = self.mss_table
        return table[idx] if idx < len(table) else None


TFO_COOKIE_LEN = 8  # bytes (Linux TCP_FASTOPEN_COOKIE_SIZE)


class TfoCookies:
    """RFC 7413 §4.1.2: the server's cookie for a client is a MAC of the
    client's IP address under a secret key (and nothing else, so that
    every port and every shard gives the same one). An IPv4-mapped
    address and the plain IPv4 one get the same cookie."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        # Two keys' worth, never the bare secret (which is the ISN key).
        self._key = _derive(secret, b"shardnet-tfo", 2)[:16]

    def make(self, client: bytes) -> bytes:
        if len(client) == 16 and client[:12] == b"\0" * 10 + b"\xff\xff":
            client = client[12:]
        return hashlib.blake2b(client, key=self._key, digest_size=TFO_COOKIE_LEN).digest()

    def check(self, client: bytes, cookie: bytes) -> bool:
        return hmac.compare_digest(self.make(client), cookie)
