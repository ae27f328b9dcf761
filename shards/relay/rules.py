"""``--relay-rule``: which destinations the relay opens, by prefix and port.

A rule is ``ACTION,PREFIX[,PORT[-PORT]]`` — ``deny,198.19.5.0/24``,
``allow,2001:db8:19::/48,443``, ``deny,0.0.0.0/0,1-1023`` — with ACTION
``allow`` or ``deny``; a rule without ports takes every port. Rules are
tried in order, the first that matches decides, and a destination no rule
matches is allowed (the order and default of a firewall's chain with an
accept policy). A denied TCP flow is reset, a denied UDP datagram answered
with ICMP port unreachable: what a host with nothing on that port would
say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RelayRule:
    allow: bool
    version: int  # 4 or 6: a rule matches addresses of its family only
    network: int  # the prefix's address as an integer
    mask: int
    low: int  # ports, inclusive
    high: int

    @classmethod
    def parse(cls, text: str) -> RelayRule:
        """One rule; ValueError with a one-line message if it is not one."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3) or parts[0] not in ("allow", "deny"):
            raise ValueError(f"want allow|deny,PREFIX[,PORT[-PORT]], got {text!r}")
        try:
            net = ipaddress.ip_network(parts[1], strict=False)
        except ValueError:
            raise ValueError(f"bad prefix {parts[1]!r} in {text!r}") from None
        low, high = 0, 65535
        if len(parts) == 3:
            first, _, last = parts[2].partition("-")
            try:
                low = int(first)
                high = int(last) if last else low
            except ValueError:
                raise ValueError(f"bad port {parts[2]!r} in {text!r}") from None
            if not 0 <= low <= high <= 65535:
                raise ValueError(f"bad port range {parts[2]!r} in {text!r}")
        return cls(
            parts[0] == "allow", net.version, int(net.network_address), int(net.netmask), low, high
        )

    def matches(self, dst: bytes, port: int) -> bool:
        if (4 if len(dst) == 4 else 6) != self.version or not self.low <= port <= self.high:
            return False
        return int.from_bytes(dst, "big") & self.mask == self.network


class RelayRules:
    """The rules in order; ``allows`` is the first match's action, or
    allow. Counters: ``denied``."""

    def __init__(self, rules: Sequence[RelayRule] = ()) -> None:
        self.rules = tuple(rules)

    @classmethod
    def parse(cls, texts: Sequence[str]) -> RelayRules:
        return cls([RelayRule.parse(t) for t in texts])

    def allows(self, dst: bytes, port: int) -> bool:
        for rule in self.rules:
            if rule.matches(dst, port):
                return rule.allow
        return True
