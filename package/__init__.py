"""shardnet: a user-space TCP/IP stack in Python, sharded over processes.

The integrator API is here at the top: ``shardnet.Client`` talks
to a running stack over its control channel, ``shardnet.Stack`` is the same
stack embedded in the caller's process over an in-memory link. Both are
loaded on first use, so importing a submodule (a shard process, a codec)
costs nothing more. The code lives in ``shardnet.common``,
``shardnet.dispatcher``, ``shardnet.shards``, ``shardnet.scripts`` and
``shardnet.embedded`` (``setup.py`` maps the repository's folders).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common.client import Client, ControlError
    from .embedded import Stack

__all__ = ["Client", "ControlError", "Stack"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "ControlError"):
        from .common import client

        return getattr(client, name)
    if name == "Stack":
        from .embedded import Stack

        return Stack
    raise AttributeError(f"module 'shardnet' has no attribute {name!r}")
