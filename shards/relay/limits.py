"""``--relay-limits``: how many flows one shard relays at once.

``in_flight`` TCP flows (being dialled or spliced), ``per_source`` of them
from one client address, ``per_destination`` to one destination address,
and ``udp_flows``. A TCP flow over a limit is reset, a UDP datagram that
would open a flow over the limit dropped; both are counted
(``relay/*_over_cap``). Given as ``NAME=N,...``; the rest keep their
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True, slots=True)
class RelayLimits:
    in_flight: int = 4096
    per_source: int = 1024
    per_destination: int = 1024
    udp_flows: int = 4096

    @classmethod
    def parse(cls, text: str | None) -> RelayLimits:
        """``in_flight=N,per_source=N,...``; ValueError (one line) if not."""
        limits = cls()
        if not text:
            return limits
        names = {f.name for f in fields(cls)}
        for item in text.split(","):
            name, sep, value = item.strip().partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise ValueError(
                    f"want NAME=N with NAME one of {', '.join(sorted(names))}, got {item!r}"
                )
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{name}: want a whole number, got {value!r}") from None
            if n < 1:
                raise ValueError(f"{name}: want at least 1, got {n}")
            limits = replace(limits, **{name: n})
        return limits
