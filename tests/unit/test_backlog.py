"""The dispatcher's bound on control-plane frames queued in a shard's ring."""

from __future__ import annotations

from shardnet.common.ring import Ring
from shardnet.dispatcher.backlog import ControlBacklog


def put_control(ring_producer, backlog: ControlBacklog, frame: bytes) -> bool:
    if not backlog.admits(ring_producer):
        return False
    assert ring_producer.try_put(frame)
    backlog.put(ring_producer.position)
    return True


def test_the_backlog_refuses_past_its_limit_and_frees_as_the_shard_reads() -> None:
    with Ring.create(1 << 16) as ring:
        producer, consumer = ring.producer(), ring.consumer(spin_us=0)
        backlog = ControlBacklog(limit=4)
        assert [put_control(producer, backlog, b"ns%d" % i) for i in range(6)] == [
            True, True, True, True, False, False,
        ]  # fmt: skip
        assert producer.try_put(b"a flow's segment")  # flows still find room
        producer.publish()
        records = consumer.read_batch(3)  # the shard reads three of them...
        assert put_control(producer, backlog, b"late") is False  # ...but still holds them
        consumer.release()
        for r in records:
            r.release()
        assert [put_control(producer, backlog, b"x%d" % i) for i in range(4)] == [
            True, True, True, False,
        ]  # fmt: skip


def test_a_new_ring_starts_an_empty_backlog() -> None:
    """The positions of a dead shard's ring mean nothing in its successor's."""
    backlog = ControlBacklog(limit=2)
    with Ring.create(1 << 16) as ring:
        producer = ring.producer()
        assert put_control(producer, backlog, b"a") and put_control(producer, backlog, b"b")
        assert not put_control(producer, backlog, b"c")
    with Ring.create(1 << 16) as ring:
        assert put_control(ring.producer(), ControlBacklog(limit=2), b"a")
