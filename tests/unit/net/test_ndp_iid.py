"""Interface identifiers: RFC 7217 opaque IIDs (with §6 regeneration) and
modified EUI-64 (RFC 4291 App. A)."""

from __future__ import annotations

import hashlib

import pytest

from shardnet.common.addr import parse_ip, parse_mac
from shardnet.shards.net.iid import (
    OPAQUE_IID_SECRET_KEY_MIN_BYTES,
    eui64_address,
    is_reserved_iid,
    is_valid_unicast_mac,
    link_local_opaque,
    modified_eui64,
    opaque_iid,
    stable_address,
)

PREFIX = parse_ip("2001:db8:1::")


@pytest.mark.parametrize(
    ("key", "name", "counter"),
    [
        (bytes(range(16)), "eth0", 0),
        (bytes(range(8)), "eth1", 1),
        (bytes(range(32)), "nic", 2),
        (b"", "", 3),
    ],
)
def test_append_opaque_interface_identifier(key: bytes, name: str, counter: int) -> None:
    """gVisor TestAppendOpaqueInterfaceIdentifier: sha256(prefix8‖name‖counter‖key)[:8]."""
    want = hashlib.sha256(PREFIX[:8] + name.encode() + bytes((counter,)) + key).digest()[:8]
    assert opaque_iid(PREFIX, name, counter, key) == want


def test_opaque_iid_stable_and_distinct() -> None:
    key = b"k" * OPAQUE_IID_SECRET_KEY_MIN_BYTES
    a = opaque_iid(PREFIX, "eth0", 0, key)
    assert a == opaque_iid(PREFIX, "eth0", 0, key)  # stable across runs
    assert a != opaque_iid(PREFIX, "eth1", 0, key)  # per interface
    assert a != opaque_iid(PREFIX, "eth0", 1, key)  # DAD_Counter
    assert a != opaque_iid(parse_ip("2001:db8:2::"), "eth0", 0, key)  # per prefix
    with pytest.raises(ValueError):
        opaque_iid(PREFIX, "eth0", 256, key)


def test_link_local_addr_with_opaque_iid() -> None:
    key = bytes(range(16))
    addr, counter = link_local_opaque("eth0", 0, key)
    want = hashlib.sha256(bytes.fromhex("fe80") + bytes(6) + b"eth0\x00" + key).digest()[:8]
    assert counter == 0
    assert addr == bytes.fromhex("fe80") + bytes(6) + want


def test_reserved_iids() -> None:
    assert is_reserved_iid(bytes(8))
    assert is_reserved_iid(bytes.fromhex("fdffffffffffff80"))
    assert is_reserved_iid(bytes.fromhex("ffffffffffffffff"))
    assert is_reserved_iid(bytes.fromhex("02005efffe005213"))
    assert not is_reserved_iid(bytes.fromhex("fdffffffffffff7f"))
    assert not is_reserved_iid(bytes.fromhex("02005efffd000000"))


def test_stable_address_skips_reserved(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7217 §5: a reserved IID reruns F() with DAD_Counter + 1."""
    import shardnet.shards.net.iid as iid

    real = iid.opaque_iid
    monkeypatch.setattr(
        iid, "opaque_iid", lambda p, n, c, k: bytes(8) if c == 0 else real(p, n, c, k)
    )
    addr, counter = stable_address(PREFIX, "eth0", 0, b"key")
    assert counter == 1
    assert addr == PREFIX[:8] + real(PREFIX, "eth0", 1, b"key")


def test_ethernet_address_to_modified_eui64() -> None:
    """gVisor TestEthernetAdddressToModifiedEUI64 / TestLinkLocalAddr."""
    mac = parse_mac("02:02:03:04:05:06")
    assert modified_eui64(mac) == bytes((0, 2, 3, 255, 254, 4, 5, 6))
    assert eui64_address(bytes.fromhex("fe80") + bytes(14), mac) == parse_ip("fe80::2:3ff:fe04:506")


@pytest.mark.parametrize(
    ("mac", "valid"),
    [
        ("02:00:00:00:00:01", True),
        ("00:00:00:00:00:00", False),  # unspecified
        ("01:00:5e:00:00:01", False),  # multicast
        ("ff:ff:ff:ff:ff:ff", False),  # broadcast
    ],
)
def test_is_valid_unicast_ethernet_address(mac: str, valid: bool) -> None:
    assert is_valid_unicast_mac(parse_mac(mac)) is valid
    assert not is_valid_unicast_mac(b"\x02\x00")
