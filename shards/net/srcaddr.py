"""Source address selection, RFC 6724 §5 (all eight rules), and destination
address ordering, RFC 6724 §6.

Implements:
  * the default policy table (RFC 6724 §2.1) and longest-prefix lookup in it;
  * scopes (RFC 6724 §3.1, RFC 4291): multicast scope from the address;
    link-local fe80::/10 and loopback ::1 link-local (0x2, RFC 4007 §4); the
    deprecated site-local fec0::/10 site-local (0x5, RFC 3879); unique local
    fc00::/7 GLOBAL (0xe) — RFC 6724 separates ULAs through the policy table
    (rule 6), not through scope (gVisor once gave ULAs their own
    scope between link-local and global); everything else global;
  * IPv4 (RFC 6724 §3.2): 127/8 and 169.254/16 link-local, all else global,
    and IPv4 addresses looked up in the policy table as ::ffff:a.b.c.d;
  * tentative addresses are never candidates (RFC 4862 §5.4);
  * ``sort_destinations``: RFC 6724 §6 rules 1-6 and 8-10 (rule 7, native
    transport, has no input here: every destination is native).

Rule 7 (temporary addresses, RFC 8981): RFC 6724 §5 makes "prefer
temporary" the default (RFC 3484 preferred public addresses) and requires a
way for the application to reverse it (RFC 5014 IPV6_PREFER_SRC_PUBLIC);
RFC 8981, which obsoletes RFC 4941, keeps that default. So
``prefer_temporary`` defaults to True here. The stack passes it per NIC as
Linux's ``use_tempaddr`` does: True with 2, False with 1 (temporary
addresses exist, the stable ones are chosen); ``ndp`` generates them.

Rule 8 uses CommonPrefixLen(S, D) bounded by S's prefix length (RFC 6724
§2.2) and only for IPv6: for IPv4 every candidate has the same label and the
longest-match rule is what RFC 6724 §10.5 found harmful (it defeats DNS
round-robin) — it is applied to IPv6 only in both §5 and §6 here.

Final tie-break: the lower ``position`` (the NIC's primary list order, as gVisor breaks ties),
then the NIC id and the address, so the result does not depend on the order
of the candidates.

Left out: rule 5.5 (prefer a source in a prefix advertised by the next hop,
RFC 8028) and privacy extensions' per-application settings beyond the flag.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from shardnet.common.addr import format_ip, parse_ip

# RFC 4291 §2.7 / RFC 7346 scope values.
SCOPE_INTERFACE_LOCAL = 0x1
SCOPE_LINK_LOCAL = 0x2
SCOPE_ADMIN_LOCAL = 0x4
SCOPE_SITE_LOCAL = 0x5
SCOPE_ORG_LOCAL = 0x8
SCOPE_GLOBAL = 0xE

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_LOOPBACK6 = b"\x00" * 15 + b"\x01"


def ipv6_scope(addr: bytes) -> int:
    """RFC 6724 §3.1 scope of a 16-byte address."""
    b0 = addr[0]
    if b0 == 0xFF:
        return addr[1] & 0x0F  # RFC 4291 §2.7: the scope field
    if b0 == 0xFE:
        top = addr[1] & 0xC0
        if top == 0x80:
            return SCOPE_LINK_LOCAL  # fe80::/10
        if top == 0xC0:
            return SCOPE_SITE_LOCAL  # fec0::/10, deprecated by RFC 3879
    elif addr == _LOOPBACK6:
        return SCOPE_LINK_LOCAL  # RFC 6724 §3.1, RFC 4007 §4
    elif addr[:12] == _V4_MAPPED_PREFIX:
        return ipv4_scope(addr[12:])
    return SCOPE_GLOBAL  # ULAs fc00::/7 included (RFC 6724 §3.1, not RFC 3484's quirk)


def ipv4_scope(addr: bytes) -> int:
    """RFC 6724 §3.2: loopback 127/8 and auto-configured 169.254/16 are
    link-local, every other address (private ones included) is global."""
    b0 = addr[0]
    if b0 == 127 or (b0 == 169 and addr[1] == 254):
        return SCOPE_LINK_LOCAL
    if 224 <= b0 <= 239:
        # RFC 6724 §3.2 maps IPv4 multicast like unicast; 224.0.0.0/24 is link-local (RFC 5771).
        return SCOPE_LINK_LOCAL if addr[:3] == b"\xe0\x00\x00" else SCOPE_GLOBAL
    return SCOPE_GLOBAL


def scope(addr: bytes) -> int:
    return ipv4_scope(addr) if len(addr) == 4 else ipv6_scope(addr)


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Leading bits ``a`` and ``b`` have in common (RFC 6724 §2.2)."""
    n = len(a) * 8
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return n - x.bit_length()


# --- policy table (RFC 6724 §2.1) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class PolicyEntry:
    prefix: bytes  # 16 bytes, host bits clear
    prefix_len: int
    precedence: int
    label: int


class PolicyTable:
    """Longest-prefix match of an address to (precedence, label). IPv4
    addresses are looked up as IPv4-mapped (RFC 6724 §2.1)."""

    __slots__ = ("entries", "_levels", "_cache")

    _CACHE_MAX = 1024  # addresses remembered; the table is cleared when full

    def __init__(self, entries: Iterable[PolicyEntry]) -> None:
        self.entries = tuple(sorted(entries, key=lambda e: -e.prefix_len))
        levels: dict[int, dict[int, tuple[int, int]]] = {}
        for e in self.entries:
            if len(e.prefix) != 16 or not 0 <= e.prefix_len <= 128:
                raise ValueError(f"bad policy prefix {e.prefix.hex()}/{e.prefix_len}")
            shift = 128 - e.prefix_len
            levels.setdefault(shift, {}).setdefault(
                int.from_bytes(e.prefix, "big") >> shift, (e.precedence, e.label)
            )
        self._levels = sorted(levels.items())  # smallest shift = longest prefix first
        self._cache: dict[bytes, tuple[int, int]] = {}

    @classmethod
    def from_text(cls, rows: Iterable[tuple[str, int, int]]) -> PolicyTable:
        """From ("prefix/len", precedence, label) rows, as RFC 6724 prints them."""
        out = []
        for text, prec, label in rows:
            addr, _, plen = text.partition("/")
            out.append(PolicyEntry(parse_ip(addr), int(plen), prec, label))
        return cls(out)

    def lookup(self, addr: bytes) -> tuple[int, int]:
        """(precedence, label) of ``addr`` (4 or 16 bytes); (0, 0) if no entry
        matches (impossible with a ::/0 entry)."""
        hit = self._cache.get(addr)
        if hit is not None:
            return hit
        a16 = _V4_MAPPED_PREFIX + addr if len(addr) == 4 else bytes(addr)
        value = int.from_bytes(a16, "big")
        result = (0, 0)
        for shift, level in self._levels:
            found = level.get(value >> shift)
            if found is not None:
                result = found
                break
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[bytes(addr)] = result
        return result

    def label(self, addr: bytes) -> int:
        return self.lookup(addr)[1]

    def precedence(self, addr: bytes) -> int:
        return self.lookup(addr)[0]


# RFC 6724 §2.1, the default policy table.
DEFAULT_POLICY = PolicyTable.from_text(
    [
        ("::1/128", 50, 0),
        ("::/0", 40, 1),
        ("::ffff:0:0/96", 35, 4),
        ("2002::/16", 30, 2),
        ("2001::/32", 5, 5),
        ("fc00::/7", 3, 13),
        ("::/96", 1, 3),
        ("fec0::/10", 1, 11),
        ("3ffe::/16", 1, 12),
    ]
)


# --- source selection (RFC 6724 §5) --------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceCandidate:
    """A usable address as a candidate source. ``position``: its place in the
    NIC's primary list (first-primary addresses first)."""

    addr: bytes
    prefix_len: int
    nic: int
    deprecated: bool = False
    tentative: bool = False
    temporary: bool = False
    home: bool = False
    position: int = 0

    def summary(self) -> str:
        flags = [
            name
            for name, on in (
                ("deprecated", self.deprecated),
                ("tentative", self.tentative),
                ("temporary", self.temporary),
                ("home", self.home),
            )
            if on
        ]
        extra = f" {','.join(flags)}" if flags else ""
        return f"{format_ip(self.addr)}/{self.prefix_len} nic {self.nic} pos {self.position}{extra}"


def _unmapped(dst: bytes) -> bytes:
    """An IPv4-mapped destination is an IPv4 destination (RFC 6724 §2.1)."""
    if len(dst) == 16 and dst[:12] == _V4_MAPPED_PREFIX:
        return dst[12:]
    return dst


def source_sort_key(
    dst: bytes,
    *,
    out_nic: int | None = None,
    prefer_temporary: bool = True,
    policy: PolicyTable = DEFAULT_POLICY,
) -> Callable[[SourceCandidate], tuple]:
    """A key function: the smaller key is the better source for ``dst``.

    Each element is one rule of RFC 6724 §5, in order; every rule compares a
    property of one candidate against ``dst`` only, so the pairwise rules are
    a lexicographic order (rule 2 included: in-scope candidates first, the
    smallest scope first; then out-of-scope ones, the largest first)."""
    dst = _unmapped(dst)
    is_v6 = len(dst) == 16
    d_scope = scope(dst)
    d_label = policy.label(dst)
    # Rule 8 only for IPv6 (module docstring); a constant 0 otherwise.
    d_int = int.from_bytes(dst, "big") if is_v6 else 0

    def key(c: SourceCandidate) -> tuple:
        a = c.addr
        s = scope(a)
        if is_v6:
            plen = c.prefix_len if 0 < c.prefix_len <= 128 else 128
            cpl = min(128 - (int.from_bytes(a, "big") ^ d_int).bit_length(), plen)
        else:
            cpl = 0
        return (
            a != dst,  # rule 1: prefer the same address
            (0, s) if s >= d_scope else (1, -s),  # rule 2: prefer appropriate scope
            c.deprecated,  # rule 3: avoid deprecated addresses
            not c.home,  # rule 4: prefer home addresses (Mobile IPv6, RFC 6275)
            out_nic is not None and c.nic != out_nic,  # rule 5: prefer the outgoing interface
            policy.label(a) != d_label,  # rule 6: prefer matching label
            c.temporary != prefer_temporary,  # rule 7: prefer temporary (or public)
            -cpl,  # rule 8: longest matching prefix
            c.position,  # the primary list order
            c.nic,  # determinism for equal positions across NICs
            a,
            c.prefix_len,
            c.temporary,
            c.home,
        )

    return key


def select_source(
    dst: bytes,
    candidates: Sequence[SourceCandidate],
    *,
    out_nic: int | None = None,
    prefer_temporary: bool = True,
    policy: PolicyTable = DEFAULT_POLICY,
) -> SourceCandidate | None:
    """The source address for ``dst`` among ``candidates`` (RFC 6724 §5).

    Candidates of the other family and tentative ones (RFC 4862 §5.4) are
    skipped; None if nothing is left. ``out_nic``: the NIC the route to
    ``dst`` goes out of (rule 5). ``candidates`` should be the addresses the
    caller may use: the primary addresses of the outgoing NIC (as gVisor and
    gVisor's tests do) or of every NIC (as Linux does for global scope)."""
    fam = len(_unmapped(dst))
    usable = [c for c in candidates if not c.tentative and len(c.addr) == fam]
    if not usable:
        return None
    if len(usable) == 1:
        return usable[0]
    return min(
        usable,
        key=source_sort_key(dst, out_nic=out_nic, prefer_temporary=prefer_temporary, policy=policy),
    )


# --- destination ordering (RFC 6724 §6) ---------------------------------------------
def sort_destinations(
    destinations: Sequence[bytes],
    source_for: Callable[[bytes], SourceCandidate | None],
    *,
    policy: PolicyTable = DEFAULT_POLICY,
) -> list[bytes]:
    """Order ``destinations`` (e.g. a getaddrinfo answer) best first.

    ``source_for(dst)``: the source ``select_source`` would pick, None when
    ``dst`` is unreachable (no route or no source). Rules of RFC 6724 §6:
    1 avoid unusable, 2 matching scope, 3 avoid deprecated source, 4 prefer
    home source, 5 matching label, 6 higher precedence, (7 native transport:
    all native here), 8 smaller scope, 9 longest matching prefix (IPv6 only),
    10 otherwise keep the order (the sort is stable)."""
    info = []
    for i, d in enumerate(destinations):
        d0 = _unmapped(d)
        src = source_for(d)
        prec, label = policy.lookup(d0)
        info.append((i, d, d0, src, prec, label, scope(d0)))

    def cmp(x: tuple, y: tuple) -> int:
        _, _, da, sa, pa, la, scope_a = x
        _, _, db, sb, pb, lb, scope_b = y
        # Rule 1: avoid unusable destinations.
        if (sa is None) != (sb is None):
            return 1 if sa is None else -1
        if sa is None or sb is None:
            return 0
        # Rule 2: prefer matching scope.
        ma, mb = scope_a == scope(sa.addr), scope_b == scope(sb.addr)
        if ma != mb:
            return -1 if ma else 1
        # Rule 3: avoid deprecated addresses.
        if sa.deprecated != sb.deprecated:
            return 1 if sa.deprecated else -1
        # Rule 4: prefer home addresses.
        if sa.home != sb.home:
            return -1 if sa.home else 1
        # Rule 5: prefer matching label.
        ma, mb = policy.label(sa.addr) == la, policy.label(sb.addr) == lb
        if ma != mb:
            return -1 if ma else 1
        # Rule 6: prefer higher precedence.
        if pa != pb:
            return -1 if pa > pb else 1
        # Rule 8: prefer smaller scope.
        if scope_a != scope_b:
            return -1 if scope_a < scope_b else 1
        # Rule 9: use longest matching prefix (IPv6 only).
        if len(da) == 16 and len(db) == 16:
            ca = min(common_prefix_len(sa.addr, da), sa.prefix_len)
            cb = min(common_prefix_len(sb.addr, db), sb.prefix_len)
            if ca != cb:
                return -1 if ca > cb else 1
        # Rule 10: leave the order unchanged.
        return 0

    return [t[1] for t in sorted(info, key=functools.cmp_to_key(cmp))]
