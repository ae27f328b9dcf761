"""Links against the real kernel, each test in its own network namespace.

The link code runs in a child process inside the namespace (``ip netns exec
NS python -c ...``), never in the pytest process; the child prints one JSON
line that the test checks. The kernel side holds 198.18.0.1/24; shardnet is
198.18.0.2 with its own MAC.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.netns import Netns, skip_unless_netns, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

# Code every child starts with: frame builders and a reader with a deadline.
PRELUDE = """
import json, os, select, socket, struct, subprocess, sys, time
from shardnet.common import checksum
from shardnet.common.addr import format_mac
from shardnet.common.wire.virtio import F_NEEDS_CSUM, VirtioNetHeader
from shardnet.dispatcher.link import LinkCaps, LinkError, PacketLink, TapLink

KERNEL_IP = socket.inet_aton("198.18.0.1")
OUR_IP = socket.inet_aton("198.18.0.2")

def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, capture_output=True)

def arp_request(mac):
    return (b"\\xff" * 6 + mac + b"\\x08\\x06"
            + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, OUR_IP, bytes(6), KERNEL_IP))

def udp_frame(dst_mac, src_mac, dport, payload, offload):
    # IPv4 + UDP from 198.18.0.2:4000 to 198.18.0.1:dport. With offload the
    # UDP checksum field holds the folded pseudo-header sum (not inverted)
    # and the link completes it (virtio NEEDS_CSUM).
    ulen = 8 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0x4000, 64, 17, 0, OUR_IP, KERNEL_IP))
    ip[10:12] = checksum.checksum(ip).to_bytes(2, "big")
    pseudo = checksum.pseudo_header(OUR_IP, KERNEL_IP, 17, ulen)
    udp = bytearray(struct.pack("!HHHH", 4000, dport, ulen, 0) + payload)
    if offload:
        udp[6:8] = pseudo.to_bytes(2, "big")
    else:
        udp[6:8] = (checksum.checksum(udp, pseudo) or 0xFFFF).to_bytes(2, "big")
    return dst_mac + src_mac + b"\\x08\\x00" + bytes(ip) + bytes(udp)

def read_until(link, want, resend=None, timeout=5.0):
    # Frames (bytes, vnet header or None) until want(frame) or the deadline.
    # resend() is called now and every 0.5 s: until linkwatch activates a new
    # device's qdisc (up to a second after it comes up), frames sent on it
    # are dropped silently, so a request may need repeating, as ARP does.
    seen = []
    deadline = time.monotonic() + timeout
    next_send = 0.0
    while time.monotonic() < deadline:
        if resend is not None and time.monotonic() >= next_send:
            resend()
            next_send = time.monotonic() + 0.5
        select.select([link], [], [], 0.1)
        for f in link.read_batch():
            item = (bytes(f.data), f.vnet.header() if f.vnet else None)
            seen.append(item)
            if want(item[0]):
                return item, seen
    return None, seen

def is_arp_reply_to(mac):
    return lambda f: f[12:14] == b"\\x08\\x06" and f[0:6] == mac and f[20:22] == b"\\x00\\x02"

def is_udp_to(port):
    return lambda f: f[12:14] == b"\\x08\\x00" and f[23] == 17 and f[36:38] == port.to_bytes(2, "big")

def done(**result):
    print(json.dumps(result))
"""


def run_child(ns: Netns, body: str) -> dict:
    res = ns.python(PRELUDE + body, check=False, timeout=60)
    if res.returncode != 0:
        raise AssertionError(f"child failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture
def ns():
    skip_unless_netns()
    with Netns("lnk") as ns:
        yield ns


def link_exists(ns: Netns, name: str) -> bool:
    return ns.run(["ip", "link", "show", name], check=False).returncode == 0


@pytest.mark.parametrize("vnet_hdr", [True, False])
def test_tap_arp_with_the_kernel(ns: Netns, vnet_hdr: bool) -> None:
    r = run_child(
        ns,
        f"""
link = TapLink.open("sntap0", vnet_hdr={vnet_hdr})
sh("ip addr add 198.18.0.1/24 dev sntap0")
reply, seen = read_until(link, is_arp_reply_to(link.mac), lambda: link.write([arp_request(link.mac)]))
kernel_mac = link.kernel_mac
result = dict(
    created=link.created, caps=int(link.capabilities), mtu=link.mtu,
    our_mac=link.mac.hex(), kernel_mac=kernel_mac.hex(),
    reply=reply[0].hex() if reply else None, vnet=repr(reply[1]) if reply else None,
    echoed=any(f[6:12] == link.mac for f, _ in seen),
    tx=link.writer.frames, rx=link.rx_frames, drops=link.rx_drops)
link.close()
result["exists_after_close"] = subprocess.run(["ip", "link", "show", "sntap0"], capture_output=True).returncode == 0
done(**result)
""",
    )
    assert r["created"] and not r["exists_after_close"]
    assert r["mtu"] == 1500 and r["tx"] >= 1 and r["drops"] == 0
    assert r["our_mac"].startswith("02") and r["our_mac"] != r["kernel_mac"]
    reply = bytes.fromhex(r["reply"])
    # the kernel's ARP reply: 198.18.0.1 is at the TAP's MAC, sent to ours
    assert reply[0:6].hex() == r["our_mac"] and reply[6:12].hex() == r["kernel_mac"]
    assert reply[22:28].hex() == r["kernel_mac"] and reply[28:32] == bytes([198, 18, 0, 1])
    assert reply[38:42] == bytes([198, 18, 0, 2])
    assert not r["echoed"]  # a TAP never hands back what we wrote
    caps = r["caps"]
    if vnet_hdr:
        # VNET_HDR, TX_CSUM, and by default the receive offloads RX_CSUM, RX_GSO
        assert caps & 0x01 and caps & 0x02 and caps & 0x10 and caps & 0x20
        assert (
            r["vnet"]
            == "VirtioNetHeader(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0, num_buffers=0)"
        )
    else:
        assert caps == 0 and r["vnet"] == "None"


def test_tap_checksum_offload_both_ways(ns: Netns) -> None:
    """With TUN_F_CSUM the kernel hands over UDP with NEEDS_CSUM (csum_start
    34, offset 6); a frame we write with NEEDS_CSUM and only the
    pseudo-header sum is accepted and delivered to a kernel socket."""
    r = run_child(
        ns,
        """
from shardnet.dispatcher.link.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6
link = TapLink.open("sntap0")
link.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
sh("ip addr add 198.18.0.1/24 dev sntap0")
sh(f"ip neigh replace 198.18.0.2 lladdr {format_mac(link.mac)} dev sntap0")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.1", 7000))
got, _ = read_until(link, is_udp_to(9), lambda: s.sendto(b"k" * 200, ("198.18.0.2", 9)))
rx_vnet = got[1]
frame = udp_frame(link.kernel_mac, link.mac, 7000, b"offloaded", offload=True)
link.write([frame[:42], frame[42:]], VirtioNetHeader(F_NEEDS_CSUM, csum_start=34, csum_offset=6))
s.settimeout(3)
data, addr = s.recvfrom(100)
done(caps=link.capabilities.name, flags=rx_vnet.flags, csum_start=rx_vnet.csum_start,
     csum_offset=rx_vnet.csum_offset, data=data.decode(), addr=list(addr), len=len(got[0]))
link.close()
""",
    )
    assert "RX_CSUM" in r["caps"] and "RX_GSO" in r["caps"]
    assert (r["flags"], r["csum_start"], r["csum_offset"]) == (1, 34, 6)
    assert r["len"] == 14 + 20 + 8 + 200
    assert r["data"] == "offloaded" and r["addr"] == ["198.18.0.2", 4000]


def test_tap_bad_checksum_without_offload_is_dropped_by_the_kernel(ns: Netns) -> None:
    """The oracle for the test above: without NEEDS_CSUM the kernel checks
    the UDP checksum, so a right one arrives and a wrong one does not."""
    r = run_child(
        ns,
        """
link = TapLink.open("sntap0")
sh("ip addr add 198.18.0.1/24 dev sntap0")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.1", 7000))
s.settimeout(1)
bad = bytearray(udp_frame(link.kernel_mac, link.mac, 7000, b"bad", offload=False))
bad[40] ^= 0xFF
link.write([bytes(bad)])
good = udp_frame(link.kernel_mac, link.mac, 7000, b"good", offload=False)
link.write([good])
data, _ = s.recvfrom(100)
try:
    more = s.recvfrom(100)[0].decode()
except socket.timeout:
    more = None
done(first=data.decode(), more=more)
link.close()
""",
    )
    assert r == {"first": "good", "more": None}


def test_shard_process_writes_with_the_spec(ns: Netns) -> None:
    """The supervisor's way: tx_spec() goes to a spawned process, which
    writes on its own duplicate of the TAP fd (a UDP datagram with checksum
    offload); a kernel socket receives it."""
    r = run_child(
        ns,
        """
import multiprocess

def shard(spec, frame):
    # dill sends this function by value, without this module's globals
    from shardnet.common.link_tx import open_writer
    from shardnet.common.wire.virtio import F_NEEDS_CSUM, VirtioNetHeader

    w = open_writer(spec)
    w.write([frame], VirtioNetHeader(F_NEEDS_CSUM, csum_start=34, csum_offset=6))
    w.close()
    assert (w.frames, w.drops) == (1, 0)

if __name__ == "__main__":
    link = TapLink.open("sntap0")
    sh("ip addr add 198.18.0.1/24 dev sntap0")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.0.1", 7000))
    s.settimeout(5)
    frame = udp_frame(link.kernel_mac, link.mac, 7000, b"from a shard", offload=True)
    p = multiprocess.get_context("spawn").Process(target=shard, args=(link.tx_spec(), frame))
    p.start()
    p.join(30)
    data, addr = s.recvfrom(100)
    done(exitcode=p.exitcode, data=data.decode(), link_tx=link.writer.frames)
    link.close()
""",
    )
    assert r == {"exitcode": 0, "data": "from a shard", "link_tx": 0}


def test_persistent_tap_stays_and_busy_is_reported(ns: Netns) -> None:
    ns.run("ip tuntap add dev sntap1 mode tap")
    r = run_child(
        ns,
        """
link = TapLink.open("sntap1", mtu=1400)
try:
    TapLink.open("sntap1")
    busy = None
except LinkError as e:
    busy = str(e)
done(created=link.created, mtu=link.mtu, busy=busy)
link.close()
""",
    )
    assert r["created"] is False and r["mtu"] == 1400
    assert r["busy"] == "TAP sntap1 is in use by another process"
    assert link_exists(ns, "sntap1")  # it existed before: close() kept it
    assert "mtu 1400" in ns.run("ip link show sntap1").stdout


def test_not_a_tap_is_reported_and_kept(ns: Netns) -> None:
    ns.run("ip link add snveth0 type veth peer name snveth1")
    r = run_child(
        ns,
        """
try:
    TapLink.open("snveth0")
    err = None
except LinkError as e:
    err = str(e)
done(err=err)
""",
    )
    assert r["err"] == "snveth0 exists and is not a single-queue TAP"
    assert link_exists(ns, "snveth0")


def test_multi_queue(ns: Netns) -> None:
    r = run_child(
        ns,
        """
link = TapLink.open("sntap0", multi_queue=True)
fd = link.open_queue()
done(caps=link.capabilities.name, queue_fd=fd > 2,
     queues=len(os.listdir("/sys/class/net/sntap0/queues")))
link.close()
""",
    )
    assert "MULTI_QUEUE" in r["caps"] and r["queue_fd"]
    assert r["queues"] == 4  # two rx and two tx queues
    assert not link_exists(ns, "sntap0")


def test_no_permission_is_one_line(ns: Netns) -> None:
    r = run_child(
        ns,
        """
os.setgid(65534)
os.setuid(65534)
try:
    TapLink.open("sntap0")
    err = None
except LinkError as e:
    err = [str(e), e.errno]
done(err=err)
""",
    )
    assert r["err"] == ["no permission to open /dev/net/tun: run as root or with CAP_NET_ADMIN", 13]


@pytest.mark.parametrize("vnet_hdr", [True, False])
def test_packet_link_on_veth(ns: Netns, vnet_hdr: bool) -> None:
    ns.run(
        "ip link add snveth0 type veth peer name snveth1 && ip link set snveth0 up"
        " && ip link set snveth1 up && ip addr add 198.18.0.1/24 dev snveth1"
    )
    r = run_child(
        ns,
        f"""
from shardnet.common.link_tx import open_writer
link = PacketLink.open("snveth0", vnet_hdr={vnet_hdr})
writer = open_writer(link.tx_spec())  # a shard's own socket
reply, seen = read_until(link, is_arp_reply_to(link.mac), lambda: writer.write([arp_request(link.mac)]))
sh(f"ip neigh replace 198.18.0.2 lladdr {{format_mac(link.mac)}} dev snveth1")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp, _ = read_until(link, is_udp_to(9), lambda: s.sendto(b"k" * 200, ("198.18.0.2", 9)))
done(caps=link.capabilities.name, promisc=link.promiscuous, mtu=link.mtu,
     reply=reply[0].hex() if reply else None, echoed=any(f[6:12] == link.mac for f, _ in seen),
     udp_flags=udp[1].flags if udp and udp[1] else None, writer_tx=writer.frames,
     spec=[link.tx_spec().kind, link.tx_spec().ifname, link.tx_spec().vnet_hdr_len])
writer.close()
link.close()
""",
    )
    assert r["reply"] is not None and not r["echoed"]  # our own send is not read back
    assert r["promisc"] and r["mtu"] == 1500 and r["writer_tx"] >= 1
    assert r["spec"] == ["packet", "snveth0", 10 if vnet_hdr else 0]
    if vnet_hdr:
        assert "VNET_HDR" in r["caps"] and "RX_CSUM" in r["caps"]
        assert r["udp_flags"] == 1  # veth passes the partial checksum on: NEEDS_CSUM
    else:
        assert r["caps"] == "NONE" and r["udp_flags"] is None


def test_packet_link_missing_interface(ns: Netns) -> None:
    r = run_child(
        ns,
        """
try:
    PacketLink.open("snnothere")
    err = None
except LinkError as e:
    err = str(e)
done(err=err)
""",
    )
    assert r["err"].startswith("no interface snnothere")


def test_netns_helper_cleans_up() -> None:
    skip_unless_netns()
    with Netns("lnk") as ns:
        name = ns.name
        proc = ns.popen(["sleep", "60"])
        assert wait_until(ns.pids)  # ip netns exec enters the namespace after it starts
        assert name.startswith("sn-lnk-")
    assert proc.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed
