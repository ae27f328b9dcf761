"""The TAP's admission filter: floods of connection requests and of
control-plane frames are cut down in the kernel, before the TAP's queue.

A TAP hands every frame the kernel sends into it to a queue that one Python
process drains: about 40,000-60,000 small frames a second on this machine.
A flood sent faster than that (a SYN flood or a neighbour-discovery flood
reaches 300,000 frames a second from one sender) overflows the queue, and
the kernel then drops frames without looking at them: the established
connections' segments and the pings go with the flood. The dispatcher's
own bounds (``dispatcher/backlog.py``) and the shards' SYN gates act too
late for that, on what was read.

So an eBPF socket filter runs on every frame before it is queued
(``TUNSETFILTEREBPF``; Linux ``drivers/net/tun.c``, ``run_ebpf_filter`` in
``tun_net_xmit``) and passes at most a rate of two kinds of frame, each
through its own bucket:

* connection requests (a TCP SYN without ACK, over IPv4 or over IPv6
  without extension headers), at ``SYN_RATE_PER_SHARD`` a second per shard:
  above the shards' own SYN gates (``shards/ingress.py``), so a shard still
  sees, and leaves a trace of, the SYNs it refuses, and recognises a
  client's retransmission;
* control-plane frames (what ``classify.control_plane`` names: ARP, NDP,
  MLD, IGMP, anything with no flow) at ``CONTROL_RATE_PER_S``, several
  times what shard 0 turns down a second.

Everything else (every flow's frames) always passes, unread beyond its
headers. The buckets are GCRA (the "virtual scheduling" form of a token
bucket: one theoretical arrival time per bucket) in a BPF array map shared
by every CPU; two CPUs racing on a bucket may let a frame more through,
never fewer. Each bucket's drops are counted in the map, which the
dispatcher reads into ``shardnet_drops_total{layer="link"}``.

Frames shorter than the headers read are passed: the stack counts them as
malformed. Loading needs CAP_BPF (or CAP_SYS_ADMIN); without it, or without
the ioctl, the link runs unfiltered and says why (``ctl stats``:
``link_filter``).
"""

from __future__ import annotations

import fcntl
import os
import struct

from .bpf import (
    ADD,
    AND,
    DW,
    EXIT,
    FUNC_KTIME_GET_NS,
    FUNC_MAP_LOOKUP_ELEM,
    JEQ,
    JGE,
    JGT,
    JLT,
    JMP,
    JNE,
    LSH,
    MOV,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    SUB,
    ArrayMap,
    Asm,
    B,
    BpfError,
    H,
    W,
    load_socket_filter,
)  # fmt: skip

TUNSETFILTEREBPF = 0x800454E1  # _IOR('T', 225, int)

# Per second and in a burst. Together the buckets stay well below what the
# dispatcher reads from a TAP a second (40,000-60,000 small frames on this
# machine), so that the flows' frames always find room in the queue: with
# 16,000 SYNs a second per shard a SYN flood still cost a third of the
# pings. A shard's own gate takes 8,000 SYNs a second (burst 2,048); the
# filter passes a little more, so that the gate, which recognises a
# client's retransmission, decides among them.
SYN_RATE_PER_SHARD = 10_000
SYN_BURST_PER_SHARD = 2048
# Shard 0 turns down an unwanted control-plane frame in about 80 µs (some
# 12,000 a second), and the dispatcher keeps at most 1,000 of them queued.
CONTROL_RATE_PER_S = 10_000
CONTROL_BURST = 1000

SYN, CONTROL = 0, 1  # the buckets, keys of the map
REASONS = {SYN: "syn_over_rate", CONTROL: "control_over_rate"}
# A bucket: theoretical arrival time (ns), interval (ns), tolerance (ns), drops.
_BUCKET = struct.Struct("<QQQQ")
_ETH = 14  # the IP header's offset in the frame


def admission_program(map_fd: int) -> bytes:
    """The filter's instructions; the buckets are in the map ``map_fd``."""
    a = Asm()
    a.alu64_reg(MOV, R6, R1)  # the socket buffer, for the loads
    a.load_mem(W, R7, R6, 0)  # skb->len (struct __sk_buff starts with it)
    a.jump(JLT, R7, _ETH + 20, "pass")
    a.load_abs(H, 12)  # the ethertype
    a.jump(JEQ, R0, 0x0800, "v4")
    a.jump(JEQ, R0, 0x86DD, "v6")
    a.goto("control")

    a.label("v4")  # RFC 791
    a.load_abs(B, _ETH + 9)  # the protocol
    a.jump(JEQ, R0, 17, "pass")
    a.jump(JEQ, R0, 1, "pass")
    a.jump(JNE, R0, 6, "control")
    a.load_abs(H, _ETH + 6)  # a later fragment has no TCP header
    a.alu(AND, R0, 0x1FFF)
    a.jump(JNE, R0, 0, "pass")
    a.load_abs(B, _ETH)
    a.alu(AND, R0, 0x0F)
    a.alu(LSH, R0, 2)
    a.alu(ADD, R0, _ETH + 13)  # the TCP flags
    a.alu64_reg(MOV, R8, R0)
    a.jump_reg(JGE, R8, R7, "pass")
    a.load_ind(B, R8, 0)
    a.goto("flags")

    a.label("v6")  # RFC 8200
    a.jump(JLT, R7, _ETH + 40 + 1, "pass")
    a.load_abs(B, _ETH + 6)  # the next header
    a.jump(JEQ, R0, 6, "tcp6")
    a.jump(JEQ, R0, 58, "icmp6")
    for flow in (17, 43, 44, 60):  # UDP, routing, fragment, destination options
        a.jump(JEQ, R0, flow, "pass")
    a.goto("control")
    a.label("icmp6")
    a.load_abs(B, _ETH + 40)  # the type: MLD, NDP and their kin are 130-143
    a.jump(JLT, R0, 130, "pass")
    a.jump(JGT, R0, 143, "pass")
    a.goto("control")
    a.label("tcp6")
    a.jump(JLT, R7, _ETH + 40 + 14, "pass")
    a.load_abs(B, _ETH + 40 + 13)

    a.label("flags")  # SYN without ACK
    a.alu(AND, R0, 0x12)
    a.jump(JNE, R0, 0x02, "pass")
    a.store_imm("key", SYN)
    a.goto("bucket")
    a.label("control")
    a.store_imm("key", CONTROL)

    a.label("bucket")  # GCRA: pass unless the bucket's arrival time is too far ahead
    a.load_map(R1, map_fd)
    a.slot_address(R2, "key")
    a.call(FUNC_MAP_LOOKUP_ELEM)
    a.jump(JEQ, R0, 0, "pass")
    a.alu64_reg(MOV, R9, R0)
    a.call(FUNC_KTIME_GET_NS)  # r0 = now
    a.load_mem(DW, R1, R9, 0)  # tat
    a.jump_reg(JGE, R1, R0, "later")
    a.alu64_reg(MOV, R1, R0)
    a.label("later")
    a.alu64_reg(MOV, R2, R1)
    a.alu64_reg(SUB, R2, R0)  # how far ahead of now
    a.load_mem(DW, R3, R9, 16)  # tolerance
    a.jump_reg(JGT, R2, R3, "drop")
    a.load_mem(DW, R3, R9, 8)  # interval
    a.alu64_reg(ADD, R1, R3)
    a.store_mem(DW, R9, 0, R1)

    a.label("pass")  # the whole frame
    a.alu64_reg(MOV, R0, R7)
    a.op(JMP | EXIT)
    a.label("drop")
    a.alu64(MOV, R1, 1)
    a.atomic_add(R9, 24, R1)
    a.exit_with(0)
    return a.assemble()


class LinkAdmission:
    """The filter attached to one TAP, and its counters."""

    def __init__(self, tap_fd: int, nshards: int) -> None:
        """Attach; raises ``OSError`` (``BpfError``) when the kernel refuses."""
        self.map = ArrayMap(_BUCKET.size, 2)
        try:
            for key, rate, burst in (
                (SYN, SYN_RATE_PER_SHARD * nshards, SYN_BURST_PER_SHARD * nshards),
                (CONTROL, CONTROL_RATE_PER_S, CONTROL_BURST),
            ):
                interval = 1_000_000_000 // rate
                self.map.set(key, _BUCKET.pack(0, interval, interval * burst, 0))
            prog = load_socket_filter(admission_program(self.map.fd), b"shardnet_admit")
            try:
                fcntl.ioctl(tap_fd, TUNSETFILTEREBPF, struct.pack("i", prog))
            finally:
                os.close(prog)  # the TAP holds its own reference
        except BaseException:
            self.map.close()
            raise

    def drops(self) -> dict[str, int]:
        """Frames each bucket turned away so far, by reason."""
        out = {}
        for key, reason in REASONS.items():
            try:
                out[reason] = _BUCKET.unpack(self.map.get(key))[3]
            except BpfError:
                out[reason] = 0
        return out

    def close(self, tap_fd: int) -> None:
        """Detach (a persistent TAP outlives us) and free the map."""
        try:
            fcntl.ioctl(tap_fd, TUNSETFILTEREBPF, struct.pack("i", -1))
        except OSError:
            pass
        self.map.close()


def attach_admission(tap_fd: int, nshards: int) -> tuple[LinkAdmission | None, str]:
    """The filter on ``tap_fd``, and "ebpf" or why the link runs without it."""
    try:
        return LinkAdmission(tap_fd, nshards), "ebpf"
    except OSError as exc:
        return None, f"none: {exc.strerror or exc}"
