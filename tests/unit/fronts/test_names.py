"""Names the fronts resolve: a cache with a bound and a negative entry, one
lookup per name at a time, and SOCKS5 UDP datagrams that name their
destination (RFC 1928 §7, ATYP 3)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from shardnet.shards.fronts import names as names_mod
from shardnet.shards.fronts.names import Names
from shardnet.shards.fronts.udp import Association
from shardnet.shards.relay import socks5 as codec

from .test_udp import _Clock, _Transport


class _Lookup:
    """A resolver that knows a few names and counts its calls."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, name: str) -> str:
        self.calls.append(name)
        await asyncio.sleep(0)  # as getaddrinfo in the executor: later
        if name not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[name]


def test_a_name_is_looked_up_once_and_kept() -> None:
    async def go() -> None:
        clock, lookup = _Clock(), _Lookup({"server.test": "198.18.0.1"})
        names = Names(clock, lookup)
        got = await asyncio.gather(*(names.resolve("server.test") for _ in range(5)))
        assert got == ["198.18.0.1"] * 5 and lookup.calls == ["server.test"]
        assert names.cached("server.test") == (True, "198.18.0.1")
        clock.now += names_mod.CACHE_S  # the answer expires
        assert names.cached("server.test") == (False, None)
        assert await names.resolve("server.test") == "198.18.0.1"
        assert len(lookup.calls) == 2

    asyncio.run(go())


def test_a_failure_is_counted_and_kept_for_less_time() -> None:
    async def go() -> None:
        clock, lookup = _Clock(), _Lookup({})
        names = Names(clock, lookup)
        for _ in range(3):
            with pytest.raises(OSError):
                await names.resolve("nowhere.invalid")
        assert names.failed == 1 and lookup.calls == ["nowhere.invalid"]
        assert names.cached("nowhere.invalid") == (True, None)
        clock.now += names_mod.NEGATIVE_S
        assert names.cached("nowhere.invalid") == (False, None)

    asyncio.run(go())


def test_address_literals_are_not_looked_up() -> None:
    names = Names(_Clock(), _Lookup({}))
    assert names.cached("2001:db8::1") == (True, "2001:db8::1")
    assert asyncio.run(names.resolve("198.18.0.1")) == "198.18.0.1"


def test_the_cache_and_the_lookups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names_mod, "MAX_NAMES", 4)
    monkeypatch.setattr(names_mod, "MAX_LOOKUPS", 2)

    async def go() -> None:
        table = {f"h{i}.test": f"198.18.0.{i}" for i in range(10)}
        names = Names(_Clock(), _Lookup(table))
        results = await asyncio.gather(
            *(names.resolve(f"h{i}.test") for i in range(3)), return_exceptions=True
        )
        assert results[:2] == ["198.18.0.0", "198.18.0.1"]
        assert isinstance(results[2], OSError) and names.failed == 1  # a third at once
        for i in range(2, 10):
            await names.resolve(f"h{i}.test")
        assert len(names.answers) == 4 and "h9.test" in names.answers

    asyncio.run(go())


class _Fronts:
    def __init__(self, lookup: _Lookup) -> None:
        self.clock = _Clock()
        self.names = Names(self.clock, lookup)
        self.udp_dropped = self.bytes_up = self.bytes_down = 0

    def _spawn(self, coro: Any) -> None:
        asyncio.get_running_loop().create_task(coro)


def _named(name: str, port: int, payload: bytes) -> bytes:
    raw = name.encode()
    return (
        b"\0\0\0" + bytes((codec.ATYP_DOMAIN, len(raw))) + raw + struct.pack("!H", port) + payload
    )


def test_socks5_udp_datagrams_to_a_name_are_sent_to_its_address() -> None:
    async def go() -> None:
        lookup = _Lookup({"server.test": "198.18.0.1", "v6.test": "2001:db8::1"})
        fronts = _Fronts(lookup)
        assoc = Association(fronts, "127.0.0.1")  # type: ignore[arg-type]
        assoc.stack, assoc.kernel = _Transport(), _Transport()
        client = ("127.0.0.1", 4000)
        assoc.from_client(_named("server.test", 53, b"q1"), client)
        assoc.from_client(_named("server.test", 53, b"q2"), client)  # while it resolves
        assoc.from_client(_named("v6.test", 53, b"q3"), client)
        assoc.from_client(_named("nowhere.invalid", 53, b"q4"), client)
        assoc.from_client(_named("198.18.0.7", 9, b"q5"), client)  # a literal in ATYP 3
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(assoc.stack.sent) == sorted([
            (b"q1", ("::ffff:198.18.0.1", 53)), (b"q2", ("::ffff:198.18.0.1", 53)),
            (b"q3", ("2001:db8::1", 53)), (b"q5", ("::ffff:198.18.0.7", 9)),
        ])  # fmt: skip
        assert fronts.udp_dropped == 1 and fronts.names.failed == 1
        assert lookup.calls.count("server.test") == 1
        assoc.from_client(_named("server.test", 53, b"q6"), client)  # cached: at once
        assert assoc.stack.sent[-1] == (b"q6", ("::ffff:198.18.0.1", 53))
        assoc.from_client(_named("nowhere.invalid", 53, b"q7"), client)  # a known failure
        assert fronts.udp_dropped == 2 and len(lookup.calls) == 3
        # The answer names its source by address (RFC 1928 §7).
        assoc.from_destination(b"a1", ("::ffff:198.18.0.1", 53))
        data, to = assoc.kernel.sent[-1]
        assert to == client and data == codec.udp_header(socket.inet_aton("198.18.0.1"), 53) + b"a1"

    asyncio.run(go())


def test_datagrams_waiting_for_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from shardnet.shards.fronts import udp

    monkeypatch.setattr(udp, "MAX_WAITING", 3)

    async def go() -> None:
        fronts = _Fronts(_Lookup({f"h{i}.test": "198.18.0.1" for i in range(5)}))
        assoc = Association(fronts, "127.0.0.1")  # type: ignore[arg-type]
        assoc.stack, assoc.kernel = _Transport(), _Transport()
        for i in range(5):
            assoc.from_client(_named(f"h{i}.test", 53, b"q"), ("127.0.0.1", 4000))
        assert fronts.udp_dropped == 2
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(assoc.stack.sent) == 3 and assoc.waiting == 0

    asyncio.run(go())
