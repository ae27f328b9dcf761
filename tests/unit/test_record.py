"""Ring records as common/record.py lays them out: ``try_put_tagged`` writes
tag + virtio-net header + frame as one record, wrapping like any other."""

from __future__ import annotations

from shardnet.common.record import TAG_LEN, TAG_LOOPED, TAG_WIRE
from shardnet.common.ring import Ring


def test_tagged_records_carry_tag_head_and_frame_in_order() -> None:
    with Ring.create(256) as r:  # tiny: the records wrap around
        p, c = r.producer(), r.consumer()
        got: list[bytes] = []
        for i in range(40):
            tag = TAG_LOOPED if i % 2 else TAG_WIRE
            head = bytes([i]) * (i % 3)
            frame = bytes([0xA0 + i % 16]) * (5 + i % 20)
            assert p.try_put_tagged(tag, head, frame)
            p.publish()
            assert c.drain(lambda v: got.append(bytes(v))) == 1
            assert got[-1] == bytes([tag]) + head + frame
        assert got[0][:TAG_LEN] == bytes([TAG_WIRE])


def test_a_tagged_record_too_large_is_refused() -> None:
    with Ring.create(256) as r:
        p = r.producer()
        assert not p.try_put_tagged(TAG_WIRE, b"", bytes(r.max_record))  # tag + max > max
        assert p.oversize == 1
        assert p.try_put_tagged(TAG_WIRE, b"", bytes(r.max_record - 1))
