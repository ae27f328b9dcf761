"""DHCPv6 client for one NIC (RFC 8415), sans-I/O: it returns the messages
to send (``SendDhcp6``), the address changes (``actions.py``) and events,
and is woken through its ``TimerQueue``. Router Advertisements start it
(RFC 4861 §4.2, the NDP machine's ``dhcpv6_configuration``):

* O without M: stateless (§6.1, §18.2.6): Information-request, the Reply's
  DNS servers and search list (RFC 3646) kept until the Information Refresh
  Time (§21.23: default 86400 s, at least 600 s, 0xffffffff forever), then
  asked again.
* M: stateful (§6.2, §18.2.1-§18.2.5) with one IA_NA: Solicit (after a
  random 0-1 s wait, §18.2.1) → the best Advertise (highest Preference,
  §18.2.9; 255 or one after the first RT is taken at once) → Request →
  Reply: the addresses, as /128 (§21.4: on-link is the RAs' business, RFC
  4861), origin ``dhcp``, through DAD like any address (RFC 4862 §5.4) →
  Renew at T1 (to the server) → Rebind at T2 (to any server) → each address
  deprecated at its preferred lifetime and removed at its valid lifetime;
  none left: Solicit again. T1/T2 of 0 are the client's choice (§18.2.4:
  0.5 and 0.8 of the shortest preferred lifetime).
* §15 retransmission: RT = IRT + RAND·IRT, then 2·RT + RAND·RT, capped at
  MRT + RAND·MRT, RAND uniform in [-0.1, 0.1] (the first Solicit's RAND
  above 0); an exchange ends after MRC transmissions or MRD seconds.
  Every message carries Elapsed Time (§21.9) from the exchange's start.
* §18.2.7 Release when the client stops (once: the stack is going away),
  §18.2.8 Decline when DAD finds an assigned address in use (RFC 4862
  §5.4.5), then Solicit again.
* Identity: a DUID-LL from the link's MAC (§11.4, stable across restarts)
  and an IAID from the MAC's last four bytes (§12: the same for the same
  interface).

Untrusted input: only server message types with our transaction id and our
Client Identifier and a Server Identifier are taken; Reconfigure is dropped
(§18.2.11: it needs authentication, which this client does not do); an
IA_NA with T1 > T2 is ignored (§21.4), an address with preferred > valid
lifetime (§21.6) or not a global unicast one is skipped; valid lifetimes
under MIN_LIFETIME_S are raised to it (a server, or a forger, handing out
0-second leases must not make the client loop at full speed). Each of these
is counted.

Left out: prefix delegation (IA_PD), temporary addresses (IA_TA), Rapid
Commit (never asked for), the Server Unicast option (every message goes to
All_DHCP_Relay_Agents_and_Servers, §18.2.10 allows it), Confirm after a
link change (the client solicits again), Reconfigure with authentication,
retransmitting Release.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Any

from shardnet.common.addr import format_ip, is_ipv6_link_local, is_unicast
from shardnet.common.wire.dhcp6 import (
    ADVERTISE,
    DECLINE,
    INFINITY,
    INFORMATION_REQUEST,
    OPT_DNS_SERVERS,
    OPT_DOMAIN_LIST,
    OPT_INF_MAX_RT,
    OPT_INFORMATION_REFRESH_TIME,
    OPT_SOL_MAX_RT,
    REBIND,
    RECONFIGURE,
    RELEASE,
    RENEW,
    REQUEST,
    SERVER_TYPES,
    SOLICIT,
    STATUS_NO_ADDRS_AVAIL,
    STATUS_NO_BINDING,
    STATUS_NOT_ON_LINK,
    STATUS_SUCCESS,
    Dhcp6Message,
    IaAddress,
    IaNa,
    client_duid,
)
from shardnet.common.wire.errors import Drop

from .actions import AddAddress, RemoveAddress, SetAddressKind
from .model import AddressKind
from .ndp import Dhcpv6Configuration
from .timers import TimerQueue

# RFC 8415 §7.6 transmission and retransmission parameters (seconds).
SOL_MAX_DELAY_S = 1.0
SOL_TIMEOUT_S = 1.0
SOL_MAX_RT_S = 3600.0
REQ_TIMEOUT_S = 1.0
REQ_MAX_RT_S = 30.0
REQ_MAX_RC = 10
REN_TIMEOUT_S = 10.0
REN_MAX_RT_S = 600.0
REB_TIMEOUT_S = 10.0
REB_MAX_RT_S = 600.0
INF_MAX_DELAY_S = 1.0
INF_TIMEOUT_S = 1.0
INF_MAX_RT_S = 3600.0
DEC_TIMEOUT_S = 1.0
DEC_MAX_RC = 4
RAND_S = 0.1  # §15: RAND in [-0.1, 0.1]
IRT_DEFAULT_S = 86400.0  # §21.23 IRT_DEFAULT
IRT_MINIMUM_S = 600.0  # §21.23 IRT_MINIMUM
T1_FRACTION = 0.5  # §18.2.4 (recommended when the server leaves T1 to the client)
T2_FRACTION = 0.8
# Own bound, as the DHCPv4 client's: a shorter valid lifetime is taken as this long.
MIN_LIFETIME_S = 10.0
# Own bound: addresses held at once. A server handing out new ones at every
# Renew must not grow the client without end; more are skipped and counted.
MAX_ADDRESSES = 8
RESTART_S = 1.0  # a pause before soliciting again after a refusal: no Solicit storm
# §18.2.1, §18.2.6: Solicit asks for SOL_MAX_RT, Information-request for
# INF_MAX_RT and the Information Refresh Time.
ORO_STATEFUL = (OPT_DNS_SERVERS, OPT_DOMAIN_LIST, OPT_SOL_MAX_RT)
ORO_STATELESS = (OPT_DNS_SERVERS, OPT_DOMAIN_LIST, OPT_INFORMATION_REFRESH_TIME, OPT_INF_MAX_RT)
MAX_RT_RANGE_S = (60, 86400)  # §21.24, §21.25: other values are ignored
INF = float("inf")


class Dhcp6State(enum.Enum):
    """The exchange under way (RFC 8415 §18 message names) or its result."""

    STOPPED = "STOPPED"
    IDLE = "IDLE"  # no RA has asked for DHCPv6
    SOLICITING = "SOLICIT"
    REQUESTING = "REQUEST"
    BOUND = "BOUND"
    RENEWING = "RENEW"
    REBINDING = "REBIND"
    DECLINING = "DECLINE"
    INFORMING = "INFORMATION-REQUEST"
    INFORMED = "INFORMED"


@dataclass(frozen=True, slots=True)
class _Exchange:
    """§15: IRT, MRT, MRC (0: none), and whether the first RAND is above 0."""

    irt: float
    mrt: float
    mrc: int
    positive_first: bool = False


_EXCHANGES = {
    Dhcp6State.SOLICITING: _Exchange(SOL_TIMEOUT_S, SOL_MAX_RT_S, 0, positive_first=True),
    Dhcp6State.REQUESTING: _Exchange(REQ_TIMEOUT_S, REQ_MAX_RT_S, REQ_MAX_RC),
    Dhcp6State.RENEWING: _Exchange(REN_TIMEOUT_S, REN_MAX_RT_S, 0),
    Dhcp6State.REBINDING: _Exchange(REB_TIMEOUT_S, REB_MAX_RT_S, 0),
    Dhcp6State.DECLINING: _Exchange(DEC_TIMEOUT_S, 0.0, DEC_MAX_RC),
    Dhcp6State.INFORMING: _Exchange(INF_TIMEOUT_S, INF_MAX_RT_S, 0),
}


@dataclass(frozen=True, slots=True)
class SendDhcp6:
    """Send ``message`` from the NIC's link-local address, port 546, to
    All_DHCP_Relay_Agents_and_Servers port 547 (RFC 8415 §7.1, §13.1)."""

    message: Dhcp6Message


@dataclass(frozen=True, slots=True)
class Dhcp6Refused:
    """A part of an accepted message was skipped (``reason``): to be counted."""

    reason: Drop


@dataclass(slots=True)
class _Lease:
    """One assigned address: absolute times on the client's clock."""

    preferred_end: float
    valid_end: float
    deprecated: bool = False


@dataclass(frozen=True, slots=True)
class Dhcp6Bound:
    nic: int
    addresses: tuple[bytes, ...]
    server: bytes
    dns_servers: tuple[bytes, ...]
    domains: tuple[str, ...]
    t1_s: float | None  # None: never
    t2_s: float | None
    type: str = "dhcp6_bound"


@dataclass(frozen=True, slots=True)
class Dhcp6Renewed:
    nic: int
    addresses: tuple[bytes, ...]
    server: bytes
    state: str  # the exchange it was renewed by: RENEW, REBIND or REQUEST
    t1_s: float | None
    t2_s: float | None
    type: str = "dhcp6_renewed"


@dataclass(frozen=True, slots=True)
class Dhcp6Expired:
    nic: int
    addr: bytes
    type: str = "dhcp6_expired"


@dataclass(frozen=True, slots=True)
class Dhcp6Released:
    nic: int
    addresses: tuple[bytes, ...]
    type: str = "dhcp6_released"


@dataclass(frozen=True, slots=True)
class Dhcp6Declined:
    nic: int
    addr: bytes
    type: str = "dhcp6_declined"


@dataclass(frozen=True, slots=True)
class Dhcp6Informed:
    """Stateless configuration (§18.2.6) received."""

    nic: int
    server: bytes
    dns_servers: tuple[bytes, ...]
    domains: tuple[str, ...]
    refresh_s: float | None  # None: never
    type: str = "dhcp6_informed"


def _seconds(value: int) -> float:
    return INF if value == INFINITY else float(value)


def _finite(seconds: float) -> float | None:
    return None if seconds == INF else round(seconds, 1)


class Dhcp6Client:
    """The DHCPv6 client of NIC ``nic_id`` (MAC ``mac``); see the module docstring."""

    def __init__(self, nic_id: int, mac: bytes, rng: random.Random) -> None:
        self.nic_id = nic_id
        self.duid = client_duid(mac)
        self.iaid = int.from_bytes(mac[-4:], "big")
        self.rng = rng
        self.state = Dhcp6State.STOPPED
        self.mode = Dhcpv6Configuration.NONE
        self.xid = -1  # no exchange: matches no message
        self.started_at = 0.0
        self.rt = 0.0
        self.tries = 0
        self.mrd_end = INF
        self.server_id: bytes | None = None
        self.server: bytes | None = None  # the server's (link-local) address
        self.advertise: Dhcp6Message | None = None  # the best one so far
        self.advertise_from: bytes | None = None
        self.first_rt_over = False
        self.addresses: dict[bytes, _Lease] = {}
        self.t1 = INF
        self.t2 = INF
        self.dns_servers: tuple[bytes, ...] = ()
        self.domains: tuple[str, ...] = ()
        self.refresh_at = INF
        self.declining: bytes | None = None
        self.sol_max_rt = SOL_MAX_RT_S  # §21.24: a server may change them
        self.inf_max_rt = INF_MAX_RT_S
        self._out: list[Any] = []
        self.timers = TimerQueue()
        self._retransmit = self.timers.timer(self._on_retransmit)
        self._t1 = self.timers.timer(self._on_t1)
        self._t2 = self.timers.timer(self._on_t2)
        self._lifetimes = self.timers.timer(self._on_lifetimes)
        self._refresh = self.timers.timer(self._on_refresh)

    # --- driving ------------------------------------------------------------------
    def start(self, now: float) -> list[Any]:
        """The NIC is up: wait for the RAs' word (or act on the last one)."""
        self.state = Dhcp6State.IDLE
        self._follow_mode(now)
        return self._take()

    def configure(self, now: float, mode: Dhcpv6Configuration) -> list[Any]:
        """The RAs' M/O flags changed (RFC 4861 §4.2: M wins over O). Flags
        going off do not end what was obtained: it runs to its lifetimes."""
        self.mode = mode
        if self.state is not Dhcp6State.STOPPED:
            self._follow_mode(now)
        return self._take()

    def _follow_mode(self, now: float) -> None:
        state = self.state
        stateless = (Dhcp6State.IDLE, Dhcp6State.INFORMING, Dhcp6State.INFORMED)
        if self.mode is Dhcpv6Configuration.MANAGED and state in stateless:
            self._refresh.stop()
            self._solicit(now, delay=self.rng.uniform(0.0, SOL_MAX_DELAY_S))
        elif self.mode is Dhcpv6Configuration.OTHER and state is Dhcp6State.IDLE:
            self._begin(now, Dhcp6State.INFORMING, delay=self.rng.uniform(0.0, INF_MAX_DELAY_S))

    def stop(self, now: float, *, release: bool = True) -> list[Any]:
        """§18.2.7: Release the addresses (sent once) and drop them. Without
        ``release`` (the NIC went down) they are only dropped."""
        held = tuple(self.addresses)
        if held and release and self.server_id is not None:
            self.xid = self.rng.getrandbits(24)
            self.started_at = now
            msg = self._message(now, RELEASE, server_id=self.server_id, addresses=held)
            self._out.append(SendDhcp6(msg))
            self._out.append(Dhcp6Released(self.nic_id, held))
        for addr in held:
            self._out.append(RemoveAddress(addr))
        self.addresses.clear()
        for timer in (self._retransmit, self._t1, self._t2, self._lifetimes, self._refresh):
            timer.stop()
        self.state = Dhcp6State.STOPPED
        self.xid = -1
        return self._take()

    def decline(self, now: float, addr: bytes) -> list[Any]:
        """§18.2.8: DAD found ``addr`` in use (RFC 4862 §5.4.5): Decline it
        to the server; Solicit again once that is done."""
        if addr not in self.addresses or self.server_id is None:
            return []
        del self.addresses[addr]
        self._out.append(RemoveAddress(addr))
        self._out.append(Dhcp6Declined(self.nic_id, addr))
        self.declining = addr
        self._arm_lifetimes()
        self._begin(now, Dhcp6State.DECLINING)
        return self._take()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timeout(self, now: float) -> list[Any]:
        self.timers.run_due(now)
        return self._take()

    def handle(self, now: float, msg: Dhcp6Message, src: bytes) -> list[Any] | Drop:
        """A message from a server (UDP 547 → 546); a ``Drop`` when it is
        not for us or not what our state takes."""
        if msg.msg_type == RECONFIGURE:
            return Drop.DHCP6_RECONFIGURE  # §18.2.11: only with authentication
        if msg.msg_type not in SERVER_TYPES:
            return Drop.DHCP6_NOT_REPLY
        if msg.xid != self.xid or msg.client_id != self.duid:
            return Drop.DHCP6_NOT_OURS  # §16.10 / §18.2.10: another exchange or client
        if msg.server_id is None:
            return Drop.DHCP6_UNEXPECTED  # §16.3, §16.7: a server names itself
        # §18.2.9, §18.2.10: SOL_MAX_RT and INF_MAX_RT are taken from any
        # Advertise or Reply of ours, even one whose status is a failure.
        low, high = MAX_RT_RANGE_S
        if msg.sol_max_rt_s is not None and low <= msg.sol_max_rt_s <= high:
            self.sol_max_rt = float(msg.sol_max_rt_s)
        if msg.inf_max_rt_s is not None and low <= msg.inf_max_rt_s <= high:
            self.inf_max_rt = float(msg.inf_max_rt_s)
        state = self.state
        if msg.msg_type == ADVERTISE:
            if state is not Dhcp6State.SOLICITING:
                return Drop.DHCP6_UNEXPECTED
            return self._advertised(now, msg, src)
        # REPLY
        if state is Dhcp6State.INFORMING:
            if msg.status not in (None, STATUS_SUCCESS):
                return Drop.DHCP6_UNEXPECTED  # §18.2.10 UnspecFail: retransmission goes on
            self._informed(now, msg, src)
        elif state is Dhcp6State.DECLINING:
            self._declined(now)
        elif state in (Dhcp6State.REQUESTING, Dhcp6State.RENEWING, Dhcp6State.REBINDING):
            result = self._replied(now, msg, src)
            if isinstance(result, Drop):
                return result
        else:
            return Drop.DHCP6_UNEXPECTED
        return self._take()

    # --- ctl addrs ----------------------------------------------------------------
    def row(self, now: float, addr: bytes | None = None) -> dict[str, Any]:
        """The client's state for ``ctl addrs`` (times in seconds from now),
        and ``addr``'s lifetimes when it is one of ours."""

        def left(t: float) -> float | None:
            return None if t == INF else round(max(0.0, t - now), 1)

        out: dict[str, Any] = {
            "state": self.state.value,
            "server": format_ip(self.server) if self.server else None,
            "dns_servers": [format_ip(d) for d in self.dns_servers],
            "domains": list(self.domains),
        }
        if self.addresses:
            out |= {"t1_s": left(self.t1), "t2_s": left(self.t2)}
        lease = self.addresses.get(addr) if addr is not None else None
        if lease is not None:
            out |= {"preferred_s": left(lease.preferred_end), "valid_s": left(lease.valid_end)}
        if self.state is Dhcp6State.INFORMED:
            out["refresh_s"] = left(self.refresh_at)
        return out

    # --- sending ------------------------------------------------------------------
    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _message(
        self,
        now: float,
        kind: int,
        *,
        server_id: bytes | None = None,
        addresses: tuple[bytes, ...] = (),
        ia: bool = True,
    ) -> Dhcp6Message:
        # §21.9: hundredths of a second since the exchange began, 0xffff at most.
        elapsed = min(int((now - self.started_at) * 100), 0xFFFF)
        msg = Dhcp6Message(kind, self.xid, client_id=self.duid, server_id=server_id,
                           elapsed_cs=elapsed)  # fmt: skip
        if ia:
            # §18.2: the addresses the client holds (or was offered), lifetimes 0 (§21.6).
            listed = [IaAddress(a, 0, 0) for a in addresses]
            msg.ia_na = [IaNa(self.iaid, 0, 0, listed)]
        if kind in (SOLICIT, REQUEST, RENEW, REBIND):
            msg.oro = ORO_STATEFUL
        elif kind == INFORMATION_REQUEST:
            msg.oro = ORO_STATELESS
        return msg

    def _begin(self, now: float, state: Dhcp6State, *, delay: float = 0.0) -> None:
        """Start an exchange (§15): a new transaction id, the clock of the
        Elapsed Time, the first transmission after ``delay``."""
        self.state = state
        self.xid = self.rng.getrandbits(24)
        self.tries = 0
        self.rt = 0.0
        self.mrd_end = INF
        if state is Dhcp6State.RENEWING:
            self.mrd_end = self.t2  # §18.2.4: MRD is the time until T2
        elif state is Dhcp6State.REBINDING:
            # §18.2.5: until the valid lifetimes of all addresses end.
            self.mrd_end = max((v.valid_end for v in self.addresses.values()), default=now)
        if delay > 0:
            self.started_at = now + delay
            self._retransmit.reset(now + delay)
        else:
            self.started_at = now
            self._transmit(now)

    def _next_rt(self, ex: _Exchange) -> float:
        """§15: the next retransmission timeout."""
        if self.state is Dhcp6State.SOLICITING:
            ex = replace(ex, mrt=self.sol_max_rt)
        elif self.state is Dhcp6State.INFORMING:
            ex = replace(ex, mrt=self.inf_max_rt)
        rand = self.rng.uniform(-RAND_S, RAND_S)
        if self.rt == 0.0:
            if ex.positive_first:  # §18.2.1: the first Solicit's RT above IRT
                rand = self.rng.uniform(0.001, RAND_S)
            rt = ex.irt + rand * ex.irt
        else:
            rt = 2 * self.rt + rand * self.rt
        if ex.mrt and rt > ex.mrt:
            rt = ex.mrt + rand * ex.mrt
        return rt

    def _transmit(self, now: float) -> None:
        state = self.state
        ex = _EXCHANGES[state]
        self.tries += 1
        if self.tries == 1:
            self.started_at = now
        held = tuple(self.addresses)
        if state is Dhcp6State.SOLICITING:
            msg = self._message(now, SOLICIT)
        elif state is Dhcp6State.REQUESTING:
            offered = self.advertise
            addrs = (
                tuple(a.addr for ia in offered.ia_na for a in ia.addresses)
                if offered is not None
                else held
            )
            msg = self._message(now, REQUEST, server_id=self.server_id, addresses=addrs)
        elif state is Dhcp6State.RENEWING:
            msg = self._message(now, RENEW, server_id=self.server_id, addresses=held)
        elif state is Dhcp6State.REBINDING:
            msg = self._message(now, REBIND, addresses=held)  # §18.2.5: no Server Identifier
        elif state is Dhcp6State.DECLINING:
            assert self.declining is not None
            msg = self._message(now, DECLINE, server_id=self.server_id, addresses=(self.declining,))
        else:
            msg = self._message(now, INFORMATION_REQUEST, ia=False)
        self._out.append(SendDhcp6(msg))
        self.rt = self._next_rt(ex)
        self._retransmit.reset(min(now + self.rt, self.mrd_end))

    def _solicit(self, now: float, *, delay: float = 0.0) -> None:
        self.advertise = None
        self.advertise_from = None
        self.first_rt_over = False
        self._begin(now, Dhcp6State.SOLICITING, delay=delay)

    # --- timers -------------------------------------------------------------------
    def _on_retransmit(self, now: float) -> None:
        state = self.state
        if state not in _EXCHANGES:
            return
        if self.tries == 0:  # the §18.2.1 / §18.2.6 initial delay is over
            self._transmit(now)
            return
        if state is Dhcp6State.SOLICITING:
            self.first_rt_over = True
            if self.advertise is not None:  # §18.2.9: the best one collected
                self._request(now)
                return
        ex = _EXCHANGES[state]
        if (ex.mrc and self.tries >= ex.mrc) or now >= self.mrd_end:
            self._exchange_failed(now)
            return
        self._transmit(now)

    def _exchange_failed(self, now: float) -> None:
        """MRC or MRD reached (§15)."""
        state = self.state
        if state is Dhcp6State.REQUESTING:
            self._solicit(now)  # §18.2.2: no server answered: start over
        elif state is Dhcp6State.DECLINING:
            self._declined(now)
        elif state is Dhcp6State.RENEWING:
            self._retransmit.stop()  # T2 takes over with Rebind
        elif state is Dhcp6State.REBINDING:
            self._retransmit.stop()  # the lifetimes end the addresses

    def _on_t1(self, now: float) -> None:
        if self.state is Dhcp6State.BOUND:
            self._begin(now, Dhcp6State.RENEWING)  # §18.2.4

    def _on_t2(self, now: float) -> None:
        if self.state in (Dhcp6State.BOUND, Dhcp6State.RENEWING):
            self._begin(now, Dhcp6State.REBINDING)  # §18.2.5

    def _on_refresh(self, now: float) -> None:
        if self.state is Dhcp6State.INFORMED:
            self._begin(now, Dhcp6State.INFORMING)  # §18.2.6, §21.23

    def _on_lifetimes(self, now: float) -> None:
        """§18.2.10.1 / RFC 4862 §5.5.4: deprecate at the preferred lifetime,
        remove at the valid lifetime; with none left, Solicit again."""
        for addr, lease in list(self.addresses.items()):
            if lease.valid_end <= now:
                del self.addresses[addr]
                self._out.append(RemoveAddress(addr))
                self._out.append(Dhcp6Expired(self.nic_id, addr))
            elif lease.preferred_end <= now and not lease.deprecated:
                lease.deprecated = True
                self._out.append(SetAddressKind(addr, AddressKind.DEPRECATED))
        self._arm_lifetimes()
        if not self.addresses and self.state in (
            Dhcp6State.BOUND,
            Dhcp6State.RENEWING,
            Dhcp6State.REBINDING,
        ):
            self._t1.stop()
            self._t2.stop()
            self._solicit(now)

    def _arm_lifetimes(self) -> None:
        ends = [
            t
            for lease in self.addresses.values()
            for t in (
                (lease.valid_end,) if lease.deprecated else (lease.preferred_end, lease.valid_end)
            )
            if t != INF
        ]
        if ends:
            self._lifetimes.reset(min(ends))
        else:
            self._lifetimes.stop()

    # --- replies ------------------------------------------------------------------
    def _advertised(self, now: float, msg: Dhcp6Message, src: bytes) -> list[Any] | Drop:
        """§18.2.9: an Advertise without addresses is ignored; the one with
        the highest Preference wins; 255 (or any after the first RT) at once."""
        if msg.status == STATUS_NO_ADDRS_AVAIL or not any(
            ia.iaid == self.iaid and ia.addresses for ia in msg.ia_na
        ):
            return Drop.DHCP6_UNEXPECTED
        preference = msg.preference or 0
        best = self.advertise
        if best is None or preference > (best.preference or 0):
            self.advertise, self.advertise_from = msg, src
        if preference == 255 or self.first_rt_over:
            self._request(now)
        return self._take()

    def _request(self, now: float) -> None:
        offered = self.advertise
        assert offered is not None
        self.server_id = offered.server_id
        self.server = self.advertise_from
        self._begin(now, Dhcp6State.REQUESTING)

    def _informed(self, now: float, msg: Dhcp6Message, src: bytes) -> None:
        """§18.2.10 for an Information-request: keep the options, ask again
        after the Information Refresh Time (§21.23)."""
        self._retransmit.stop()
        self.server = src
        self.dns_servers = tuple(d for d in msg.dns_servers if is_unicast(d))
        self.domains = msg.domains
        refresh = IRT_DEFAULT_S if msg.info_refresh_s is None else _seconds(msg.info_refresh_s)
        refresh = max(refresh, IRT_MINIMUM_S)  # §21.23: a smaller value is IRT_MINIMUM
        self.state = Dhcp6State.INFORMED
        self.xid = -1
        self.refresh_at = now + refresh
        if refresh == INF:
            self._refresh.stop()
        else:
            self._refresh.reset(self.refresh_at)
        self._out.append(
            Dhcp6Informed(self.nic_id, src, self.dns_servers, self.domains, _finite(refresh))
        )

    def _declined(self, now: float) -> None:
        self.declining = None
        self._retransmit.stop()
        self.xid = -1
        if self.addresses:
            self.state = Dhcp6State.BOUND
        else:
            self._t1.stop()
            self._t2.stop()
            self._solicit(now)

    def _replied(self, now: float, msg: Dhcp6Message, src: bytes) -> Drop | None:
        """§18.2.10.1: a Reply to Request, Renew or Rebind."""
        state = self.state
        if msg.status not in (None, STATUS_SUCCESS):
            return Drop.DHCP6_UNEXPECTED  # UnspecFail, UseMulticast: retransmission goes on
        ia = next((i for i in msg.ia_na if i.iaid == self.iaid), None)
        if ia is None:
            return Drop.DHCP6_UNEXPECTED
        if ia.status == STATUS_NO_BINDING and state is not Dhcp6State.REQUESTING:
            # §18.2.10.1: the server lost the binding: Request it again.
            self.server_id = msg.server_id
            self.server = src
            self.advertise = None
            self._begin(now, Dhcp6State.REQUESTING)
            return None
        if ia.status in (STATUS_NO_ADDRS_AVAIL, STATUS_NOT_ON_LINK):
            if state is Dhcp6State.REQUESTING:  # §18.2.10.1: try again, from Solicit
                self._retransmit.stop()
                self._solicit(now, delay=RESTART_S)
                return None
            return Drop.DHCP6_UNEXPECTED
        if ia.t1 and ia.t2 and ia.t1 > ia.t2:
            return Drop.DHCP6_BAD_LIFETIMES  # §21.4: the IA_NA is discarded
        granted: dict[bytes, tuple[float, float]] = {}
        for a in ia.addresses:
            if a.status not in (None, STATUS_SUCCESS):
                continue
            if not is_unicast(a.addr) or is_ipv6_link_local(a.addr) or a.addr[0] == 0:
                self._out.append(Dhcp6Refused(Drop.DHCP6_UNEXPECTED))
                continue
            if a.preferred > a.valid:
                self._out.append(Dhcp6Refused(Drop.DHCP6_BAD_LIFETIMES))  # §21.6
                continue
            granted[a.addr] = (_seconds(a.preferred), _seconds(a.valid))
        if not granted and not self.addresses:
            return Drop.DHCP6_UNEXPECTED
        self._bind(now, ia, granted, msg, src)
        return None

    def _bind(
        self,
        now: float,
        ia: IaNa,
        granted: dict[bytes, tuple[float, float]],
        msg: Dhcp6Message,
        src: bytes,
    ) -> None:
        was = self.state
        first = not self.addresses
        self._retransmit.stop()
        self.server_id = msg.server_id
        self.server = src
        for addr, (preferred, valid) in granted.items():
            lease = self.addresses.get(addr)
            if valid == 0:  # §18.2.10.1: a valid lifetime of 0: the address goes
                if lease is not None:
                    del self.addresses[addr]
                    self._out.append(RemoveAddress(addr))
                continue
            if lease is None and len(self.addresses) >= MAX_ADDRESSES:
                self._out.append(Dhcp6Refused(Drop.DHCP6_TOO_MANY))
                continue
            if valid < MIN_LIFETIME_S:
                self._out.append(Dhcp6Refused(Drop.DHCP6_BAD_LIFETIMES))
                valid = MIN_LIFETIME_S
            preferred = min(preferred, valid)
            if lease is None:
                self.addresses[addr] = _Lease(now + preferred, now + valid, preferred == 0)
                self._out.append(
                    AddAddress(
                        addr, 128,
                        AddressKind.DEPRECATED if preferred == 0 else AddressKind.PERMANENT,
                        "dhcp", connected_route=False,
                        valid_lifetime_s=_finite(valid), preferred_lifetime_s=_finite(preferred),
                    )
                )  # fmt: skip
                continue
            lease.preferred_end, lease.valid_end = now + preferred, now + valid
            if lease.deprecated and preferred > 0:
                lease.deprecated = False
                self._out.append(SetAddressKind(addr, AddressKind.PERMANENT))
        if not self.addresses:
            self._t1.stop()
            self._t2.stop()
            self._solicit(now, delay=RESTART_S)
            return
        # §21.4 / §18.2.4: T1 and T2 of 0 are left to the client.
        shortest = min(lease.preferred_end - now for lease in self.addresses.values())
        if ia.t1 and ia.t2:
            t1_s, t2_s = _seconds(ia.t1), _seconds(ia.t2)
        else:
            t1_s, t2_s = shortest * T1_FRACTION, shortest * T2_FRACTION
            if shortest == 0:  # every address deprecated: renew soon
                t1_s, t2_s = MIN_LIFETIME_S * T1_FRACTION, MIN_LIFETIME_S * T2_FRACTION
        self.t1, self.t2 = now + t1_s, now + t2_s
        for timer, at in ((self._t1, self.t1), (self._t2, self.t2)):
            if at == INF:
                timer.stop()
            else:
                timer.reset(at)
        if msg.dns_servers or msg.domains:
            self.dns_servers = tuple(d for d in msg.dns_servers if is_unicast(d))
            self.domains = msg.domains
        self.state = Dhcp6State.BOUND
        self.xid = -1
        self._arm_lifetimes()
        held = tuple(self.addresses)
        if first:
            self._out.append(
                Dhcp6Bound(self.nic_id, held, src, self.dns_servers, self.domains,
                           _finite(t1_s), _finite(t2_s))
            )  # fmt: skip
        else:
            self._out.append(
                Dhcp6Renewed(self.nic_id, held, src, was.value, _finite(t1_s), _finite(t2_s))
            )
