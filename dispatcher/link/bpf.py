"""A small eBPF assembler and the bpf(2) calls shardnet's kernel programs
need: loading a socket-filter program and keeping an array map.

Both programs that run in the kernel for a link are socket filters
(``BPF_PROG_TYPE_SOCKET_FILTER``), the one type a TAP takes: the steering
program of a multi-queue TAP (``steering.py``) and the admission filter in
front of the TAP's queue (``admission.py``). They are written with ``Asm``
(instructions with symbolic jump targets) rather than compiled: no compiler
or BPF library is needed at run time. Encodings from ``linux/bpf.h`` and
``linux/bpf_common.h``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass, field

# Instruction classes, sizes, modes and operations.
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, ABS, IND, MEM, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0xC0
ADD, SUB, MUL, AND, LSH, RSH, MOD, XOR, MOV = 0x00, 0x10, 0x20, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0
K, X = 0x00, 0x08
JA, JEQ, JGT, JGE, JNE, JLT, CALL, EXIT = 0x00, 0x10, 0x20, 0x30, 0x50, 0xA0, 0x80, 0x90
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

# Helpers (enum bpf_func_id) a socket filter may call.
FUNC_MAP_LOOKUP_ELEM = 1
FUNC_KTIME_GET_NS = 5

_PSEUDO_MAP_FD = 1  # the source field of a 64-bit load: its immediate is a map's fd

# bpf(2) commands, program and map types.
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _PROG_LOAD = 0, 1, 2, 5
PROG_TYPE_SOCKET_FILTER = 1
_MAP_TYPE_ARRAY = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
_LOG_SIZE = 1 << 20


def _s32(value: int) -> int:
    """An unsigned 32-bit immediate as the signed field of an instruction."""
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(slots=True)
class Asm:
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
        self.op(ALU | operation | K, dst, imm=imm)

    def alu_reg(self, operation: int, dst: int, src: int) -> None:
        self.op(ALU | operation | X, dst, src)

    def alu64(self, operation: int, dst: int, imm: int) -> None:
        self.op(ALU64 | operation | K, dst, imm=imm)

    def alu64_reg(self, operation: int, dst: int, src: int) -> None:
        self.op(ALU64 | operation | X, dst, src)

    def load_abs(self, size: int, offset: int) -> None:
        """r0 = the frame's ``size`` bytes at ``offset``, in host order; a
        frame too short ends the program with 0."""
        self.op(LD | ABS | size, imm=offset)

    def load_ind(self, size: int, reg: int, offset: int) -> None:
        self.op(LD | IND | size, src=reg, imm=offset)

    def load_mem(self, size: int, dst: int, src: int, offset: int) -> None:
        """dst = the ``size`` bytes at src + offset (a pointer: the context,
        a map value)."""
        self.op(LDX | MEM | size, dst, src, offset)

    def store_mem(self, size: int, dst: int, offset: int, src: int) -> None:
        self.op(STX | MEM | size, dst, src, offset)

    def atomic_add(self, dst: int, offset: int, src: int) -> None:
        """*(u64 *)(dst + offset) += src, atomically (other CPUs run it too)."""
        self.op(STX | ATOMIC | DW, dst, src, offset, ADD)

    def store(self, slot: str, src: int) -> None:
        self.op(STX | MEM | W, R10, src, self.slot(slot))

    def store_imm(self, slot: str, imm: int) -> None:
        self.op(ST | MEM | W, R10, 0, self.slot(slot), imm)

    def fetch(self, dst: int, slot: str) -> None:
        self.op(LDX | MEM | W, dst, R10, self.slot(slot))

    def slot_address(self, dst: int, slot: str) -> None:
        """dst = the address of a stack slot (a helper's key argument)."""
        self.alu64_reg(MOV, dst, R10)
        self.alu64(ADD, dst, self.slot(slot))

    def load_map(self, dst: int, map_fd: int) -> None:
        """dst = the map (a two-instruction 64-bit load the kernel resolves)."""
        self.op(LD | DW | IMM, dst, _PSEUDO_MAP_FD, 0, map_fd)
        self.op(0, 0, 0, 0, 0)

    def call(self, helper: int) -> None:
        """r0 = helper(r1..r5); r1-r5 are clobbered, r6-r9 kept."""
        self.op(JMP | CALL, imm=helper)

    def jump(self, operation: int, dst: int, imm: int, target: str) -> None:
        self.op(JMP | operation | K, dst, off=target, imm=imm)

    def jump_reg(self, operation: int, dst: int, src: int, target: str) -> None:
        self.op(JMP | operation | X, dst, src, off=target)

    def goto(self, target: str) -> None:
        self.op(JMP | JA, off=target)

    def exit_with(self, value: int) -> None:
        self.op(ALU64 | MOV | K, R0, imm=value)
        self.op(JMP | EXIT)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, dst, src, off, imm) in enumerate(self.insns):
            rel = self.labels[off] - pc - 1 if isinstance(off, str) else off
            out += struct.pack("<BBhi", code, (src << 4) | dst, rel, imm)
        return bytes(out)


class BpfError(OSError):
    """bpf(2) refused; ``str()`` is one line (the verifier's last word)."""


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise BpfError(0, f"no bpf(2) number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.syscall(number, command, attr, len(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return result


def load_socket_filter(code: bytes, name: bytes) -> int:
    """Load a socket-filter program; its fd (the caller closes it once
    attached: what it is attached to keeps its own reference)."""
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIQQIIQII16s", attr, 0, PROG_TYPE_SOCKET_FILTER, len(code) // 8,
        ctypes.addressof(insns), ctypes.addressof(license), 1, _LOG_SIZE,
        ctypes.addressof(log), 0, 0, name[:15],
    )  # fmt: skip
    try:
        return _bpf(_PROG_LOAD, attr)
    except BpfError as exc:
        lines = log.value.decode(errors="replace").strip().splitlines()
        detail = [line for line in lines if not line.startswith("processed")][-1:] or [""]
        raise BpfError(exc.errno, f"{exc.strerror} {detail[0]}".strip()) from None


class ArrayMap:
    """A ``BPF_MAP_TYPE_ARRAY`` of ``entries`` values of ``value_size``
    bytes, keyed 0..entries-1; shared by every CPU."""

    def __init__(self, value_size: int, entries: int) -> None:
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIIII", attr, 0, _MAP_TYPE_ARRAY, 4, value_size, entries, 0)
        self.fd = _bpf(_MAP_CREATE, attr)
        self.value_size = value_size

    def _elem(self, command: int, key: int, value: ctypes.Array[ctypes.c_char]) -> None:
        k = ctypes.create_string_buffer(struct.pack("<I", key), 4)
        attr = ctypes.create_string_buffer(128)
        struct.pack_into(
            "<IIQQQ", attr, 0, self.fd, 0, ctypes.addressof(k), ctypes.addressof(value), 0
        )
        _bpf(command, attr)

    def get(self, key: int) -> bytes:
        value = ctypes.create_string_buffer(self.value_size)
        self._elem(_MAP_LOOKUP_ELEM, key, value)
        return value.raw

    def set(self, key: int, value: bytes) -> None:
        self._elem(_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, self.value_size))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
