"""TCP Fast Open (RFC 7413): the option codec, the server's cookies and
listener (cookie request and issue, SYN data taken or refused, the
TCP_FASTOPEN queue bound), the client endpoint (data in the SYN, data the
SYN-ACK did not acknowledge sent again, a lost data SYN) and the client's
cookie cache with the §4.1.3 fallbacks."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import TCP  # type: ignore[import-untyped]

from shardnet.common.addr import parse_ip
from shardnet.common.wire.tcp import ACK, PSH, RST, SYN, TcpOptions, TcpView
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Connected, DataReceived, TcpEndpoint
from shardnet.shards.tcp.isn import TfoCookies
from shardnet.shards.tcp.listener import TcpListener
from shardnet.shards.tcp.segment import Segment
from shardnet.shards.tcp.state import State
from shardnet.shards.tcp.tfo_cache import TFO_BACKOFF_S, TfoCache

from .harness import ISS, Conn, wire

US = parse_ip("198.18.0.1")
PEER = parse_ip("198.18.0.2")
OTHER = parse_ip("198.18.0.3")
PORT = 80
SERVER_ISS = 5555
SECRET = bytes(range(16))


# ------------------------------------------------------------------ codec


def test_option_round_trip_and_scapy() -> None:
    """Kind 34 with a cookie and as a request (empty), NOP-padded; scapy
    reads the same option (its "TFO")."""
    for cookie in (b"", bytes(range(8)), bytes(range(16))):
        seg = Segment(1, 2, 3, 0, SYN, 100, TcpOptions(mss=1460, fastopen=cookie), b"hi")
        raw = seg.to_bytes()
        assert (len(raw) - 2) % 4 == 0
        back = Segment.from_view(TcpView.checked(raw))
        assert back.options.fastopen == cookie and bytes(back.payload) == b"hi"
        tfo = [v for k, v in TCP(raw).options if k == "TFO"]
        assert len(tfo) == 1
        if len(cookie) == 8:  # scapy reads an 8-byte cookie as two 32-bit words
            assert struct.pack("!II", *tfo[0]) == cookie
        assert ("tfo cookie" if cookie else "tfo cookiereq") in TcpView.checked(raw).summary()


@pytest.mark.parametrize("n", [1, 3, 5, 17, 18])
def test_bad_cookie_length_ignored(n: int) -> None:
    """RFC 7413 §4.1.1: a cookie of 4 to 16 bytes (even, as Linux): any
    other length is ignored, the segment is kept."""
    opt = bytes([34, 2 + n]) + bytes(n)
    opt += b"\x01" * (-len(opt) % 4)
    raw = bytearray(Segment(1, 2, 3, 0, SYN, 100).to_bytes())
    raw[12] = ((20 + len(opt)) // 4) << 4
    v = TcpView.checked(bytes(raw[:20]) + opt)
    assert Segment.from_view(v).options.fastopen is None


def test_cookies_keyed_per_client_and_secret() -> None:
    """RFC 7413 §4.1.2: a MAC of the client address; a mapped IPv4 address
    gets its IPv4 cookie; another secret (another stack) another cookie."""
    c = TfoCookies(SECRET)
    k = c.make(PEER)
    assert len(k) == 8 and c.check(PEER, k) and not c.check(OTHER, k)
    assert c.make(b"\0" * 10 + b"\xff\xff" + PEER) == k
    assert TfoCookies(SECRET).make(PEER) == k  # every shard: one secret
    assert TfoCookies(bytes(16)).make(PEER) != k


# ------------------------------------------------------------------ server


def listener(qlen: int = 4, fastopen: int = 3) -> TcpListener:
    config = TcpConfig(fastopen=fastopen, fastopen_qlen=qlen)
    return TcpListener(
        config,
        PORT,
        isn=lambda *_: SERVER_ISS,
        tfo=TfoCookies(SECRET),  # type: ignore[arg-type]
    )


def tfo_syn(sport: int, cookie: bytes | None, data: bytes = b"", seq: int = 1000) -> Segment:
    opts = TcpOptions(mss=1460, fastopen=cookie)
    return wire(Segment(sport, PORT, seq, 0, SYN, 65535, opts, data))


def test_cookie_request_gets_cookie_and_normal_handshake() -> None:
    lst = listener()
    lst.handle_segment(0.0, PEER, US, tfo_syn(5000, b""))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.flags == SYN | ACK and sa.ack == 1001
    assert wire(sa).options.fastopen == TfoCookies(SECRET).make(PEER)
    assert lst.tfo_cookies_sent == 1 and lst.accept() is None


def test_valid_cookie_data_delivered_before_handshake_completes() -> None:
    """RFC 7413 §4.2.2: the data is the application's at once, the SYN-ACK
    acknowledges it, the child waits in the accept queue in SYN-RECEIVED."""
    lst = listener()
    cookie = TfoCookies(SECRET).make(PEER)
    lst.handle_segment(0.0, PEER, US, tfo_syn(5000, cookie, b"GET / HTTP/1.0\r\n\r\n"))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.flags == SYN | ACK and sa.ack == 1001 + 18
    assert sa.options.fastopen is None  # valid: nothing to give (as Linux)
    acc = lst.accept()
    assert acc is not None and acc.endpoint.state is State.SYN_RECEIVED
    ep = acc.endpoint
    assert ep.next_event() == DataReceived(18) and ep.recv() == b"GET / HTTP/1.0\r\n\r\n"
    assert lst.tfo_accepted == 1
    # the client's ACK completes it
    ep.handle_segment(0.0, wire(Segment(5000, PORT, 1019, SERVER_ISS + 1, ACK, 65535)))
    assert ep.state is State.ESTABLISHED and ep.next_event() == Connected()


def test_bad_cookie_data_ignored_fresh_cookie() -> None:
    """A cookie not valid for the source (another client's): the data is
    dropped, the SYN-ACK acknowledges only the SYN and gives the right cookie."""
    lst = listener()
    wrong = TfoCookies(SECRET).make(OTHER)
    lst.handle_segment(0.0, PEER, US, tfo_syn(5000, wrong, b"data"))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.ack == 1001 and wire(sa).options.fastopen == TfoCookies(SECRET).make(PEER)
    assert lst.tfo_cookies_rejected == 1 and lst.accept() is None


@pytest.mark.parametrize("fastopen,qlen", [(1, 4), (3, 0)])
def test_server_off_data_ignored(fastopen: int, qlen: int) -> None:
    """Without the server bit or without TCP_FASTOPEN: no cookie, no data."""
    lst = listener(qlen=qlen, fastopen=fastopen)
    lst.handle_segment(0.0, PEER, US, tfo_syn(5000, TfoCookies(SECRET).make(PEER), b"x"))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.ack == 1001 and wire(sa).options.fastopen is None


def test_queue_bound() -> None:
    """At most TCP_FASTOPEN's qlen Fast Open children in SYN-RECEIVED (taken
    by the application or not); the next falls back without a cookie; one
    completing makes room."""
    lst = listener(qlen=2)
    cookie = TfoCookies(SECRET).make(PEER)
    for port in (5000, 5001, 5002):
        lst.handle_segment(0.0, PEER, US, tfo_syn(port, cookie, b"abc"))
    acks = sorted(sa.ack for _, _, sa in lst.poll_transmit(0.0))
    assert acks == [1001, 1004, 1004] and lst.tfo_overflow == 1
    first = lst.accept()
    assert first is not None
    first.endpoint.handle_segment(0.0, wire(Segment(5000, PORT, 1004, SERVER_ISS + 1, ACK, 65535)))
    assert first.endpoint.state is State.ESTABLISHED
    lst.handle_segment(0.0, PEER, US, tfo_syn(5003, cookie, b"abc"))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    assert sa.ack == 1004 and lst.tfo_accepted == 3


# ------------------------------------------------------------------ client


def client(cookie: bytes | None, mss: int = 1460) -> Conn:
    cfg = TcpConfig(timestamps=False, window_scaling=False, sack=False)
    ep = TcpEndpoint.connect(
        0.0, cfg, 40000, 80, iss=ISS, fastopen=cookie, fastopen_mss=mss, **Conn.kw()
    )
    return Conn(ep)


def test_client_asks_for_cookie_and_keeps_it() -> None:
    c = client(b"")
    c.ep.send(b"hello")
    s = c.expect("S", seq=ISS, length=0)
    assert s.options.fastopen == b""
    c.send("SA", seq=c.irs, ack=ISS + 1, options=TcpOptions(mss=1460, fastopen=b"C" * 8))
    assert c.ep.tfo_got == b"C" * 8 and c.ep.state is State.ESTABLISHED
    c.expect("PA", seq=ISS + 1, payload=b"hello")


def test_client_data_in_syn_acked() -> None:
    """RFC 7413 §4.2.1: with a cookie the SYN carries the queued data (up
    to the MSS less the options); the SYN-ACK acknowledges it."""
    c = client(b"K" * 8, mss=100)
    c.ep.send(b"x" * 300)
    s = c.expect("S", seq=ISS)
    assert s.options.fastopen == b"K" * 8
    n = len(s.payload)
    assert 0 < n <= 100 - 16 and bytes(s.payload) == b"x" * n
    c.send("SA", seq=c.irs, ack=ISS + 1 + n, options=TcpOptions(mss=1460))
    assert c.ep.tfo_acked == n and c.ep.state is State.ESTABLISHED
    s = c.expect("PA", seq=ISS + 1 + n)
    assert len(s.payload) == 300 - n
    assert c.ep.bytes_sent == 300 and c.ep.retransmits == 0


def test_client_data_ignored_sent_again_at_once() -> None:
    """The server took only the SYN (bad cookie, or no Fast Open): the data
    goes again right after the handshake, before any timer."""
    c = client(b"K" * 8)
    c.ep.send(b"request")
    s = c.expect("S", payload=b"request")
    c.send("SA", seq=c.irs, ack=ISS + 1, options=TcpOptions(mss=1460, fastopen=b"N" * 8))
    assert c.ep.tfo_acked == 0 and c.ep.tfo_got == b"N" * 8
    c.expect("PA", seq=ISS + 1, payload=b"request")
    assert s.options.fastopen == b"K" * 8 and c.ep.bytes_sent == 7


def test_client_lost_data_syn_retransmitted_without_data() -> None:
    """RFC 7413 §4.1.3: the SYN with data times out: the next SYN goes
    without data or option, and the endpoint says so for the fallback."""
    c = client(b"K" * 8)
    c.ep.send(b"request")
    c.expect("S", payload=b"request")
    c.advance(1.0)
    s = c.expect("S", seq=ISS, length=0)
    assert s.options.fastopen is None and c.ep.tfo_syn_lost
    c.send("SA", seq=c.irs, ack=ISS + 1, options=TcpOptions(mss=1460))
    c.expect("PA", seq=ISS + 1, payload=b"request")


# ------------------------------------------------------------------ cache


def test_cache_request_then_cookie_then_fallbacks() -> None:
    cache = TfoCache()
    assert cache.for_connect(0.0, PEER, 1460) == (b"", 0)  # ask for one
    cache.learn(0.0, PEER, cookie=b"K" * 8, mss=1400, sent=0, acked=0, syn_lost=False)
    assert cache.for_connect(1.0, PEER, 1460) == (b"K" * 8, 1400)
    # data acknowledged: nothing changes
    cache.learn(1.0, PEER, cookie=None, mss=1400, sent=10, acked=10, syn_lost=False)
    assert cache.for_connect(2.0, PEER, 1460) == (b"K" * 8, 1400)
    # a new cookie with the data refused: the new one, no fallback
    cache.learn(2.0, PEER, cookie=b"N" * 8, mss=1400, sent=10, acked=0, syn_lost=False)
    assert cache.for_connect(3.0, PEER, 1460) == (b"N" * 8, 1400) and cache.fallbacks == 0
    # data refused, no cookie: the server does not do Fast Open now
    cache.learn(3.0, PEER, cookie=None, mss=1400, sent=10, acked=0, syn_lost=False)
    assert cache.for_connect(4.0, PEER, 1460) is None and cache.fallbacks == 1
    assert cache.for_connect(3.0 + TFO_BACKOFF_S, PEER, 1460) == (b"", 1400)
    # a lost data SYN: longer the second time in a row
    cache.learn(100.0, PEER, cookie=None, mss=1400, sent=10, acked=0, syn_lost=True)
    assert cache.for_connect(100.0 + TFO_BACKOFF_S, PEER, 1460) is None
    assert cache.for_connect(100.0 + 2 * TFO_BACKOFF_S, PEER, 1460) == (b"", 1400)


def test_cache_bounded() -> None:
    cache = TfoCache(max_entries=2)
    for i in range(5):
        cache.learn(0.0, bytes([198, 18, 1, i]), cookie=b"K" * 8, mss=0, sent=0, acked=0,
                    syn_lost=False)  # fmt: skip
    assert len(cache) == 2
    assert cache.for_connect(0.0, bytes([198, 18, 1, 4]), 1460) == (b"K" * 8, 1460)
    assert cache.for_connect(0.0, bytes([198, 18, 1, 0]), 1460) == (b"", 0)


def test_config_bits() -> None:
    with pytest.raises(ValueError, match="fastopen"):
        TcpConfig(fastopen=4)
    assert TcpConfig.from_settings({"fastopen": "3", "fastopen_qlen": "16"}).fastopen == 3


def test_simultaneous_open_synack_carries_no_cookie_and_resends_data() -> None:
    """RFC 9293 Figure 7 with a data SYN of ours: our SYN-ACK echoes no
    Fast Open option, and the data goes after the handshake."""
    c = client(b"K" * 8)
    c.ep.send(b"request")
    c.expect("S", payload=b"request")
    c.send("S", seq=c.irs, options=TcpOptions(mss=1460))
    s = c.expect("SA", seq=ISS, ack=c.irs + 1, length=0)
    assert s.options.fastopen is None
    c.send("A", ack=ISS + 1)
    assert c.ep.state is State.ESTABLISHED
    c.expect("PA", seq=ISS + 1, payload=b"request")


def test_server_answers_before_the_handshake_completes() -> None:
    """RFC 7413 §4.2.2: the application's answer to the SYN's data leaves
    right after the SYN-ACK, not one round trip later; the client's ACK
    of both completes the handshake; a lost answer is sent again."""
    lst = listener()
    cookie = TfoCookies(SECRET).make(PEER)
    lst.handle_segment(0.0, PEER, US, tfo_syn(5000, cookie, b"ping"))
    [(_, _, sa)] = lst.poll_transmit(0.0)
    acc = lst.accept()
    assert acc is not None
    ep = acc.endpoint
    assert ep.recv() == b"ping"
    ep.send(b"pong")
    [data] = ep.poll_transmit(0.0)
    assert data.flags & ACK and data.seq == SERVER_ISS + 1 and bytes(data.payload) == b"pong"
    assert data.ack == 1005 and ep.state is State.SYN_RECEIVED
    # the client ACKs the SYN only: the answer stays in flight, timed
    ep.handle_segment(0.1, wire(Segment(5000, PORT, 1005, SERVER_ISS + 1, ACK, 65535)))
    assert ep.state is State.ESTABLISHED
    deadline = ep.next_deadline()
    assert deadline is not None
    ep.handle_timeout(deadline)
    [again] = ep.poll_transmit(deadline)
    assert again.seq == SERVER_ISS + 1 and bytes(again.payload) == b"pong"
    ep.handle_segment(deadline, wire(Segment(5000, PORT, 1005, SERVER_ISS + 5, ACK, 65535)))
    assert ep.poll_transmit(deadline) == [] and ep.next_deadline() is None


@pytest.mark.parametrize("seed", range(4))
def test_random_fast_open_syns_stay_bounded(seed: int) -> None:
    """Untrusted SYNs with any mix of Fast Open options, data and source
    addresses (valid cookies among them), ACKs and RSTs: nothing raises,
    the pending Fast Open children never exceed the queue length, the
    children never the SYN and accept queues."""
    import random

    rng = random.Random(seed)
    lst = listener(qlen=3)
    lst.config = TcpConfig(fastopen=3, fastopen_qlen=3, syn_backlog=16)
    lst.backlog = 8
    cookies = TfoCookies(SECRET)
    peers = [bytes([198, 18, 2, i]) for i in range(4)]
    for step in range(2000):
        now = step * 0.1
        src = rng.choice(peers)
        sport = rng.randrange(1024, 1100)
        kind = rng.random()
        if kind < 0.6:
            cookie = rng.choice([None, b"", cookies.make(src), cookies.make(peers[0]), bytes(8)])
            data = rng.randbytes(rng.randrange(0, 40))
            lst.handle_segment(now, src, US, tfo_syn(sport, cookie, data, seq=rng.getrandbits(32)))
        else:
            flags = rng.choice([ACK, ACK | PSH, RST, ACK | RST])
            seg = Segment(sport, PORT, rng.getrandbits(32), SERVER_ISS + rng.randrange(0, 8),
                          flags, 65535, payload=rng.randbytes(rng.randrange(0, 10)))  # fmt: skip
            lst.handle_segment(now, src, US, wire(seg))
        lst.handle_timeout(now)
        lst.poll_transmit(now)
        if rng.random() < 0.2:
            lst.accept()  # taken by an application that never drives it
        pending = [ep for ep in lst._tfo_pending if ep.state is State.SYN_RECEIVED]
        assert len(pending) <= 3
        assert lst.syn_queue_len() <= 16 + 1 and lst.accept_queue_len() <= 8 + 3
    assert lst.tfo_accepted > 0 and lst.tfo_overflow > 0 and lst.tfo_cookies_rejected > 0
