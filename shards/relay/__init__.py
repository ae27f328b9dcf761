"""Relay mode (``--relay direct``): the shard terminates every TCP
connection and UDP flow sent to any address and opens the real one with a
kernel socket (``tcp.py``, ``udp.py``), from the namespace ``--relay-netns``
names (``sockets.py``), as tun2socks and slirp4netns do; with ``--relay
socks5://HOST:PORT`` through a SOCKS5 upstream (``socks5.py``: CONNECT,
UDP ASSOCIATE). ``--relay-rule`` decides which destinations are opened
(``rules.py``), ``--relay-limits`` how many flows a shard holds
(``limits.py``).

The network layer is made promiscuous (every unicast destination is ours,
and replies leave from it: gVisor's ``SetPromiscuousMode`` and
``SetSpoofing``); the stack's own addresses still reach its listeners and
sockets. ICMP echo to any address is answered by the stack itself, or with
``--relay-icmp relay`` sent on to the destination (``echo.py``), whose
reply answers it. Each shard relays the flows that hash to it.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from typing import Any

from ..net.stack import NetStack
from ..transport.tcp import TcpDemux
from .echo import EchoRelay
from .limits import RelayLimits
from .rules import RelayRules
from .sockets import SocketOpener
from .socks5 import Upstream
from .tcp import RelayTcp
from .udp import UdpRelay

__all__ = ["Relay"]


class Relay:
    """The relay of one shard, installed on its network layer and TCP demux;
    ``udp.datagram`` is for the UDP hook."""

    def __init__(
        self,
        net: NetStack,
        tcp: TcpDemux,
        clock: Callable[[], float],
        *,
        mode: str = "direct",
        netns: str | None = None,
        refused: str = "rst",
        rules: Sequence[str] = (),
        limits: str | None = None,
        icmp: str = "local",
    ) -> None:
        # A kernel socket per relayed flow: the soft descriptor limit (1,024
        # by default) would cap the flows below the hard one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.sockets = SocketOpener(netns)
        self.rules = RelayRules.parse(rules)
        upstream = None if mode == "direct" else Upstream.parse(mode)
        self.limits = RelayLimits.parse(limits)
        self.udp = UdpRelay(net, self.sockets, clock, self.rules, upstream, self.limits.udp_flows)
        self.tcp = RelayTcp(
            net, self.sockets, clock, refused=refused, udp=self.udp, rules=self.rules,
            upstream=upstream, limits=self.limits,
        )  # fmt: skip
        self.echo: EchoRelay | None = None
        if icmp == "relay":
            self.echo = EchoRelay(net, self.sockets, clock, self.rules, self.limits.udp_flows)
            self.tcp.echo = self.echo
            net.echo_hook = self.echo.request
        net.promiscuous = True
        tcp.flow_hook = self.tcp

    def rows(self, offset: int, limit: int) -> list[dict[str, Any]]:
        """A page of the live flows (``ctl relays``)."""
        return self.tcp.rows()[offset : offset + limit]

    def close(self) -> None:
        self.udp.close()
        if self.echo is not None:
            self.echo.close()
        self.sockets.close()
