"""IPv6 interface identifiers: RFC 7217 stable opaque IIDs and modified EUI-64.

* ``opaque_iid``: RFC 7217 §5 ``F(Prefix, Net_Iface, Network_ID, DAD_Counter,
  secret_key)`` as gVisor computes it: the first 8 bytes of
  SHA-256(prefix[0:8] ‖ NIC name ‖ DAD_Counter (1 byte) ‖ secret key).
  Network_ID is omitted (optional in §5) and the U/L bit is not adjusted
  (§5: "the u and g bits have no meaning"). RFC 8064 makes these the default
  for SLAAC and link-local addresses.
* ``stable_address``: §5's last step — an IID that is reserved (RFC 5453,
  ``is_reserved_iid``) is rejected and F() run again with DAD_Counter + 1.
  DAD failures bump DAD_Counter too (§6), up to
  ``IDGEN_RETRIES`` times: the NDP machine counts them.
* ``modified_eui64`` (from ``common.wire.ipv6``, RFC 4291 App. A) and
  ``is_valid_unicast_mac``: without opaque IIDs, only a valid unicast
  Ethernet address yields an identifier.

The secret key should be at least ``OPAQUE_IID_SECRET_KEY_MIN_BYTES`` random
bytes kept across restarts (RFC 7217 §5, RFC 4086); a shorter one is allowed,
as in gVisor, but gives weaker privacy.
"""

from __future__ import annotations

import hashlib

from shardnet.common.wire.ipv6 import LINK_LOCAL_PREFIX, modified_eui64

__all__ = [
    "IDGEN_RETRIES",
    "IID_SIZE",
    "OPAQUE_IID_SECRET_KEY_MIN_BYTES",
    "eui64_address",
    "is_reserved_iid",
    "is_valid_unicast_mac",
    "link_local_opaque",
    "modified_eui64",
    "opaque_iid",
    "stable_address",
]

IID_SIZE = 8  # bytes; gVisor header.IIDSize, RFC 4291 §2.5.1 (64-bit IIDs)
OPAQUE_IID_SECRET_KEY_MIN_BYTES = (
    16  # RFC 7217 §5 "at least 128 bits"; gVisor header.OpaqueIIDSecretKeyMinBytes
)
IDGEN_RETRIES = 3  # RFC 7217 §7: regenerations after DAD failures
_MAX_RESERVED_SKIPS = 16  # own bound: F() rerun for reserved IIDs (p ~ 2^-40 each)

_RESERVED_ANYCAST = bytes.fromhex("fdffffffffffff80")  # RFC 2526: ...ff80 to ...ffff
_RESERVED_IANA_LO = bytes.fromhex("02005efffe000000")  # RFC 5453 §3, RFC 6543
_RESERVED_IANA_HI = bytes.fromhex("02005efffeffffff")


def opaque_iid(prefix: bytes, nic_name: str, dad_counter: int, secret_key: bytes) -> bytes:
    """RFC 7217 §5 F(): 8 bytes from SHA-256 over the first 8 bytes of
    ``prefix``, the NIC name (UTF-8), ``dad_counter`` (one byte) and the key."""
    if not 0 <= dad_counter <= 255:
        raise ValueError(f"DAD counter {dad_counter} out of 0..255")
    h = hashlib.sha256(bytes(prefix[:8]))
    h.update(nic_name.encode())
    h.update(bytes((dad_counter,)))
    h.update(secret_key)
    return h.digest()[:IID_SIZE]


def is_reserved_iid(iid: bytes) -> bool:
    """RFC 5453 reserved interface identifiers: the Subnet-Router anycast
    (all zeros, RFC 4291 §2.6.1), the reserved subnet anycast range
    fdff:ffff:ffff:ff80-ffff (RFC 2526) and 0200:5eff:fe00:0000 to
    0200:5eff:feff:ffff (IANA's Ethernet block, Proxy Mobile IPv6)."""
    return (
        iid == bytes(IID_SIZE)
        or iid >= _RESERVED_ANYCAST
        or _RESERVED_IANA_LO <= iid <= _RESERVED_IANA_HI
    )


def stable_address(
    prefix: bytes, nic_name: str, dad_counter: int, secret_key: bytes
) -> tuple[bytes, int]:
    """The /64 ``prefix`` with the RFC 7217 IID for ``dad_counter``, or for the
    next counter whose IID is not reserved (§5). Returns (address, counter
    used): the caller counts DAD retries from the returned counter."""
    for counter in range(dad_counter, min(dad_counter + _MAX_RESERVED_SKIPS, 256)):
        iid = opaque_iid(prefix, nic_name, counter, secret_key)
        if not is_reserved_iid(iid):
            return bytes(prefix[:8]) + iid, counter
    raise ValueError("no acceptable interface identifier")  # never in practice


def link_local_opaque(nic_name: str, dad_counter: int, secret_key: bytes) -> tuple[bytes, int]:
    """fe80::/64 with an opaque IID (gVisor ``LinkLocalAddrWithOpaqueIID``)."""
    return stable_address(LINK_LOCAL_PREFIX, nic_name, dad_counter, secret_key)


def is_valid_unicast_mac(mac: bytes) -> bool:
    """gVisor ``IsValidUnicastEthernetAddress``: 6 bytes, not all zero, the
    I/G (group) bit clear (IEEE 802: a group address names no interface)."""
    return len(mac) == 6 and mac != bytes(6) and not mac[0] & 0x01


def eui64_address(prefix: bytes, mac: bytes) -> bytes:
    """The /64 ``prefix`` with the modified EUI-64 of ``mac`` (RFC 4862 §5.3,
    §5.5.3 d; RFC 2464 §4)."""
    return bytes(prefix[:8]) + modified_eui64(mac)
