"""A shard's timers wait for the frames already in its ring: an ACK queued
behind a burst (10,000 closes at once) must count before the retransmission
it answers fires. ``ShardRuntime._input_behind`` with a real ring and a fake
clock; ``ShardAssembly._fire`` asks it again on the next loop turn."""

from __future__ import annotations

import asyncio
from typing import Any

from shardnet.common.ring import Ring
from shardnet.shards.assembly import ShardAssembly
from shardnet.shards.runtime import TIMERS_WAIT_MAX_S, ShardRuntime


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def runtime(ring: Ring, clock: Clock) -> ShardRuntime:
    rt = ShardRuntime.__new__(ShardRuntime)  # no process: only what the check reads
    rt.consumer, rt.clock = ring.consumer(), clock
    rt._closed, rt._serving, rt._timers_due_at = False, True, None
    return rt


def test_timers_wait_while_frames_are_queued_at_most_the_bound() -> None:
    clock = Clock()
    with Ring.create(1 << 18) as ring:
        rt, producer = runtime(ring, clock), ring.producer()
        assert not rt._input_behind()  # nothing queued: the timers fire
        producer.put(b"an ACK behind a burst")
        assert rt._input_behind()
        clock.now += TIMERS_WAIT_MAX_S / 2
        assert rt._input_behind()
        assert rt.consumer.drain(lambda _: None, 16) == 1  # read: the timers fire
        assert not rt._input_behind()
        producer.put(b"a flood that never ends")
        assert rt._input_behind()
        clock.now += TIMERS_WAIT_MAX_S
        assert not rt._input_behind()  # they waited long enough: they fire anyway
        rt._serving = False  # a shard whose apps do not listen yet reads nothing
        assert not rt._input_behind()


def test_the_timer_asks_again_next_turn_while_input_is_behind() -> None:
    async def go() -> list[str]:
        seen: list[str] = []
        behind = [True, True, False]
        fake: Any = ShardAssembly.__new__(ShardAssembly)
        fake._timer = None
        fake.input_behind = lambda: behind.pop(0)
        fake.before_timers = None
        fake.clock = asyncio.get_running_loop().time
        fake.handle_timeout = lambda now: seen.append("timeout")
        fake.tcp = type("T", (), {"flush": staticmethod(lambda: None)})()
        fake._rearm = lambda: seen.append("rearm")
        ShardAssembly._fire(fake)
        assert seen == [] and fake._timer is not None
        for _ in range(3):
            await asyncio.sleep(0)
        return seen

    assert asyncio.run(go()) == ["timeout", "rearm"]
