"""The client's Fast Open cookie cache (RFC 7413 §4.1.3), one per shard.

Per server address: the cookie the server gave, its MSS (the SYN's data is
sized by it, §4.2.1), and the §4.1.3 fallback: a server whose SYN with data
had to be retransmitted, or which answered data with a SYN-ACK that did
not acknowledge it and carried no new cookie, gets no Fast Open (neither
data nor a cookie request) for a while, doubling with each failure (Linux
disables the destination after a SYN loss the same way, with a longer
memory). A success clears the count.

One cache per shard, not replicated: the client's port is picked to hash
to the connecting shard, so each shard meets a server on its own and costs
one cookie request per shard and server (the cookie itself is the same,
being the server's MAC of our address). Bounded: the oldest entry goes
when the cache is full.
"""

from __future__ import annotations

from dataclasses import dataclass

TFO_CACHE_MAX = 1024  # servers remembered per shard
TFO_BACKOFF_S = 60.0  # first fallback period; doubles per failure in a row
TFO_BACKOFF_MAX_S = 3600.0


@dataclass(slots=True)
class TfoEntry:
    cookie: bytes = b""
    mss: int = 0  # the server's MSS option, 0 unknown
    failures: int = 0
    disabled_until: float = 0.0


class TfoCache:
    __slots__ = ("_entries", "max_entries", "fallbacks")

    def __init__(self, max_entries: int = TFO_CACHE_MAX) -> None:
        self._entries: dict[bytes, TfoEntry] = {}
        self.max_entries = max_entries
        self.fallbacks = 0

    def __len__(self) -> int:
        return len(self._entries)

    def for_connect(self, now: float, server: bytes, default_mss: int) -> tuple[bytes, int] | None:
        """What a Fast Open connect to ``server`` sends: (cookie or b"" to
        ask for one, MSS to size the SYN's data), or None: no Fast Open."""
        e = self._entries.get(server)
        if e is None:
            return b"", 0
        if now < e.disabled_until:
            return None
        return e.cookie, e.mss or default_mss

    def learn(
        self, now: float, server: bytes, *, cookie: bytes | None, mss: int, sent: int,
        acked: int, syn_lost: bool,
    ) -> None:  # fmt: skip
        """The outcome of a handshake that used Fast Open."""
        e = self._entries.pop(server, None) or TfoEntry()
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[server] = e
        e.mss = mss
        if syn_lost or (sent and acked < sent and not cookie):
            # RFC 7413 §4.1.3: the data SYN was lost, or the server
            # ignores data; try again without Fast Open, later.
            e.cookie = b""
            self.fallbacks += 1
            e.disabled_until = now + min(TFO_BACKOFF_S * (1 << e.failures), TFO_BACKOFF_MAX_S)
            e.failures = min(e.failures + 1, 16)
            return
        if cookie:
            e.cookie = cookie
        if not sent or acked:
            e.failures = 0
