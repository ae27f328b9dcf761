"""Relay flows without a connection (UDP, ICMP echo) end after a spell
without traffic, as a NAT's conntrack entries do: one timer a second
looks for the idle ones while any flow lives."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, Protocol, TypeVar

SWEEP_S = 1.0  # how often idle flows are looked for


class _Flow(Protocol):
    last: float  # when traffic last passed, on the relay's clock


F = TypeVar("F", bound=_Flow)


class SweptFlows(Generic[F]):
    """The flow table of a relay and its sweeper. A subclass sets ``flows``
    and ``clock``, ends a flow in ``_forget`` and says how long one may
    idle in ``_idle_s``; it calls ``_arm`` when it adds a flow."""

    flows: dict[Any, F]
    clock: Any
    _sweeper: asyncio.TimerHandle | None = None

    def _idle_s(self, flow: F) -> float:
        raise NotImplementedError

    def _forget(self, flow: F) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        if self._sweeper is None and self.flows:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.clock()
        for flow in [f for f in self.flows.values() if now - f.last >= self._idle_s(f)]:
            self._forget(flow)
        self._arm()

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self._forget(flow)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
