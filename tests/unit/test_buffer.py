"""PacketBuffer: outbound headers without payload copies, inbound header
views, fan-out clones, and the ownership rule of CHECKLIST B29."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from shardnet.common import checksum as csum
from shardnet.common.buffer import DEFAULT_HEADROOM, GsoType, PacketBuffer
from shardnet.common.wire.ethernet import ETH_HEADER_LEN, EthernetHeader
from shardnet.common.wire.udp import UDP_HEADER_LEN, UdpHeader, UdpView

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC4, DST4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
IP4 = IP(src="198.18.0.1", dst="198.18.0.2", id=1, ttl=64)
IP6 = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64)


def udp4_frame(payload: bytes) -> bytes:
    return bytes(ETHER / IP4 / UDP(sport=5353, dport=53) / Raw(payload))


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A datagram socket pair: keeps frame boundaries, as a TAP does."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


# -- outbound ----------------------------------------------------------------


def build_udp4(payload: bytes | bytearray | memoryview) -> PacketBuffer:
    """Transport, network, link: each layer prepends its header."""
    pkt = PacketBuffer.outbound(payload)
    length = UDP_HEADER_LEN + len(pkt.data)
    udp = pkt.prepend(UDP_HEADER_LEN)
    UdpHeader(5353, 53, length).emit(udp)
    # Checksum over the two parts, never joined (header length is even).
    pseudo = csum.pseudo_header(SRC4, DST4, 17, length)
    value = csum.checksum(pkt.data, csum.ones_sum(udp, pseudo)) or 0xFFFF
    udp[6:8] = value.to_bytes(2, "big")
    # No IPv4 codec in this test's scope: scapy's header bytes stand in.
    pkt.prepend(20)[:] = bytes(IP4 / UDP(sport=5353, dport=53) / Raw(bytes(payload)))[:20]
    EthernetHeader(MAC_B, MAC_A, 0x0800).emit(pkt.prepend(ETH_HEADER_LEN))
    return pkt


def test_outbound_layers_bottom_up_match_scapy() -> None:
    pkt = build_udp4(b"hi")
    golden = udp4_frame(b"hi")
    assert pkt.tobytes() == golden
    assert len(pkt) == len(golden)
    assert bytes(pkt.headers) == golden[:-2]
    assert b"".join(pkt.as_iovecs()) == golden
    assert pkt.headroom == DEFAULT_HEADROOM - 42
    # scapy dissects it with a correct UDP checksum
    dissected = Ether(pkt.tobytes())
    sent = dissected[UDP].chksum
    del dissected[UDP].chksum
    assert Ether(bytes(dissected))[UDP].chksum == sent


def test_outbound_writev_gathers_headers_and_payload(
    link: tuple[socket.socket, socket.socket],
) -> None:
    a, b = link
    payload = bytes(range(256)) * 4
    pkt = build_udp4(payload)
    iov = pkt.as_iovecs()
    assert len(iov) == 2
    assert os.writev(a.fileno(), iov) == len(pkt)
    assert b.recv(4096) == udp4_frame(payload)


def test_outbound_payload_is_not_copied() -> None:
    app = bytearray(b"x" * 1000)  # e.g. a TCP send queue
    pkt = build_udp4(memoryview(app)[100:600])
    headers, payload = pkt.as_iovecs()
    assert payload.obj is app and len(payload) == 500
    # The packet pins the application's buffer until it is gone.
    with pytest.raises(BufferError):
        app.extend(b"more")
    del pkt, headers, payload
    app.extend(b"more")


def test_outbound_without_payload() -> None:
    pkt = PacketBuffer.outbound()
    pkt.prepend(4)[:] = b"abcd"
    assert pkt.tobytes() == b"abcd"
    assert len(pkt.data) == 0 and pkt.owned


def test_default_headroom_fits_the_deepest_stack() -> None:
    # virtio-net v1 header 12, Ethernet + 802.1Q 18, IPv6 40, fragment 8, TCP 60
    pkt = PacketBuffer.outbound(b"payload")
    for n in (60, 8, 40, 18, 12):
        pkt.prepend(n)
    assert pkt.headroom == DEFAULT_HEADROOM - 138 >= 0
    assert len(pkt) == 138 + 7


def test_prepend_beyond_headroom_raises() -> None:
    pkt = PacketBuffer.outbound(b"p", headroom=20)
    pkt.prepend(20)
    assert pkt.headroom == 0
    assert len(pkt.prepend(0)) == 0
    with pytest.raises(ValueError):
        pkt.prepend(1)
    with pytest.raises(ValueError):
        PacketBuffer.outbound(headroom=10).prepend(-1)
    assert pkt.headroom == 0


def test_outbound_clone_has_its_own_headers() -> None:
    payload = b"shared payload"
    pkt = PacketBuffer.outbound(payload)
    pkt.prepend(2)[:] = b"T0"
    twin = pkt.clone()
    twin.prepend(2)[:] = b"N1"
    pkt.prepend(2)[:] = b"N0"
    twin.prepend(0)
    assert pkt.tobytes() == b"N0T0" + payload
    assert twin.tobytes() == b"N1T0" + payload
    assert twin.data.obj is pkt.data.obj  # payload shared, not copied


def test_outbound_detach_copies_a_borrowed_payload() -> None:
    send_queue = bytearray(b"first segment")
    kept = PacketBuffer.outbound(memoryview(send_queue))
    kept.prepend(1)[:] = b"H"
    assert not kept.owned
    own = kept.detach()
    assert own.owned
    send_queue[:] = b"other segment"  # the application reuses its buffer
    assert own.tobytes() == b"Hfirst segment"
    assert kept.tobytes() == b"Hother segment"  # the hazard detach prevents


def test_outbound_rejects_inbound_operations() -> None:
    pkt = PacketBuffer.outbound(b"payload")
    for op in (pkt.consume_link, pkt.consume_network, pkt.consume_transport, pkt.pull):
        with pytest.raises(ValueError):
            op(1)
    with pytest.raises(ValueError):
        PacketBuffer.inbound(b"frame").prepend(1)


def test_constructor_is_not_for_direct_use() -> None:
    with pytest.raises(TypeError):
        PacketBuffer()


# -- inbound -----------------------------------------------------------------


def test_inbound_consume_layers_and_cut_ethernet_padding() -> None:
    frame = udp4_frame(b"hi")
    padded = frame + bytes(60 - len(frame))  # minimum Ethernet frame
    pkt = PacketBuffer.inbound(bytearray(padded))
    assert pkt.link_header is None and len(pkt) == 60
    eth = pkt.consume_link(ETH_HEADER_LEN)
    ip = pkt.consume_network(20)
    total_length = int.from_bytes(ip[2:4], "big")
    pkt.cap(total_length - 20)  # what the IP layer does with the padding
    udp = pkt.consume_transport(UDP_HEADER_LEN)
    assert bytes(eth) == bytes(pkt.link_header) == frame[:14]
    assert bytes(ip) == bytes(pkt.network_header) == frame[14:34]
    assert bytes(udp) == bytes(pkt.transport_header) == frame[34:42]
    assert bytes(pkt.data) == b"hi"
    assert bytes(pkt.headers) == frame[:42]
    assert pkt.tobytes() == frame
    assert len(pkt) == len(frame)
    assert UdpView(pkt.transport_header).src_port == 5353


def test_inbound_pull_skips_unrecorded_bytes() -> None:
    # IPv6 with a hop-by-hop header: the network header is the fixed 40
    # bytes, the extension header is pulled, the transport header follows.
    frame = bytes(ETHER / IP6 / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2) / Raw(b"data"))
    pkt = PacketBuffer.inbound(frame)
    pkt.consume_link(14)
    pkt.consume_network(40)
    ext = pkt.pull(8)
    pkt.consume_transport(8)
    assert bytes(ext) == frame[54:62]
    assert bytes(pkt.transport_header) == frame[62:70]
    assert bytes(pkt.data) == b"data"
    assert pkt.tobytes() == frame
    copy = pkt.detach()
    assert bytes(copy.network_header) == frame[14:54]
    assert bytes(copy.transport_header) == frame[62:70]
    assert copy.tobytes() == frame


def test_inbound_headers_start_at_first_consumed_header() -> None:
    # A virtio-net header pulled off first is not part of the packet.
    pkt = PacketBuffer.inbound(b"V" * 10 + b"E" * 14 + b"payload")
    pkt.pull(10)
    pkt.consume_link(14)
    assert pkt.tobytes() == b"E" * 14 + b"payload"
    assert pkt.detach().tobytes() == b"E" * 14 + b"payload"
    fresh = PacketBuffer.inbound(b"abc")
    assert fresh.tobytes() == b"abc" and bytes(fresh.headers) == b""


def test_trim_and_cap() -> None:
    pkt = PacketBuffer.inbound(b"0123456789")
    pkt.trim(2)
    assert bytes(pkt.data) == b"01234567"
    pkt.cap(100)  # longer than data: no-op
    assert bytes(pkt.data) == b"01234567"
    pkt.cap(5)
    assert bytes(pkt.data) == b"01234"
    pkt.trim(0)
    pkt.trim(5)
    assert bytes(pkt.data) == b""
    for bad in (lambda: pkt.trim(1), lambda: pkt.trim(-1), lambda: pkt.cap(-1)):
        with pytest.raises(ValueError):
            bad()


def test_consume_beyond_data_raises_and_changes_nothing() -> None:
    pkt = PacketBuffer.inbound(b"abcdef")
    pkt.consume_link(2)
    for op in (pkt.consume_link, pkt.consume_network, pkt.consume_transport, pkt.pull):
        with pytest.raises(ValueError):
            op(5)
        with pytest.raises(ValueError):
            op(-1)
    assert bytes(pkt.link_header) == b"ab" and pkt.network_header is None
    assert bytes(pkt.data) == b"cdef"
    assert pkt.detach().tobytes() == b"abcdef"


def test_fan_out_clones_are_isolated() -> None:
    # CHECKLIST B23: a multicast datagram delivered to 3 sockets; what one
    # consumer does to its buffer must not show in the others.
    frame = udp4_frame(b"multicast payload")
    pkt = PacketBuffer.inbound(bytearray(frame))
    pkt.consume_link(14)
    pkt.consume_network(20)
    clones = [pkt.clone() for _ in range(3)]
    clones[0].consume_transport(8)
    clones[0].trim(8)
    clones[1].cap(3)
    clones[2].consume_transport(8)
    clones[2].pull(10)
    assert bytes(clones[0].data) == b"multicast"
    assert bytes(clones[1].data) == frame[34:37] and clones[1].transport_header is None
    assert bytes(clones[2].data) == b"payload"
    # The original and every clone keep their own view of the headers.
    assert pkt.transport_header is None and bytes(pkt.data) == frame[34:]
    assert pkt.tobytes() == frame
    assert clones[0].tobytes() == frame[:-8]
    for c in clones:
        assert bytes(c.network_header) == frame[14:34]
        assert c.data.obj is pkt.data.obj  # same bytes, no copy


def test_owned() -> None:
    assert PacketBuffer.inbound(b"bytes").owned
    assert PacketBuffer.inbound(memoryview(b"bytes")[1:]).owned
    assert not PacketBuffer.inbound(bytearray(b"reusable")).owned
    assert PacketBuffer.inbound(bytearray(b"reusable")).detach().owned
    assert PacketBuffer.outbound(b"bytes").owned
    assert not PacketBuffer.outbound(bytearray(b"app buffer")).owned


def test_detach_of_owned_buffer_does_not_copy() -> None:
    frame = udp4_frame(b"hi")
    pkt = PacketBuffer.inbound(frame)
    pkt.consume_link(14)
    copy = pkt.detach()
    assert copy.data.obj is frame
    copy.consume_network(20)
    assert pkt.network_header is None  # still a separate buffer


# -- ownership: the B29 rule, shown on a real read loop ------------------------


def read_burst(
    sock: socket.socket, rx: bytearray, count: int, *, detach: bool
) -> list[list[PacketBuffer]]:
    """A link read loop over one reusable buffer, delivering every frame to
    three consumers (a packet socket and two datagram sockets) that keep it."""
    kept: list[list[PacketBuffer]] = [[], [], []]
    view = memoryview(rx)
    for _ in range(count):
        n = sock.recv_into(rx)
        pkt = PacketBuffer.inbound(view[:n])
        kept[0].append(pkt.detach() if detach else pkt.clone())  # packet socket
        pkt.consume_link(14)
        pkt.consume_network(20)
        pkt.consume_transport(8)
        for queue in kept[1:]:
            queue.append(pkt.detach() if detach else pkt.clone())
        pkt.release()  # the loop is done with this frame
    view.release()
    return kept


def send_burst(sock: socket.socket, count: int) -> list[bytes]:
    payloads = [f"frame {i:02d} ".encode() * (i + 1) for i in range(count)]
    for p in payloads:
        sock.send(udp4_frame(p))
    return payloads


def test_detached_packets_survive_buffer_reuse(link: tuple[socket.socket, socket.socket]) -> None:
    a, b = link
    payloads = send_burst(a, 10)  # more than one recvmmsg batch of 8
    rx = bytearray(2048)
    kept = read_burst(b, rx, 10, detach=True)
    for queue in kept[1:]:
        assert [bytes(p.data) for p in queue] == payloads
        assert all(UdpView(p.transport_header).dst_port == 53 for p in queue)
    # Nothing points into the read buffer any more: it can even be resized,
    # and overwriting it changes no kept packet.
    rx[:] = b"\xee" * 4096
    assert [bytes(p.data) for p in kept[1]] == payloads
    assert [p.tobytes() for p in kept[0]] == [udp4_frame(p) for p in payloads]


def test_borrowed_packets_see_buffer_reuse(link: tuple[socket.socket, socket.socket]) -> None:
    # The hazard the rule prevents: consumers that keep borrowed views see
    # every later frame written over the one they kept.
    a, b = link
    payloads = send_burst(a, 10)
    rx = bytearray(2048)
    kept = read_burst(b, rx, 10, detach=False)
    last = udp4_frame(payloads[-1])
    first = kept[0][0].tobytes()
    assert first != udp4_frame(payloads[0])
    assert first == last[: len(first)]  # frame 0's view now shows frame 9
    assert bytes(kept[1][0].data) != payloads[0]
    # and they pin the buffer, so the link could not even grow it
    with pytest.raises(BufferError):
        rx.extend(b"x")
    for queue in kept:
        for p in queue:
            p.release()
    rx.extend(b"x")  # released: nothing points into it


def test_release_unpins_a_borrowed_buffer() -> None:
    rx = bytearray(b"frame bytes")
    pkt = PacketBuffer.inbound(rx)
    pkt.consume_link(6)
    with pytest.raises(BufferError):
        rx.extend(b"!")
    pkt.release()
    rx.extend(b"!")
    assert len(pkt) == 0 and pkt.link_header is None and pkt.tobytes() == b""


# -- GSO and checksum offload fields (B36) --------------------------------------


def test_gso_type_values_are_virtio_net() -> None:
    assert (GsoType.NONE, GsoType.TCPV4, GsoType.UDP, GsoType.TCPV6) == (0, 1, 3, 4)
    header = Path("/usr/include/linux/virtio_net.h")
    if not header.exists():
        pytest.skip("no linux/virtio_net.h")
    defines = dict(re.findall(r"#define\s+VIRTIO_NET_HDR_GSO_(\w+)\s+(\w+)", header.read_text()))
    for member in GsoType:
        assert int(defines[member.name], 0) == member.value


def test_gso_fields_default_and_travel_with_clones() -> None:
    for pkt in (PacketBuffer.inbound(bytearray(100)), PacketBuffer.outbound(bytearray(100))):
        assert pkt.gso_type is GsoType.NONE
        assert (pkt.gso_size, pkt.hdr_len, pkt.csum_start, pkt.csum_offset) == (0, 0, 0, 0)
        assert not pkt.needs_csum and not pkt.csum_valid
        # A TSO super-frame as the TAP hands it over (or as TCP asks for it).
        pkt.gso_type, pkt.gso_size, pkt.hdr_len = GsoType.TCPV4, 1448, 66
        pkt.csum_start, pkt.csum_offset, pkt.needs_csum = 34, 16, True
        for copy in (pkt.clone(), pkt.detach()):
            assert (copy.gso_type, copy.gso_size, copy.hdr_len) == (GsoType.TCPV4, 1448, 66)
            assert (copy.csum_start, copy.csum_offset, copy.needs_csum) == (34, 16, True)
            assert not copy.csum_valid
        assert "gso TCPV4 1448" in repr(pkt)


def test_repr() -> None:
    assert repr(PacketBuffer.inbound(b"abc")) == "<PacketBuffer inbound 3 bytes data 3>"
    pkt = PacketBuffer.outbound(b"abc")
    pkt.prepend(2)
    assert repr(pkt) == "<PacketBuffer outbound 5 bytes data 3>"


# -- properties ------------------------------------------------------------------

inbound_ops = st.lists(
    st.tuples(
        st.sampled_from(["link", "network", "transport", "pull", "trim", "cap", "clone"]),
        st.integers(-2, 40),
    ),
    max_size=12,
)


@given(frame=st.binary(max_size=120), ops=inbound_ops)
def test_inbound_ops_match_a_bytes_model(frame: bytes, ops: list[tuple[str, int]]) -> None:
    pkt = PacketBuffer.inbound(bytearray(frame))
    start, end = 0, len(frame)  # model: data is frame[start:end]
    headers: dict[str, tuple[int, bytes]] = {}  # model: recorded (offset, bytes)
    for op, n in ops:
        before = (start, end)
        try:
            if op == "clone":
                pkt = pkt.clone()
            elif op == "trim":
                pkt.trim(n)
                end -= n
            elif op == "cap":
                pkt.cap(n)
                end = min(end, start + n)
            else:
                taken = bytes(getattr(pkt, "pull" if op == "pull" else f"consume_{op}")(n))
                assert taken == frame[start : start + n]
                if op != "pull":
                    headers[op] = (start, taken)
                start += n
        except ValueError:
            assert (start, end) == before
            assert n < 0 or (
                op in ("link", "network", "transport", "pull", "trim") and n > end - start
            )
        assert bytes(pkt.data) == frame[start:end]
    # The packet starts at the lowest recorded header (bytes pulled before
    # it, or recorded by a header consumed again later, are not part of it).
    head = min([off for off, _ in headers.values()], default=start)
    packet = frame[head:end]
    for p in (pkt, pkt.detach()):
        assert p.tobytes() == packet and len(p) == len(packet)
        assert bytes(p.data) == frame[start:end]
        for layer, (_, value) in headers.items():
            assert bytes(getattr(p, f"{layer}_header")) == value
    assert pkt.detach().owned


@given(
    headers=st.lists(st.binary(max_size=30), max_size=6),
    payload=st.binary(max_size=100),
)
def test_outbound_prepends_match_a_bytes_model(headers: list[bytes], payload: bytes) -> None:
    pkt = PacketBuffer.outbound(bytearray(payload), headroom=DEFAULT_HEADROOM)
    expected = b""
    for h in headers:  # transport first: each header goes in front
        pkt.prepend(len(h))[:] = h
        expected = h + expected
    assert pkt.tobytes() == expected + payload
    assert b"".join(pkt.as_iovecs()) == expected + payload
    assert bytes(pkt.headers) == expected
    assert pkt.headroom == DEFAULT_HEADROOM - len(expected)
    assert pkt.detach().tobytes() == expected + payload
