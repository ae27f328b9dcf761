"""Shard 0's multicast group membership for the whole host.

Sockets in every shard join and leave groups; each shard tells shard 0 when
its first socket joins a (NIC, group) and when its last one leaves
(``Membership`` messages, or a direct call in shard 0). Here the shards of
each (NIC, group) are counted as users of the NIC's IGMP machine (IPv4,
RFC 3376, ``igmp.py``) or of its MLD machine (IPv6, RFC 3810, ``mld.py``),
which say what reports to send (the host's own joins, the solicited-node
groups of its addresses, are MLD users too: ``host_join``); the joined groups are replicated as the
``groups`` table, which every shard's IP input accepts (RFC 1112 §7.2 /
RFC 4291 §2.7: a host receives only the groups it belongs to).

IGMP input (IP protocol 2) arrives here: queries drive the machine, other
hosts' v1/v2 reports suppress ours in the compatibility modes; v3 reports
and leaves are for routers and are ignored.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from typing import Any

from shardnet.common.addr import format_ip, is_ipv4_multicast, is_ipv6_multicast
from shardnet.common.wire.igmp import (
    IGMP_TOS,
    IGMP_TTL,
    IGMPV1_REPORT,
    IGMPV2_REPORT,
    ROUTER_ALERT_OPTION,
    IgmpQuery,
    IgmpV2Message,
    message_bytes,
    parse,
)
from shardnet.common.wire.ipv4 import IPOPT_ROUTER_ALERT, IPPROTO_IGMP, Ipv4View, iter_options

from .datagram import Delivery
from .igmp import IgmpConfig, IgmpMachine, SendIgmp
from .mld import MldConfig, MldMachine, SendMld
from .stack import NetStack
from .state import NetError, NetOwner


def has_router_alert(packet: memoryview | bytes) -> bool:
    """Whether the IPv4 header of ``packet`` (checked by the codec) carries
    a Router Alert option (RFC 2113)."""
    options = Ipv4View(memoryview(packet)).options
    return any(kind == IPOPT_ROUTER_ALERT for kind, _, _ in iter_options(options))


class GroupControl:
    def __init__(
        self,
        owner: NetOwner,
        stack: NetStack,
        clock: Callable[[], float],
        send_mld: Callable[[int, list[SendMld]], None],
        *,
        config: IgmpConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.owner = owner
        self.stack = stack
        self.clock = clock
        self.send_mld = send_mld
        self.config = config or IgmpConfig()
        self.rng = rng or random.Random()
        self.igmp: dict[int, IgmpMachine] = {}  # per Ethernet NIC
        self.mld: dict[int, MldMachine] = {}
        self.members: dict[tuple[int, bytes], set[int]] = {}  # (NIC, group) -> shards

    def add_nic(
        self, nic_id: int, mld_config: MldConfig, link_local: Callable[[], bytes | None]
    ) -> None:
        """An Ethernet NIC: IGMP and MLD run on it from now on. ``link_local``:
        the NIC's usable link-local address, MLD's source (RFC 3810 §5.2.13)."""
        now = self.clock()
        igmp = self.igmp[nic_id] = IgmpMachine(self.config, self.rng)
        self._send(nic_id, igmp.start(now))
        mld = self.mld[nic_id] = MldMachine(mld_config, self.rng, link_local)
        self.send_mld(nic_id, mld.start(now))

    def nic_enabled(self, nic_id: int, up: bool) -> None:
        """The NIC went down (nothing more is sent, memberships kept) or up
        again: every group joined is reported anew (RFC 3376 §5.1, RFC 3810
        §6.1: a new attachment announces itself)."""
        now = self.clock()
        igmp, mld = self.igmp.get(nic_id), self.mld.get(nic_id)
        if igmp is not None:
            if up:
                self._send(nic_id, igmp.start(now))
            else:
                igmp.stop()
        if mld is not None:
            if up:
                self.send_mld(nic_id, mld.start(now))
            else:
                mld.stop()

    def host_join(self, nic_id: int, group: bytes, join: bool) -> None:
        """The host's own use of an IPv6 group (RFC 4862 §5.4.2: an address's
        solicited-node group) starts or ends; bounded by the addresses, so
        never refused."""
        mld = self.mld.get(nic_id)
        if mld is not None:
            now = self.clock()
            self.send_mld(
                nic_id, mld.join(now, group, limit=False) if join else mld.leave(now, group)
            )

    # --- joins and leaves from the shards ------------------------------------------------
    def membership(self, shard: int, nic_id: int, group: bytes, join: bool) -> None:
        """Shard ``shard``'s sockets joined (first) or left (last) ``group``
        on the NIC. Raises NetError: EINVAL for a non-multicast address,
        ENODEV for an unknown or loopback NIC, ENOBUFS past the NIC's limit."""
        v6 = len(group) == 16
        if not (is_ipv6_multicast(group) if v6 else len(group) == 4 and is_ipv4_multicast(group)):
            raise NetError(errno.EINVAL, f"{format_ip(group)} is not a multicast group")
        nic = self.owner.view.nics.get(nic_id)
        if nic is None:
            raise NetError(errno.ENODEV, f"no such NIC: {nic_id}")
        key = (nic_id, group)
        shards = self.members.get(key)
        if join == (shards is not None and shard in shards):
            return  # repeated (a shard re-announces after shard 0 restarted)
        if join:
            if not shards and not nic.loopback:  # the host's first member; no reports on loopback
                self._machines(nic_id, group, v6, True)
            self.members.setdefault(key, set()).add(shard)
        else:
            assert shards is not None
            shards.discard(shard)
            if not shards:
                del self.members[key]
                if not nic.loopback:
                    self._machines(nic_id, group, v6, False)
        self.owner.set_group(nic_id, group, sorted(self.members.get(key, ())))

    def _machines(self, nic_id: int, group: bytes, v6: bool, join: bool) -> None:
        """The NIC's first member joined or its last one left: the MLD or
        IGMP machine says what to report."""
        now = self.clock()
        try:
            if v6:
                mld = self.mld.get(nic_id)
                if mld is not None:
                    self.send_mld(nic_id, (mld.join if join else mld.leave)(now, group))
            else:
                igmp = self.igmp.get(nic_id)
                if igmp is not None:
                    self._send(nic_id, (igmp.join if join else igmp.leave)(now, group))
        except OverflowError as exc:
            raise NetError(errno.ENOBUFS, str(exc)) from None

    def shard_restarted(self, shard: int) -> None:
        """A shard's sockets died with it: its memberships go (its apps join
        again as they start)."""
        for nic_id, group in [k for k, shards in self.members.items() if shard in shards]:
            self.membership(shard, nic_id, group, False)

    def rows(self) -> list[dict[str, Any]]:
        """``ctl groups``: every joined group with its shards and the
        protocol version spoken for it."""
        rows = []
        for (nic_id, group), shards in sorted(self.members.items()):
            if len(group) == 16:
                mld = self.mld.get(nic_id)
                proto, version = "mld", mld.version if mld is not None else 0
            else:
                igmp = self.igmp.get(nic_id)
                proto, version = "igmp", igmp.version if igmp is not None else 0
            rows.append(
                {
                    "nic": nic_id,
                    "group": format_ip(group),
                    "shards": sorted(shards),
                    "protocol": f"{proto}v{version}",
                }
            )
        return rows

    # --- IGMP input (RFC 3376 §4, §7) ------------------------------------------------------
    def handle_igmp(self, d: Delivery) -> bool:
        """An IGMP message for this host (raises MalformedPacket when bad)."""
        igmp = self.igmp.get(d.nic)
        msg = parse(d.payload, verify_checksum=True)
        if igmp is None:
            return True
        now = self.clock()
        if isinstance(msg, IgmpQuery):
            self._send(d.nic, igmp.handle_query(now, msg, router_alert=has_router_alert(d.packet)))
        elif isinstance(msg, IgmpV2Message) and msg.type in (IGMPV1_REPORT, IGMPV2_REPORT):
            igmp.handle_report(now, msg)
        return True

    def _send(self, nic_id: int, actions: list[SendIgmp]) -> None:
        for act in actions:
            # RFC 3376 §4: TTL 1, Router Alert; the source is the NIC's
            # address, 0.0.0.0 before it has one (§4.2.13).
            src = self.stack.ipv4_source(nic_id, act.dst) or bytes(4)
            self.stack.send_ipv4(
                act.dst, IPPROTO_IGMP, message_bytes(act.message), src=src, nic_id=nic_id,
                ttl=IGMP_TTL, tos=IGMP_TOS, options=ROUTER_ALERT_OPTION,
            )  # fmt: skip

    # --- timers ------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadlines = [m.next_deadline() for m in self.igmp.values()]
        deadlines += [m.next_deadline() for m in self.mld.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        for nic_id, igmp in self.igmp.items():
            deadline = igmp.next_deadline()
            if deadline is not None and deadline <= now:
                self._send(nic_id, igmp.handle_timeout(now))
        for nic_id, mld in self.mld.items():
            deadline = mld.next_deadline()
            if deadline is not None and deadline <= now:
                self.send_mld(nic_id, mld.handle_timeout(now))
