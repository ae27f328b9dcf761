"""IPv6 Neighbor Discovery for one NIC, sans-I/O: DAD, router solicitation,
router and prefix discovery, SLAAC, RA parameters, RDNSS/DNSSL, with the behaviour of gVisor's per-NIC NDP state (its
NDPDispatcher callbacks become events) and the RFCs below.

``NdpMachine`` takes inputs (``start``, ``add_address``, ``handle_ndp`` or
``handle_ns``/``handle_na``/``handle_ra``, ``set_forwarding``,
``handle_timeout``, ``stop``...) and returns a list of actions for the
caller to apply in order: frames to send (``SendNdp``), the records of
``actions.py`` (changes to the NIC's addresses, routes and parameters, and
the solicited-node group joins and leaves that the NIC's MLD machine,
``mld.py``, reports) and events (records with a ``type`` string,
``event_to_dict`` for JSON). The machine never
touches the route table or the address table itself (out-of-line updates,
nothing called under anyone's lock).

Implements:
  * RFC 4862 §5.4 DAD for every unicast address (static ones included) with
    ``dup_addr_detect_transmits`` NS every RetransTimer (per NIC), a
    random delay of up to ``max_dad_delay_s`` before the first NS (§5.4.2;
    Linux delays every DAD by up to rtr_solicit_delay, so do we), NS
    from :: to the solicited-node group with no SLLA (§5.4.2), optional RFC 7527
    nonce (looped-back probes are not duplicates). A duplicate during DAD is
    an NS from :: for the tentative target or any NA for it (§5.4.3, §5.4.4);
    an NS for it from a unicast source is ignored (no NA). DAD off: the
    address is usable at once and a ``dad_result`` still reported.
    An NA for one of our usable addresses is reported (``duplicate_address``,
    §5.4.4 "log a system management error").
  * RFC 7217 opaque IIDs by default (RFC 8064) with the NIC name
    through the name function, DAD_Counter regeneration after a DAD failure,
    up to ``IDGEN_RETRIES`` (§6); modified EUI-64 when configured (RFC 4291
    App. A). Link-local generation at start unless loopback (as Linux).
  * RFC 8981 temporary addresses with ``use_tempaddr`` (as Linux: 0 off, 1
    generate, 2 generate and prefer, which is the NIC parameter
    ``use_tempaddr`` that source selection reads for RFC 6724 rule 7): for
    every SLAAC prefix, a random IID (§3.3.1, never a reserved one, RFC
    5453), valid for min(prefix valid, TEMP_VALID_LIFETIME) and preferred
    for min(prefix preferred, TEMP_PREFERRED_LIFETIME - DESYNC_FACTOR)
    (§3.4, a new DESYNC_FACTOR for each address, §3.8); none when that is
    not more than REGEN_ADVANCE (§3.4 step 7); a new one REGEN_ADVANCE
    before the newest deprecates (§3.5), the old one deprecated and kept
    until its valid lifetime ends; lifetimes bounded by each RA (§3.4); a
    DAD failure gets a new random IID, up to TEMP_IDGEN_RETRIES times
    (§3.4 step 6); gone with the prefix. At most
    ``MAX_TEMP_ADDRESSES_PER_PREFIX`` at once (own bound: the oldest goes
    early when short lifetimes would make more).
  * RFC 4861 §6.3.7 router solicitation: up to 3, 4 s apart, after a random
    delay of up to 1 s; from a usable link-local address with SLLA, else from
    :: without; stops at the first valid RA with a non-zero Router Lifetime.
  * RFC 4861 §6.3.4 RA processing in gVisor's order: M/O flags (DHCPv6
    events on transitions only) → router lifetime (default router list,
    limit 10, with the RFC 4191 §2.2 Default Router Preference) → CurHopLimit,
    ReachableTime (random factor 0.5-1.5), RetransTimer → options in
    wire order: SLLA (neighbour cache), MTU (1280..link MTU), RDNSS
    and DNSSL (RFC 8106: events), Prefix Information (link-local
    and /0 skipped; L: on-link prefix discovery, limit 10; A: SLAAC),
    Route Information (RFC 4191 §3.1, only with ``accept_rio``, off by
    default as Linux's accept_ra_rt_info_max_plen 0: a more-specific route
    through the router, metric by its preference, limit 10; link-local
    prefixes skipped); a ::/0 option is the router's default-router entry
    (§3.1: its lifetime and preference override the header's; 0 removes
    the router), taken whatever ``accept_rio`` says, as Linux does.
  * RFC 4861 §6.3.6 default router selection, as the metric of each
    router's default route (``ra_route_metric`` + its rank): routers known
    reachable or probably reachable (a neighbour entry in any state but
    INCOMPLETE; ``reachability``, the neighbour table's) first, then by
    RFC 4191 preference (high, medium, low), then in round-robin order:
    a router whose neighbour entry fails or goes (NUD, §7.3.3) moves to the
    back (``neighbour_changed``), so that traffic tries the others. RFC
    4191 §3.5: while traffic goes to a reachable router in place of a
    better one whose reachability is unknown, the better one is probed
    (``router_used``: one NS, at most once a minute per router) and takes
    the traffic once it answers.
  * RFC 4862 §5.5.3 SLAAC for /64 prefixes: PL > VL ignored (c), the two-hour
    rule (e) with a configurable 2 h, deprecation after the preferred lifetime
    and un-deprecation on refresh (§5.5.4), invalidation after the valid
    lifetime, 0xffffffff infinite (configurable, as gVisor's tests patch it).
    An address equal to a static one is not created. The SLAAC prefix
    is not made on-link by the address (RFC 5942): ``AddAddress.connected_route``
    is False for SLAAC addresses, the L flag adds the prefix route.
  * Router mode (RFC 4861 §6.2): forwarding on invalidates discovered
    routers, prefixes and SLAAC addresses (with events) and RAs are then
    ignored; off restarts RS. With ``accept_ra_forwarding`` (Linux's
    accept_ra=2) a forwarding NIC keeps its routers and goes on soliciting
    and processing RAs.
  * RFC 4862 §5.4.2: the solicited-node group of every address is joined
    (``JoinGroup``) before its first DAD probe and left with the address.
  * Every timer is a ``timers.Timer``: one stopped by related work never
    runs afterwards, even if it was due in the same ``handle_timeout`` turn.
  * RFC 4861 §7.3 NUD is not here: ``neighbour.NeighbourTable`` runs it (for
    ARP too); shard 0's control plane reports its state changes as
    ``nud_state`` events.

Left out: sending RAs (router mode only stops host processing), Redirect
processing (``redirect.py``, in shard 0's control plane: it needs the
route table),
optimistic DAD (RFC 4429), disabling IPv6 after a duplicate EUI-64
link-local (RFC 4862 §5.4.5 SHOULD), the integrator's veto of discovered
routers/prefixes/addresses (gVisor's ``bool`` returns): everything within the
limits is remembered.
"""

from __future__ import annotations

import enum
import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeAlias

from shardnet.common.addr import (
    IPV6_ANY,
    format_ip,
    is_ipv6_link_local,
    is_ipv6_multicast,
    is_unicast,
)
from shardnet.common.settings import apply_settings
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.ipv6 import ALL_ROUTERS, solicited_node_multicast
from shardnet.common.wire.mld import (
    DEFAULT_QUERY_INTERVAL_S,
    DEFAULT_ROBUSTNESS,
    UNSOLICITED_REPORT_INTERVAL_S,
)
from shardnet.common.wire.ndp import (
    NDP_HOP_LIMIT,
    NDP_INFINITE_LIFETIME,
    PREF_MEDIUM,
    PREF_NAMES,
    DnsSearchList,
    Mtu,
    NdpMessage,
    NdpOption,
    NdpView,
    NeighborAdvertisement,
    NeighborSolicitation,
    Nonce,
    PrefixInformation,
    RecursiveDns,
    RouteInformation,
    RouterAdvertisement,
    RouterSolicitation,
    SourceLinkLayer,
    TargetLinkLayer,
    validate_addresses,
    validate_ra_source,
)

from .actions import (
    Action,
    AddAddress,
    AddRoute,
    JoinGroup,
    LeaveGroup,
    RemoveAddress,
    RemoveRoute,
    SetAddressKind,
    SetNicParam,
    UpdateNeighbour,
)
from .iid import (
    IDGEN_RETRIES,
    IID_SIZE,
    eui64_address,
    is_reserved_iid,
    is_valid_unicast_mac,
    stable_address,
)
from .mld import MldConfig
from .model import AddressKind, network_of
from .route import Route
from .state import NetError
from .timers import Timer, TimerQueue

# --------------------------------------------------------------------------- constants

DUP_ADDR_DETECT_TRANSMITS = 1  # RFC 4862 §5.1
RETRANS_TIMER_S = 1.0  # RFC 4861 §10 RETRANS_TIMER 1000 ms
MIN_RETRANS_TIMER_S = 0.001  # gVisor minimumRetransmitTimer: below -> default
# An RA's Retrans Timer above this is taken as this: 0xFFFFFFFF ms (49 days)
# would freeze resolution and DAD, whatever sent it.
MAX_RETRANS_TIMER_S = 60.0
MAX_RTR_SOLICITATION_DELAY_S = 1.0  # RFC 4861 §10
RTR_SOLICITATION_INTERVAL_S = 4.0  # RFC 4861 §10
MIN_RTR_SOLICITATION_INTERVAL_S = 0.5  # gVisor minimumRtrSolicitationInterval
MAX_RTR_SOLICITATIONS = 3  # RFC 4861 §10
# RFC 4191 §3.5: reachability probes "rate-limited to no more than one per
# minute per router" (Linux rtr_probe_interval 60 s).
ROUTER_PROBE_INTERVAL_S = 60.0
MAX_DISCOVERED_ROUTERS = 10  # gVisor MaxDiscoveredDefaultRouters (RFC 4861 §6.3.4: >= 2)
MAX_DISCOVERED_PREFIXES = 10  # gVisor MaxDiscoveredOnLinkPrefixes
MAX_RIO_ROUTES = 10  # own cap on Route Information routes (hostile RAs)
MAX_AUTOGEN_ADDRESSES = 16  # own cap: SLAAC prefixes with an address (hostile RAs)
SLAAC_PREFIX_LEN = 64  # gVisor validPrefixLenForAutoGen; RFC 4862 §5.5.3 d, RFC 4291 §2.5.1
MIN_VALID_LIFETIME_FOR_UPDATE_S = 7200.0  # RFC 4862 §5.5.3 e: 2 hours
RA_ROUTE_METRIC = 1024  # Linux's metric for RA routes (static routes: 0)
IPV6_MIN_MTU = 1280  # RFC 8200 §5
MAX_REACHABLE_TIME_MS = 3_600_000  # RFC 4861 §6.2.1: a router never advertises more
REACHABLE_TIME_S = 30.0  # RFC 4861 §10 REACHABLE_TIME 30 000 ms
MIN_RANDOM_FACTOR = 0.5  # RFC 4861 §10
MAX_RANDOM_FACTOR = 1.5  # RFC 4861 §10
DAD_NONCE_BYTES = 6  # RFC 7527 §4.1 (6 + 8k)
TEMP_VALID_LIFETIME_S = 2 * 86400.0  # RFC 8981 §3.8: 2 days
TEMP_PREFERRED_LIFETIME_S = 86400.0  # RFC 8981 §3.8: 1 day
MAX_DESYNC_FRACTION = 0.4  # RFC 8981 §3.8 MAX_DESYNC_FACTOR = 0.4 * TEMP_PREFERRED_LIFETIME
TEMP_IDGEN_RETRIES = 3  # RFC 8981 §3.8
MAX_TEMP_ADDRESSES_PER_PREFIX = 4  # own bound (2 days valid, ~1 day preferred: 3 at most)
_MAX_RANDOM_IID_DRAWS = 16  # own bound: reserved or taken IIDs drawn again (p ~ 2^-40 each)

_LAYER = "ndp"


class IidMode(enum.Enum):
    """How interface identifiers are formed (RFC 7217 opaque, RFC 4291 App. A EUI-64)."""

    OPAQUE = "opaque"  # RFC 7217, the default (RFC 8064)
    EUI64 = "eui64"  # RFC 4291 App. A modified EUI-64 from the MAC


class Dhcpv6Configuration(enum.Enum):
    """gVisor ``DHCPv6ConfigurationFromNDPRA`` (RFC 4861 §4.2 M and O flags)."""

    NONE = "none"  # neither M nor O
    MANAGED = "managed"  # M: addresses (and other configuration) via DHCPv6
    OTHER = "other"  # O only: other configuration via DHCPv6


@dataclass(frozen=True, slots=True)
class NdpConfig:
    """Per-NIC NDP configuration (gVisor's NDPConfigurations). Defaults are gVisor's
    ``DefaultNDPConfigurations()`` plus the later additions."""

    dup_addr_detect_transmits: int = DUP_ADDR_DETECT_TRANSMITS
    retrans_timer_s: float = RETRANS_TIMER_S
    max_dad_delay_s: float = MAX_RTR_SOLICITATION_DELAY_S  # RFC 4862 §5.4.2
    enhanced_dad: bool = False  # RFC 7527 nonce in DAD NS (Linux: on; gVisor: off)
    handle_ras: bool = True
    # Linux accept_ra=2: RAs are processed (and solicited) while forwarding.
    accept_ra_forwarding: bool = False
    # RFC 4191 §3.1 Route Information options installed (Linux: off).
    accept_rio: bool = False
    # ICMPv6 and ICMPv4 Redirects followed by a host (RFC 4861 §8.3,
    # RFC 1122 §3.2.2.2); never while forwarding (Linux accept_redirects).
    accept_redirects: bool = True
    discover_default_routers: bool = True
    discover_on_link_prefixes: bool = True
    auto_gen_global_addresses: bool = True
    auto_gen_link_local: bool = True
    iid_mode: IidMode = IidMode.OPAQUE
    # RFC 8981 temporary addresses, as Linux's use_tempaddr: 0 off, 1
    # generate, 2 generate and prefer them as sources (RFC 6724 rule 7).
    use_tempaddr: int = 0
    temp_valid_lifetime_s: float = TEMP_VALID_LIFETIME_S  # Linux temp_valid_lft
    temp_preferred_lifetime_s: float = TEMP_PREFERRED_LIFETIME_S  # Linux temp_prefered_lft
    max_rtr_solicitations: int = MAX_RTR_SOLICITATIONS
    rtr_solicitation_interval_s: float = RTR_SOLICITATION_INTERVAL_S
    max_rtr_solicitation_delay_s: float = MAX_RTR_SOLICITATION_DELAY_S
    max_routers: int = MAX_DISCOVERED_ROUTERS
    max_prefixes: int = MAX_DISCOVERED_PREFIXES
    max_rio_routes: int = MAX_RIO_ROUTES
    max_autogen_addresses: int = MAX_AUTOGEN_ADDRESSES
    min_valid_lifetime_for_update_s: float = MIN_VALID_LIFETIME_FOR_UPDATE_S
    infinite_lifetime_s: int = NDP_INFINITE_LIFETIME  # lifetimes >= this never expire
    ra_route_metric: int = RA_ROUTE_METRIC
    # The NIC's MLD variables (RFC 3810 §9.1, §9.2, §9.11), set with NDP's.
    mld_robustness: int = DEFAULT_ROBUSTNESS
    mld_unsolicited_report_interval_s: float = UNSOLICITED_REPORT_INTERVAL_S
    mld_query_interval_s: float = DEFAULT_QUERY_INTERVAL_S

    def mld(self) -> MldConfig:
        return MldConfig(
            self.mld_robustness, self.mld_query_interval_s, self.mld_unsolicited_report_interval_s
        )

    @classmethod
    def from_settings(cls, settings: dict[str, Any], base: NdpConfig | None = None) -> NdpConfig:
        """A configuration from text-ish settings (the config file's [ndp]
        table, ``ctl ndp --set``); ValueError with a one-line message."""
        return apply_settings(base or cls(), settings, "NDP")

    def as_settings(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def __post_init__(self) -> None:
        if self.dup_addr_detect_transmits < 0 or self.max_rtr_solicitations < 0:
            raise ValueError("dup_addr_detect_transmits and max_rtr_solicitations must be >= 0")
        limits = (self.max_routers, self.max_prefixes, self.max_autogen_addresses)
        if min(*limits, self.max_rio_routes) < 0:
            raise ValueError("limits must be >= 0")
        if self.use_tempaddr not in (0, 1, 2):
            raise ValueError("use_tempaddr must be 0, 1 or 2")
        if not 0 < self.temp_preferred_lifetime_s <= self.temp_valid_lifetime_s:
            raise ValueError("need 0 < temp_preferred_lifetime_s <= temp_valid_lifetime_s")
        if self.mld_robustness < 1:
            raise ValueError("mld_robustness must be >= 1")
        if self.max_dad_delay_s < 0 or self.max_rtr_solicitation_delay_s < 0:
            raise ValueError("delays must be >= 0")
        # gVisor's validate(): a RetransTimer under 1 ms means the default.
        if self.retrans_timer_s < MIN_RETRANS_TIMER_S:
            object.__setattr__(self, "retrans_timer_s", RETRANS_TIMER_S)
        if self.rtr_solicitation_interval_s < MIN_RTR_SOLICITATION_INTERVAL_S:
            object.__setattr__(self, "rtr_solicitation_interval_s", RTR_SOLICITATION_INTERVAL_S)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendNdp:
    """Send ``message`` from ``src`` to ``dst`` with Hop Limit 255 (the caller
    checksums it: ``message.to_bytes(src, dst)``; multicast ``dst`` maps to
    33:33:xx, RFC 2464 §7)."""

    dst: bytes
    message: NdpMessage
    src: bytes


@dataclass(frozen=True, slots=True)
class ProbeRouter:
    """RFC 4191 §3.5: send one Neighbor Solicitation for ``addr``, a
    router that traffic avoids for want of known reachability, so that its
    answer makes it reachable (the caller's neighbour table learns it)."""

    addr: bytes


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DadResult:
    """gVisor ``OnDuplicateAddressDetectionStatus`` (RFC 4862 §5.4). ``reason`` when not
    resolved: "duplicate", "removed" (by the user or a lifetime) or "stopped"
    (NIC disabled)."""

    nic: int
    addr: bytes
    resolved: bool
    reason: str = ""
    type: str = field(default="dad_result", init=False)


@dataclass(frozen=True, slots=True)
class RouterDiscovered:
    nic: int
    addr: bytes
    lifetime_s: int
    preference: str = "medium"  # RFC 4191 §2.2
    type: str = field(default="router_discovered", init=False)


@dataclass(frozen=True, slots=True)
class RouterInvalidated:
    nic: int
    addr: bytes
    type: str = field(default="router_invalidated", init=False)


@dataclass(frozen=True, slots=True)
class PrefixDiscovered:
    nic: int
    prefix: bytes
    prefix_len: int
    valid_lifetime_s: int
    type: str = field(default="prefix_discovered", init=False)


@dataclass(frozen=True, slots=True)
class PrefixInvalidated:
    nic: int
    prefix: bytes
    prefix_len: int
    type: str = field(default="prefix_invalidated", init=False)


@dataclass(frozen=True, slots=True)
class AddressAutogenerated:
    nic: int
    addr: bytes
    prefix_len: int
    origin: str  # "slaac", "temporary" (RFC 8981) or "linklocal"
    type: str = field(default="address_autogenerated", init=False)


@dataclass(frozen=True, slots=True)
class AddressDeprecated:
    nic: int
    addr: bytes
    prefix_len: int
    type: str = field(default="address_deprecated", init=False)


@dataclass(frozen=True, slots=True)
class AddressInvalidated:
    nic: int
    addr: bytes
    prefix_len: int
    type: str = field(default="address_invalidated", init=False)


@dataclass(frozen=True, slots=True)
class Rdnss:
    """RFC 8106 RDNSS option, every time it is received (§5.1); lifetime 0:
    stop using these servers."""

    nic: int
    servers: tuple[bytes, ...]
    lifetime_s: int
    type: str = field(default="rdnss", init=False)


@dataclass(frozen=True, slots=True)
class Dnssl:
    nic: int
    domains: tuple[str, ...]
    lifetime_s: int
    type: str = field(default="dnssl", init=False)


@dataclass(frozen=True, slots=True)
class Dhcpv6Event:
    """The RA M/O flags changed (RFC 4861 §4.2)."""

    nic: int
    configuration: Dhcpv6Configuration
    type: str = field(default="dhcpv6_configuration", init=False)


@dataclass(frozen=True, slots=True)
class DuplicateAddress:
    """An NA from another node claims one of our usable addresses (RFC 4862
    §5.4.4, outside DAD)."""

    nic: int
    addr: bytes
    mac: bytes | None
    type: str = field(default="duplicate_address", init=False)


NdpEvent: TypeAlias = (
    DadResult
    | RouterDiscovered
    | RouterInvalidated
    | PrefixDiscovered
    | PrefixInvalidated
    | AddressAutogenerated
    | AddressDeprecated
    | AddressInvalidated
    | Rdnss
    | Dnssl
    | Dhcpv6Event
    | DuplicateAddress
)
NdpAction: TypeAlias = SendNdp | ProbeRouter | Action | NdpEvent


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return format_ip(value) if len(value) in (4, 16) else ":".join(f"{b:02x}" for b in value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def event_to_dict(event: NdpEvent) -> dict[str, Any]:
    """One JSON object for ``shardnet ctl events``: addresses as text, enums
    as their values, ``type`` first."""
    out: dict[str, Any] = {"type": event.type}
    for f in fields(event):
        if f.name != "type":
            out[f.name] = _jsonable(getattr(event, f.name))
    return out


# --------------------------------------------------------------------------- state


@dataclass(slots=True, eq=False)
class _Addr:
    addr: bytes
    prefix_len: int
    origin: str  # "static", "linklocal", "slaac"
    kind: AddressKind
    dad_timer: Timer
    dad_left: int = 0  # DAD NS still to send
    nonce: bytes | None = None
    dad_counter: int = 0  # RFC 7217 DAD_Counter of an opaque address
    retries: int = 0  # regenerations after DAD failures so far
    slaac: _Slaac | None = None  # the prefix of a stable SLAAC address
    temp: _Temp | None = None  # the state of a temporary address (RFC 8981)

    @property
    def tentative(self) -> bool:
        return self.kind is AddressKind.TENTATIVE


@dataclass(slots=True, eq=False)
class _Slaac:
    """SLAAC state of one /64 prefix (RFC 4862 §5.5.3): the lifetimes and
    the generated address (None after DAD failed for good)."""

    prefix: bytes
    valid_timer: Timer
    deprecation_timer: Timer
    addr: _Addr | None = None
    deprecated: bool = False
    temps: list[_Temp] = field(default_factory=list)  # oldest first (RFC 8981)


@dataclass(slots=True, eq=False)
class _Temp:
    """One temporary address of a SLAAC prefix (RFC 8981 §3.4): its own
    lifetimes, counted from ``created`` with its DESYNC_FACTOR, and the
    timer that makes its successor REGEN_ADVANCE before it deprecates."""

    slaac: _Slaac
    created: float
    desync: float
    valid_timer: Timer
    deprecation_timer: Timer
    regen_timer: Timer
    addr: _Addr | None = None
    deprecated: bool = False


@dataclass(slots=True, eq=False)
class _Router:
    addr: bytes
    route: Route  # metric -1 until ranked
    timer: Timer
    preference: int = PREF_MEDIUM  # RFC 4191 §2.2
    probed_at: float | None = None  # the last RFC 4191 §3.5 reachability probe


@dataclass(slots=True, eq=False)
class _RioRoute:
    route: Route
    timer: Timer


@dataclass(frozen=True, slots=True)
class RouterInfo:
    """One default router as ``ctl routes`` shows it."""

    addr: bytes
    preference: str  # "high", "medium", "low"
    reachable: bool  # reachable or probably reachable (RFC 4861 §6.3.6)
    rank: int  # 0: the one in use
    expires_s: float | None


@dataclass(slots=True, eq=False)
class _Prefix:
    prefix: bytes
    prefix_len: int
    route: Route
    timer: Timer


@dataclass(slots=True)
class NdpStats:
    ras: int = 0  # accepted and processed
    ras_ignored: int = 0  # not processing RAs (forwarding, handle_ras off, stopped)
    ra_values_clamped: int = 0  # an absurd Reachable Time or Retrans Timer, bounded
    routers_over_limit: int = 0
    prefixes_over_limit: int = 0
    rio_over_limit: int = 0
    rio_ignored: int = 0  # Route Information options not accepted (accept_rio off)
    autogen_over_limit: int = 0
    dad_failures: int = 0
    dad_regenerations: int = 0
    temp_over_limit: int = 0  # the oldest temporary address dropped early for a new one
    looped_back_ns: int = 0  # our own DAD NS (RFC 7527 nonce)
    ns_sent: int = 0
    rs_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        """The ``net/ndp_<name>`` keys of ``ctl stats``."""
        return {
            "ras": self.ras,
            "ras_ignored": self.ras_ignored,
            "routers_over_limit": self.routers_over_limit,
            "prefixes_over_limit": self.prefixes_over_limit,
            "rio_over_limit": self.rio_over_limit,
            "rio_ignored": self.rio_ignored,
            "autogen_over_limit": self.autogen_over_limit,
            "dad_failures": self.dad_failures,
            "dad_regenerations": self.dad_regenerations,
            "temp_over_limit": self.temp_over_limit,
            "looped_back_ns": self.looped_back_ns,
            "ns_sent": self.ns_sent,
            "rs_sent": self.rs_sent,
        }


# --------------------------------------------------------------------------- the machine


class NdpMachine:
    """NDP for one NIC; see the module docstring. Every input returns the
    actions to apply, in order. ``rng`` draws the random delays (and nonces);
    ``secret_key`` is the stack's RFC 7217 key (>= 16 bytes recommended);
    ``name_fn(nic_id, nic_name)`` gives the Net_Iface of RFC 7217 §5
    (default: the NIC name). ``reachability(ip)``: whether the neighbour
    table holds ``ip`` as reachable or probably reachable (RFC 4861 §6.3.6),
    for default router selection; by default nothing is known. ``iid_rng``
    draws temporary IIDs (RFC 8981), ``rng`` when not given."""

    def __init__(
        self,
        nic_id: int,
        nic_name: str,
        mac: bytes,
        rng: random.Random,
        config: NdpConfig | None = None,
        *,
        secret_key: bytes = b"",
        name_fn: Callable[[int, str], str] | None = None,
        link_mtu: int = 1500,
        loopback: bool = False,
        forwarding: bool = False,
        reachability: Callable[[bytes], bool] | None = None,
        iid_rng: random.Random | None = None,
    ) -> None:
        self.nic = nic_id
        self.nic_name = nic_name
        self.mac = mac
        self.rng = rng
        self.iid_rng = iid_rng or rng  # temporary IIDs (RFC 8981 §3.3.1)
        self.config = config if config is not None else NdpConfig()
        self.secret_key = secret_key
        self.name_fn = name_fn
        self.link_mtu = link_mtu
        self.loopback = loopback
        self.forwarding = forwarding
        self.reachability = reachability or (lambda ip: False)
        self.running = False
        self.stats = NdpStats()
        self._timers = TimerQueue()
        self._out: list[NdpAction] = []
        self._addrs: dict[bytes, _Addr] = {}
        self._slaac: dict[bytes, _Slaac] = {}
        self._routers: dict[bytes, _Router] = {}
        self._prefixes: dict[tuple[bytes, int], _Prefix] = {}
        self._rio: dict[tuple[bytes, int, bytes], _RioRoute] = {}
        # RFC 4861 §6.3.2 host variables learnt from RAs.
        self.retrans_timer_s = self.config.retrans_timer_s
        self.cur_hop_limit = 0  # 0: not learnt
        self.base_reachable_time_s = REACHABLE_TIME_S
        self.reachable_time_s = REACHABLE_TIME_S
        self.mtu = link_mtu
        self.dhcpv6 = Dhcpv6Configuration.NONE
        # RS
        self._rs_timer = self._timers.timer(self._rs_tick)
        self._rs_left = 0

    # --- configuration ------------------------------------------------------------
    def set_config(self, config: NdpConfig, now: float = 0.0) -> list[NdpAction]:
        """Replace this NIC's configuration; running DADs keep their
        count, new ones use the new values. A forwarding NIC whose
        ``accept_ra_forwarding`` goes off drops what RAs taught it, as
        turning forwarding on does (RFC 4861 §6.2)."""
        if self.retrans_timer_s == self.config.retrans_timer_s:
            self.retrans_timer_s = config.retrans_timer_s  # not overridden by an RA
        took_ras = self._accepts_ras()
        if config.use_tempaddr != self.config.use_tempaddr:
            self._emit(SetNicParam("use_tempaddr", config.use_tempaddr))
        self.config = config
        if self.forwarding and took_ras and not self._accepts_ras():
            self._cleanup_host_state(now)
            self._rs_timer.stop()
            self._rs_left = 0
        return self._flush()

    @property
    def is_router(self) -> bool:
        """For the NA Router flag (RFC 4861 §7.2.4)."""
        return self.forwarding

    # --- introspection ----------------------------------------------------------------
    def addresses(self) -> dict[bytes, AddressKind]:
        return {a.addr: a.kind for a in self._addrs.values()}

    def routers(self) -> list[bytes]:
        return list(self._routers)

    def router_info(self, now: float) -> list[RouterInfo]:
        """The Default Router List in selection order."""
        return [
            RouterInfo(
                r.addr,
                PREF_NAMES[r.preference],
                self.reachability(r.addr),
                i,
                r.timer.remaining(now),
            )
            for i, r in enumerate(self._ranked())
        ]

    def rio_routes(self) -> list[Route]:
        return [r.route for r in self._rio.values()]

    def prefixes(self) -> list[tuple[bytes, int]]:
        return list(self._prefixes)

    def is_tentative(self, addr: bytes) -> bool:
        a = self._addrs.get(addr)
        return a is not None and a.tentative

    # --- timers ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timeout(self, now: float) -> list[NdpAction]:
        self._timers.run_due(now)
        return self._flush()

    def _flush(self) -> list[NdpAction]:
        out = self._out
        if out:
            self._out = []
        return out

    def _emit(self, action: NdpAction) -> None:
        self._out.append(action)

    def _arm(self, timer: Timer, now: float, lifetime: int) -> None:
        """Arm a lifetime timer, or stop it for an infinite lifetime."""
        if lifetime >= self.config.infinite_lifetime_s:
            timer.stop()
        else:
            timer.reset(now + lifetime)

    def _lifetime(self, lifetime: int) -> float | None:
        return None if lifetime >= self.config.infinite_lifetime_s else float(lifetime)

    # --- start / stop -------------------------------------------------------------------
    def start(self, now: float) -> list[NdpAction]:
        """The NIC is enabled: run DAD on every address (RFC 4862 §5.4, after
        the §5.4.2 random delay), generate the link-local address, solicit
        routers."""
        if self.running:
            return []
        self.running = True
        if self.config.use_tempaddr:
            # Read by source selection in every shard (RFC 6724 rule 7).
            self._emit(SetNicParam("use_tempaddr", self.config.use_tempaddr))
        for a in list(self._addrs.values()):
            self._start_dad(now, a)
        if (
            self.config.auto_gen_link_local
            and not self.loopback
            and not any(a.origin == "linklocal" for a in self._addrs.values())
        ):
            self._add_link_local(now, 0, 0)
        self._start_rs(now)
        return self._flush()

    def stop(self, now: float) -> list[NdpAction]:
        """The NIC is disabled: discovered routers, prefixes and SLAAC
        addresses are invalidated (with events), the auto-generated
        link-local address removed, DAD stopped; other addresses stay and go
        through DAD again at ``start``. Nothing is sent."""
        if not self.running:
            return []
        self.running = False
        self._rs_timer.stop()
        self._cleanup_host_state(now)
        for a in list(self._addrs.values()):
            if a.origin == "linklocal":
                self._remove(now, a, "stopped")
            elif a.dad_timer.armed:
                a.dad_timer.stop()
                self._emit(DadResult(self.nic, a.addr, False, "stopped"))
        return self._flush()

    # --- addresses ----------------------------------------------------------------------
    def add_address(
        self, now: float, addr: bytes, prefix_len: int, origin: str = "static"
    ) -> list[NdpAction]:
        """Add an IPv6 unicast address, tentative until DAD succeeds (RFC 4862
        §5.4). Raises ``NetError`` for a bad or duplicate address."""
        if len(addr) != 16 or not is_unicast(addr) or not 0 <= prefix_len <= 128:
            raise NetError(errno.EINVAL, f"bad IPv6 address {format_ip(addr)}/{prefix_len}")
        if addr in self._addrs:
            raise NetError(errno.EEXIST, f"{format_ip(addr)} is already on {self.nic_name}")
        self._add(now, addr, prefix_len, origin, connected_route=True)
        return self._flush()

    def remove_address(self, now: float, addr: bytes) -> list[NdpAction]:
        """The user removes ``addr``: DAD stops (``dad_result`` false when it
        was tentative, RFC 4862 §5.4), a SLAAC address is invalidated with its
        event (§5.5.3); the actions include ``RemoveAddress``. Unknown: no actions."""
        a = self._addrs.get(addr)
        if a is None:
            return []
        s = a.slaac
        if s is not None:
            self._drop_slaac(now, s)
        elif a.temp is not None:
            self._drop_temp(now, a.temp)
        else:
            self._remove(now, a, "removed")
        return self._flush()

    def _add(
        self,
        now: float,
        addr: bytes,
        prefix_len: int,
        origin: str,
        *,
        connected_route: bool,
        valid: float | None = None,
        preferred: float | None = None,
        slaac: _Slaac | None = None,
        temp: _Temp | None = None,
        dad_counter: int = 0,
        retries: int = 0,
    ) -> _Addr:
        timer = self._timers.timer(lambda t: self._dad_fire(t, addr))
        a = _Addr(addr, prefix_len, origin, AddressKind.TENTATIVE, timer, 0, None, dad_counter)
        a.retries, a.slaac, a.temp = retries, slaac, temp
        self._addrs[addr] = a
        immediate = self.running and self.config.dup_addr_detect_transmits == 0
        if immediate:
            a.kind = self._usable_kind(a)
        self._emit(AddAddress(addr, prefix_len, a.kind, origin, connected_route, valid, preferred))
        if origin != "static":
            self._emit(AddressAutogenerated(self.nic, addr, prefix_len, origin))
        # RFC 4862 §5.4.2: join the solicited-node group before the first NS.
        self._emit(JoinGroup(solicited_node_multicast(addr)))
        if immediate:
            self._emit(DadResult(self.nic, addr, True))
        elif self.running:
            self._start_dad(now, a)
        return a

    def _remove(self, now: float, a: _Addr, reason: str) -> None:
        """Take ``a`` off the NIC (with a DAD event if DAD was running)."""
        if self._addrs.get(a.addr) is not a:
            return
        del self._addrs[a.addr]
        if a.dad_timer.armed:  # DAD running (between NS, or before the first)
            a.dad_timer.stop()
            self._emit(DadResult(self.nic, a.addr, False, reason))
        self._emit(RemoveAddress(a.addr))
        self._emit(LeaveGroup(solicited_node_multicast(a.addr)))

    def _usable_kind(self, a: _Addr) -> AddressKind:
        s, t = a.slaac, a.temp
        deprecated = (s is not None and s.deprecated) or (t is not None and t.deprecated)
        return AddressKind.DEPRECATED if deprecated else AddressKind.PERMANENT

    def usable_link_local(self) -> bytes | None:
        for a in self._addrs.values():
            if not a.tentative and is_ipv6_link_local(a.addr):
                return a.addr
        return None

    # --- interface identifiers (RFC 7217, RFC 4291 App. A) ------------------------------
    def _iid_address(self, prefix: bytes, dad_counter: int) -> tuple[bytes, int] | None:
        if self.config.iid_mode is IidMode.OPAQUE:
            name = self.name_fn(self.nic, self.nic_name) if self.name_fn else self.nic_name
            return stable_address(prefix, name, dad_counter, self.secret_key)
        if is_valid_unicast_mac(self.mac):
            return eui64_address(prefix, self.mac), 0
        return None  # no identifier from an invalid MAC without opaque IIDs

    def _add_link_local(self, now: float, dad_counter: int, retries: int) -> None:
        got = self._iid_address(bytes.fromhex("fe80") + bytes(14), dad_counter)
        if got is None or got[0] in self._addrs:
            return
        addr, counter = got
        self._add(
            now,
            addr,
            64,
            "linklocal",
            connected_route=True,
            dad_counter=counter,
            retries=retries,
        )

    # --- DAD (RFC 4862 §5.4) ------------------------------------------------------------
    def _start_dad(self, now: float, a: _Addr) -> None:
        if not a.tentative:
            a.kind = AddressKind.TENTATIVE
            self._emit(SetAddressKind(a.addr, AddressKind.TENTATIVE))
        cfg = self.config
        if cfg.dup_addr_detect_transmits == 0:
            self._dad_done(now, a)
            return
        a.dad_left = cfg.dup_addr_detect_transmits
        a.nonce = self.rng.randbytes(DAD_NONCE_BYTES) if cfg.enhanced_dad else None
        # §5.4.2: a random delay in [0, MAX_RTR_SOLICITATION_DELAY].
        delay = self.rng.uniform(0.0, cfg.max_dad_delay_s) if cfg.max_dad_delay_s > 0 else 0.0
        if delay > 0:
            a.dad_timer.reset(now + delay)
        else:
            self._dad_tick(now, a)

    def _dad_fire(self, now: float, addr: bytes) -> None:
        a = self._addrs.get(addr)
        if a is not None:
            self._dad_tick(now, a)

    def _dad_tick(self, now: float, a: _Addr) -> None:
        if a.dad_left > 0:
            a.dad_left -= 1
            # §5.4.2: from ::, to the solicited-node group, no SLLA (RFC 4861 §4.3).
            options: list[NdpOption] = [Nonce(a.nonce)] if a.nonce is not None else []
            ns = NeighborSolicitation(target=a.addr, options=options)
            self.stats.ns_sent += 1
            self._emit(SendNdp(solicited_node_multicast(a.addr), ns, IPV6_ANY))
            a.dad_timer.reset(now + self.retrans_timer_s)
        else:
            self._dad_done(now, a)

    def _dad_done(self, now: float, a: _Addr) -> None:
        a.kind = self._usable_kind(a)
        a.nonce = None
        self._emit(SetAddressKind(a.addr, a.kind))
        self._emit(DadResult(self.nic, a.addr, True))

    def _dad_failed(self, now: float, a: _Addr) -> None:
        """§5.4.5: the tentative address is a duplicate: it is not used. An
        opaque auto-generated one is regenerated with DAD_Counter + 1, up to
        IDGEN_RETRIES times (RFC 7217 §6)."""
        self.stats.dad_failures += 1
        self._remove(now, a, "duplicate")
        t = a.temp
        if t is not None:
            # RFC 8981 §3.4 step 6: a new random IID, at most TEMP_IDGEN_RETRIES times.
            t.addr = None
            self._drop_temp(now, t)
            ts = t.slaac
            if (
                a.retries < TEMP_IDGEN_RETRIES
                and self.config.use_tempaddr
                and self._slaac.get(ts.prefix) is ts
            ):
                self.stats.dad_regenerations += 1
                self._new_temp(now, ts, a.retries + 1)
            return
        regenerate = (
            a.origin != "static"
            and self.config.iid_mode is IidMode.OPAQUE
            and a.retries < IDGEN_RETRIES
        )
        s = a.slaac
        if s is not None:
            s.addr = None
            if regenerate:
                got = self._iid_address(s.prefix, a.dad_counter + 1)
                if got is not None and got[0] not in self._addrs:
                    self.stats.dad_regenerations += 1
                    self._slaac_address(now, s, got, a.retries + 1)
        elif a.origin == "linklocal" and regenerate:
            self.stats.dad_regenerations += 1
            self._add_link_local(now, a.dad_counter + 1, a.retries + 1)

    # --- NS / NA -----------------------------------------------------------------------
    def handle_ndp(
        self,
        now: float,
        src: bytes,
        dst: bytes,
        hop_limit: int,
        payload: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
    ) -> list[NdpAction]:
        """One received NDP message: validated by the codec (RFC 4861 §6.1.2,
        §7.1: hop limit, code, length, options, checksum when ``pseudo`` is
        given) and ``validate_addresses``, then dispatched. Raises
        ``MalformedPacket`` for an invalid message (the caller counts it)."""
        view = NdpView.checked(payload, pseudo=pseudo, hop_limit=hop_limit)
        validate_addresses(view, src, dst)
        msg = view.header()
        if isinstance(msg, RouterAdvertisement):
            return self.handle_ra(now, src, hop_limit, msg)
        if isinstance(msg, NeighborSolicitation):
            return self.handle_ns(now, src, dst, msg)
        if isinstance(msg, NeighborAdvertisement):
            return self.handle_na(now, src, dst, msg)
        return []

    def handle_ns(
        self, now: float, src: bytes, dst: bytes, ns: NeighborSolicitation
    ) -> list[NdpAction]:
        """DAD's side of an NS (answering NS for usable addresses is the
        caller's): RFC 4862 §5.4.3."""
        a = self._addrs.get(ns.target)
        if a is None or not a.tentative or not self.running:
            return []
        if src != IPV6_ANY:
            return []  # §5.4.3: address resolution for a tentative target: silently ignored
        if a.nonce is not None and any(
            isinstance(o, Nonce) and o.value == a.nonce for o in ns.options
        ):
            self.stats.looped_back_ns += 1  # RFC 7527 §4.2: our own probe
            return []
        self._dad_failed(now, a)
        return self._flush()

    def handle_na(
        self, now: float, src: bytes, dst: bytes, na: NeighborAdvertisement
    ) -> list[NdpAction]:
        """RFC 4862 §5.4.4: an NA for a tentative address fails its DAD; one
        for a usable address of ours is reported (``duplicate_address``).
        The neighbour-cache side of NAs (RFC 4861 §7.2.5) is
        ``neighbour.NeighbourTable.learn``'s, fed by the control plane."""
        a = self._addrs.get(na.target)
        if a is None or not self.running:
            return []
        if a.tentative:
            self._dad_failed(now, a)
        else:
            tlla = next((o.mac for o in na.options if isinstance(o, TargetLinkLayer)), None)
            if tlla != self.mac:
                self._emit(DuplicateAddress(self.nic, a.addr, tlla))
        return self._flush()

    # --- router solicitation (RFC 4861 §6.3.7) ------------------------------------------
    def _start_rs(self, now: float) -> None:
        cfg = self.config
        if not self._accepts_ras() or cfg.max_rtr_solicitations == 0 or self.loopback:
            return
        self._rs_left = cfg.max_rtr_solicitations
        delay = (
            self.rng.uniform(0.0, cfg.max_rtr_solicitation_delay_s)
            if cfg.max_rtr_solicitation_delay_s > 0
            else 0.0
        )
        self._rs_timer.reset(now + delay)

    def _rs_tick(self, now: float) -> None:
        if self._rs_left <= 0 or not self._accepts_ras():
            return
        self._rs_left -= 1
        src = self.usable_link_local()
        if src is None:
            rs = RouterSolicitation()  # §4.1: from :: no SLLA
            src = IPV6_ANY
        else:
            rs = RouterSolicitation([SourceLinkLayer(self.mac)])
        self.stats.rs_sent += 1
        self._emit(SendNdp(ALL_ROUTERS, rs, src))
        if self._rs_left > 0:
            self._rs_timer.reset(now + self.config.rtr_solicitation_interval_s)

    # --- router advertisements (RFC 4861 §6.3.4, the NDPDispatcher order) -------------
    def _accepts_ras(self) -> bool:
        """RFC 4861 §6.2: a router ignores RAs, unless configured to take
        them (Linux accept_ra=2)."""
        cfg = self.config
        return cfg.handle_ras and (not self.forwarding or cfg.accept_ra_forwarding)

    def handle_ra(
        self, now: float, src: bytes, hop_limit: int, ra: RouterAdvertisement
    ) -> list[NdpAction]:
        """Process a Router Advertisement the codec accepted. The address
        rules of §6.1.2 are checked again here (hop limit 255, link-local
        source): ``MalformedPacket`` if broken."""
        if hop_limit != NDP_HOP_LIMIT:
            raise MalformedPacket(Drop.NDP_BAD_HOP_LIMIT, f"hop limit {hop_limit}", layer=_LAYER)
        validate_ra_source(src)
        if not self.running or not self._accepts_ras():
            self.stats.ras_ignored += 1  # RFC 4861 §6.2: a router ignores RAs
            return []
        self.stats.ras += 1
        # RFC 4861 §4.2: M wins over O; an event only on a change.
        dhcp = (
            Dhcpv6Configuration.MANAGED
            if ra.managed
            else Dhcpv6Configuration.OTHER
            if ra.other
            else Dhcpv6Configuration.NONE
        )
        if dhcp is not self.dhcpv6:
            self.dhcpv6 = dhcp
            self._emit(Dhcpv6Event(self.nic, dhcp))
        if ra.router_lifetime:
            self._rs_timer.stop()  # §6.3.7: a router is known: no more RS
            self._rs_left = 0
        self._router_lifetime(now, src, ra.router_lifetime, ra.preference)
        self._parameters(ra)
        for opt in ra.options:
            if isinstance(opt, PrefixInformation):
                self._prefix_information(now, opt)
            elif isinstance(opt, RecursiveDns):
                self._emit(Rdnss(self.nic, opt.servers, opt.lifetime))
            elif isinstance(opt, DnsSearchList):
                self._emit(Dnssl(self.nic, opt.domains, opt.lifetime))
            elif isinstance(opt, RouteInformation):
                self._route_information(now, src, opt)
            elif isinstance(opt, SourceLinkLayer):
                self._emit(UpdateNeighbour(src, opt.mac, True))
            elif isinstance(opt, Mtu):
                # §6.3.4: within [IPv6 minimum, the link's maximum].
                if IPV6_MIN_MTU <= opt.mtu <= self.link_mtu and opt.mtu != self.mtu:
                    self.mtu = opt.mtu
                    self._emit(SetNicParam("mtu", opt.mtu))
        return self._flush()

    def _parameters(self, ra: RouterAdvertisement) -> None:
        """§6.3.4: non-zero values replace ours."""
        if ra.cur_hop_limit and ra.cur_hop_limit != self.cur_hop_limit:
            self.cur_hop_limit = ra.cur_hop_limit
            self._emit(SetNicParam("cur_hop_limit", ra.cur_hop_limit))
        base = min(ra.reachable_time, MAX_REACHABLE_TIME_MS) / 1000.0
        if ra.reachable_time:
            if ra.reachable_time > MAX_REACHABLE_TIME_MS:
                self.stats.ra_values_clamped += 1  # §6.2.1: no router advertises more
            if base != self.base_reachable_time_s:
                # §6.3.4: a new BaseReachableTime gets a new random ReachableTime.
                self.base_reachable_time_s = base
                self.reachable_time_s = base * self.rng.uniform(
                    MIN_RANDOM_FACTOR, MAX_RANDOM_FACTOR
                )
                self._emit(SetNicParam("base_reachable_time", base))
                self._emit(SetNicParam("reachable_time", self.reachable_time_s))
        retrans = ra.retrans_timer / 1000.0
        if retrans > MAX_RETRANS_TIMER_S:
            self.stats.ra_values_clamped += 1
            retrans = MAX_RETRANS_TIMER_S
        if ra.retrans_timer and retrans != self.retrans_timer_s:
            self.retrans_timer_s = retrans
            self._emit(SetNicParam("retrans_timer", retrans))

    def _router_lifetime(self, now: float, src: bytes, lifetime: int, preference: int) -> None:
        """RFC 4861 §6.3.4: key = the RA's source; Router Lifetime is 16-bit seconds, no
        infinity (a ::/0 Route Information option's is 32-bit, 0xffffffff
        infinite). RFC 4191 §2.2: the preference of a router with lifetime 0
        is ignored."""
        r = self._routers.get(src)
        if r is None:
            if lifetime == 0 or not self.config.discover_default_routers:
                return
            if len(self._routers) >= self.config.max_routers:
                self.stats.routers_over_limit += 1
                return
            route = Route(bytes(16), 0, self.nic, src, -1, "ra")  # metric: _rank's
            r = _Router(src, route, self._timers.timer(lambda t: self._router_expired(t, src)))
            r.preference = preference
            self._routers[src] = r
            self._rank()
            self._emit(RouterDiscovered(self.nic, src, lifetime, PREF_NAMES[preference]))
            self._arm(r.timer, now, lifetime)
        elif lifetime == 0:
            self._invalidate_router(r)
        else:
            self._arm(r.timer, now, lifetime)  # may shorten it
            if r.preference != preference:
                r.preference = preference
                self._rank()

    def _ranked(self) -> list[_Router]:
        """RFC 4861 §6.3.6 with RFC 4191 §3.2: reachable or probably
        reachable routers first, then the higher preference; the rest is
        the list's order, which is the round-robin order (sorted is stable)."""
        reachable = self.reachability
        return sorted(self._routers.values(), key=lambda r: (not reachable(r.addr), -r.preference))

    def _rank(self) -> None:
        """Give each router's default route the metric of its rank; routes
        whose metric changed are replaced (same key: dst, NIC, gateway)."""
        base = self.config.ra_route_metric
        for i, r in enumerate(self._ranked()):
            if r.route.metric != base + i:
                r.route = replace(r.route, metric=base + i)
                self._emit(AddRoute(r.route))

    def neighbour_changed(self, now: float, ip: bytes, *, failed: bool) -> list[NdpAction]:
        """The neighbour entry of ``ip`` changed state; ``failed``: it is
        gone (NUD failed, RFC 4861 §7.3.3). A default router that failed
        goes to the back of the round-robin order (§6.3.6); the routers are
        ranked again."""
        r = self._routers.get(ip)
        if r is None:
            return []
        if failed:
            self._routers[ip] = self._routers.pop(ip)
        self._rank()
        return self._flush()

    def router_used(self, now: float, ip: bytes) -> list[NdpAction]:
        """Traffic went to ``ip`` lately (the next hops every shard
        reports). RFC 4191 §3.5: when it is the reachable router used in
        place of routers that would have been used were they reachable
        (higher preference, or equal and earlier in the round-robin order,
        but no reachability known), each of those is probed with one
        Neighbor Solicitation (``ProbeRouter``), at most once per
        ROUTER_PROBE_INTERVAL_S; one that answers becomes reachable and
        is ranked first. Without such traffic no probe is sent (§3.5: a
        host MUST NOT probe without useful traffic)."""
        used = self._routers.get(ip)
        reachable = self.reachability
        if used is None or not reachable(ip):
            return []
        # Stable: equal preferences keep the round-robin order.
        for r in sorted(self._routers.values(), key=lambda r: -r.preference):
            if r is used:
                break
            if reachable(r.addr):
                continue
            if r.probed_at is None or now - r.probed_at >= ROUTER_PROBE_INTERVAL_S:
                r.probed_at = now
                self._emit(ProbeRouter(r.addr))
        return self._flush()

    # --- route information (RFC 4191 §3.1) -------------------------------------------
    def _route_information(self, now: float, src: bytes, rio: RouteInformation) -> None:
        cfg = self.config
        plen = rio.prefix_len
        if plen == 0:
            # RFC 4191 §3.1: the Route Lifetime and Preference of a ::/0
            # option override the RA header's Router Lifetime and Default
            # Router Preference (the header was processed first), and the
            # ::/0 route is the Default Router List's entry: a lifetime of 0
            # removes the router, a non-zero one adds or refreshes it. Taken
            # with ``accept_rio`` off too, as Linux's default
            # accept_ra_rt_info_max_plen 0 takes ::/0 options only.
            self._router_lifetime(now, src, rio.lifetime, rio.preference)
            return
        if not cfg.accept_rio:
            self.stats.rio_ignored += 1
            return
        prefix = network_of(rio.prefix, plen)
        if is_ipv6_link_local(prefix) or is_ipv6_multicast(prefix):
            return  # link-local needs no route
        key = (prefix, plen, src)
        # RFC 4191 §3.1: the preference orders routes to the same prefix
        # (high gets the lowest metric).
        metric = cfg.ra_route_metric + 1 - rio.preference
        entry = self._rio.get(key)
        if rio.lifetime == 0:
            if entry is not None:
                self._drop_rio(key)
            return
        if entry is None:
            if len(self._rio) >= cfg.max_rio_routes:
                self.stats.rio_over_limit += 1
                return
            route = Route(prefix, plen, self.nic, src, metric, "ra")
            entry = self._rio[key] = _RioRoute(
                route, self._timers.timer(lambda t: self._drop_rio(key))
            )
            self._emit(AddRoute(route))
        elif entry.route.metric != metric:
            entry.route = replace(entry.route, metric=metric)
            self._emit(AddRoute(entry.route))
        self._arm(entry.timer, now, rio.lifetime)

    def _drop_rio(self, key: tuple[bytes, int, bytes]) -> None:
        entry = self._rio.pop(key, None)
        if entry is not None:
            entry.timer.stop()
            self._emit(RemoveRoute(entry.route))

    def _router_expired(self, now: float, src: bytes) -> None:
        r = self._routers.get(src)
        if r is not None:
            self._invalidate_router(r)

    def _invalidate_router(self, r: _Router) -> None:
        del self._routers[r.addr]
        r.timer.stop()
        self._emit(RemoveRoute(r.route))
        self._emit(RouterInvalidated(self.nic, r.addr))
        self._rank()

    def router_unreachable(self, now: float, ip: bytes) -> list[NdpAction]:
        """``ip`` is no longer a router (an NA with R clear, RFC 4861 §7.2.5):
        drop it from the Default Router List (§6.3.5); a no-op for an
        address that is not in it."""
        r = self._routers.get(ip)
        if r is not None:
            self._invalidate_router(r)
        return self._flush()

    # --- prefix information (RFC 4861 §6.3.4, RFC 4862 §5.5.3) --------------------------
    def _prefix_information(self, now: float, pi: PrefixInformation) -> None:
        plen = pi.prefix_len
        if plen == 0 or plen > 128:
            return
        prefix = network_of(pi.prefix, plen)
        if is_ipv6_link_local(prefix) or is_ipv6_multicast(prefix):
            return  # RFC 4861 §6.3.4, RFC 4862 §5.5.3 b: link-local prefix ignored
        if pi.on_link:
            self._on_link(now, prefix, plen, pi.valid_lifetime)
        if pi.autonomous:
            self._autonomous(now, prefix, plen, pi.valid_lifetime, pi.preferred_lifetime)

    def _on_link(self, now: float, prefix: bytes, plen: int, valid: int) -> None:
        key = (prefix, plen)
        p = self._prefixes.get(key)
        if p is None:
            if valid == 0 or not self.config.discover_on_link_prefixes:
                return
            if len(self._prefixes) >= self.config.max_prefixes:
                self.stats.prefixes_over_limit += 1
                return
            route = Route(prefix, plen, self.nic, None, self.config.ra_route_metric, "ra")
            p = _Prefix(
                prefix, plen, route, self._timers.timer(lambda t: self._prefix_expired(key))
            )
            self._prefixes[key] = p
            self._emit(AddRoute(route))
            self._emit(PrefixDiscovered(self.nic, prefix, plen, valid))
            self._arm(p.timer, now, valid)
        elif valid == 0:
            self._invalidate_prefix(p)
        else:
            self._arm(p.timer, now, valid)  # RFC 4861 §6.3.4: no two-hour rule for on-link

    def _prefix_expired(self, key: tuple[bytes, int]) -> None:
        p = self._prefixes.get(key)
        if p is not None:
            self._invalidate_prefix(p)

    def _invalidate_prefix(self, p: _Prefix) -> None:
        del self._prefixes[(p.prefix, p.prefix_len)]
        p.timer.stop()
        self._emit(RemoveRoute(p.route))
        self._emit(PrefixInvalidated(self.nic, p.prefix, p.prefix_len))

    def _autonomous(self, now: float, prefix: bytes, plen: int, valid: int, preferred: int) -> None:
        """RFC 4862 §5.5.3 (c)-(e)."""
        if preferred > valid:
            return  # (c)
        s = self._slaac.get(prefix) if plen == SLAAC_PREFIX_LEN else None
        if s is not None:
            self._refresh(now, s, valid, preferred)
            return
        cfg = self.config
        if not cfg.auto_gen_global_addresses or valid == 0 or plen != SLAAC_PREFIX_LEN:
            return  # (d): only /64 (RFC 4291 §2.5.1 IIDs are 64 bits)
        if len(self._slaac) >= cfg.max_autogen_addresses:
            self.stats.autogen_over_limit += 1
            return
        got = self._iid_address(prefix, 0)
        if got is None or got[0] in self._addrs:
            return  # a static address equal to it is left alone, no event
        s = _Slaac(
            prefix,
            self._timers.timer(lambda t: self._slaac_invalid(t, prefix)),
            self._timers.timer(lambda t: self._slaac_deprecate(prefix)),
        )
        s.deprecated = preferred == 0  # RFC 4862 §5.5.4
        self._slaac[prefix] = s
        self._arm(s.valid_timer, now, valid)
        if preferred:
            self._arm(s.deprecation_timer, now, preferred)
        self._slaac_address(now, s, got, 0)
        if cfg.use_tempaddr:
            self._new_temp(now, s, 0)  # RFC 8981 §3.4

    def _slaac_address(self, now: float, s: _Slaac, got: tuple[bytes, int], retries: int) -> None:
        addr, counter = got
        valid = s.valid_timer.remaining(now)
        preferred = 0.0 if s.deprecated else s.deprecation_timer.remaining(now)
        s.addr = self._add(
            now,
            addr,
            SLAAC_PREFIX_LEN,
            "slaac",
            connected_route=False,  # RFC 5942: on-link only through the L flag
            valid=valid,
            preferred=preferred,
            slaac=s,
            dad_counter=counter,
            retries=retries,
        )

    def _refresh(self, now: float, s: _Slaac, valid: int, preferred: int) -> None:
        cfg = self.config
        # (e) the valid lifetime, with the two-hour rule.
        two_hours = cfg.min_valid_lifetime_for_update_s
        remaining = s.valid_timer.remaining(now)  # None: infinite
        if valid >= cfg.infinite_lifetime_s:
            s.valid_timer.stop()
        elif valid > two_hours or (remaining is not None and valid > remaining):
            s.valid_timer.reset(now + valid)
        elif remaining is not None and remaining <= two_hours:
            pass  # (e) 2: ignored (RAs are not authenticated)
        else:
            s.valid_timer.reset(now + two_hours)
        # The preferred lifetime is reset to the advertised one (§5.5.3 e).
        a = s.addr
        if preferred == 0:
            s.deprecation_timer.stop()
            if not s.deprecated:
                self._deprecate(s)
        else:
            self._arm(s.deprecation_timer, now, preferred)
            if s.deprecated:
                s.deprecated = False  # silently preferred again
                if a is not None and not a.tentative:
                    a.kind = AddressKind.PERMANENT
                    self._emit(SetAddressKind(a.addr, a.kind))
        self._refresh_temps(now, s)

    def _slaac_deprecate(self, prefix: bytes) -> None:
        s = self._slaac.get(prefix)
        if s is not None and not s.deprecated:
            self._deprecate(s)

    def _deprecate(self, s: _Slaac) -> None:
        """RFC 4862 §5.5.4: kept for existing use, not chosen for new ones."""
        s.deprecated = True
        a = s.addr
        if a is None:
            return
        if not a.tentative:
            a.kind = AddressKind.DEPRECATED
            self._emit(SetAddressKind(a.addr, a.kind))
        self._emit(AddressDeprecated(self.nic, a.addr, a.prefix_len))
        # RFC 8981 §3.4: a temporary address is preferred no longer than its prefix.
        for t in s.temps:
            t.deprecation_timer.stop()
            t.regen_timer.stop()
            self._temp_deprecate(t)

    def _slaac_invalid(self, now: float, prefix: bytes) -> None:
        s = self._slaac.get(prefix)
        if s is not None:
            self._drop_slaac(now, s)

    def _drop_slaac(self, now: float, s: _Slaac) -> None:
        """Forget the prefix's SLAAC state; its address is invalidated."""
        del self._slaac[s.prefix]
        s.valid_timer.stop()
        s.deprecation_timer.stop()
        for t in list(s.temps):
            self._drop_temp(now, t)
        a = s.addr
        s.addr = None
        if a is not None:
            self._remove(now, a, "removed")
            self._emit(AddressInvalidated(self.nic, a.addr, a.prefix_len))

    # --- temporary addresses (RFC 8981) -------------------------------------------------
    def _regen_advance(self) -> float:
        """RFC 8981 §3.8: REGEN_ADVANCE = 2 + TEMP_IDGEN_RETRIES *
        DupAddrDetectTransmits * RetransTimer, in seconds."""
        cfg = self.config
        return 2.0 + TEMP_IDGEN_RETRIES * cfg.dup_addr_detect_transmits * self.retrans_timer_s

    def _temp_lifetimes(self, now: float, t: _Temp) -> tuple[float, float]:
        """RFC 8981 §3.4: (valid, preferred) from now: the temporary
        lifetimes less the address's age (and its DESYNC_FACTOR), never
        beyond the prefix's."""
        cfg, s = self.config, t.slaac
        age = now - t.created
        valid = cfg.temp_valid_lifetime_s - age
        preferred = cfg.temp_preferred_lifetime_s - t.desync - age
        prefix_valid = s.valid_timer.remaining(now)  # None: infinite
        if prefix_valid is not None:
            valid = min(valid, prefix_valid)
        prefix_preferred = 0.0 if s.deprecated else s.deprecation_timer.remaining(now)
        if prefix_preferred is not None:
            preferred = min(preferred, prefix_preferred)
        return valid, min(preferred, valid)

    def _random_address(self, prefix: bytes) -> bytes | None:
        """RFC 8981 §3.3.1: a random IID, not a reserved one (RFC 5453) and
        not one of the NIC's addresses (the stable one included)."""
        for _ in range(_MAX_RANDOM_IID_DRAWS):
            iid = self.iid_rng.randbytes(IID_SIZE)
            addr = bytes(prefix[:8]) + iid
            if not is_reserved_iid(iid) and addr not in self._addrs:
                return addr
        return None

    def _new_temp(self, now: float, s: _Slaac, retries: int) -> None:
        """RFC 8981 §3.4: a temporary address for the prefix of ``s``."""
        cfg = self.config
        # §3.8: DESYNC_FACTOR drawn anew for every address.
        desync = self.rng.uniform(0.0, MAX_DESYNC_FRACTION * cfg.temp_preferred_lifetime_s)
        box: list[_Temp] = []

        def timer(fn: Callable[[float, _Temp], None]) -> Timer:
            return self._timers.timer(lambda when: fn(when, box[0]))

        t = _Temp(
            s,
            now,
            desync,
            timer(self._temp_invalid),
            timer(lambda when, tt: self._temp_deprecate(tt)),
            timer(self._temp_regenerate),
        )
        box.append(t)
        valid, preferred = self._temp_lifetimes(now, t)
        regen = self._regen_advance()
        if preferred <= regen:
            return  # §3.4 step 7: it would have to be replaced at once
        addr = self._random_address(s.prefix)
        if addr is None:
            return
        if len(s.temps) >= MAX_TEMP_ADDRESSES_PER_PREFIX:
            # The oldest (deprecated) one makes room: a chain of
            # regenerations never stops at the bound.
            self.stats.temp_over_limit += 1
            self._drop_temp(now, s.temps[0])
        s.temps.append(t)
        t.valid_timer.reset(now + valid)
        t.deprecation_timer.reset(now + preferred)
        t.regen_timer.reset(now + preferred - regen)
        t.addr = self._add(
            now,
            addr,
            SLAAC_PREFIX_LEN,
            "temporary",
            connected_route=False,  # RFC 5942, as the stable address
            valid=valid,
            preferred=preferred,
            temp=t,
            retries=retries,
        )

    def _refresh_temps(self, now: float, s: _Slaac) -> None:
        """RFC 8981 §3.4: an RA for the prefix bounds its temporary
        addresses' lifetimes anew; a prefix without a preferred temporary
        address gets one (use_tempaddr switched on, or the last one lost)."""
        regen = self._regen_advance()
        for t in list(s.temps):
            valid, preferred = self._temp_lifetimes(now, t)
            if valid <= 0:
                self._drop_temp(now, t)
                continue
            t.valid_timer.reset(now + valid)
            newest = t is s.temps[-1]
            if preferred <= 0:
                t.deprecation_timer.stop()
                t.regen_timer.stop()
                self._temp_deprecate(t)
                continue
            t.deprecation_timer.reset(now + preferred)
            if newest:
                t.regen_timer.reset(now + max(preferred - regen, 0.0))
                a = t.addr
                if t.deprecated:
                    t.deprecated = False  # preferred again, as the stable address
                    if a is not None and not a.tentative:
                        a.kind = AddressKind.PERMANENT
                        self._emit(SetAddressKind(a.addr, a.kind))
        if self.config.use_tempaddr and not any(not t.deprecated for t in s.temps):
            self._new_temp(now, s, 0)

    def _temp_deprecate(self, t: _Temp) -> None:
        if t.deprecated:
            return
        t.deprecated = True
        a = t.addr
        if a is None:
            return
        if not a.tentative:
            a.kind = AddressKind.DEPRECATED
            self._emit(SetAddressKind(a.addr, a.kind))
        self._emit(AddressDeprecated(self.nic, a.addr, a.prefix_len))

    def _temp_regenerate(self, now: float, t: _Temp) -> None:
        """RFC 8981 §3.5: REGEN_ADVANCE before the newest temporary address
        deprecates, its successor is made (the old one stays until its valid
        lifetime ends)."""
        s = t.slaac
        if self.config.use_tempaddr and self._slaac.get(s.prefix) is s and s.temps[-1] is t:
            self._new_temp(now, s, 0)

    def _temp_invalid(self, now: float, t: _Temp) -> None:
        if t in t.slaac.temps:
            self._drop_temp(now, t)

    def _drop_temp(self, now: float, t: _Temp) -> None:
        """Forget a temporary address; a usable or tentative one is removed
        with its event."""
        if t in t.slaac.temps:
            t.slaac.temps.remove(t)
        t.valid_timer.stop()
        t.deprecation_timer.stop()
        t.regen_timer.stop()
        a = t.addr
        t.addr = None
        if a is not None:
            self._remove(now, a, "removed")
            self._emit(AddressInvalidated(self.nic, a.addr, a.prefix_len))

    # --- router mode (RFC 4861 §6.2) ----------------------------------------------------
    def set_forwarding(self, now: float, on: bool) -> list[NdpAction]:
        """Forwarding on (false → true only): invalidate the host-only state
        with events; RAs are then ignored. Off: RS again; nothing restored."""
        if on == self.forwarding:
            return []
        self.forwarding = on
        if self.config.accept_ra_forwarding:
            return []  # Linux accept_ra=2: the NIC stays a host for RAs
        if on:
            self._cleanup_host_state(now)
            self._rs_timer.stop()
            self._rs_left = 0
        elif self.running:
            self._start_rs(now)
        return self._flush()

    def _cleanup_host_state(self, now: float) -> None:
        for s in list(self._slaac.values()):
            self._drop_slaac(now, s)
        for p in list(self._prefixes.values()):
            self._invalidate_prefix(p)
        for r in list(self._routers.values()):
            self._invalidate_router(r)
        for key in list(self._rio):
            self._drop_rio(key)
