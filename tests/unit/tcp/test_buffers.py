"""The endpoint's send and receive queues against a plain bytearray model:
any mix of writes (small ones gathered, large ones kept), acknowledgements
and segment reads gives the same bytes, and large ``bytes`` writes are
sent without a copy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.shards.tcp.buffers import CHUNK_MIN, RecvBuffer, SendBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3 * CHUNK_MIN), st.booleans()),
        st.tuples(st.just("consume"), st.integers(0, 4 * CHUNK_MIN), st.booleans()),
        st.tuples(st.just("peek"), st.integers(0, 10**6), st.integers(0, 3 * CHUNK_MIN)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_send_buffer_matches_a_bytearray(steps: list[tuple[str, int, object]]) -> None:
    buf, model, counter = SendBuffer(), bytearray(), 0
    for op, a, b in steps:
        if op == "append":
            data = bytes((counter + i) % 251 for i in range(a))
            counter += a
            buf.append(data if b else bytearray(data))
            model += data
        elif op == "consume":
            n = min(a, len(model))
            buf.consume(n)
            del model[:n]
        else:
            off = a % (len(model) + 1)
            n = min(int(b), len(model) - off)  # type: ignore[call-overload]
            assert bytes(buf.peek(off, n)) == bytes(model[off : off + n])
        assert len(buf) == len(model) and bool(buf) == bool(model)


def test_a_large_bytes_write_is_sent_from_the_callers_object() -> None:
    buf = SendBuffer()
    data = bytes(range(256)) * 64
    buf.append(data)
    assert buf.peek(0, len(data)) is data
    part = buf.peek(100, 1000)
    assert isinstance(part, memoryview) and part.obj is data


def test_small_writes_are_gathered_into_one_segment() -> None:
    buf = SendBuffer()
    for i in range(100):
        buf.append(bytes([i]) * 10)
    assert bytes(buf.peek(0, 1000)) == b"".join(bytes([i]) * 10 for i in range(100))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=30), st.lists(st.integers(1, 700), max_size=40))
def test_recv_buffer_reads_back_in_order(chunks: list[bytes], reads: list[int]) -> None:
    buf, model = RecvBuffer(), b"".join(chunks)
    for c in chunks:
        buf.append(memoryview(c))
    out = b""
    for n in reads:
        got = buf.read(n)
        assert len(got) <= n
        out += got
    out += buf.read(len(model) + 1)
    assert out == model and not buf and len(buf) == 0
