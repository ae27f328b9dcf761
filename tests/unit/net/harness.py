"""An in-process network layer for unit tests: shard 0 built as
``shards/assembly.py`` builds it, over a channel link, with a fake clock.

* ``Net``: frames go in through ``Ingress`` (drops counted as in
  production), frames written come out of a ``ChannelWriter``; with
  ``loop_back=True`` the frames the stack sends to itself (loopback routing) are collected
  in ``looped`` instead (``inject_looped`` feeds one back, as the dispatcher
  does); ``expect``
  takes the next frame and runs checkers on it, ``expect_nothing`` asserts
  silence, ``advance`` moves the clock and fires the machines' timers as
  ``ShardAssembly.handle_timeout`` does (every deadline in order).
* ``Replica``: another shard's view, fed with shard 0's patches through a
  ``TableReplica``, with the ask-resolve path wired to shard 0.
* Checkers in the style of gVisor's ``checker`` package: ``ipv4(...)``,
  ``ipv6(...)``, ``arp(...)``, ``icmp4(...)``, ``icmp6(...)``; each returns a
  function that asserts on a scapy packet; they nest:
  ``net.expect(ipv4(icmp4(0, id=7), src=OUR4, dst=PEER4))``.

Addresses: 198.18.0.0/15, 2001:db8::/32 and fe80::/10 only.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from shardnet.common.addr import format_ip, format_mac, parse_ip, parse_mac
from shardnet.common.config import StackConfig
from shardnet.common.ipconfig import IpConfig
from shardnet.common.link_tx import ChannelWriter
from shardnet.common.messages import Patch
from shardnet.common.record import TAG_LOOPED, TAG_WIRE
from shardnet.common.replica import TableOwner, TableReplica
from shardnet.common.wire.errors import Drop
from shardnet.common.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from shardnet.common.wire.ipv6 import multicast_mac, solicited_node_multicast
from shardnet.shards.counters import NetEvent, ShardCounters
from shardnet.shards.ingress import Ingress
from shardnet.shards.net.arp import ANNOUNCE_INTERVAL_S
from shardnet.shards.net.control import ControlPlane
from shardnet.shards.net.ndp import IidMode, NdpConfig
from shardnet.shards.net.stack import NetStack
from shardnet.shards.net.state import NetOwner, NetView

# gVisor's modified EUI-64 example MAC (RFC 4291 App. A): its EUI-64
# link-local is fe80::2:3ff:fe04:506.
OUR_MAC = "02:02:03:04:05:06"
OUR_LL = "fe80::2:3ff:fe04:506"
OUR4, OUR6 = "198.18.0.2", "2001:db8::2"
PEER_MAC, PEER4, PEER6, PEER_LL = "02:00:00:00:00:01", "198.18.0.1", "2001:db8::1", "fe80::1"
GW_MAC, GW4, GW6 = "02:00:00:00:00:fe", "198.18.0.254", "2001:db8::fe"
FAR4, FAR6 = "198.19.0.9", "2001:db8:ffff::9"  # off-link: reached through a gateway
BCAST_MAC = "ff:ff:ff:ff:ff:ff"

Check = Callable[[Packet], None]


class FakeClock:
    """``clock()`` is the time; only ``advance`` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


class Net:
    """Shard 0 as ``ShardAssembly`` builds it."""

    def __init__(
        self,
        *,
        ipv4: tuple[str, ...] = (OUR4 + "/24",),
        ipv6: tuple[str, ...] = (OUR6 + "/64",),
        gateway4: str | None = None,
        gateway6: str | None = None,
        mtu: int = 1500,
        icmp_rate: tuple[float, int] = (1000.0, 50),
        loop_back: bool = False,
        acd: str = "dhcp",
    ) -> None:
        self.clock = FakeClock()
        self.looped: list[bytes] = []  # frames handed to loop_back (loopback routing)
        self.mac = parse_mac(OUR_MAC)
        self.config = StackConfig(
            tap="sntap0", ipv4=ipv4, ipv6=ipv6, gateway4=gateway4, gateway6=gateway6, mtu=mtu,
            acd=acd,
        )  # fmt: skip
        self.owner = TableOwner(epoch=7)
        self.patches: list[Patch] = []
        self.replicas: list[Replica] = []
        self.net = NetOwner(self.owner, self.publish)
        self.writer = ChannelWriter()
        self.counters = ShardCounters()
        self.stack = NetStack(
            shard=0,
            view=self.net.view,
            writer=self.writer,
            counters=self.counters,
            clock=self.clock,
            ip_config=IpConfig(icmp_rate_per_s=icmp_rate[0], icmp_burst=icmp_rate[1]),
            loop_back=self._loop_back if loop_back else None,
        )
        # NDP as the network-layer tests assume it: EUI-64 link-local (RFC 4291 App. A),
        # no DAD delay, no router solicitations; the NDP tests drive the
        # machine with its own defaults.
        ndp = NdpConfig(
            dup_addr_detect_transmits=0,
            iid_mode=IidMode.EUI64,
            max_rtr_solicitations=0,
            mld_robustness=1,
        )
        self.control = ControlPlane(
            self.net, self.stack, self.clock, ndp_config=ndp, rng=random.Random(5)
        )
        self.control.bootstrap(self.config, mac=self.mac, mtu=mtu)
        self.stack.report_used = self.control.neighbour_used  # as ShardAssembly wires it
        self.ingress = Ingress(self.mac, self.counters)
        register_net(self.ingress, self.stack)
        self.ingress.register(ETHERTYPE_ARP, self.control.handle_arp)
        # The bootstrap's frames: gratuitous ARPs (RFC 5227: twice, 2 s apart)
        # and the MLD report; tests start once they are all out.
        self.advance(ANNOUNCE_INTERVAL_S)
        self.boot_frames = self.sent()

    # --- replication ------------------------------------------------------------------
    def publish(self, patch: Patch | None) -> None:
        if patch is not None:
            self.patches.append(patch)
            for r in self.replicas:
                r.apply(patch)

    def replica(self, index: int = 1) -> Replica:
        r = Replica(self, index)
        self.replicas.append(r)
        return r

    # --- the link ---------------------------------------------------------------------
    def inject(self, frame: Packet | bytes) -> None:
        """One frame from the link, as the ring hands it to the shard."""
        self.ingress.handle_record(memoryview(bytes((TAG_WIRE,)) + bytes(frame)))

    def _loop_back(self, frame: bytes | bytearray) -> bool:
        self.looped.append(bytes(frame))
        return True

    def inject_looped(self, frame: Packet | bytes) -> None:
        """A frame the stack looped back to itself, as the dispatcher hands it
        to the shard that owns its flow (here: this one)."""
        self.ingress.handle_record(memoryview(bytes((TAG_LOOPED,)) + bytes(frame)))

    def take_looped(self) -> list[Ether]:
        """The frames looped back since the last call, dissected by scapy."""
        frames, self.looped = self.looped, []
        return [Ether(f) for f in frames]

    def sent(self) -> list[Ether]:
        """The frames written since the last call, dissected by scapy."""
        return [Ether(f) for f, _ in self.writer.take()]

    def expect(self, *checks: Check) -> Ether:
        """Exactly one frame was written: run ``checks`` on it."""
        frames = self.sent()
        assert len(frames) == 1, f"expected one frame, got {[f.summary() for f in frames]}"
        for check in checks:
            check(frames[0])
        return frames[0]

    def expect_nothing(self) -> None:
        frames = self.sent()
        assert not frames, f"expected silence, got {[f.summary() for f in frames]}"

    # --- time -------------------------------------------------------------------------
    def machines(self) -> list[Any]:
        return [self.stack, self.control, *(r.stack for r in self.replicas)]

    def fire(self) -> None:
        """``_timer_loop``'s inner step: every machine whose deadline passed."""
        now = self.clock()
        for m in self.machines():
            deadline = m.next_deadline()
            if deadline is not None and deadline <= now:
                m.handle_timeout(now)

    def advance(self, s: float) -> None:
        """Move the clock by ``s``, firing every deadline on the way at its time."""
        target = self.clock.now + s
        while True:
            deadlines = [d for d in (m.next_deadline() for m in self.machines()) if d is not None]
            due = min(deadlines, default=None)
            if due is None or due > target:
                break
            self.clock.now = max(self.clock.now, due)
            self.fire()
        self.clock.now = target
        self.fire()

    # --- state ------------------------------------------------------------------------
    @property
    def stats(self) -> Counter[Drop | NetEvent]:
        return self.stack.counters.by_reason()

    def request(self, op: str, **args: Any) -> Any:
        return self.control.handle_request(op, args)

    def learn(self, ip: str, mac: str = PEER_MAC) -> None:
        """Teach shard 0 a neighbour the way the wire does (ARP request or NS
        from it to us), then forget the answer."""
        if ":" in ip:
            self.inject(ns(ip, OUR6 if not ip.startswith("fe80") else OUR_LL, mac=mac))
        else:
            self.inject(arp_request(ip, OUR4, mac=mac))
        self.sent()


class Replica:
    """A non-zero shard: a ``TableReplica`` fed by shard 0's patches, a
    ``NetView`` loaded from it, a stack that asks shard 0 to resolve."""

    def __init__(self, net: Net, index: int) -> None:
        self.net = net
        self.tables = TableReplica()
        self.tables.load_snapshot(net.owner.snapshot())
        self.view = NetView()
        self.view.load(self.tables.tables)
        self.writer = ChannelWriter()
        self.counters = ShardCounters()
        self.asked: list[tuple[int, bytes]] = []
        self.stack = NetStack(
            shard=index,
            view=self.view,
            writer=self.writer,
            counters=self.counters,
            clock=net.clock,
            ask_resolve=self.ask_resolve,
        )
        self.used: list[tuple[int, bytes]] = []
        self.stack.report_used = self.report_used
        self.ingress = Ingress(net.mac, self.counters)
        register_net(self.ingress, self.stack)

    def apply(self, patch: Patch) -> None:
        # ShardRuntime._replica_loop / ShardAssembly.replica_changed
        assert self.tables.apply_patch(patch)
        self.view.load(self.tables.tables, patch.table, patch.key)
        if patch.table == "neigh":
            self.stack.neighbours_changed()

    def ask_resolve(self, nic: int, ip: bytes) -> None:
        # The Resolve message to shard 0's sync socket, delivered at once.
        self.asked.append((nic, ip))
        self.net.control.resolve_for(nic, ip)

    def report_used(self, nic: int, ip: bytes) -> None:
        # The Confirm(used=True) message to shard 0's sync socket, delivered at once.
        self.used.append((nic, ip))
        self.net.control.neighbour_used(nic, ip)

    def inject(self, frame: Packet | bytes) -> None:
        self.ingress.handle_record(memoryview(bytes((TAG_WIRE,)) + bytes(frame)))

    def inject_looped(self, frame: Packet | bytes) -> None:
        self.ingress.handle_record(memoryview(bytes((TAG_LOOPED,)) + bytes(frame)))

    def sent(self) -> list[Ether]:
        return [Ether(f) for f, _ in self.writer.take()]


def register_net(ingress: Ingress, stack: NetStack) -> None:
    """The IP handlers, wire and looped, as ``ShardAssembly`` registers them."""
    ingress.register(ETHERTYPE_IPV4, stack.handle_ipv4, looped=stack.handle_looped_ipv4)
    ingress.register(ETHERTYPE_IPV6, stack.handle_ipv6, looped=stack.handle_looped_ipv6)


# --- frames in -------------------------------------------------------------------------
def eth(mac: str = PEER_MAC, dst: str = OUR_MAC) -> Ether:
    return Ether(src=mac, dst=dst)


def arp_request(psrc: str, pdst: str, *, mac: str = PEER_MAC, dst: str = BCAST_MAC) -> Ether:
    return Ether(src=mac, dst=dst) / ARP(op=1, hwsrc=mac, psrc=psrc, pdst=pdst)


def arp_reply(psrc: str, pdst: str = OUR4, *, mac: str = PEER_MAC) -> Ether:
    return Ether(src=mac, dst=OUR_MAC) / ARP(op=2, hwsrc=mac, psrc=psrc, hwdst=OUR_MAC, pdst=pdst)


def ns(src: str, target: str, *, mac: str = PEER_MAC, dst: str | None = None) -> Ether:
    """A Neighbor Solicitation for ``target`` from ``src`` (:: for DAD), to
    its solicited-node group unless ``dst`` is given."""
    group = dst or format_ip(solicited_node_multicast(parse_ip(target)))
    ip = IPv6(src=src, dst=group, hlim=255)
    msg = ICMPv6ND_NS(tgt=target)
    if src != "::":
        msg = msg / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    return Ether(src=mac, dst=format_mac(multicast_mac(parse_ip(group)))) / ip / msg


def na(
    target: str,
    *,
    mac: str = PEER_MAC,
    dst: str = OUR6,
    s: int = 1,
    o: int = 1,
    r: int = 0,
    tlla: bool = True,
) -> Ether:
    """A Neighbor Advertisement for ``target``; ``tlla=False`` leaves out the
    Target Link-Layer Address option (RFC 4861 §7.2.4 allows it in the
    answer to a unicast NS; Linux omits it there)."""
    msg = eth(mac) / IPv6(src=target, dst=dst, hlim=255) / ICMPv6ND_NA(tgt=target, S=s, O=o, R=r)
    return msg / ICMPv6NDOptDstLLAddr(lladdr=mac) if tlla else msg


# --- checkers on the frames that come out ----------------------------------------------
def _fields(layer: Packet, want: dict[str, Any]) -> None:
    for name, value in want.items():
        got = layer.getfieldval(name)
        assert got == value, f"{layer.name}.{name}: {got!r} != {value!r} in {layer.summary()}"


def checksums_ok(pkt: Packet) -> None:
    """scapy recomputes every checksum of ``pkt`` and finds the same bytes:
    the IP header's always, the transport's unless the packet is a fragment;
    a datagram quoted by an ICMP error is left alone (it is the peer's)."""
    raw = bytes(pkt)
    again = Ether(raw)
    fragment = (IP in again and (again[IP].flags.MF or again[IP].frag)) or (
        IPv6ExtHdrFragment in again
    )
    layer = again.payload
    while layer and "error" not in type(layer).__name__.lower():
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                layer.setfieldval(name, None)
        if fragment:
            break  # the transport checksum covers data in other fragments
        layer = layer.payload
    assert bytes(again) == raw, f"bad checksum in {pkt.summary()}"


def frame(*, dst: str | None = None, src: str = OUR_MAC, type: int | None = None) -> Check:
    def check(pkt: Packet) -> None:
        assert pkt.src == src, f"Ethernet source {pkt.src}"
        if dst is not None:
            assert pkt.dst == dst, f"Ethernet destination {pkt.dst} != {dst}"
        if type is not None:
            assert pkt.type == type, f"ethertype {pkt.type:#x}"

    return check


def ipv4(*checks: Check, mac: str | None = None, **fields: Any) -> Check:
    """An IPv4 frame from our MAC (to ``mac``) whose IP header has ``fields``
    (scapy names: src, dst, ttl, proto, flags, frag, ...) and checksums that
    scapy agrees with; then ``checks`` on the IP layer."""

    def check(pkt: Packet) -> None:
        frame(dst=mac, type=0x0800)(pkt)
        assert IP in pkt, pkt.summary()
        checksums_ok(pkt)
        _fields(pkt[IP], fields)
        for c in checks:
            c(pkt[IP])

    return check


def ipv6(*checks: Check, mac: str | None = None, **fields: Any) -> Check:
    """As ``ipv4`` for IPv6 (src, dst, hlim, nh, tc, ...)."""

    def check(pkt: Packet) -> None:
        frame(dst=mac, type=0x86DD)(pkt)
        assert IPv6 in pkt, pkt.summary()
        checksums_ok(pkt)
        _fields(pkt[IPv6], fields)
        for c in checks:
            c(pkt[IPv6])

    return check


def icmp4(type: int, code: int = 0, *checks: Check, **fields: Any) -> Check:
    def check(ip: Packet) -> None:
        assert ICMP in ip, ip.summary()
        _fields(ip[ICMP], {"type": type, "code": code, **fields})
        for c in checks:
            c(ip[ICMP])

    return check


def icmp6(cls: type[Packet], *checks: Check, **fields: Any) -> Check:
    """The ICMPv6 message of scapy class ``cls`` (ICMPv6EchoReply,
    ICMPv6DestUnreach, ICMPv6ND_NA, ...) with ``fields``."""

    def check(ip: Packet) -> None:
        assert cls in ip, f"no {cls.__name__} in {ip.summary()}"
        _fields(ip[cls], fields)
        for c in checks:
            c(ip[cls])

    return check


def quoted(pkt: Packet) -> bytes:
    """The bytes an ICMP error in ``pkt`` (an Ethernet frame as written)
    quotes, cut from the raw frame (scapy would re-serialise the quote)."""
    raw = pkt.original if pkt.original else bytes(pkt)
    if IP in pkt:
        start = 14 + pkt[IP].ihl * 4 + 8
    else:
        start = 14 + 40 + 8  # we send no extension headers with an error
    return raw[start:]


def quotes(original: Packet | bytes, length: int | None = None) -> Check:
    """For ``ipv4``/``ipv6``: the ICMP error quotes ``original`` (the IP
    datagram as sent to us), its first ``length`` bytes (all if None)."""
    want = bytes(original)
    if length is not None:
        want = want[:length]

    def check(ip: Packet) -> None:
        got = quoted(ip.underlayer)
        assert got[: len(want)] == want, "the error does not quote the datagram"
        assert length is not None or len(got) == len(want), "the quote is longer"

    return check


def arp(op: int, psrc: str, pdst: str, *, mac: str, hwdst: str = "00:00:00:00:00:00") -> Check:
    def check(pkt: Packet) -> None:
        frame(dst=mac, type=0x0806)(pkt)
        assert ARP in pkt, pkt.summary()
        _fields(
            pkt[ARP],
            {"op": op, "hwsrc": OUR_MAC, "psrc": psrc, "pdst": pdst, "hwdst": hwdst},
        )

    return check


def udp(**fields: Any) -> Check:
    def check(ip: Packet) -> None:
        assert UDP in ip, ip.summary()
        _fields(ip[UDP], fields)

    return check


def ip_bytes(text: str) -> bytes:
    return parse_ip(text)
