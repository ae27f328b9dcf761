"""Shared-memory SPSC ring: ordering, wrap-around, drops, doorbells, the
sleep/wake race, and transfer to real child processes (spawn, forkserver,
fork)."""

from __future__ import annotations

import asyncio
import pickle
import select
import threading
import time
import zlib
from collections import deque

import multiprocess
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.common.fdpass import PassedFd
from shardnet.common.ring import (
    WRAP_MARKER,
    Ring,
    RingError,
    RingHandle,
)


@pytest.fixture
def ring():
    r = Ring.create(1024)
    yield r
    r.close()


def record(i: int) -> bytes:
    """Record i: its sequence number and a deterministic body of 0..199 bytes."""
    return i.to_bytes(8, "little") + bytes([i & 0xFF]) * (i * 7919 % 200)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# --- ordering, batching, visibility ----------------------------------------


def test_records_arrive_in_order_with_contents() -> None:
    with Ring.create(1 << 16) as r:
        p, c = r.producer(), r.consumer()
        sent = [record(i) for i in range(100)]
        for data in sent:
            assert p.try_put(data)
        p.publish()
        views = c.read_batch(1000)
        assert [bytes(v) for v in views] == sent
        del views
        c.release()
        assert r.used() == 0


def test_unpublished_records_are_invisible(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    assert p.try_put(b"abc")
    assert p.pending == 8
    assert not c.has_data()
    assert c.read_batch() == []
    p.publish()
    assert p.pending == 0
    assert c.has_data()
    assert [bytes(v) for v in c.read_batch()] == [b"abc"]


def test_read_batch_limit_and_continuation_before_release(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    for i in range(10):
        p.try_put(bytes([i]) * i)
    p.publish()
    first = [bytes(v) for v in c.read_batch(4)]
    rest = [bytes(v) for v in c.read_batch(100)]
    assert first + rest == [bytes([i]) * i for i in range(10)]
    assert ring.used() > 0  # nothing released yet
    c.release()
    assert ring.used() == 0


def test_empty_and_memoryview_records(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    frame = bytearray(b"\x00\x01header-and-payload")
    assert p.put(memoryview(frame)[2:])
    assert p.put(b"")
    assert [bytes(v) for v in c.read_batch()] == [b"header-and-payload", b""]


def test_drain_calls_fn_in_order_and_releases(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    for i in range(5):
        p.try_put(bytes([i]))
    p.publish()
    got: list[bytes] = []
    assert c.drain(lambda v: got.append(bytes(v)), 3) == 3
    assert c.drain(lambda v: got.append(bytes(v)), 3) == 2
    assert got == [bytes([i]) for i in range(5)]
    assert ring.used() == 0


def test_drain_consumes_the_record_that_raised(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    for data in (b"ok", b"poison", b"next"):
        p.try_put(data)
    p.publish()

    def fn(v: memoryview) -> None:
        if bytes(v) == b"poison":
            raise ValueError("bad frame")

    with pytest.raises(ValueError):
        c.drain(fn)
    assert [bytes(v) for v in c.read_batch()] == [b"next"]


def test_copied_record_survives_release_and_overwrite() -> None:
    """A view is only valid until release; a copy owns its data."""
    with Ring.create(64) as r:  # max record 16: the second round reuses offset 0
        p, c = r.producer(), r.consumer()
        p.put(b"A" * 16)
        view = c.read_batch()[0]
        kept = bytes(view)
        c.release()
        p.put(b"B" * 16)
        p.put(b"C" * 16)  # wraps to offset 0, over the first record
        assert kept == b"A" * 16
        assert bytes(view) != kept  # the stale view now shows other bytes
        del view


# --- wrap-around, full, oversize -----------------------------------------


def test_wrap_marker_written_when_record_does_not_fit_before_end() -> None:
    with Ring.create(256) as r:
        p, c = r.producer(), r.consumer()
        for _ in range(3):  # 3 x 64 bytes; 64 left before the end
            assert p.try_put(bytes(60))
        p.publish()
        c.drain(len, 10)
        assert p.try_put(b"x" * 61)  # needs 72 > 64: wraps
        p.publish()
        assert r._u32[192 >> 2] == WRAP_MARKER
        assert [bytes(v) for v in c.read_batch()] == [b"x" * 61]


@settings(deadline=None, max_examples=60)
@given(
    ops=st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=64).map(lambda n: ("put", n)),
            st.just(("publish", 0)),
            st.integers(min_value=1, max_value=8).map(lambda n: ("read", n)),
        ),
        max_size=300,
    )
)
def test_wrap_around_random_sizes_against_a_model(ops: list[tuple[str, int]]) -> None:
    with Ring.create(256) as r:  # max record 64: every few records wrap
        p, c = r.producer(), r.consumer()
        unpublished: list[bytes] = []
        published: deque[bytes] = deque()
        seq = 0
        for op, n in ops:
            if op == "put":
                seq += 1
                data = bytes([seq & 0xFF]) * n
                empty = not published and not unpublished
                if p.try_put(data):
                    unpublished.append(data)
                else:
                    assert not empty, "a record <= max_record must fit an empty ring"
            elif op == "publish":
                p.publish()
                published.extend(unpublished)
                unpublished.clear()
            else:
                got = [bytes(v) for v in c.read_batch(n)]
                c.release()
                assert got == [published.popleft() for _ in range(len(got))]
                assert len(got) == n or not published
        p.publish()
        published.extend(unpublished)
        rest = [bytes(v) for v in c.read_batch(1000)]
        assert rest == list(published)


def test_full_ring_drops_and_counts(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    for _ in range(8):  # 8 x 128-byte records fill 1024 bytes
        assert p.try_put(bytes(124))
    assert not p.try_put(b"")
    assert not p.try_put(bytes(124))
    assert (p.drops, p.oversize) == (2, 0)
    p.publish()
    c.drain(len, 1)
    assert p.try_put(bytes(124))  # space released by the consumer
    assert p.drops == 2


def test_oversize_refused_and_counted(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer()
    assert ring.max_record == 256
    assert p.try_put(bytes(256))
    assert not p.try_put(bytes(257))
    assert (p.oversize, p.drops) == (1, 0)
    p.publish()
    assert [len(v) for v in c.read_batch()] == [256]


def test_default_capacity_takes_64k_super_frames() -> None:
    with Ring.create() as r:
        p, c = r.producer(), r.consumer()
        frame = bytes(range(256)) * 256 + bytes(12)  # 64 KiB + virtio-net header
        assert p.put(frame)
        assert bytes(c.read_batch()[0]) == frame


@pytest.mark.parametrize("capacity", [0, 32, 1000, 4097])
def test_bad_capacity(capacity: int) -> None:
    with pytest.raises(ValueError):
        Ring.create(capacity)


def test_one_producer_one_consumer(ring: Ring) -> None:
    ring.producer()
    ring.consumer()
    with pytest.raises(RingError):
        ring.producer()
    with pytest.raises(RingError):
        ring.consumer()


# --- doorbell and sleep protocol ------------------------------------------


def test_no_doorbell_while_consumer_awake(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer(spin_us=0)
    for _ in range(10):
        p.put(b"x")
    assert p.doorbells == 0
    assert not readable(c.fileno(), 0)


def test_one_doorbell_per_announced_sleep(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer(spin_us=0)
    assert c.prepare_to_sleep()
    p.put(b"a")
    p.put(b"b")  # the consumer has not woken yet: no second doorbell
    assert p.doorbells == 1
    assert readable(c.fileno(), 1.0)
    c.clear_wakeup()
    assert c.wakeups == 1
    assert not readable(c.fileno(), 0)
    p.put(b"c")  # consumer awake again: no doorbell
    assert p.doorbells == 1
    c.drain(len)
    assert c.prepare_to_sleep()  # a new sleep: a new doorbell
    p.put(b"d")
    assert p.doorbells == 2


def test_prepare_to_sleep_refuses_when_data_is_there(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer(spin_us=0)
    p.put(b"x")
    assert not c.prepare_to_sleep()
    p.put(b"y")
    assert p.doorbells == 0  # nothing announced


def test_spin_sees_data_published_meanwhile(ring: Ring) -> None:
    p, c = ring.producer(), ring.consumer(spin_us=200_000)  # 0.2 s spin
    timer = threading.Timer(0.02, p.put, args=(b"x",))
    timer.start()
    assert not c.prepare_to_sleep()  # the spin caught it: no sleep, no doorbell
    timer.join()
    assert p.doorbells == 0


def test_publish_between_announce_and_block_wakes_consumer(ring: Ring) -> None:
    """The race: the producer publishes after the consumer set waiting but
    before it blocks; the doorbell must be pending when it blocks."""
    p, c = ring.producer(), ring.consumer(spin_us=0)
    assert c.prepare_to_sleep()
    p.put(b"x")
    assert readable(c.fileno(), 1.0)
    assert c.wait(1.0)


def test_publish_between_announce_and_recheck(ring: Ring) -> None:
    """The producer publishes right after the consumer stored `waiting`, before
    it re-checks the tail: the re-check sees the data, the consumer does not
    sleep and withdraws its announcement."""
    p, c = ring.producer(), ring.consumer(spin_us=0)
    real = c._fence_acquire

    def publish_inside_fence() -> None:
        p.put(b"x")
        real()

    c._fence_acquire = publish_inside_fence
    assert not c.prepare_to_sleep()
    assert c.has_data()
    assert ring._ctl[192 // 8] == 0  # announcement withdrawn
    c.clear_wakeup()  # the producer did ring (it saw waiting): harmless


def test_wait_times_out_without_data(ring: Ring) -> None:
    c = ring.consumer(spin_us=0)
    t = time.monotonic()
    assert not c.wait(0.05)
    assert time.monotonic() - t >= 0.04


def test_asyncio_reader_pattern_from_docstring() -> None:
    with Ring.create(4096) as r:
        p, c = r.producer(), r.consumer(spin_us=0)
        n = 2000
        got: list[int] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def handle(v: memoryview) -> None:
                got.append(int.from_bytes(v[:8], "little"))
                if len(got) == n:
                    done.set_result(None)

            def step() -> None:
                if c.drain(handle, 64) or not c.prepare_to_sleep():
                    loop.call_soon(step)

            def on_doorbell() -> None:
                c.clear_wakeup()
                step()

            loop.add_reader(c.fileno(), on_doorbell)
            step()

            def produce() -> None:
                for i in range(n):
                    while not p.try_put(record(i)):
                        p.publish()
                        time.sleep(0.0001)
                    if i % 7 == 0:
                        p.publish()
                    if i % 100 == 0:
                        time.sleep(0.001)  # let the consumer fall asleep
                p.publish()

            t = threading.Thread(target=produce)
            t.start()
            await asyncio.wait_for(done, 10)
            t.join()
            loop.remove_reader(c.fileno())

        asyncio.run(main())
        assert got == list(range(n))
        assert p.doorbells > 0


# --- handles and processes -------------------------------------------------


def test_attach_checks_capacity() -> None:
    with Ring.create(1024) as r:
        bad = RingHandle(r.handle.memfd, r.handle.eventfd, 2048)
        with pytest.raises(RingError):
            Ring.attach(bad)


def test_handle_pickles_outside_a_spawn() -> None:
    """Outside a spawn the fds travel through the resource sharer (a dup)."""
    with Ring.create(1024) as r:
        p = r.producer()
        h2 = pickle.loads(pickle.dumps(r.handle))
        assert h2.capacity == 1024
        assert h2.memfd != r.handle.memfd
        with Ring.attach(h2) as r2:
            c = r2.consumer()
            p.put(b"hello")
            assert [bytes(v) for v in c.read_batch()] == [b"hello"]


def test_passed_fd_pickles() -> None:
    import os

    rfd, wfd = os.pipe()
    try:
        dup = pickle.loads(pickle.dumps(PassedFd(rfd)))
        os.write(wfd, b"z")
        assert os.read(dup.fd, 1) == b"z"
        os.close(dup.fd)
    finally:
        os.close(rfd)
        os.close(wfd)


def _child_consume(handle: RingHandle, n: int, conn) -> None:
    """Child: attach, consume n records, check order, report a checksum."""
    ring = Ring.attach(handle)
    c = ring.consumer(spin_us=5)
    crc = 0
    expect = 0
    errors = 0
    timeouts = 0
    while expect < n:
        views = c.read_batch(256)
        if not views:
            if not c.wait(5.0):
                timeouts += 1
                break
            continue
        for v in views:
            if int.from_bytes(v[:8], "little") != expect:
                errors += 1
            crc = zlib.crc32(v, crc)
            expect += 1
        del views, v
        c.release()
    conn.send((expect, crc, errors, timeouts, c.wakeups))
    ring.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_transfer_100k_records_to_child(method: str) -> None:
    n = 100_000
    ctx = multiprocess.get_context(method)
    with Ring.create(1 << 16) as r:
        p = r.producer()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child_consume, args=(r.handle, n, child))
        proc.start()
        try:
            crc = 0
            for i in range(n):
                data = record(i)
                crc = zlib.crc32(data, crc)
                while not p.try_put(data):
                    p.publish()
                    time.sleep(0)
                    assert proc.is_alive(), "consumer exited early"
                if i % 32 == 31:
                    p.publish()
                if i % 10_000 == 0:
                    time.sleep(0.002)  # let the consumer go to sleep now and then
            p.publish()
            assert parent.poll(60), "child did not report"
            count, child_crc, errors, timeouts, _wakeups = parent.recv()
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        assert (count, errors, timeouts) == (n, 0, 0)
        assert child_crc == crc
        assert proc.exitcode == 0


def _child_pingpong(req: RingHandle, rsp: RingHandle, n: int) -> None:
    """Child: echo n records back, always sleeping in between (no spin)."""
    rin, rout = Ring.attach(req), Ring.attach(rsp)
    c, p = rin.consumer(spin_us=0), rout.producer()
    for _ in range(n):
        while True:
            views = c.read_batch(1)
            if views:
                break
            if not c.wait(5.0):
                return  # lost wake-up: the parent sees the missing echo
        p.put(views[0])
        del views
        c.release()
    rin.close()
    rout.close()


def test_sleep_wake_race_across_processes() -> None:
    """Ping-pong where each side sleeps on the eventfd between records: every
    publish races the peer's announce/recheck/block sequence; a lost wake-up
    shows as a 5 s wait timing out."""
    n = 2000
    ctx = multiprocess.get_context("fork")
    with Ring.create(4096) as req, Ring.create(4096) as rsp:
        p, c = req.producer(), rsp.consumer(spin_us=0)
        proc = ctx.Process(target=_child_pingpong, args=(req.handle, rsp.handle, n))
        proc.start()
        try:
            for i in range(n):
                p.put(i.to_bytes(4, "little"))
                while not c.has_data():
                    assert c.wait(5.0) or c.has_data(), f"lost wake-up at {i}"
                views = c.read_batch(1)
                assert int.from_bytes(views[0], "little") == i
                del views
                c.release()
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        assert proc.exitcode == 0
        assert p.doorbells > 0 and c.wakeups > 0


# --- benchmark smoke test ----------------------------------------------------


def test_bench_ring_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from shardnet.scripts.bench_ring import run

    assert run(["--duration", "0.05", "--sizes", "64,1500", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"mechanism": "zmq"' in out and '"mechanism": "ring"' in out


def test_parts_make_one_record_also_across_the_wrap() -> None:
    """try_put_parts(head, data) is try_put(head + data) without the concat."""
    with Ring.create(256) as ring:
        prod, cons = ring.producer(), ring.consumer(spin_us=0)
        for i in range(40):  # sizes that force several wraps of a 256-byte ring
            head, data = bytes([i]) * (i % 11), bytes([255 - i]) * (3 + i % 29)
            assert prod.try_put_parts(head, memoryview(data))
            prod.publish()
            (got,) = cons.read_batch(8)
            assert bytes(got) == head + data
            cons.release()
