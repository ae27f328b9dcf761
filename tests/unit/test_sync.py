"""Lock wrappers and the lock-order checker (CHECKLIST B5)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shardnet.common import sync


@pytest.fixture
def lockcheck() -> Iterator[None]:
    was = sync.lockcheck_enabled()
    sync.enable_lockcheck()
    sync.reset_lockcheck()
    yield
    sync.reset_lockcheck()
    if not was:
        sync.disable_lockcheck()


def in_thread(fn) -> BaseException | None:
    """Run fn in another thread; return what it raised."""
    box: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    return box[0] if box else None


def test_unchecked_locks_are_plain_threading_locks() -> None:
    was = sync.lockcheck_enabled()
    sync.disable_lockcheck()
    try:
        assert type(sync.Lock("a")) is type(threading.Lock())
        assert type(sync.RLock("a")) is type(threading.RLock())
    finally:
        if was:
            sync.enable_lockcheck()


def test_inversion_across_threads_is_caught(lockcheck: None) -> None:
    a, b = sync.Lock("stats"), sync.Lock("control")

    def a_then_b() -> None:
        with a, b:
            pass

    def b_then_a() -> None:
        with b, a:
            pass

    assert in_thread(a_then_b) is None
    exc = in_thread(b_then_a)
    assert isinstance(exc, sync.LockOrderError)
    assert not a.locked() and not b.locked()  # raised before blocking; b released by with


def test_inversion_through_an_intermediate_lock(lockcheck: None) -> None:
    a, b, c = sync.Lock("a"), sync.Lock("b"), sync.Lock("c")
    with a, b:
        pass
    with b, c:
        pass
    with c, pytest.raises(sync.LockOrderError), a:  # a -> b -> c seen: c then a inverts it
        pass


def test_consistent_order_passes(lockcheck: None) -> None:
    a, b, c = sync.Lock("a"), sync.Lock("b"), sync.RLock("c")
    for _ in range(3):
        with a, b, c:
            pass
        with a, c:
            pass
        with b, c:
            pass

    def same_order_elsewhere() -> None:
        for _ in range(10):
            with a, c:
                pass

    assert in_thread(same_order_elsewhere) is None


def test_rlock_reentry_records_nothing(lockcheck: None) -> None:
    r, x = sync.RLock("r"), sync.Lock("x")
    with r, x, r:  # re-entering r while holding x adds no x -> r edge
        pass
    with x, pytest.raises(sync.LockOrderError):  # but a fresh x -> r inverts r -> x
        r.acquire()


def test_trylock_records_no_order(lockcheck: None) -> None:
    a, b = sync.Lock("a"), sync.Lock("b")
    with a:
        assert b.acquire(blocking=False)
        b.release()
    with b, a:  # no a -> b edge was recorded by the trylock
        pass


def test_same_class_nesting_is_reported(lockcheck: None) -> None:
    s0, s1 = sync.Lock("shard.stats"), sync.Lock("shard.stats")
    with s0, pytest.raises(sync.LockOrderError):
        s1.acquire()


def test_lock_released_by_another_thread(lockcheck: None) -> None:
    a, b = sync.Lock("a"), sync.Lock("b")
    a.acquire()
    assert in_thread(a.release) is None
    with b, a:  # a is no longer held by this thread: only b -> a recorded
        pass


def test_release_errors_match_threading(lockcheck: None) -> None:
    with pytest.raises(RuntimeError):
        sync.Lock("a").release()
    r = sync.RLock("r")
    with pytest.raises(RuntimeError):
        r.release()


def test_env_var_turns_checking_on() -> None:
    import subprocess
    import sys

    code = (
        "from shardnet.common import sync\n"
        "assert sync.lockcheck_enabled()\n"
        "a, b = sync.Lock('a'), sync.Lock('b')\n"
        "with a, b: pass\n"
        "try:\n"
        "    with b, a: pass\n"
        "except sync.LockOrderError:\n"
        "    print('caught')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "SHARDNET_LOCKCHECK": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "caught", out.stderr
