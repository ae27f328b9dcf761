"""Run inside a test's namespace: a multi-queue TAP with one queue for the
dispatcher and one per shard, the steering program attached, and frames of
every kind sent into it by the kernel (an AF_PACKET socket on the TAP, as
the kernel transmits any frame routed there). Prints one JSON line: the
steering outcome and, per frame, its kind, the queue it arrived on and
``classify``'s shard.

``python -c "from tests.apps.steering_probe import main; main(NSHARDS, COUNT, SEED)"``
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import struct
import subprocess
import time

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from shardnet.common.classify import classify
from shardnet.dispatcher.link.steering import attach_steering

TAP = "snsteer0"
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x0100
# Kinds the program hashes itself; every other kind goes to queue 0.
HASHED = {"tcp4", "udp4", "echo4", "tcp6", "udp6", "echo6"}


def _addr4(rng: random.Random) -> str:
    return f"198.{rng.choice((18, 19))}.{rng.randrange(256)}.{rng.randrange(256)}"


def _addr6(rng: random.Random) -> str:
    return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(6))


def frame(kind: str, rng: random.Random) -> Packet:
    ports = {"sport": rng.randrange(65536), "dport": rng.randrange(65536)}
    if rng.random() < 0.1:  # equal ports: the order then rests on the addresses
        ports["dport"] = ports["sport"]
    v4 = IP(src=_addr4(rng), dst=_addr4(rng))
    if rng.random() < 0.1:
        v4.dst = v4.src  # equal addresses: the order rests on the ports
    if rng.random() < 0.2:
        v4.options = [b"\x01" * 4 * rng.randrange(1, 10)]  # NOPs: a longer header
    v6 = IPv6(src=_addr6(rng), dst=_addr6(rng))
    payload = Raw(bytes(rng.randrange(64)))
    body: Packet = {
        "tcp4": lambda: v4 / TCP(**ports) / payload,
        "udp4": lambda: v4 / UDP(**ports) / payload,
        "echo4": lambda: v4 / ICMP(type=rng.choice((0, 8)), id=rng.randrange(65536)),
        "frag4": lambda: IP(src=v4.src, dst=v4.dst, flags="MF") / UDP(**ports) / payload,
        "error4": lambda: v4 / ICMP(type=3, code=3) / IP(src=v4.dst, dst=v4.src) / UDP(**ports),
        "tcp6": lambda: v6 / TCP(**ports) / payload,
        "udp6": lambda: v6 / UDP(**ports) / payload,
        "echo6": lambda: (
            v6 / rng.choice((ICMPv6EchoRequest, ICMPv6EchoReply))(id=rng.randrange(65536))
        ),
        "ext6": lambda: v6 / IPv6ExtHdrDestOpt() / UDP(**ports) / payload,
        "frag6": lambda: v6 / IPv6ExtHdrFragment(m=1) / UDP(**ports) / payload,
        "error6": lambda: v6 / ICMPv6DestUnreach() / IPv6(src=v6.dst, dst=v6.src) / UDP(**ports),
        "arp": lambda: ARP(psrc="198.18.0.1", pdst="198.18.0.2"),
    }[kind]()
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / body


def main(nshards: int, count: int, seed: int) -> None:
    queues = []
    for _ in range(nshards + 1):  # queue 0 is the dispatcher's, then shard i's is i + 1
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(
            fd, TUNSETIFF, struct.pack("16sH", TAP.encode(), IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE)
        )
        queues.append(fd)
    steering = attach_steering(queues[0], nshards)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    rng = random.Random(seed)
    kinds = sorted(HASHED) + ["frag4", "error4", "ext6", "frag6", "error6", "arp"]
    sent = [(kind, bytes(frame(kind, rng))) for kind in (rng.choice(kinds) for _ in range(count))]
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out.bind((TAP, 0))
    arrived: dict[bytes, int] = {}
    for _, data in sent:
        out.send(data)
    time.sleep(0.2)
    for index, fd in enumerate(queues):
        while True:
            try:
                arrived[os.read(fd, 65536)] = index
            except BlockingIOError:
                break
    results = [(kind, arrived.get(data, -1), classify(data, nshards)) for kind, data in sent]
    print(json.dumps({"steering": steering, "frames": results}))
