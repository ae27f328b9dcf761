"""Redirects followed by a host, sans-I/O: ICMPv6 Redirect (RFC 4861 §8)
and ICMPv4 Redirect (RFC 1122 §3.2.2.2), as host routes.

A redirect that passes the checks becomes a host route (``/128`` or
``/32``, origin "redirect") to the destination through the new next hop
(on-link when the ICMPv6 target is the destination itself, §8.3), which
longest-prefix match then prefers for that destination only. The checks
left to the caller's route lookup are here:

  * RFC 4861 §8.1: the Redirect comes from the current first-hop router for
    its Destination Address (the codec and ``validate_addresses`` did the
    rest: hop limit 255, code 0, link-local source, target link-local or
    equal to the destination, destination not multicast, options);
  * RFC 1122 §3.2.2.2: an ICMPv4 Redirect comes from the current first-hop
    gateway for the destination, and names a new gateway on the
    connected network it arrived on; network redirects are taken as host
    redirects;
  * both: not followed while forwarding (RFC 4861 §8.2, RFC 1812 §5.2.7.2)
    nor with ``accept_redirects`` off (Linux's name); a new gateway that is
    one of our addresses, or not unicast, is refused.

Refusals are ``Drop`` reasons for the caller to count. A redirect route
lives ``REDIRECT_LIFETIME_S`` (Linux's ip_rt_gc_timeout for learnt next-hop
exceptions), at most ``MAX_REDIRECT_ROUTES`` at once (a new one pushes out
the oldest): redirects from the link cannot grow the route table.

Left out: the neighbour-cache side of an ICMPv6 Redirect's Target
Link-Layer Address option (the control plane feeds its neighbour table),
redirects of the Redirected Header's flow only (there is no per-flow
destination cache).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from shardnet.common.wire.errors import Drop

from .actions import AddRoute, RemoveRoute
from .route import Route, RouteDecision

REDIRECT_LIFETIME_S = 300.0  # Linux ip_rt_gc_timeout: learnt next hops expire
MAX_REDIRECT_ROUTES = 64  # own cap: a link cannot grow the table without bound


@dataclass(slots=True)
class _Learnt:
    route: Route
    expires: float


class Redirects:
    """The host routes learnt from redirects, for every NIC and family."""

    __slots__ = ("_routes", "lifetime_s", "limit")

    def __init__(
        self, lifetime_s: float = REDIRECT_LIFETIME_S, limit: int = MAX_REDIRECT_ROUTES
    ) -> None:
        self._routes: OrderedDict[bytes, _Learnt] = OrderedDict()  # destination -> learnt
        self.lifetime_s = lifetime_s
        self.limit = limit

    def handle(
        self,
        now: float,
        *,
        nic: int,
        sender: bytes,
        destination: bytes,
        next_hop: bytes,
        current: RouteDecision | None,
        onlink: bool,
        ours: bool,
        accept: bool,
    ) -> Drop | list[AddRoute | RemoveRoute]:
        """A redirect from ``sender`` received on ``nic``: packets for
        ``destination`` should go to ``next_hop`` (== ``destination``: it is
        on-link). ``current``: where they go now (None: no route);
        ``onlink``: ``next_hop`` is on the link the redirect came in on;
        ``ours``: ``next_hop`` is one of our addresses; ``accept``:
        ``accept_redirects`` and not forwarding. The route changes to make,
        or why the redirect is ignored."""
        if not accept:
            return Drop.REDIRECT_NOT_ACCEPTED
        if current is None or current.nic != nic or current.next_hop != sender:
            return Drop.REDIRECT_NOT_FROM_FIRST_HOP
        if ours or not onlink:
            return Drop.REDIRECT_BAD_TARGET
        bits = len(destination) * 8
        gateway = None if next_hop == destination else next_hop
        route = Route(destination, bits, nic, gateway, 0, "redirect")
        out: list[AddRoute | RemoveRoute] = []
        old = self._routes.pop(destination, None)
        if old is not None and old.route.key != route.key:
            out.append(RemoveRoute(old.route))
        while len(self._routes) >= self.limit:
            _, oldest = self._routes.popitem(last=False)
            out.append(RemoveRoute(oldest.route))
        self._routes[destination] = _Learnt(route, now + self.lifetime_s)
        out.append(AddRoute(route))
        return out

    def next_deadline(self) -> float | None:
        # Insertion order is expiry order: every route lives lifetime_s.
        for learnt in self._routes.values():
            return learnt.expires
        return None

    def handle_timeout(self, now: float) -> list[RemoveRoute]:
        out = []
        while self._routes:
            dst, learnt = next(iter(self._routes.items()))
            if learnt.expires > now:
                break
            del self._routes[dst]
            out.append(RemoveRoute(learnt.route))
        return out

    def forget_nic(self, nic: int) -> list[RemoveRoute]:
        """The NIC went down: what it learnt is dropped (a new attachment)."""
        gone = [d for d, learnt in self._routes.items() if learnt.route.nic == nic]
        return [RemoveRoute(self._routes.pop(d).route) for d in gone]

    def routes(self) -> list[Route]:
        return [learnt.route for learnt in self._routes.values()]
