"""The in-memory channel link, and the link checks that need no device."""

from __future__ import annotations

import errno
import pickle
import select
import threading
import time

import pytest

from shardnet.common.link_tx import LinkTxSpec, open_writer
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.virtio import F_NEEDS_CSUM, GSO_TCPV4, VirtioNetHeader
from shardnet.dispatcher.link import ChannelLink, LinkCaps, LinkError, TapLink
from shardnet.dispatcher.link import tap as tap_module
from shardnet.dispatcher.link.base import random_mac, resolve_mac

ARP = bytes.fromhex("ffffffffffff 020000000001 0806".replace(" ", "")) + bytes(28)
TSO = VirtioNetHeader(F_NEEDS_CSUM, GSO_TCPV4, 54, 1460, 34, 16)


def readable(link: ChannelLink, timeout: float = 0.0) -> bool:
    return bool(select.select([link], [], [], timeout)[0])


def test_inject_wakes_and_reads() -> None:
    with ChannelLink() as link:
        assert not readable(link)
        assert link.inject(ARP)
        assert link.inject(memoryview(ARP)[:20])
        assert readable(link)
        frames = link.read_batch()
        assert [bytes(f.data) for f in frames] == [ARP, ARP[:20]]
        assert all(f.vnet is None for f in frames)
        assert not readable(link)
        assert (link.rx_frames, link.rx_bytes) == (2, len(ARP) + 20)
        assert link.read_batch() == []


def test_batch_limit_keeps_the_wakeup() -> None:
    with ChannelLink() as link:
        for i in range(5):
            link.inject(bytes([i]) * 60)
        assert len(link.read_batch(3)) == 3
        assert readable(link)
        assert [f.data[0] for f in link.read_batch(3)] == [3, 4]
        assert not readable(link)


def test_inject_from_another_thread_wakes_a_waiter() -> None:
    with ChannelLink() as link:
        t = threading.Timer(0.05, link.inject, (ARP,))
        t.start()
        start = time.monotonic()
        assert readable(link, timeout=5)
        assert time.monotonic() - start < 4
        assert [bytes(f.data) for f in link.read_batch()] == [ARP]
        t.join()


def test_inbound_capacity_drops() -> None:
    with ChannelLink(capacity=2) as link:
        assert link.inject(ARP) and link.inject(ARP)
        assert not link.inject(ARP)
        assert link.inject_drops == 1
        assert len(link.read_batch()) == 2


def test_collect_and_drain_outbound() -> None:
    with ChannelLink() as link:
        link.write([ARP[:14], ARP[14:]])
        w = open_writer(link.tx_spec())  # what an in-process shard does
        w.write([b"second"])
        assert link.collect() == [ARP, b"second"]
        assert link.collect() == []
        link.write([b"third"], VirtioNetHeader())  # a header asking nothing is fine
        assert link.drain() == [(b"third", None)]
        assert link.writer.frames == 3
        with pytest.raises(ValueError):
            link.write([ARP], TSO)  # no virtio-net header on this link
        with pytest.raises(ValueError):
            link.inject(ARP, TSO)


def test_vnet_channel() -> None:
    caps = LinkCaps.VNET_HDR | LinkCaps.TX_CSUM | LinkCaps.TX_TSO4
    with ChannelLink(capabilities=caps) as link:
        frame = bytes(100)
        assert link.inject(frame, TSO)
        assert link.inject(ARP)  # no header given: a zero one
        bad = VirtioNetHeader(F_NEEDS_CSUM, csum_start=200, csum_offset=6)
        assert not link.inject(ARP, bad)
        assert link.drop_reasons == {Drop.VNET_BAD_CSUM_OFFSET: 1} and link.rx_drops == 1
        f1, f2 = link.read_batch()
        assert bytes(f1.data) == frame and f1.vnet.header() == TSO and f1.vnet.is_gso
        assert bytes(f2.data) == ARP and f2.vnet.header() == VirtioNetHeader()
        link.write([frame], TSO)
        link.write([ARP])
        assert link.drain() == [(frame, TSO), (ARP, None)]
        spec = link.tx_spec()
        assert spec.kind == "channel" and spec.vnet_hdr_len == 10


def test_tx_spec_does_not_pickle() -> None:
    with ChannelLink() as link, pytest.raises(TypeError):
        pickle.dumps(link.tx_spec())


def test_facts_and_repr() -> None:
    with ChannelLink(name="ch1", mtu=9000, mac="02:00:00:00:00:09") as link:
        assert link.mtu == 9000 and link.mac == bytes.fromhex("020000000009")
        assert link.capabilities == LinkCaps.NONE
        assert repr(link) == "<ChannelLink ch1 mac 02:00:00:00:00:09 mtu 9000 caps NONE>"


def test_close_is_idempotent() -> None:
    link = ChannelLink()
    fd = link.fileno()
    link.close()
    link.close()
    with pytest.raises(OSError):
        select.select([fd], [], [], 0)


def test_random_mac_is_local_unicast() -> None:
    macs = {random_mac() for _ in range(50)}
    assert len(macs) > 1
    assert all(len(m) == 6 and m[0] == 0x02 for m in macs)


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "nonsense", b"\x02\x00"])
def test_bad_mac_is_link_error(mac: str | bytes) -> None:
    with pytest.raises(LinkError):
        resolve_mac(mac)


@pytest.mark.parametrize("name", ["", "a" * 16, "tap/0", "tap 0", ".."])
def test_bad_tap_name_is_link_error(name: str) -> None:
    with pytest.raises(LinkError):
        TapLink.open(name)


def test_missing_tun_device_is_one_line_link_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap_module, "TUN_PATH", "/nonexistent/net/tun")
    with pytest.raises(LinkError) as exc:
        TapLink.open("sntap9")
    assert exc.value.errno == errno.ENOENT
    assert "\n" not in str(exc.value) and "modprobe tun" in str(exc.value)


def test_spec_fields() -> None:
    spec = LinkTxSpec("packet", 10, ifname="snveth0")
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_inject_after_close_is_refused() -> None:
    link = ChannelLink()
    link.close()
    with pytest.raises(OSError):
        link.inject(bytes(60))
