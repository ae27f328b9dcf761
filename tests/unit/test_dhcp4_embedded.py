"""The DHCPv4 client wired into a running stack (the embedded stack: shard
0 over a channel link), against a scapy DHCP server: DISCOVER → OFFER →
REQUEST → ACK gives the address, the default route and the events; hostile
replies are dropped and counted; the lease is kept in the state directory;
closing sends DHCPRELEASE. Addresses: 198.18.0.0/15 only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from shardnet.common.config import StackConfig
from shardnet.common.messages import Event
from shardnet.embedded import Stack
from shardnet.scripts import ctl

from .test_embedded import frames_of, run, until

OUR_MAC, SERVER_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
SERVER, OFFERED = "198.18.0.1", "198.18.0.50"
FAST_NDP = {"dup_addr_detect_transmits": 0, "max_rtr_solicitations": 0}


def dhcp_type(p: Ether) -> int | None:
    if DHCP not in p:
        return None
    return next(o[1] for o in p[DHCP].options if isinstance(o, tuple) and o[0] == "message-type")


async def next_dhcp(stack: Stack, kind: int, seen: list[Ether]) -> Ether:
    def find() -> Ether | None:
        seen.extend(p for p in frames_of(stack) if DHCP in p)
        return next((p for p in seen if dhcp_type(p) == kind), None)

    frame = await until(find, timeout=5.0)
    seen.remove(frame)
    return frame


def server_reply(request: Ether, kind: str, *, xid: int | None = None, **extra: Any) -> bytes:
    options: list[Any] = [("message-type", kind), ("server_id", SERVER)]
    if kind in ("offer", "ack"):
        options += [("subnet_mask", "255.255.255.0"), ("router", SERVER),
                    ("name_server", SERVER), ("domain", b"example.test"), ("lease_time", 120)]  # fmt: skip
    options += list(extra.items()) + ["end"]
    return bytes(
        Ether(src=SERVER_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=SERVER, dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, xid=request[BOOTP].xid if xid is None else xid,
                chaddr=request[BOOTP].chaddr, yiaddr=OFFERED, flags=0x8000)
        / DHCP(options=options)
    )  # fmt: skip


def test_lease_from_a_scapy_server(tmp_path: Path) -> None:
    async def go() -> None:
        config = StackConfig(dhcp4=True, state_dir=str(tmp_path), drain_s=0.2)
        stack = Stack(mac=OUR_MAC, ndp=FAST_NDP, config=config)
        events = stack.events()
        seen: list[Ether] = []
        async with stack:
            discover = await next_dhcp(stack, 1, seen)
            assert discover[IP].src == "0.0.0.0" and discover[IP].dst == "255.255.255.255"
            assert discover[UDP].sport == 68 and discover[UDP].dport == 67
            assert discover.dst == "ff:ff:ff:ff:ff:ff"
            assert discover[BOOTP].chaddr[:6] == bytes.fromhex(OUR_MAC.replace(":", ""))
            # Hostile or foreign replies first: none is taken.
            stack.link.inject(server_reply(discover, "offer", xid=discover[BOOTP].xid ^ 1))
            body = bytearray(bytes(Ether(server_reply(discover, "offer"))[BOOTP]))
            body[236] ^= 0xFF  # the magic cookie
            stack.link.inject(
                bytes(
                    Ether(src=SERVER_MAC, dst="ff:ff:ff:ff:ff:ff")
                    / IP(src=SERVER, dst="255.255.255.255")
                    / UDP(sport=67, dport=68)
                    / Raw(bytes(body))
                )
            )
            stack.link.inject(server_reply(discover, "offer"))
            request = await next_dhcp(stack, 3, seen)
            assert request[BOOTP].xid == discover[BOOTP].xid
            opts = {o[0]: o[1] for o in request[DHCP].options if isinstance(o, tuple)}
            assert opts["requested_addr"] == OFFERED and opts["server_id"] == SERVER
            stack.link.inject(server_reply(request, "ack", renewal_time=60, rebinding_time=100))
            rows = await until(
                lambda: [a for a in stack.call("addrs") if a["addr"] == OFFERED], timeout=5.0
            )
            (row,) = rows
            assert row["origin"] == "dhcp" and row["prefix_len"] == 24
            lease = row["dhcp4"]
            assert lease["state"] == "BOUND" and lease["server"] == SERVER
            assert 59 <= lease["t1_s"] <= 60 and 99 <= lease["t2_s"] <= 100
            assert lease["dns_servers"] == [SERVER] and lease["domain_name"] == "example.test"
            text = ctl.render("addrs", stack.call("addrs"))
            assert f"dhcp (BOUND from {SERVER}, T1/T2/expiry " in text
            routes = stack.call("routes")
            assert any(
                r["prefix_len"] == 0 and r["gateway"] == SERVER and r["origin"] == "dhcp"
                for r in routes
            )
            drops = stack.stats()["shards"][0]["drops"]
            assert drops.get("dhcp/dhcp_not_ours") == 1, drops  # another exchange's xid
            assert drops.get("dhcp/dhcp_bad_cookie") == 1, drops
            got: Event | None = None
            async with asyncio.timeout(5):
                async for event in events:
                    if event.type == "dhcp4_bound":
                        got = event
                        break
            assert got is not None and got.data["address"] == OFFERED
            assert got.data["dns_servers"] == [SERVER]
            assert json.loads((tmp_path / "channel0.dhcp4").read_text())["address"] == OFFERED
            # RFC 5227 (the default ``acd`` setting probes leases): tentative
            # until three probes found nobody, then answered for.
            assert row["kind"] == "tentative" and row["acd"]["state"] == "probing"
            await until(
                lambda: any(
                    a["addr"] == OFFERED and a["kind"] == "permanent" for a in stack.call("addrs")
                ),
                timeout=10.0,
            )
            # The server asks for us by ARP (as dnsmasq does): its MAC is known
            # for the unicast DHCPRELEASE.
            who = Ether(src=SERVER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
                op=1, hwsrc=SERVER_MAC, psrc=SERVER, pdst=OFFERED
            )
            stack.link.inject(bytes(who))
            await until(lambda: any(ARP in p and p[ARP].op == 2 for p in frames_of(stack)))
        # Closing released the lease (RFC 2131 §4.4.6), unicast to the server.
        release = next(p for p in [*seen, *frames_of(stack)] if dhcp_type(p) == 7)
        assert release[IP].src == OFFERED and release[IP].dst == SERVER
        assert release[BOOTP].ciaddr == OFFERED

    run(go(), timeout=20)


def test_nic_down_and_up_asks_for_the_lease_again(tmp_path: Path) -> None:
    """``ctl nic down`` drops the lease without a release; ``up`` asks for
    the same address again in INIT-REBOOT (RFC 2131 §3.2), no DISCOVER."""

    async def go() -> None:
        config = StackConfig(dhcp4=True, state_dir=str(tmp_path), drain_s=0.2)
        seen: list[Ether] = []
        async with Stack(mac=OUR_MAC, ndp=FAST_NDP, config=config) as stack:
            discover = await next_dhcp(stack, 1, seen)
            stack.link.inject(server_reply(discover, "offer"))
            request = await next_dhcp(stack, 3, seen)
            stack.link.inject(server_reply(request, "ack"))
            await until(lambda: any(a["origin"] == "dhcp" for a in stack.call("addrs")))
            stack.nic_disable("channel0")
            assert not any(a["origin"] == "dhcp" for a in stack.call("addrs"))
            stack.nic_enable("channel0")
            reboot = await next_dhcp(stack, 3, seen)
            opts = {o[0]: o[1] for o in reboot[DHCP].options if isinstance(o, tuple)}
            assert opts["requested_addr"] == OFFERED and "server_id" not in opts
            assert reboot[BOOTP].ciaddr == "0.0.0.0"
            assert not any(dhcp_type(p) in (1, 7) for p in seen)  # no DISCOVER, no RELEASE
            stack.link.inject(server_reply(reboot, "ack"))
            await until(lambda: any(a["origin"] == "dhcp" for a in stack.call("addrs")))

    run(go(), timeout=20)
