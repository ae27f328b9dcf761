"""The pcap writer and the link tee, read back with scapy's rdpcap."""

from __future__ import annotations

import struct
from pathlib import Path

import multiprocess
import pytest
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from shardnet.common.link_tx import open_writer
from shardnet.common.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    PCAP_MAGIC,
    PcapTeeWriter,
    PcapWriter,
)
from shardnet.dispatcher.link import ChannelLink, PcapTee

ARP_REQ = bytes(
    Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
    / ARP(hwsrc="02:00:00:00:00:01", psrc="198.18.0.2", pdst="198.18.0.1")
)


def test_header_and_records(tmp_path: Path) -> None:
    path = str(tmp_path / "a.pcap")
    w = PcapWriter.create(path)
    w.write([ARP_REQ[:14], ARP_REQ[14:]], ts=1_700_000_000.25)
    w.write([memoryview(ARP_REQ)])
    w.close()
    raw = Path(path).read_bytes()
    assert struct.unpack_from("<IHHiIII", raw) == (PCAP_MAGIC, 2, 4, 0, 0, 262144, 1)
    assert struct.unpack_from("<IIII", raw, 24) == (1_700_000_000, 250_000, 42, 42)
    pkts = rdpcap(path)
    assert len(pkts) == 2 and w.frames == 2
    assert bytes(pkts[0]) == ARP_REQ and pkts[0][ARP].pdst == "198.18.0.1"
    assert float(pkts[0].time) == pytest.approx(1_700_000_000.25)
    assert pkts.listname and LINKTYPE_ETHERNET == 1


def test_snaplen_cuts_and_keeps_original_length(tmp_path: Path) -> None:
    path = str(tmp_path / "s.pcap")
    w = PcapWriter.create(path, snaplen=64)
    w.write([ARP_REQ, bytes(100)])
    w.close()
    (pkt,) = rdpcap(path)
    assert len(bytes(pkt)) == 64 and pkt.wirelen == 142


def test_append_needs_the_created_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        PcapWriter.append(str(tmp_path / "missing.pcap"))


def _append_many(path: str, tag: int, count: int) -> None:
    w = PcapWriter.append(path)
    for i in range(count):
        w.write([bytes([tag]) * 14, i.to_bytes(4, "big") * (1 + i % 50)])
    w.close()


def test_processes_append_whole_records(tmp_path: Path) -> None:
    """The lock-free design: each process appends with its own O_APPEND fd."""
    path = str(tmp_path / "multi.pcap")
    PcapWriter.create(path).close()
    ctx = multiprocess.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, tag, 400)) for tag in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    pkts = rdpcap(path)
    assert len(pkts) == 1200
    for tag in (1, 2, 3):
        mine = [bytes(p) for p in pkts if bytes(p)[0] == tag]
        assert mine == [bytes([tag]) * 14 + i.to_bytes(4, "big") * (1 + i % 50) for i in range(400)]


def test_tee_records_both_directions(tmp_path: Path) -> None:
    path = str(tmp_path / "tee.pcap")
    with PcapTee(ChannelLink(), path) as link:
        link.link.inject(ARP_REQ)
        frames = link.read_batch()
        assert [bytes(f.data) for f in frames] == [ARP_REQ]
        link.write([b"\x02" * 14, b"reply"])
        spec = link.tx_spec()
        assert spec.pcap_path == path and spec.kind == "channel"
        shard_writer = open_writer(spec)  # what a shard opens: appends here too
        assert isinstance(shard_writer, PcapTeeWriter)
        shard_writer.write([b"\x03" * 14, b"from shard"])
        assert shard_writer.frames == 2  # the channel's counters
        assert link.rx_frames == 1  # counters come from the inner link
        assert link.link.collect() == [b"\x02" * 14 + b"reply", b"\x03" * 14 + b"from shard"]
        assert link.mtu == 1500 and link.capabilities == link.link.capabilities
    pkts = [bytes(p) for p in rdpcap(path)]
    assert pkts == [ARP_REQ, b"\x02" * 14 + b"reply", b"\x03" * 14 + b"from shard"]


def test_write_error_is_counted_not_raised(tmp_path: Path) -> None:
    w = PcapWriter.create(str(tmp_path / "e.pcap"))
    w.close()
    w.fd = 10_000  # not open: EBADF
    w.write([ARP_REQ])
    assert (w.frames, w.errors) == (0, 1)


def test_raw_linktype_records_ip_packets_alone(tmp_path: Path) -> None:
    from scapy.layers.inet import ICMP, IP

    path = str(tmp_path / "tun.pcap")
    packet = bytes(IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=0))
    head = b"\x02\x00\x00\x00\x00\x01" + bytes(6) + b"\x08\x00"
    w = PcapWriter.create(path, linktype=LINKTYPE_RAW)
    w.write([head, packet])
    w.close()
    other = PcapWriter.append(path)  # a shard's writer takes the type from the file
    assert other.linktype == LINKTYPE_RAW
    other.write([head + packet])
    other.close()
    raw = Path(path).read_bytes()
    assert struct.unpack_from("<I", raw, 20)[0] == 101
    pkts = rdpcap(path)
    assert [bytes(p) for p in pkts] == [packet, packet]
    assert pkts[1][IP].dst == "198.18.0.1"
