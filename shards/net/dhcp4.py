"""DHCPv4 client for one NIC (RFC 2131), sans-I/O: it returns the messages
to send (``SendDhcp4``), the table changes (``actions.py``) and events, and
is woken through its ``TimerQueue``.

* §4.4 (Figure 5) states: INIT → SELECTING (DISCOVER sent) → REQUESTING
  (the first OFFER taken, REQUEST broadcast naming its server) → BOUND
  (ACK: the address with its lease, the router as default route, DNS
  servers and domain as an event) → RENEWING at T1 (REQUEST unicast to
  the server) → REBINDING at T2 (REQUEST broadcast) → at lease expiry the
  address and route go and the client starts again at INIT.
* §3.2, §4.3.2: with a remembered address the client starts in
  INIT-REBOOT: a broadcast REQUEST with the requested IP address and no
  server identifier (REBOOTING); no answer after the retransmissions, or
  a NAK: INIT.
* §4.1: retransmission at 4, 8, 16, ... up to 64 s, each randomised by
  ±1 s; REQUESTING and REBOOTING give up after ``REQUEST_TRIES``.
  §4.4.5: in RENEWING and REBINDING, half the time left until T2 / the
  lease end, at least 60 s.
* §4.4.5: T1 and T2 default to 0.5 and 0.875 of the lease (RFC 2132 §9.11,
  §9.12 options when the server sends them in order T1 < T2 < lease).
* §3.1 step 5, §3.2 step 3: a NAK sends the client back to INIT (the
  address, if any, is dropped).
* §4.4.6: DHCPRELEASE (unicast to the server) when the client stops.
* Only replies with our ``xid`` and ``chaddr`` are taken (§4.4.1); every
  other message is dropped and counted.

The client sets the BROADCAST flag (§4.1): until it is bound it cannot
take a unicast to an address it does not have yet. Left out: the ARP
* §3.1 step 5: an address that conflict detection (RFC 5227, ``acd.py``)
  finds in use is declined (DHCPDECLINE) and the client starts over after
  DECLINE_WAIT_S.

Left out: DHCPINFORM, collecting several offers (the first
one is taken, as most clients do).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from shardnet.common.addr import format_ip
from shardnet.common.wire.dhcp4 import (
    ACK,
    BOOTREPLY,
    BOOTREQUEST,
    DECLINE,
    DISCOVER,
    FLAG_BROADCAST,
    NAK,
    OFFER,
    OPT_DNS,
    OPT_DOMAIN_NAME,
    OPT_LEASE_TIME,
    OPT_REBINDING_TIME,
    OPT_RENEWAL_TIME,
    OPT_ROUTER,
    OPT_SUBNET_MASK,
    RELEASE,
    REQUEST,
    Dhcp4Message,
)
from shardnet.common.wire.errors import Drop

from .actions import AddAddress, AddRoute, RemoveAddress, RemoveRoute
from .model import AddressKind
from .route import Route
from .timers import TimerQueue

IPV4_ANY = bytes(4)
IPV4_BROADCAST = b"\xff\xff\xff\xff"
INFINITE_LEASE = 0xFFFFFFFF  # RFC 2132 §9.2
FIRST_RETRANSMIT_S = 4.0  # RFC 2131 §4.1
MAX_RETRANSMIT_S = 64.0  # RFC 2131 §4.1
RETRANSMIT_JITTER_S = 1.0  # RFC 2131 §4.1: "randomized by the value of a uniform
# random number chosen from the range -1 to +1"
REQUEST_TRIES = 4  # REQUESTING / REBOOTING: 4 + 8 + 16 + 32 s, then INIT
MIN_RENEW_RETRANSMIT_S = 60.0  # RFC 2131 §4.4.5
T1_FRACTION = 0.5  # RFC 2131 §4.4.5
T2_FRACTION = 0.875  # RFC 2131 §4.4.5
# A shorter lease is taken as this long: a server (or a forger) that hands
# out 0-second leases must not make the client loop at full speed.
MIN_LEASE_S = 10.0
# RFC 2131 §3.1 step 5: after a DHCPDECLINE, wait at least ten seconds.
DECLINE_WAIT_S = 10.0
NAK_RESTART_S = 1.0  # after a NAK: a pause before DISCOVER, so a NAK loop is not a storm
PARAMS = bytes(
    (OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_DOMAIN_NAME, OPT_LEASE_TIME,
     OPT_RENEWAL_TIME, OPT_REBINDING_TIME)
)  # fmt: skip


class Dhcp4State(enum.Enum):
    """RFC 2131 §4.4 Figure 5 states, in its spelling."""

    STOPPED = "STOPPED"
    INIT = "INIT"
    SELECTING = "SELECTING"
    REQUESTING = "REQUESTING"
    INIT_REBOOT = "INIT-REBOOT"
    REBOOTING = "REBOOTING"
    BOUND = "BOUND"
    RENEWING = "RENEWING"
    REBINDING = "REBINDING"


@dataclass(frozen=True, slots=True)
class SendDhcp4:
    """Send ``message`` from ``src``:68 to ``dst``:67 out of the NIC (the
    limited broadcast goes to the Ethernet broadcast address)."""

    message: Dhcp4Message
    src: bytes
    dst: bytes


@dataclass(frozen=True, slots=True)
class StoreLease:
    """Remember ``address`` (None: forget) for INIT-REBOOT after a restart."""

    address: bytes | None
    server: bytes | None


@dataclass(slots=True)
class Lease:
    """What an ACK gave: times are absolute (the client's clock)."""

    address: bytes
    prefix_len: int
    server: bytes
    routers: tuple[bytes, ...]
    dns_servers: tuple[bytes, ...]
    domain_name: str | None
    lease_time_s: float  # inf: infinite
    acquired: float
    t1: float
    t2: float
    expiry: float


@dataclass(frozen=True, slots=True)
class Dhcp4Bound:
    address: bytes
    prefix_len: int
    server: bytes
    routers: tuple[bytes, ...]
    dns_servers: tuple[bytes, ...]
    domain_name: str | None
    lease_time_s: float | None  # None: infinite
    t1_s: float | None
    t2_s: float | None
    type: str = "dhcp4_bound"


@dataclass(frozen=True, slots=True)
class Dhcp4Renewed:
    address: bytes
    server: bytes
    lease_time_s: float | None
    t1_s: float | None
    t2_s: float | None
    state: str  # the state it was renewed from: RENEWING or REBINDING
    type: str = "dhcp4_renewed"


@dataclass(frozen=True, slots=True)
class Dhcp4Expired:
    address: bytes
    type: str = "dhcp4_expired"


@dataclass(frozen=True, slots=True)
class Dhcp4Nak:
    server: bytes | None
    message: str | None
    state: str
    type: str = "dhcp4_nak"


@dataclass(frozen=True, slots=True)
class Dhcp4Released:
    address: bytes
    server: bytes
    type: str = "dhcp4_released"


def prefix_of_mask(mask: bytes | None, address: bytes) -> int:
    """The prefix length of a subnet mask (RFC 2132 §3.3); without one, or
    with a non-contiguous one, the address class's (RFC 1122 §3.3.1.1 leaves
    it to the host; RFC 791 classes)."""
    if mask is not None:
        value = int.from_bytes(mask, "big")
        plen = bin(value).count("1")
        if value == (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF and 0 < plen <= 32:
            return plen
    first = address[0]
    return 8 if first < 128 else 16 if first < 192 else 24


class Dhcp4Client:
    """The DHCPv4 client of NIC ``nic_id`` (MAC ``mac``); see the module docstring."""

    def __init__(
        self,
        nic_id: int,
        mac: bytes,
        rng: random.Random,
        *,
        remembered: bytes | None = None,
    ) -> None:
        self.nic_id = nic_id
        self.mac = mac
        self.rng = rng
        self.remembered = remembered  # an earlier lease's address: INIT-REBOOT
        self.state = Dhcp4State.STOPPED
        self.lease: Lease | None = None
        self.offer: Dhcp4Message | None = None  # the OFFER being requested
        self.xid = 0
        self.started_at = 0.0  # of the current exchange (the ``secs`` field)
        self.tries = 0
        self._out: list[Any] = []
        self.timers = TimerQueue()
        self._retransmit = self.timers.timer(self._on_retransmit)
        self._t1 = self.timers.timer(self._on_t1)
        self._t2 = self.timers.timer(self._on_t2)
        self._expiry = self.timers.timer(self._on_expiry)
        self._restart = self.timers.timer(self._on_restart)

    # --- driving ------------------------------------------------------------------
    def start(self, now: float) -> list[Any]:
        if self.remembered is not None:
            self.state = Dhcp4State.INIT_REBOOT
            self._request(now, fresh=True)  # §3.2 step 1
            self.state = Dhcp4State.REBOOTING
        else:
            self._discover(now)
        return self._take()

    def stop(self, now: float, *, release: bool = True) -> list[Any]:
        """§4.4.6: release the lease (the address is kept on disk as a hint
        for the next start's INIT-REBOOT) and drop it from the NIC. Without
        ``release`` (the NIC went down) the lease is only dropped; ``start``
        then asks for it again in INIT-REBOOT (§3.2: a client that moves or
        reconnects)."""
        lease = self.lease
        if lease is not None and not release:
            self._unbind(lease)
        elif lease is not None:  # BOUND, RENEWING or REBINDING
            self.xid = self.rng.getrandbits(32)
            msg = Dhcp4Message(
                op=BOOTREQUEST, xid=self.xid, chaddr=self.mac, message_type=RELEASE,
                ciaddr=lease.address, server_id=lease.server,
            )  # fmt: skip
            self._out.append(SendDhcp4(msg, lease.address, lease.server))
            self._out.append(Dhcp4Released(lease.address, lease.server))
            self._unbind(lease)
        for timer in (self._retransmit, self._t1, self._t2, self._expiry, self._restart):
            timer.stop()
        self.state = Dhcp4State.STOPPED
        return self._take()

    def decline(self, now: float, addr: bytes) -> list[Any]:
        """§3.1 step 5: another host uses the leased ``addr`` (RFC 5227):
        DHCPDECLINE to the server, the lease dropped, INIT again after
        DECLINE_WAIT_S."""
        lease = self.lease
        if lease is None or lease.address != addr:
            return []
        self.xid = self.rng.getrandbits(32)
        msg = Dhcp4Message(
            op=BOOTREQUEST, xid=self.xid, chaddr=self.mac, message_type=DECLINE,
            requested_ip=addr, server_id=lease.server,
        )  # fmt: skip
        # §4.4.4: DHCPDECLINE is broadcast (the client has no address).
        self._out.append(SendDhcp4(msg, IPV4_ANY, IPV4_BROADCAST))
        self._unbind(lease)
        self.remembered = None
        self._to_init(now, DECLINE_WAIT_S)
        return self._take()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timeout(self, now: float) -> list[Any]:
        self.timers.run_due(now)
        return self._take()

    def handle(self, now: float, msg: Dhcp4Message, src: bytes) -> list[Any] | Drop:
        """A message from a server (UDP 67 → 68); a ``Drop`` when it is not
        for us or not what our state takes."""
        if msg.op != BOOTREPLY:
            return Drop.DHCP_NOT_REPLY
        if msg.xid != self.xid or msg.chaddr != self.mac:
            return Drop.DHCP_NOT_OURS  # §4.4.1: another client's exchange
        state, kind = self.state, msg.message_type
        if kind == OFFER and state is Dhcp4State.SELECTING:
            if msg.server_id is None or not _unicast(msg.yiaddr):
                return Drop.DHCP_UNEXPECTED  # §4.3.1: an OFFER names its server and address
            self.offer = msg
            self.state = Dhcp4State.REQUESTING
            self._request(now, fresh=False)  # §4.4.1: the same xid as the DISCOVER
            return self._take()
        waiting = (
            Dhcp4State.REQUESTING,
            Dhcp4State.REBOOTING,
            Dhcp4State.RENEWING,
            Dhcp4State.REBINDING,
        )
        if kind == ACK and state in waiting:
            if not _unicast(msg.yiaddr) or msg.lease_time_s is None:
                return Drop.DHCP_UNEXPECTED  # §4.3.1: an ACK to a REQUEST carries the lease time
            server = msg.server_id or (self.lease.server if self.lease else None) or src
            self._bind(now, msg, server)
            return self._take()
        if kind == NAK and state in waiting:
            lease = self.lease
            if (
                lease is not None
                and msg.server_id is not None
                and msg.server_id != lease.server
                and state is Dhcp4State.RENEWING
            ):
                return Drop.DHCP_UNEXPECTED  # a NAK from another server than the one renewed with
            self._out.append(Dhcp4Nak(msg.server_id, msg.message, state.value))
            if lease is not None:
                self._unbind(lease)
            self.remembered = None
            self._out.append(StoreLease(None, None))
            self._to_init(now, NAK_RESTART_S)
            return self._take()
        return Drop.DHCP_UNEXPECTED

    # --- ctl addrs ----------------------------------------------------------------
    def row(self, now: float) -> dict[str, Any]:
        """The client's state for ``ctl addrs`` (times in seconds from now)."""
        lease = self.lease
        out: dict[str, Any] = {"state": self.state.value}
        if lease is not None:

            def left(t: float) -> float | None:
                return None if t == float("inf") else round(max(0.0, t - now), 1)

            out |= {
                "server": format_ip(lease.server),
                "lease_time_s": _finite(lease.lease_time_s),
                "t1_s": left(lease.t1),
                "t2_s": left(lease.t2),
                "expires_s": left(lease.expiry),
                "routers": [format_ip(r) for r in lease.routers],
                "dns_servers": [format_ip(d) for d in lease.dns_servers],
                "domain_name": lease.domain_name,
            }
        return out

    # --- sending ------------------------------------------------------------------
    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _backoff(self) -> float:
        """§4.1: 4 s doubling up to 64 s, randomised by ±1 s."""
        base = min(FIRST_RETRANSMIT_S * 2 ** (self.tries - 1), MAX_RETRANSMIT_S)
        return base + self.rng.uniform(-RETRANSMIT_JITTER_S, RETRANSMIT_JITTER_S)

    def _secs(self, now: float) -> int:
        return min(int(now - self.started_at), 0xFFFF)

    def _discover(self, now: float) -> None:
        self.state = Dhcp4State.SELECTING
        self.xid = self.rng.getrandbits(32)
        self.started_at = now
        self.tries = 0
        self.offer = None
        self._send_discover(now)

    def _send_discover(self, now: float) -> None:
        self.tries += 1
        msg = Dhcp4Message(
            op=BOOTREQUEST, xid=self.xid, chaddr=self.mac, message_type=DISCOVER,
            secs=self._secs(now), flags=FLAG_BROADCAST, params=PARAMS,
        )  # fmt: skip
        self._out.append(SendDhcp4(msg, IPV4_ANY, IPV4_BROADCAST))
        self._retransmit.reset(now + self._backoff())

    def _request(self, now: float, *, fresh: bool) -> None:
        """Start sending REQUESTs of the current state (§4.3.2 table 4)."""
        if fresh:
            self.xid = self.rng.getrandbits(32)
            self.started_at = now
        self.tries = 0
        self._send_request(now)

    def _send_request(self, now: float) -> None:
        self.tries += 1
        state, lease = self.state, self.lease
        msg = Dhcp4Message(
            op=BOOTREQUEST, xid=self.xid, chaddr=self.mac, message_type=REQUEST,
            secs=self._secs(now), params=PARAMS,
        )  # fmt: skip
        if state is Dhcp4State.REQUESTING and self.offer is not None:
            # §4.3.2 SELECTING: server identifier and requested IP, ciaddr 0.
            msg.flags = FLAG_BROADCAST
            msg.requested_ip = self.offer.yiaddr
            msg.server_id = self.offer.server_id
            src, dst = IPV4_ANY, IPV4_BROADCAST
        elif state in (Dhcp4State.INIT_REBOOT, Dhcp4State.REBOOTING):
            # §4.3.2 INIT-REBOOT: requested IP, no server identifier, ciaddr 0.
            msg.flags = FLAG_BROADCAST
            msg.requested_ip = self.remembered
            src, dst = IPV4_ANY, IPV4_BROADCAST
        else:
            # §4.3.2 RENEWING (unicast to the server) / REBINDING (broadcast):
            # ciaddr set, no server identifier or requested IP.
            assert lease is not None
            msg.ciaddr = lease.address
            src = lease.address
            dst = lease.server if state is Dhcp4State.RENEWING else IPV4_BROADCAST
        self._out.append(SendDhcp4(msg, src, dst))
        if state in (Dhcp4State.RENEWING, Dhcp4State.REBINDING):
            assert lease is not None
            end = lease.t2 if state is Dhcp4State.RENEWING else lease.expiry
            self._retransmit.reset(now + max((end - now) / 2, MIN_RENEW_RETRANSMIT_S))
        else:
            self._retransmit.reset(now + self._backoff())

    # --- timers -------------------------------------------------------------------
    def _on_retransmit(self, now: float) -> None:
        state = self.state
        if state is Dhcp4State.SELECTING:
            self._send_discover(now)
        elif state in (Dhcp4State.REQUESTING, Dhcp4State.REBOOTING):
            if self.tries >= REQUEST_TRIES:
                # §3.1 step 3 / §3.2 step 3: no answer: start again with DISCOVER.
                self._discover(now)
            else:
                self._send_request(now)
        elif state in (Dhcp4State.RENEWING, Dhcp4State.REBINDING):
            self._send_request(now)

    def _on_t1(self, now: float) -> None:
        if self.state is Dhcp4State.BOUND:
            self.state = Dhcp4State.RENEWING  # §4.4.5
            self._request(now, fresh=True)

    def _on_t2(self, now: float) -> None:
        if self.state in (Dhcp4State.BOUND, Dhcp4State.RENEWING):
            self.state = Dhcp4State.REBINDING  # §4.4.5
            self._request(now, fresh=True)

    def _on_expiry(self, now: float) -> None:
        lease = self.lease
        if lease is None:
            return
        # §4.4.5: the lease ran out: stop using the address, back to INIT.
        self._out.append(Dhcp4Expired(lease.address))
        self._unbind(lease)
        self._to_init(now, 0.0)

    def _on_restart(self, now: float) -> None:
        if self.state is Dhcp4State.INIT:
            self._discover(now)

    def _to_init(self, now: float, pause_s: float) -> None:
        for timer in (self._retransmit, self._t1, self._t2, self._expiry):
            timer.stop()
        self.state = Dhcp4State.INIT
        if pause_s > 0:
            self._restart.reset(now + pause_s)
        else:
            self._discover(now)

    # --- the lease ----------------------------------------------------------------
    def _bind(self, now: float, ack: Dhcp4Message, server: bytes) -> None:
        old, was = self.lease, self.state
        lease_s = (
            float("inf")
            if ack.lease_time_s == INFINITE_LEASE
            else max(float(ack.lease_time_s or 0), MIN_LEASE_S)
        )
        t1_s, t2_s = lease_s * T1_FRACTION, lease_s * T2_FRACTION
        if (
            ack.renewal_time_s is not None
            and ack.rebinding_time_s is not None
            and ack.renewal_time_s < ack.rebinding_time_s < lease_s
        ):
            t1_s, t2_s = float(ack.renewal_time_s), float(ack.rebinding_time_s)
        elif ack.renewal_time_s is not None and ack.renewal_time_s < t2_s:
            t1_s = float(ack.renewal_time_s)
        elif ack.rebinding_time_s is not None and t1_s < ack.rebinding_time_s < lease_s:
            t2_s = float(ack.rebinding_time_s)
        lease = Lease(
            address=ack.yiaddr, prefix_len=prefix_of_mask(ack.subnet_mask, ack.yiaddr),
            server=server, routers=tuple(r for r in ack.routers if _unicast(r)),
            dns_servers=tuple(d for d in ack.dns_servers if _unicast(d)),
            domain_name=ack.domain_name, lease_time_s=lease_s, acquired=now,
            t1=now + t1_s, t2=now + t2_s, expiry=now + lease_s,
        )  # fmt: skip
        self._retransmit.stop()
        self._restart.stop()
        renewal = old is not None and old.address == lease.address
        if old is not None and not (
            renewal and old.prefix_len == lease.prefix_len and old.routers == lease.routers
        ):
            self._unbind(old)
            renewal = False
        self.lease = lease
        self.state = Dhcp4State.BOUND
        self.remembered = lease.address
        if not renewal:
            finite = _finite(lease_s)
            added = AddAddress(
                lease.address, lease.prefix_len, AddressKind.PERMANENT, "dhcp",
                valid_lifetime_s=finite, preferred_lifetime_s=finite,
            )  # fmt: skip
            self._out.append(added)
            if lease.routers:  # RFC 2132 §3.5: in order of preference; the first one
                self._out.append(AddRoute(self._default_route(lease)))
            bound = Dhcp4Bound(
                lease.address, lease.prefix_len, server, lease.routers, lease.dns_servers,
                lease.domain_name, finite, _finite(t1_s), _finite(t2_s),
            )  # fmt: skip
            self._out.append(bound)
        else:
            renewed = Dhcp4Renewed(
                lease.address, server, _finite(lease_s), _finite(t1_s), _finite(t2_s), was.value
            )
            self._out.append(renewed)
        self._out.append(StoreLease(lease.address, server))
        for timer, at in ((self._t1, lease.t1), (self._t2, lease.t2), (self._expiry, lease.expiry)):
            if at == float("inf"):
                timer.stop()
            else:
                timer.reset(at)

    def _default_route(self, lease: Lease) -> Route:
        return Route(IPV4_ANY, 0, self.nic_id, lease.routers[0], 0, "dhcp")

    def _unbind(self, lease: Lease) -> None:
        if lease.routers:
            self._out.append(RemoveRoute(self._default_route(lease)))
        self._out.append(RemoveAddress(lease.address))
        self.lease = None


def _finite(seconds: float) -> float | None:
    return None if seconds == float("inf") else seconds


def _unicast(addr: bytes) -> bool:
    """A host address a server may give: not 0/8, loopback (RFC 1122
    §3.2.1.3), multicast or reserved (class D and E)."""
    return 0 < addr[0] < 224 and addr[0] != 127
