"""Names the fronts are asked to reach (SOCKS5 CONNECT and UDP ASSOCIATE
datagrams with ATYP 3, HTTP proxy URIs), resolved with the host's resolver
in the namespace the fronts run in.

``getaddrinfo`` blocks, so it runs off the loop (asyncio's executor). A
SOCKS5 UDP client names its destination in every datagram (RFC 1928 §7), so
answers are kept: ``CACHE_S`` for an address, ``NEGATIVE_S`` for a name
that did not resolve (RFC 2308 §5 caches failures too, for less time), at
most ``MAX_NAMES`` names (the oldest answer goes first), and at most
``MAX_LOOKUPS`` lookups at once per shard (a client naming many hosts must
not queue the executor without bound; more fail at once).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

CACHE_S = 60.0  # an answer kept; getaddrinfo gives no TTL
NEGATIVE_S = 10.0  # a failure kept
MAX_NAMES = 1024  # names kept per shard
MAX_LOOKUPS = 32  # getaddrinfo calls in flight per shard

Lookup = Callable[[str], Awaitable[str]]


async def getaddrinfo_first(name: str) -> str:
    """The first address the host's resolver gives for ``name``."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    if not infos:
        raise OSError(f"{name}: no address")
    return str(infos[0][4][0])


class Names:
    """A shard's cache of resolved names. ``failed`` counts names that did
    not resolve (each failure once per lookup, not per datagram)."""

    def __init__(self, clock: Callable[[], float], lookup: Lookup = getaddrinfo_first) -> None:
        self.clock = clock
        self.lookup = lookup
        self.answers: dict[str, tuple[str | None, float]] = {}  # name -> (address, expiry)
        self.lookups: dict[str, asyncio.Future[str | None]] = {}
        self.failed = 0

    def cached(self, name: str) -> tuple[bool, str | None]:
        """``(known, address)``: an address literal as it is, a name from
        the cache (``address`` None: it did not resolve); ``known`` False
        when it must be looked up."""
        try:
            return True, str(ipaddress.ip_address(name))
        except ValueError:
            pass
        answer = self.answers.get(name)
        if answer is None:
            return False, None
        if answer[1] <= self.clock():
            del self.answers[name]
            return False, None
        return True, answer[0]

    async def resolve(self, name: str) -> str:
        """The address of ``name``; OSError when it does not resolve (or
        too many lookups are under way)."""
        known, addr = self.cached(name)
        if not known:
            pending = self.lookups.get(name)
            if pending is None:
                if len(self.lookups) >= MAX_LOOKUPS:
                    self.failed += 1
                    raise OSError(f"{name}: too many names being resolved")
                pending = asyncio.get_running_loop().create_task(self._lookup(name))
                self.lookups[name] = pending
            addr = await asyncio.shield(pending)
        if addr is None:
            raise OSError(f"{name}: does not resolve")
        return addr

    async def _lookup(self, name: str) -> str | None:
        try:
            addr: str | None = await self.lookup(name)
        except (OSError, UnicodeError, ValueError):
            addr = None
            self.failed += 1
        finally:
            self.lookups.pop(name, None)
        if len(self.answers) >= MAX_NAMES:
            del self.answers[next(iter(self.answers))]  # the oldest answer
        self.answers[name] = (addr, self.clock() + (CACHE_S if addr is not None else NEGATIVE_S))
        return addr
