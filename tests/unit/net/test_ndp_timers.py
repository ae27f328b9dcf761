"""CancellableTimer semantics: gVisor's timer_test.go
scenarios on ``timers.TimerQueue`` with a fake clock, plus the same-turn race."""

from __future__ import annotations

from shardnet.shards.net.timers import TimerQueue


class Counter:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, now: float) -> None:
        self.calls.append(now)


def test_cancellable_timer_fire() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    t.reset(1e-9)
    assert q.next_deadline() == 1e-9
    assert q.run_due(1.0) == 1
    assert fn.calls == [1.0]
    assert q.run_due(2.0) == 0 and not t.armed and q.next_deadline() is None


def test_cancellable_timer_reset_from_long_duration() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    t.reset(100.0)
    t.reset(1.0)
    q.run_due(1.0)
    assert fn.calls == [1.0]
    q.run_due(200.0)
    assert fn.calls == [1.0]  # the 100 s arming is dead


def test_cancellable_timer_reset_from_short_duration() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    t.reset(1.0)
    t.reset(100.0)
    q.run_due(50.0)
    assert fn.calls == []
    assert q.next_deadline() == 100.0
    q.run_due(100.0)
    assert fn.calls == [100.0]


def test_cancellable_timer_immediately_stop() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    for _ in range(1000):
        t.reset(0.0)
        t.stop()
    assert q.run_due(10.0) == 0
    assert fn.calls == [] and q.next_deadline() is None
    assert len(q) < 200  # stale items compacted


def test_cancellable_timer_stopped_reset_without_lock() -> None:
    """Fired (due) but not run yet, then stopped: the action never runs."""
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    t.reset(1.0)
    # the loop has not run at t=1 yet ("blocked on the lock"); related work stops it
    t.stop()
    q.run_due(5.0)
    assert fn.calls == []


def test_many_cancellable_timer_reset_after_blocked_on_lock() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    t.reset(1.0)
    for i in range(10):  # due already, then stop/reset repeatedly
        t.stop()
        t.reset(2.0 + i)
    q.run_due(100.0)
    assert fn.calls == [100.0]


def test_many_cancellable_timer_reset_under_lock() -> None:
    q, fn = TimerQueue(), Counter()
    t = q.timer(fn)
    for _ in range(10):
        t.stop()
        t.reset(1.0)
    q.run_due(1.0)
    assert fn.calls == [1.0]


def test_stopped_by_related_work_in_the_same_turn() -> None:
    """The stop-after-fire race: A and B are both due in one ``run_due``; A's action stops
    B (e.g. a refresh invalidating a deprecation): B never runs."""
    q = TimerQueue()
    ran: list[str] = []
    b = q.timer(lambda now: ran.append("b"))

    def a_action(now: float) -> None:
        ran.append("a")
        b.stop()

    a = q.timer(a_action)
    a.reset(1.0)
    b.reset(1.5)
    q.run_due(2.0)
    assert ran == ["a"]


def test_rearmed_by_related_work_in_the_same_turn() -> None:
    """A re-arms B (which was due) for later: B runs once, at its new time."""
    q = TimerQueue()
    ran: list[tuple[str, float]] = []
    b = q.timer(lambda now: ran.append(("b", now)))
    a = q.timer(lambda now: b.reset(now + 10.0))
    a.reset(1.0)
    b.reset(1.0)
    q.run_due(1.0)
    assert ran == []
    q.run_due(11.0)
    assert ran == [("b", 11.0)]


def test_remaining() -> None:
    q = TimerQueue()
    t = q.timer(lambda now: None)
    assert t.remaining(0.0) is None
    t.reset(5.0)
    assert t.remaining(2.0) == 3.0 and t.remaining(9.0) == 0.0
