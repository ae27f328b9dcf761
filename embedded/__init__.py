"""``shardnet.embedded``: the same stack in one process over an in-memory
link, for tests and notebooks (``embedded/stack.py``).

    from shardnet.embedded import Stack

    a, b = Stack.pair()
    async with a, b:
        reader, writer = await a.open_connection("198.18.0.2", 7)

A top layer like ``scripts/``: it may import the dispatcher's library pieces
(the channel link, the reassembler) and the shards; nothing imports it.
"""

from __future__ import annotations

from .stack import IGNORE, REJECT, Accept, EventStream, Stack, connect

__all__ = ["IGNORE", "REJECT", "Accept", "EventStream", "Stack", "connect"]
