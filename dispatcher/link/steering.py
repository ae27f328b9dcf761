"""Kernel-side flow steering for a multi-queue TAP: an eBPF program that
computes shardnet's own flow hash (``common/flowhash.py``), so the kernel
puts every frame of a flow on the queue of the shard that owns it, from the
very first frame.

Without it the kernel picks a queue by its own hash (keyed with a secret
of the running kernel) and only learns a flow's queue once a shard writes
on it: the first frames of every new flow (a SYN, a DNS query, a ping from a
new peer) land on a shard that does not own them, and travel on through the
dispatcher. With ``TUNSETSTEERINGEBPF`` the kernel runs the program for each
frame it sends into the TAP and takes its return value (modulo the number of
queues) as the queue (Linux ``drivers/net/tun.c``, ``tun_ebpf_select_queue``).

Queue 0 is the dispatcher's (the TAP's first fd); shard ``i`` reads queue
``i + 1``. The program steers what ``classify`` hashes the simple way — TCP
and UDP over IPv4 (any header length, not a fragment) and over IPv6 without
extension headers, and ICMP/ICMPv6 echo — to ``1 + flow_hash % nshards``, and
everything else (ARP, NDP, fragments, ICMP errors, extension headers, short
frames) to queue 0, where the dispatcher classifies it as on a single-queue
link. A shard still checks each frame it reads and hands one it does not own
to the dispatcher, so the program only ever decides speed, never
correctness.

The hash is CRC-32 (``zlib.crc32`` seeded with the protocol number) over
the two endpoints ordered as ``flow_hash`` orders them, computed a bit at a
time (RFC 1952 §8's reflected CRC with polynomial 0xEDB88320): about 1,900
instructions for IPv6, run by the kernel's JIT.

Loading needs CAP_BPF (or CAP_SYS_ADMIN); where that, the bpf(2) system call
or the ioctl is missing, the TAP keeps the kernel's own steering and the
reason is reported (``ctl stats``: the dispatcher's ``steering``).
"""

from __future__ import annotations

import fcntl
import os
import struct

from .bpf import (
    ADD,
    ALU64,
    AND,
    EXIT,
    JEQ,
    JGT,
    JLT,
    JMP,
    JNE,
    LSH,
    MOD,
    MOV,
    MUL,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    RSH,
    XOR,
    Asm,
    B,
    BpfError,
    H,
    K,
    W,
    X,
    load_socket_filter,
)  # fmt: skip

CRC32_POLY = 0xEDB88320  # reflected CRC-32 (zlib's)
_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58
_ETH = 14  # the IP header's offset in the frame

TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)


def _crc_byte(asm: Asm, byte: int) -> None:
    """crc (r7) takes in the byte in ``byte``: eight reflected steps."""
    asm.alu_reg(XOR, R7, byte)
    for _ in range(8):  # crc = (crc >> 1) ^ (POLY * (crc & 1))
        # A multiply, not a 0/-1 mask: the verifier follows an AND with such
        # a mask as two states, 2**n over the unrolled bits.
        asm.alu_reg(MOV, R3, R7)
        asm.alu(AND, R3, 1)
        asm.alu(MUL, R3, CRC32_POLY)
        asm.alu(RSH, R7, 1)
        asm.alu_reg(XOR, R7, R3)


def _crc_slot(asm: Asm, slot: str, nbytes: int) -> None:
    """The big-endian ``nbytes`` (4: an address word, 2: a port) of a slot."""
    asm.fetch(R1, slot)
    for shift in range(8 * (nbytes - 1), -1, -8):
        asm.alu_reg(MOV, R2, R1)
        if shift:
            asm.alu(RSH, R2, shift)
        asm.alu(AND, R2, 0xFF)
        _crc_byte(asm, R2)


def _family(asm: Asm, tag: str, words: int, nshards: int) -> None:
    """Order the endpoints (``flow_hash``: the smaller address first, then
    the smaller port), CRC them, return ``1 + crc % nshards``. Expects the
    addresses in slots ``{tag}s0..``/``{tag}d0..``, the ports in
    ``{tag}sp``/``{tag}dp`` and the protocol in r9."""
    src = [f"{tag}s{i}" for i in range(words)] + [f"{tag}sp"]
    dst = [f"{tag}d{i}" for i in range(words)] + [f"{tag}dp"]
    for a, b in zip(src, dst, strict=True):  # lexicographic, as bytes compare
        asm.fetch(R1, a)
        asm.fetch(R2, b)
        asm.jump_reg(JGT, R1, R2, f"{tag}_swap")
        asm.jump_reg(JLT, R1, R2, f"{tag}_keep")
    asm.label(f"{tag}_keep")
    for a, b in zip(src + dst, [f"{tag}x{i}" for i in range(2 * words + 2)], strict=True):
        asm.fetch(R1, a)
        asm.store(b, R1)
    asm.goto(f"{tag}_crc")
    asm.label(f"{tag}_swap")
    for a, b in zip(dst + src, [f"{tag}x{i}" for i in range(2 * words + 2)], strict=True):
        asm.fetch(R1, a)
        asm.store(b, R1)
    asm.label(f"{tag}_crc")
    # The same registers whichever way the endpoints were ordered, so that the
    # verifier checks the CRC below once, not once per ordering.
    for reg in (R0, R1, R2):
        asm.op(ALU64 | MOV | K, reg, imm=0)
    asm.alu_reg(MOV, R7, R9)  # zlib.crc32(data, proto): the register starts at ~proto
    asm.alu(XOR, R7, 0xFFFFFFFF)
    for i in range(2 * words + 2):
        _crc_slot(asm, f"{tag}x{i}", 2 if i in (words, 2 * words + 1) else 4)
    asm.alu(XOR, R7, 0xFFFFFFFF)
    asm.alu(MOD, R7, nshards)
    asm.alu(ADD, R7, 1)
    asm.alu_reg(MOV, R0, R7)
    asm.op(JMP | EXIT)


def _ports_or_echo(asm: Asm, tag: str, icmp: int, echo: tuple[int, int]) -> None:
    """TCP/UDP ports, or an echo's identifier as both ports (``classify``);
    anything else to queue 0. The L4 header starts at r8."""
    asm.jump(JEQ, R9, _TCP, f"{tag}_ports")
    asm.jump(JEQ, R9, _UDP, f"{tag}_ports")
    asm.jump(JNE, R9, icmp, "dispatcher")
    asm.load_ind(B, R8, 0)  # the ICMP type
    asm.jump(JEQ, R0, echo[0], f"{tag}_echo")
    asm.jump(JNE, R0, echo[1], "dispatcher")
    asm.label(f"{tag}_echo")
    asm.load_ind(B, R8, 7)  # classify wants the whole 8-byte echo header
    asm.load_ind(H, R8, 4)  # the identifier
    asm.store(f"{tag}sp", R0)
    asm.store(f"{tag}dp", R0)
    asm.goto(f"{tag}_hash")
    asm.label(f"{tag}_ports")
    asm.load_ind(H, R8, 0)
    asm.store(f"{tag}sp", R0)
    asm.load_ind(H, R8, 2)
    asm.store(f"{tag}dp", R0)
    asm.label(f"{tag}_hash")


def steering_program(nshards: int) -> bytes:
    """The program's instructions for ``nshards`` shards (queues 1..nshards)."""
    if nshards < 1:
        raise ValueError(f"{nshards} shards")
    asm = Asm()
    asm.op(ALU64 | MOV | X, R6, R1)  # the socket buffer (64-bit: a pointer), for the loads
    asm.load_abs(H, 12)  # the ethertype
    asm.jump(JEQ, R0, 0x0800, "v4")
    asm.jump(JEQ, R0, 0x86DD, "v6")
    asm.goto("dispatcher")

    asm.label("v4")  # RFC 791
    asm.load_abs(B, _ETH)
    asm.alu_reg(MOV, R1, R0)
    asm.alu(RSH, R1, 4)
    asm.jump(JNE, R1, 4, "dispatcher")
    asm.alu(AND, R0, 0x0F)
    asm.alu(LSH, R0, 2)  # the header length in bytes
    asm.jump(JLT, R0, 20, "dispatcher")
    asm.alu(ADD, R0, _ETH)
    asm.op(ALU64 | MOV | X, R8, R0)
    asm.load_abs(H, _ETH + 6)  # a fragment (MF or an offset): the dispatcher reassembles
    asm.alu(AND, R0, 0x3FFF)
    asm.jump(JNE, R0, 0, "dispatcher")
    asm.load_abs(B, _ETH + 9)
    asm.op(ALU64 | MOV | X, R9, R0)
    asm.load_abs(W, _ETH + 12)
    asm.store("4s0", R0)
    asm.load_abs(W, _ETH + 16)
    asm.store("4d0", R0)
    _ports_or_echo(asm, "4", _ICMP, (0, 8))
    _family(asm, "4", 1, nshards)

    asm.label("v6")  # RFC 8200: no extension header here (the dispatcher walks them)
    asm.load_abs(B, _ETH)
    asm.alu(RSH, R0, 4)
    asm.jump(JNE, R0, 6, "dispatcher")
    asm.load_abs(B, _ETH + 6)
    asm.op(ALU64 | MOV | X, R9, R0)
    for i in range(4):
        asm.load_abs(W, _ETH + 8 + 4 * i)
        asm.store(f"6s{i}", R0)
        asm.load_abs(W, _ETH + 24 + 4 * i)
        asm.store(f"6d{i}", R0)
    asm.op(ALU64 | MOV | K, R8, imm=_ETH + 40)
    _ports_or_echo(asm, "6", _ICMPV6, (128, 129))
    _family(asm, "6", 4, nshards)
    asm.label("dispatcher")  # last: every jump is forward (no loop for the verifier)
    asm.exit_with(0)
    return asm.assemble()


def attach_steering(tap_fd: int, nshards: int) -> str:
    """Load the program and make it the TAP's steering; returns "ebpf", or
    why the kernel's own steering stays ("automq: ..."). Never raises."""
    try:
        prog = load_socket_filter(steering_program(nshards), b"shardnet_steer")
    except BpfError as exc:
        return f"automq: the kernel refused the steering program ({exc.strerror})"
    try:
        fcntl.ioctl(tap_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog))
    except OSError as exc:
        return f"automq: TUNSETSTEERINGEBPF failed ({exc.strerror})"
    finally:
        os.close(prog)  # the TAP holds its own reference
    return "ebpf"
