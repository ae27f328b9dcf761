"""Addresses as the stack keeps them: ``bytes`` (4 or 16 for IP, 6 for MAC).

Parsing and formatting happen only at the edges (CLI, logs, summaries); the
data path compares and hashes raw bytes.
"""

from __future__ import annotations

import functools
import socket

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
IPV4_ANY = b"\x00" * 4
IPV4_BROADCAST = b"\xff" * 4
IPV6_ANY = b"\x00" * 16
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"  # ::ffff:0:0/96


def format_mac(mac: bytes | memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(mac))


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``) to 6 bytes; ValueError otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def format_ip(addr: bytes | memoryview) -> str:
    return _format_ip(bytes(addr))


# Remembered: every datagram a socket receives names its peer in text
# (asyncio's ``(host, port)``), and every ``sendto`` parses one; a few
# thousand peers cover a busy server.
@functools.lru_cache(maxsize=4096)
def _format_ip(addr: bytes) -> str:
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    if len(addr) == 16:
        return socket.inet_ntop(socket.AF_INET6, addr)
    return addr.hex()


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> bytes:
    """An IPv4 or IPv6 address in text to 4 or 16 bytes; ValueError otherwise."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text)
        except OSError:
            continue
    raise ValueError(f"not an IP address: {text!r}")


def is_multicast_mac(mac: bytes | memoryview) -> bool:
    return bool(mac[0] & 1)


def is_ipv4_multicast(addr: bytes | memoryview) -> bool:
    """224.0.0.0/4 (RFC 5771)."""
    return 224 <= addr[0] <= 239


def is_ipv6_multicast(addr: bytes | memoryview) -> bool:
    """ff00::/8 (RFC 4291 §2.7)."""
    return addr[0] == 0xFF


def ipv6_multicast_scope(addr: bytes | memoryview) -> int:
    """The scope field of an IPv6 multicast address (RFC 4291 §2.7: 1
    interface-local, 2 link-local, 5 site-local, 14 global)."""
    return addr[1] & 0x0F


def is_ipv6_link_local(addr: bytes | memoryview) -> bool:
    """fe80::/10 (RFC 4291 §2.5.6)."""
    return addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80


def is_ipv4_mapped(addr: bytes | memoryview) -> bool:
    """::ffff:0:0/96, an IPv4 address in IPv6 form (RFC 4291 §2.5.5.2)."""
    return addr[:12] == _V4_MAPPED_PREFIX


def is_unicast(addr: bytes) -> bool:
    """RFC 1122 §4.2.3.10 / RFC 4291 §2.7: not unspecified, not limited
    broadcast, not multicast."""
    if len(addr) == 4:
        return addr != IPV4_ANY and addr != IPV4_BROADCAST and not is_ipv4_multicast(addr)
    return addr != IPV6_ANY and not is_ipv6_multicast(addr)
