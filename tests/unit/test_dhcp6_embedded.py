"""The DHCPv6 client wired into a running stack (the embedded stack: shard
0 over a channel link) against a scapy DHCPv6 server: an RA with M starts
Solicit → Advertise → Request → Reply, the address shows in ``ctl addrs``
as a /128 of origin dhcp; hostile replies are dropped and counted; DAD
failing on the address sends a Decline; closing sends a Release.
Addresses: 2001:db8::/32 and fe80::/10 only."""

from __future__ import annotations

import asyncio
from typing import Any

from scapy.layers.dhcp6 import DUID_LL as ScapyDuidLL
from scapy.layers.dhcp6 import (
    DHCP6_Advertise,
    DHCP6_Decline,
    DHCP6_InfoRequest,
    DHCP6_Reconf,
    DHCP6_Release,
    DHCP6_Reply,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSServers,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptPref,
    DHCP6OptServerId,
)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from shardnet.common.config import StackConfig
from shardnet.common.messages import Event
from shardnet.embedded import Stack
from shardnet.scripts import ctl

from .test_embedded import frames_of, run, until

OUR_MAC, SERVER_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
SERVER_LL = "fe80::1"
ADDR, DNS = "2001:db8::50", "2001:db8::53"
NO_DAD = {"dup_addr_detect_transmits": 0, "max_rtr_solicitations": 0}
# One DAD probe 50 ms long: the assigned address is tentative for a moment.
SHORT_DAD = {"dup_addr_detect_transmits": 1, "retrans_timer_s": 0.3, "max_dad_delay_s": 0,
             "max_rtr_solicitations": 0}  # fmt: skip


def ra(managed: bool) -> bytes:
    return bytes(
        Ether(src=SERVER_MAC, dst="33:33:00:00:00:01")
        / IPv6(src=SERVER_LL, dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(M=int(managed), O=1, routerlifetime=0)
        / ICMPv6NDOptSrcLLAddr(lladdr=SERVER_MAC)
        # On-link by the RA (RFC 8415 §21.4: not by the /128), no SLAAC.
        / ICMPv6NDOptPrefixInfo(prefix="2001:db8::", prefixlen=64, L=1, A=0)
    )


async def next_dhcp6(stack: Stack, kind: type[Packet], seen: list[Ether]) -> Ether:
    def find() -> Ether | None:
        seen.extend(p for p in frames_of(stack) if UDP in p and p[UDP].dport == 547)
        return next((p for p in seen if kind in p), None)

    frame = await until(find, timeout=5.0)
    seen.remove(frame)
    return frame


def to_client(request: Ether, message: Packet) -> bytes:
    return bytes(
        Ether(src=SERVER_MAC, dst=OUR_MAC)
        / IPv6(src=SERVER_LL, dst=request[IPv6].src)
        / UDP(sport=547, dport=546)
        / message
    )


def answer(request: Ether, cls: type[Packet], *, trid: int | None = None, **extra: Any) -> bytes:
    """``cls`` (Advertise or Reply) to ``request``, offering ADDR."""
    msg = request[UDP].payload
    iaid = msg[DHCP6OptIA_NA].iaid if DHCP6OptIA_NA in msg else 0
    return to_client(
        request,
        cls(trid=msg.trid if trid is None else trid)
        / DHCP6OptClientId(duid=msg[DHCP6OptClientId].duid)
        / DHCP6OptServerId(duid=ScapyDuidLL(lladdr=SERVER_MAC))
        / DHCP6OptPref(prefval=extra.get("pref", 255))
        / DHCP6OptIA_NA(iaid=iaid, T1=60, T2=100, ianaopts=[
            DHCP6OptIAAddress(addr=ADDR, preflft=150, validlft=200)])
        / DHCP6OptDNSServers(dnsservers=[DNS]),
    )  # fmt: skip


async def bind(stack: Stack, seen: list[Ether]) -> Ether:
    stack.link.inject(ra(managed=True))
    solicit = await next_dhcp6(stack, DHCP6_Solicit, seen)
    stack.link.inject(answer(solicit, DHCP6_Advertise))
    request = await next_dhcp6(stack, DHCP6_Request, seen)
    stack.link.inject(answer(request, DHCP6_Reply))
    return request


def test_address_from_a_scapy_server() -> None:
    async def go() -> None:
        stack = Stack(mac=OUR_MAC, ndp=NO_DAD, config=StackConfig(drain_s=0.2))
        events = stack.events()
        seen: list[Ether] = []
        async with stack:
            stack.link.inject(ra(managed=True))
            solicit = await next_dhcp6(stack, DHCP6_Solicit, seen)
            # RFC 8415 §13.1: from our link-local address to All_DHCP_Relay_Agents_and_Servers.
            assert solicit[IPv6].src.startswith("fe80::") and solicit[IPv6].dst == "ff02::1:2"
            assert solicit.dst == "33:33:00:01:00:02"
            assert solicit[UDP].sport == 546
            duid = solicit[DHCP6OptClientId].duid
            assert duid.type == 3 and duid.lladdr == OUR_MAC  # DUID-LL (§11.4)
            # Hostile or foreign messages first: none is taken.
            trid = solicit[UDP].payload.trid
            stack.link.inject(answer(solicit, DHCP6_Advertise, trid=trid ^ 1))
            stack.link.inject(to_client(solicit, Raw(b"\x02\x00")))
            stack.link.inject(to_client(solicit, DHCP6_Reconf(trid=trid)))
            stack.link.inject(answer(solicit, DHCP6_Advertise))
            request = await next_dhcp6(stack, DHCP6_Request, seen)
            assert request[DHCP6OptServerId].duid.lladdr == SERVER_MAC
            assert request[DHCP6OptIAAddress].addr == ADDR
            stack.link.inject(answer(request, DHCP6_Reply))
            (row,) = await until(
                lambda: [a for a in stack.call("addrs") if a["addr"] == ADDR], timeout=5.0
            )
            assert row["origin"] == "dhcp" and row["prefix_len"] == 128  # RFC 8415 §21.4
            lease = row["dhcp6"]
            assert lease["state"] == "BOUND" and lease["server"] == SERVER_LL
            assert lease["dns_servers"] == [DNS]
            assert 59 <= lease["t1_s"] <= 60 and 199 <= lease["valid_s"] <= 200
            assert "(dhcp6 BOUND from fe80::1, T1/T2 " in ctl.render("addrs", stack.call("addrs"))
            drops = stack.stats()["shards"][0]["drops"]
            assert drops.get("dhcp6/dhcp6_not_ours") == 1, drops
            assert drops.get("dhcp6/dhcp6_truncated") == 1, drops
            assert drops.get("dhcp6/dhcp6_reconfigure") == 1, drops
            got: Event | None = None
            async with asyncio.timeout(5):
                async for event in events:
                    if event.type == "dhcp6_bound":
                        got = event
                        break
            assert got is not None and got.data["addresses"] == [ADDR]
            assert got.data["dns_servers"] == [DNS]
            # RFC 6724: the assigned address is the source toward its link,
            # as any other (the neighbour solicitation for the peer comes from it).
            transport, _ = await stack.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("::", 0)
            )
            transport.sendto(b"x", ("2001:db8::99", 9))
            ns = await until(
                lambda: [p for p in frames_of(stack) if ICMPv6ND_NS in p and p[ICMPv6ND_NS].tgt
                         == "2001:db8::99"],
                timeout=5.0,
            )  # fmt: skip
            assert ns[0][IPv6].src == ADDR
            transport.close()
        # Closing released the address (RFC 8415 §18.2.7).
        release = next(p for p in [*seen, *frames_of(stack)] if DHCP6_Release in p)
        assert release[DHCP6OptIAAddress].addr == ADDR and release[IPv6].dst == "ff02::1:2"

    run(go(), timeout=20)


def test_stateless_information_request() -> None:
    async def go() -> None:
        seen: list[Ether] = []
        async with Stack(mac=OUR_MAC, ndp=NO_DAD, config=StackConfig(drain_s=0.2)) as stack:
            stack.link.inject(ra(managed=False))
            info = await next_dhcp6(stack, DHCP6_InfoRequest, seen)
            assert DHCP6OptIA_NA not in info
            reply = to_client(
                info,
                DHCP6_Reply(trid=info[UDP].payload.trid)
                / DHCP6OptClientId(duid=info[DHCP6OptClientId].duid)
                / DHCP6OptServerId(duid=ScapyDuidLL(lladdr=SERVER_MAC))
                / DHCP6OptDNSServers(dnsservers=[DNS]),
            )
            stack.link.inject(reply)
            rows = await until(
                lambda: [a for a in stack.call("addrs") if a.get("dhcp6", {}).get("dns_servers")],
                timeout=5.0,
            )
            (row,) = rows
            assert row["origin"] == "linklocal" and row["dhcp6"]["state"] == "INFORMED"
            assert row["dhcp6"]["refresh_s"] > 86000
            assert f"dns {DNS}" in ctl.render("addrs", stack.call("addrs"))

    run(go(), timeout=20)


def test_dad_failure_declines() -> None:
    """RFC 8415 §18.2.8: the assigned address goes through DAD; another
    node's NA for it while tentative makes the client Decline it."""

    async def go() -> None:
        seen: list[Ether] = []
        async with Stack(mac=OUR_MAC, ndp=SHORT_DAD, config=StackConfig(drain_s=0.2)) as stack:
            await stack.wait_dad()
            await bind(stack, seen)
            await until(
                lambda: any(
                    a["addr"] == ADDR and a["kind"] == "tentative" for a in stack.call("addrs")
                ),
                timeout=5.0,
            )
            na = (
                Ether(src=SERVER_MAC, dst="33:33:00:00:00:01")
                / IPv6(src="fe80::99", dst="ff02::1", hlim=255)
                / ICMPv6ND_NA(tgt=ADDR, R=0, S=0, O=1)
            )
            stack.link.inject(bytes(na))
            decline = await next_dhcp6(stack, DHCP6_Decline, seen)
            assert decline[DHCP6OptIAAddress].addr == ADDR
            assert not any(a["addr"] == ADDR for a in stack.call("addrs"))
            await next_dhcp6(stack, DHCP6_Decline, seen)  # retransmitted until answered

    run(go(), timeout=20)


def test_off_sends_nothing() -> None:
    """``--dhcp6 off``: an RA with M is reported, and nothing is solicited."""

    async def go() -> None:
        config = StackConfig(drain_s=0.2, dhcp6="off")
        stack = Stack(mac=OUR_MAC, ndp=NO_DAD, config=config)
        events = stack.events()
        async with stack:
            stack.link.inject(ra(managed=True))
            async with asyncio.timeout(5):
                async for event in events:
                    if event.type == "dhcpv6_configuration":
                        assert event.data["configuration"] == "managed"
                        break
            # Past SOL_MAX_DELAY (1 s), the longest a Solicit waits.
            await asyncio.sleep(1.2)
            assert not [p for p in frames_of(stack) if UDP in p and p[UDP].dport == 547]

    run(go(), timeout=20)


def test_nic_down_drops_and_up_solicits_again() -> None:
    """``ctl nic down`` drops the address without a Release; ``up`` solicits
    again for what the last RA asked (no Confirm, RFC 8415 §18.2.12)."""

    async def go() -> None:
        seen: list[Ether] = []
        async with Stack(mac=OUR_MAC, ndp=NO_DAD, config=StackConfig(drain_s=0.2)) as stack:
            await bind(stack, seen)
            await until(lambda: any(a["addr"] == ADDR for a in stack.call("addrs")), timeout=5.0)
            stack.nic_disable("channel0")
            assert not any(a["addr"] == ADDR for a in stack.call("addrs"))
            stack.nic_enable("channel0")
            again = await next_dhcp6(stack, DHCP6_Solicit, seen)
            assert not [p for p in seen if DHCP6_Release in p]
            stack.link.inject(answer(again, DHCP6_Advertise))
            request = await next_dhcp6(stack, DHCP6_Request, seen)
            stack.link.inject(answer(request, DHCP6_Reply))
            await until(lambda: any(a["addr"] == ADDR for a in stack.call("addrs")), timeout=5.0)

    run(go(), timeout=20)
