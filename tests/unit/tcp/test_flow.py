"""Flow control, ACK policy, Nagle/cork, keepalive, buffer auto-tuning."""

from __future__ import annotations

from shardnet.common.seqnum import seq_add
from shardnet.shards.tcp.config import TcpConfig
from shardnet.shards.tcp.endpoint import Reset
from shardnet.shards.tcp.state import State

from .harness import IRS, ISS, Conn, FixedRtt

PLAIN = dict(timestamps=False, window_scaling=False, sack=False)


def small_rcv(**kw: object) -> TcpConfig:
    return TcpConfig(rcv_buf=8000, rcv_buf_max=8000, rcv_autotune=False, **PLAIN, **kw)


def test_receive_window_closes_as_buffer_fills() -> None:
    """RFC 9293 §3.8: the advertised window is the free buffer; data beyond
    the window is trimmed."""
    c = Conn.established(small_rcv(delayed_ack=False), mss=1000)
    c.send("PA", payload=b"x" * 1000)
    assert c.expect("A", ack=IRS + 1001).window == 7000
    for _ in range(7):
        c.send("PA", payload=b"x" * 1000)
    assert c.output()[-1].window == 0
    c.send("PA", payload=b"y")  # zero window: not acceptable
    c.expect("A", ack=IRS + 8001, window=0)
    assert c.ep.readable == 8000


def test_receiver_sws_avoidance() -> None:
    """RFC 9293 §3.8.6.2.2: the right edge moves only by min(buffer/2, MSS)
    or more; a small read sends no window update."""
    c = Conn.established(small_rcv(delayed_ack=False), mss=1000)
    for _ in range(8):
        c.send("PA", payload=b"x" * 1000)
    c.output()
    c.ep.recv(500)  # 500 free < MSS: no update
    c.expect_nothing()
    c.ep.recv(4500)  # 5000 free: an update at once
    c.expect("A", ack=IRS + 8001, window=5000)


def test_zero_window_probe_and_persist_timer() -> None:
    """RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17: with a zero window and data
    queued, probes go out on the persist timer with back-off until the
    window opens; the connection is never timed out while probes are ACKed."""
    c = Conn.established(TcpConfig(**PLAIN), window=0)
    c.ep.send(b"z" * 100)
    c.expect_nothing()
    c.advance(1.01)  # first probe after one RTO
    c.expect("A", seq=ISS)  # SND.UNA - 1, no data
    c.send("A", ack=ISS + 1, window=0)
    c.advance(1.5)
    c.expect_nothing()
    c.advance(0.6)  # back-off: 2 s
    c.expect("A", seq=ISS)
    c.send("A", ack=ISS + 1, window=1000)
    c.expect("PA", seq=ISS + 1, length=100)
    assert c.ep.state is State.ESTABLISHED


def test_window_update_restarts_sending() -> None:
    """RFC 9293 §3.10.7.4 (SND.WL1/WL2): a window update lets data flow."""
    c = Conn.established(TcpConfig(**PLAIN), window=0)
    c.ep.send(b"q" * 10)
    c.expect_nothing()
    c.send("A", window=5000)
    c.expect("PA", payload=b"q" * 10)


def test_old_window_update_ignored() -> None:
    """RFC 9293 §3.10.7.4: a window from an older segment (SND.WL1) is ignored."""
    c = Conn.established(TcpConfig(**PLAIN))
    c.send("PA", payload=b"abc", window=5000)
    c.send("A", seq=IRS + 1, window=100)  # older than the last window update
    assert c.ep.snd_wnd == 5000


def test_delayed_ack_timer() -> None:
    """RFC 1122 §4.2.3.2: one segment is ACKed after the delayed-ACK timeout."""
    c = Conn.established(TcpConfig(**PLAIN, delayed_ack_s=0.2))
    c.send("PA", payload=b"x" * 100)
    c.expect_nothing()
    c.advance(0.19)
    c.expect_nothing()
    c.advance(0.02)
    c.expect("A", ack=IRS + 101)


def test_ack_every_second_full_segment() -> None:
    """RFC 1122 §4.2.3.2 / RFC 5681 §4.2: at least every second full segment."""
    c = Conn.established(TcpConfig(**PLAIN))
    c.send("A", payload=b"x" * 1460)
    c.expect_nothing()
    c.send("A", payload=b"x" * 1460)
    c.expect("A", ack=seq_add(IRS, 1 + 2920))


def test_out_of_order_gets_immediate_dup_ack() -> None:
    """RFC 5681 §4.2: out-of-order data is ACKed at once (duplicate ACK);
    filling the hole is ACKed at once too."""
    c = Conn.established(TcpConfig(**PLAIN))
    c.send("PA", seq=IRS + 101, payload=b"b" * 100)
    c.expect("A", ack=IRS + 1)
    c.send("PA", seq=IRS + 1, payload=b"a" * 100)
    c.expect("A", ack=IRS + 201)
    assert c.ep.recv() == b"a" * 100 + b"b" * 100


def test_out_of_order_fin() -> None:
    """RFC 9293 §3.10.7.4 eighth: a FIN is processed once everything before it arrived."""
    c = Conn.established(TcpConfig(**PLAIN))
    c.send("FA", seq=IRS + 4)
    c.expect("A", ack=IRS + 1)
    assert c.ep.state is State.ESTABLISHED
    c.send("PA", seq=IRS + 1, payload=b"abc")
    c.expect("A", ack=IRS + 5)
    assert c.ep.state is State.CLOSE_WAIT and c.ep.recv() == b"abc"


def test_nagle_holds_small_segments() -> None:
    """RFC 9293 §3.7.4 (Nagle): a small segment waits while data is unacked."""
    c = Conn.established(TcpConfig(**PLAIN))
    c.ep.send(b"a")
    c.expect("PA", payload=b"a")
    c.ep.send(b"b")
    c.ep.send(b"c")
    c.expect_nothing()
    c.send("A", ack=ISS + 2)
    c.expect("PA", payload=b"bc")


def test_nodelay_sends_at_once() -> None:
    """TCP_NODELAY: no Nagle."""
    c = Conn.established(TcpConfig(**PLAIN, nodelay=True))
    c.ep.send(b"a")
    c.expect("PA", payload=b"a")
    c.ep.send(b"b")
    c.expect("PA", payload=b"b")


def test_cork_batches_until_full_or_uncorked() -> None:
    """TCP_CORK-like: only full segments while corked; the tail on uncork."""
    c = Conn.established(TcpConfig(**PLAIN, nodelay=True), mss=1000)
    c.ep.set_cork(True)
    c.ep.send(b"h" * 300)
    c.expect_nothing()
    c.ep.send(b"b" * 1000)
    c.expect("A", length=1000)
    c.expect_nothing()
    c.ep.set_cork(False)
    c.expect("PA", length=300)


def test_sender_sws_avoidance() -> None:
    """RFC 9293 §3.8.6.2.1: no tiny segment into a small window while more
    data waits; the persist (override) timer eventually sends what fits."""
    c = Conn.established(TcpConfig(**PLAIN), window=10000)
    c.ep.send(b"x" * 20000)
    # 6 * 1460 = 8760; the last 1240 bytes of window are less than half
    # the largest window seen (10000): held back.
    assert len(c.output()) == 6
    c.send("A", ack=ISS + 8761, window=100)  # 100 bytes of window
    c.expect_nothing()
    c.advance(1.01)
    c.expect("A", seq=ISS + 8761, length=100)


def test_keepalive() -> None:
    """RFC 1122 §4.2.3.6: after idle, probes SEG.SEQ = SND.NXT - 1 every
    interval; an answer resets; ``count`` unanswered -> TimeoutError."""
    cfg = TcpConfig(**PLAIN, keepalive=True, keepalive_idle_s=10,
                    keepalive_intvl_s=2, keepalive_cnt=2)  # fmt: skip
    c = Conn.established(cfg)
    c.advance(9.9)
    c.expect_nothing()
    c.advance(0.2)
    c.expect("A", seq=ISS, ack=IRS + 1)
    c.send("A")  # the answer
    c.advance(9.9)
    c.expect_nothing()
    c.advance(0.2)
    c.expect("A", seq=ISS)
    c.advance(2.0)
    c.expect("A", seq=ISS)
    c.advance(2.0)
    c.expect("RA")
    ev = c.drain_events()
    assert isinstance(ev[0], Reset) and ev[0].error is TimeoutError


def test_receive_buffer_autotuning() -> None:
    """Receive-buffer auto-tuning: when a round trip delivers more than half
    the buffer and the application keeps up, it doubles (bounded)."""
    rtt = FixedRtt()
    cfg = TcpConfig(**PLAIN, rcv_buf=8192, rcv_buf_max=32768, delayed_ack=False)
    c = Conn.established(cfg, rtt=rtt, mss=1000)
    rtt.sample(0.1)
    for _ in range(80):
        c.send("PA", payload=b"x" * 1000)
        c.ep.recv(1 << 20)
        c.output()  # the ACKs advertise the window
        c.now += 0.005
    assert c.ep.rcv_buf == 32768
    c.output()


def _burst_after_idle(idle_s: float, **config: object) -> int:
    """Segments that leave at once when the app writes after ``idle_s``
    seconds of silence, once a long transfer has opened the window."""
    from shardnet.shards.tcp.cc import make_cc

    c = Conn.established(
        TcpConfig(**PLAIN, **config), window=65535, cc=make_cc("newreno", 1460), rtt=FixedRtt(1.0)
    )
    for _ in range(20):  # grow cwnd well past the initial window
        c.ep.send(b"x" * 30 * 1460)
        for seg in c.output():
            c.send("A", ack=seq_add(seg.seq, len(seg.payload)))
    c.output()
    assert c.ep.cc.cwnd > 20 * 1460
    c.advance(idle_s)
    c.ep.send(b"y" * 60 * 1460)
    return sum(1 for s in c.output() if s.payload)


def test_cwnd_restarts_from_the_initial_window_after_an_idle_rto() -> None:
    """RFC 5681 §4.1 (Linux tcp_slow_start_after_idle): after more than an
    RTO without sending, at most the initial window goes out at once."""
    assert _burst_after_idle(2.0) == 10  # IW = 10 segments (RFC 6928)
    assert _burst_after_idle(0.5) > 10  # shorter than the RTO: the window stays
    assert _burst_after_idle(2.0, slow_start_after_idle=False) > 10


def test_user_timeout_ends_zero_window_probing() -> None:
    """TCP_USER_TIMEOUT (Linux): a zero window probed for longer than the
    timeout aborts the connection with ETIMEDOUT even though each probe is
    answered (buffered data that cannot leave is as stuck as lost data)."""
    import errno

    c = Conn.established(TcpConfig(**PLAIN, user_timeout_ms=5000), window=0)
    c.ep.send(b"z" * 100)
    for _ in range(10):
        c.advance(1.01)
        for _seg in c.output():  # every probe answered, the window still closed
            c.send("A", ack=ISS + 1, window=0)
        if c.ep.state is State.CLOSED:
            break
    assert c.ep.state is State.CLOSED and c.now < 1000 + 12
    ev = [e for e in c.drain_events() if isinstance(e, Reset)]
    assert ev and ev[0].errno == errno.ETIMEDOUT
