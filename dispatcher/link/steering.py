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

import ctypes
import fcntl
import os
import platform
import struct
from dataclasses import dataclass, field

# bpf(2) instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
_LD, _LDX, _STX, _ALU, _JMP, _ALU64 = 0x00, 0x01, 0x03, 0x04, 0x05, 0x07
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND, _MEM = 0x20, 0x40, 0x60
_ADD, _MUL, _AND, _LSH, _RSH, _MOD, _XOR, _MOV = 0x00, 0x20, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0
_K, _X = 0x00, 0x08
_JA, _JEQ, _JGT, _JNE, _JLT, _EXIT = 0x00, 0x10, 0x20, 0x50, 0xA0, 0x90
_R0, _R1, _R2, _R3, _R6, _R7, _R8, _R9, _R10 = 0, 1, 2, 3, 6, 7, 8, 9, 10

CRC32_POLY = 0xEDB88320  # reflected CRC-32 (zlib's)
_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58
_ETH = 14  # the IP header's offset in the frame

BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
_LOG_SIZE = 1 << 20


def _s32(value: int) -> int:
    """An unsigned 32-bit immediate as the signed field of an instruction."""
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(slots=True)
class _Asm:
    """A tiny eBPF assembler: instructions with symbolic jump targets."""

    insns: list[tuple[int, int, int, int | str, int]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    _slots: dict[str, int] = field(default_factory=dict)

    def op(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.insns.append((code, dst, src, off, _s32(imm) if imm >= 0 else imm))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def slot(self, name: str) -> int:
        """A 32-bit stack slot (an offset from the frame pointer r10)."""
        if name not in self._slots:
            self._slots[name] = -4 * (len(self._slots) + 1)
        return self._slots[name]

    # -- the instructions used
    def alu(self, operation: int, dst: int, imm: int) -> None:
        self.op(_ALU | operation | _K, dst, imm=imm)

    def alu_reg(self, operation: int, dst: int, src: int) -> None:
        self.op(_ALU | operation | _X, dst, src)

    def load_abs(self, size: int, offset: int) -> None:
        """r0 = the frame's ``size`` bytes at ``offset``, in host order; a
        frame too short ends the program with 0."""
        self.op(_LD | _ABS | size, imm=offset)

    def load_ind(self, size: int, reg: int, offset: int) -> None:
        self.op(_LD | _IND | size, src=reg, imm=offset)

    def store(self, slot: str, src: int) -> None:
        self.op(_STX | _MEM | _W, _R10, src, self.slot(slot))

    def fetch(self, dst: int, slot: str) -> None:
        self.op(_LDX | _MEM | _W, dst, _R10, self.slot(slot))

    def jump(self, operation: int, dst: int, imm: int, target: str) -> None:
        self.op(_JMP | operation | _K, dst, off=target, imm=imm)

    def jump_reg(self, operation: int, dst: int, src: int, target: str) -> None:
        self.op(_JMP | operation | _X, dst, src, off=target)

    def goto(self, target: str) -> None:
        self.op(_JMP | _JA, off=target)

    def exit_with(self, value: int) -> None:
        self.op(_ALU64 | _MOV | _K, _R0, imm=value)
        self.op(_JMP | _EXIT)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, dst, src, off, imm) in enumerate(self.insns):
            rel = self.labels[off] - pc - 1 if isinstance(off, str) else off
            out += struct.pack("<BBhi", code, (src << 4) | dst, rel, imm)
        return bytes(out)


def _crc_byte(asm: _Asm, byte: int) -> None:
    """crc (r7) takes in the byte in ``byte``: eight reflected steps."""
    asm.alu_reg(_XOR, _R7, byte)
    for _ in range(8):  # crc = (crc >> 1) ^ (POLY * (crc & 1))
        # A multiply, not a 0/-1 mask: the verifier follows an AND with such
        # a mask as two states, 2**n over the unrolled bits.
        asm.alu_reg(_MOV, _R3, _R7)
        asm.alu(_AND, _R3, 1)
        asm.alu(_MUL, _R3, CRC32_POLY)
        asm.alu(_RSH, _R7, 1)
        asm.alu_reg(_XOR, _R7, _R3)


def _crc_slot(asm: _Asm, slot: str, nbytes: int) -> None:
    """The big-endian ``nbytes`` (4: an address word, 2: a port) of a slot."""
    asm.fetch(_R1, slot)
    for shift in range(8 * (nbytes - 1), -1, -8):
        asm.alu_reg(_MOV, _R2, _R1)
        if shift:
            asm.alu(_RSH, _R2, shift)
        asm.alu(_AND, _R2, 0xFF)
        _crc_byte(asm, _R2)


def _family(asm: _Asm, tag: str, words: int, nshards: int) -> None:
    """Order the endpoints (``flow_hash``: the smaller address first, then
    the smaller port), CRC them, return ``1 + crc % nshards``. Expects the
    addresses in slots ``{tag}s0..``/``{tag}d0..``, the ports in
    ``{tag}sp``/``{tag}dp`` and the protocol in r9."""
    src = [f"{tag}s{i}" for i in range(words)] + [f"{tag}sp"]
    dst = [f"{tag}d{i}" for i in range(words)] + [f"{tag}dp"]
    for a, b in zip(src, dst, strict=True):  # lexicographic, as bytes compare
        asm.fetch(_R1, a)
        asm.fetch(_R2, b)
        asm.jump_reg(_JGT, _R1, _R2, f"{tag}_swap")
        asm.jump_reg(_JLT, _R1, _R2, f"{tag}_keep")
    asm.label(f"{tag}_keep")
    for a, b in zip(src + dst, [f"{tag}x{i}" for i in range(2 * words + 2)], strict=True):
        asm.fetch(_R1, a)
        asm.store(b, _R1)
    asm.goto(f"{tag}_crc")
    asm.label(f"{tag}_swap")
    for a, b in zip(dst + src, [f"{tag}x{i}" for i in range(2 * words + 2)], strict=True):
        asm.fetch(_R1, a)
        asm.store(b, _R1)
    asm.label(f"{tag}_crc")
    # The same registers whichever way the endpoints were ordered, so that the
    # verifier checks the CRC below once, not once per ordering.
    for reg in (_R0, _R1, _R2):
        asm.op(_ALU64 | _MOV | _K, reg, imm=0)
    asm.alu_reg(_MOV, _R7, _R9)  # zlib.crc32(data, proto): the register starts at ~proto
    asm.alu(_XOR, _R7, 0xFFFFFFFF)
    for i in range(2 * words + 2):
        _crc_slot(asm, f"{tag}x{i}", 2 if i in (words, 2 * words + 1) else 4)
    asm.alu(_XOR, _R7, 0xFFFFFFFF)
    asm.alu(_MOD, _R7, nshards)
    asm.alu(_ADD, _R7, 1)
    asm.alu_reg(_MOV, _R0, _R7)
    asm.op(_JMP | _EXIT)


def _ports_or_echo(asm: _Asm, tag: str, icmp: int, echo: tuple[int, int]) -> None:
    """TCP/UDP ports, or an echo's identifier as both ports (``classify``);
    anything else to queue 0. The L4 header starts at r8."""
    asm.jump(_JEQ, _R9, _TCP, f"{tag}_ports")
    asm.jump(_JEQ, _R9, _UDP, f"{tag}_ports")
    asm.jump(_JNE, _R9, icmp, "dispatcher")
    asm.load_ind(_B, _R8, 0)  # the ICMP type
    asm.jump(_JEQ, _R0, echo[0], f"{tag}_echo")
    asm.jump(_JNE, _R0, echo[1], "dispatcher")
    asm.label(f"{tag}_echo")
    asm.load_ind(_B, _R8, 7)  # classify wants the whole 8-byte echo header
    asm.load_ind(_H, _R8, 4)  # the identifier
    asm.store(f"{tag}sp", _R0)
    asm.store(f"{tag}dp", _R0)
    asm.goto(f"{tag}_hash")
    asm.label(f"{tag}_ports")
    asm.load_ind(_H, _R8, 0)
    asm.store(f"{tag}sp", _R0)
    asm.load_ind(_H, _R8, 2)
    asm.store(f"{tag}dp", _R0)
    asm.label(f"{tag}_hash")


def steering_program(nshards: int) -> bytes:
    """The program's instructions for ``nshards`` shards (queues 1..nshards)."""
    if nshards < 1:
        raise ValueError(f"{nshards} shards")
    asm = _Asm()
    asm.op(_ALU64 | _MOV | _X, _R6, _R1)  # the socket buffer (64-bit: a pointer), for the loads
    asm.load_abs(_H, 12)  # the ethertype
    asm.jump(_JEQ, _R0, 0x0800, "v4")
    asm.jump(_JEQ, _R0, 0x86DD, "v6")
    asm.goto("dispatcher")

    asm.label("v4")  # RFC 791
    asm.load_abs(_B, _ETH)
    asm.alu_reg(_MOV, _R1, _R0)
    asm.alu(_RSH, _R1, 4)
    asm.jump(_JNE, _R1, 4, "dispatcher")
    asm.alu(_AND, _R0, 0x0F)
    asm.alu(_LSH, _R0, 2)  # the header length in bytes
    asm.jump(_JLT, _R0, 20, "dispatcher")
    asm.alu(_ADD, _R0, _ETH)
    asm.op(_ALU64 | _MOV | _X, _R8, _R0)
    asm.load_abs(_H, _ETH + 6)  # a fragment (MF or an offset): the dispatcher reassembles
    asm.alu(_AND, _R0, 0x3FFF)
    asm.jump(_JNE, _R0, 0, "dispatcher")
    asm.load_abs(_B, _ETH + 9)
    asm.op(_ALU64 | _MOV | _X, _R9, _R0)
    asm.load_abs(_W, _ETH + 12)
    asm.store("4s0", _R0)
    asm.load_abs(_W, _ETH + 16)
    asm.store("4d0", _R0)
    _ports_or_echo(asm, "4", _ICMP, (0, 8))
    _family(asm, "4", 1, nshards)

    asm.label("v6")  # RFC 8200: no extension header here (the dispatcher walks them)
    asm.load_abs(_B, _ETH)
    asm.alu(_RSH, _R0, 4)
    asm.jump(_JNE, _R0, 6, "dispatcher")
    asm.load_abs(_B, _ETH + 6)
    asm.op(_ALU64 | _MOV | _X, _R9, _R0)
    for i in range(4):
        asm.load_abs(_W, _ETH + 8 + 4 * i)
        asm.store(f"6s{i}", _R0)
        asm.load_abs(_W, _ETH + 24 + 4 * i)
        asm.store(f"6d{i}", _R0)
    asm.op(_ALU64 | _MOV | _K, _R8, imm=_ETH + 40)
    _ports_or_echo(asm, "6", _ICMPV6, (128, 129))
    _family(asm, "6", 4, nshards)
    asm.label("dispatcher")  # last: every jump is forward (no loop for the verifier)
    asm.exit_with(0)
    return asm.assemble()


def attach_steering(tap_fd: int, nshards: int) -> str:
    """Load the program and make it the TAP's steering; returns "ebpf", or
    why the kernel's own steering stays ("automq: ..."). Never raises."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return f"automq: no bpf(2) number known for {platform.machine()}"
    code = steering_program(nshards)
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_SOCKET_FILTER, len(code) // 8,
        ctypes.addressof(insns), ctypes.addressof(license), 1, _LOG_SIZE,
        ctypes.addressof(log), 0, 0, b"shardnet_steer",
    )  # fmt: skip
    libc = ctypes.CDLL(None, use_errno=True)
    prog = libc.syscall(number, BPF_PROG_LOAD, attr, len(attr))
    if prog < 0:
        err = ctypes.get_errno()
        lines = log.value.decode(errors="replace").strip().splitlines()
        detail = [line for line in lines if not line.startswith("processed")][-1:] or [""]
        return f"automq: the kernel refused the steering program ({os.strerror(err)}) {detail[0]}".strip()
    try:
        fcntl.ioctl(tap_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog))
    except OSError as exc:
        return f"automq: TUNSETSTEERINGEBPF failed ({exc.strerror})"
    finally:
        os.close(prog)  # the TAP holds its own reference
    return "ebpf"
