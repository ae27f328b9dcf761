"""Coverage-guided fuzzing (atheris, libFuzzer) of the way into a shard:
each input is one to eight Ethernet frames that arrive on the link of an
in-process stack (the embedded ``Stack``: the dispatcher's classification
and IP reassembly, then the shard's ingress, network layer, ICMP, NDP,
IGMP/MLD, UDP and TCP with an echo server listening on port 7 for both).

A frame may cost the stack CPU but must never raise past the layer that
parses it: the ingress counts a ``MalformedPacket`` as a drop, and anything
else as ``internal_errors`` (a bug; the shard goes on). The fuzzer turns
that count, and any exception the event loop catches, into a crash with
the original traceback, so libFuzzer saves the input.

    python -m tests.fuzz.frames NEW_DIR tests/fuzz/corpus -max_total_time=60

reads the kept corpus, writes what it finds to NEW_DIR; ``-merge=1
tests/fuzz/corpus NEW_DIR`` folds the new inputs into the kept corpus.
``python -m tests.fuzz.frames --seeds DIR`` writes the hand-made seed
frames (scapy) that the corpus started from.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import atheris

MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
SEPARATOR = b"\xfe\xed\xfa\xce"  # between the frames of one input
MAX_FRAMES = 8


class Bugs(logging.Handler):
    """Collects the tracebacks the shard logs for a handler that raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.found.append(self.format(record))


class Target:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.bugs = Bugs()
        logging.getLogger("shardnet").addHandler(self.bugs)
        self.loop.set_exception_handler(self._loop_error)
        with atheris.instrument_imports(include=["shardnet"]):
            from shardnet.embedded.stack import Stack
        self.stack = Stack(
            mac=MAC, ipv4="198.18.0.2/24", ipv6="2001:db8::2/64", gateway4="198.18.0.1",
            serve=("echo:7",), seed=1, drain_s=0.0,
        )  # fmt: skip
        self.loop.run_until_complete(self.stack.start())

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.bugs.found.append(f"{context.get('message')}: {exc!r}")

    def run(self, data: bytes) -> None:
        for frame in data.split(SEPARATOR)[:MAX_FRAMES]:
            self.stack.link.inject(frame)
        for _ in range(3):  # the link's reader, then what the frames scheduled
            self.loop.run_until_complete(asyncio.sleep(0))
        self.stack.link.drain()  # what the stack sent: not kept
        if self.bugs.found:
            raise AssertionError("\n".join(self.bugs.found))


def seeds() -> dict[str, bytes]:
    """Frames of every kind the stack handles, addressed to it."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoRequest,
        ICMPv6MLQuery2,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6ND_RA,
        ICMPv6NDOptMTU,
        ICMPv6NDOptPrefixInfo,
        ICMPv6NDOptRDNSS,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        RouterAlert,
    )
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    me, peer = MAC.hex(":"), PEER_MAC.hex(":")
    eth = Ether(dst=me, src=peer)
    v4 = IP(src="198.18.0.1", dst="198.18.0.2")
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    ll = IPv6(src="fe80::1", dst="ff02::1", hlim=255)
    syn_v4 = v4 / TCP(sport=40000, dport=7, flags="S", seq=1000, options=[
        ("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)])  # fmt: skip
    frames = {
        "arp_request": Ether(dst="ff:ff:ff:ff:ff:ff", src=peer)
        / ARP(op=1, hwsrc=peer, psrc="198.18.0.1", pdst="198.18.0.2"),
        "arp_reply": eth / ARP(op=2, hwsrc=peer, psrc="198.18.0.1", hwdst=me, pdst="198.18.0.2"),
        "icmp_echo": eth / v4 / ICMP(type=8, id=1, seq=1) / (b"x" * 56),
        "icmp_unreach_tcp": eth / v4 / ICMP(type=3, code=1) / bytes(syn_v4)[:28],
        "icmp_frag_needed": eth / v4 / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(syn_v4)[:28],
        "tcp_syn": eth / syn_v4,
        "tcp_ack_data": eth / v4 / TCP(sport=40000, dport=7, flags="PA", seq=1001, ack=1) / b"hi",
        "tcp_fin": eth / v4 / TCP(sport=40000, dport=7, flags="FA", seq=1001, ack=1),
        "tcp_rst": eth / v4 / TCP(sport=40000, dport=7, flags="R", seq=1001),
        "tcp_closed_port": eth / v4 / TCP(sport=40001, dport=9, flags="S", seq=5),
        "udp_echo": eth / v4 / UDP(sport=5000, dport=7) / b"ping",
        "udp_closed": eth / v4 / UDP(sport=5000, dport=9) / b"x",
        "ipv4_options": eth
        / IP(src="198.18.0.1", dst="198.18.0.2", options=b"\x94\x04\x00\x00")
        / ICMP(type=8),
        "igmp_query": Ether(dst="01:00:5e:00:00:01", src=peer)
        / IP(src="198.18.0.1", dst="224.0.0.1", ttl=1, proto=2)
        / bytes.fromhex("11640000000000000a020000"),
        "vlan": Ether(dst=me, src=peer) / Dot1Q(vlan=5) / v4 / ICMP(type=8),
        "icmp6_echo": eth / v6 / ICMPv6EchoRequest(id=1, seq=1, data=b"y" * 32),
        "ns": Ether(dst="33:33:ff:00:00:02", src=peer)
        / IPv6(src="2001:db8::1", dst="ff02::1:ff00:2", hlim=255)
        / ICMPv6ND_NS(tgt="2001:db8::2")
        / ICMPv6NDOptSrcLLAddr(lladdr=peer),
        "na": eth
        / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=255)
        / ICMPv6ND_NA(tgt="2001:db8::1", R=1, S=1, O=1),
        "ra": Ether(dst="33:33:00:00:00:01", src=peer)
        / ll
        / ICMPv6ND_RA(routerlifetime=1800, reachabletime=30000, retranstimer=1000)
        / ICMPv6NDOptSrcLLAddr(lladdr=peer)
        / ICMPv6NDOptMTU(mtu=1500)
        / ICMPv6NDOptPrefixInfo(prefix="2001:db8:1::", prefixlen=64, L=1, A=1)
        / ICMPv6NDOptRDNSS(dns=["2001:db8::53"], lifetime=600),
        "mld_query": Ether(dst="33:33:00:00:00:01", src=peer)
        / IPv6(src="fe80::1", dst="ff02::1", hlim=1)
        / IPv6ExtHdrHopByHop(options=[RouterAlert()])
        / ICMPv6MLQuery2(),
        "icmp6_unreach": eth
        / v6
        / ICMPv6DestUnreach(code=4)
        / bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=7, dport=5000)),
        "tcp6_syn": eth / v6 / TCP(sport=40000, dport=7, flags="S", seq=7, options=[("MSS", 1440)]),
        "udp6": eth / v6 / UDP(sport=5000, dport=7) / b"v6",
    }
    out = {name: bytes(f) for name, f in frames.items()}
    big = v4 / ICMP(type=8, id=2, seq=1) / (b"z" * 3000)
    out["ipv4_fragments"] = SEPARATOR.join(bytes(eth / f) for f in fragment(big, 1400))
    payload = bytes(ICMPv6EchoRequest(id=3, seq=1, data=b"w" * 1600))
    out["ipv6_fragments"] = SEPARATOR.join(
        bytes(eth / IPv6(src="2001:db8::1", dst="2001:db8::2", nh=44)
              / IPv6ExtHdrFragment(nh=58, offset=off // 8, m=int(off + 1200 < len(payload)), id=9)
              / payload[off : off + 1200])
        for off in (0, 1200)
    )  # fmt: skip
    # RFC 8415: an RA with M starts the DHCPv6 client; a server's Reply (547 -> 546).
    from scapy.layers.dhcp6 import (
        DUID_LL,
        DHCP6_Reply,
        DHCP6OptClientId,
        DHCP6OptDNSServers,
        DHCP6OptIA_NA,
        DHCP6OptIAAddress,
        DHCP6OptServerId,
    )

    managed = Ether(dst="33:33:00:00:00:01", src=peer) / ll / ICMPv6ND_RA(M=1, O=1)
    reply = (
        Ether(dst="33:33:00:00:00:01", src=peer)
        / IPv6(src="fe80::1", dst="ff02::1")
        / UDP(sport=547, dport=546)
        / DHCP6_Reply(trid=1)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=me))
        / DHCP6OptServerId(duid=DUID_LL(lladdr=peer))
        / DHCP6OptIA_NA(iaid=2, T1=10, T2=20, ianaopts=[
            DHCP6OptIAAddress(addr="2001:db8::60", preflft=30, validlft=40)])
        / DHCP6OptDNSServers(dnsservers=["2001:db8::53"])
    )  # fmt: skip
    out["dhcp6_reply"] = SEPARATOR.join((bytes(managed), bytes(reply)))
    out["handshake_and_data"] = SEPARATOR.join(
        (
            out["tcp_syn"],
            bytes(eth / v4 / TCP(sport=40000, dport=7, flags="A", seq=1001, ack=1)),
            out["tcp_ack_data"],
        )
    )
    return out


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--seeds":
        from pathlib import Path

        for name, data in seeds().items():
            (Path(argv[2]) / name).write_bytes(data)
        return
    target = Target()
    # libFuzzer runs its argv[0] again for -merge=1 (through the shell, from
    # the same directory): this module, not the file.
    argv = [f"{sys.executable} -m tests.fuzz.frames", *argv[1:]]
    atheris.Setup(argv, target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
