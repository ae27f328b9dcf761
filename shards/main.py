"""Entry point of a shard process (the launcher hands it to the dispatcher's
supervisor, so the dispatcher never imports the shards)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys

from shardnet.common.procspec import ShardSpec

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Belt and braces beside the lifeline pipe: the kernel sends SIGKILL
    when the dispatcher thread that started us exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def warm() -> None:
    """What a shard imports, ahead of time (the supervisor's spare process)."""
    from . import runtime  # noqa: F401


def shard_main(spec: ShardSpec) -> None:
    _die_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format=f"shardnet shard{spec.index}: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from .runtime import ShardRuntime

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    code = runner(ShardRuntime(spec).run())
    sys.exit(code)
